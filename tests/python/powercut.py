#!/usr/bin/env python3
"""Power cuts of a whole machine: the real edge-agent in a qemu VM, killed.

The VM is Debian's kernel (linux-image-amd64, downloaded and unpacked into a
cache, never installed), a busybox initramfs holding the agent, and an ext4
filesystem on a virtio disk backed by a host file. Every boot:

1. mounts the disk (ext4 replays its own journal);
2. checks what the previous run left, with the agent's own
   `journal stats --json` and `journal export --with-seq`: which sequence
   numbers are there, whether any reading is out of time order (a number
   reused by a later boot), whether the journal was quarantined;
3. starts `edge-agent run --report-commits /dev/ttyS1`: sampling fast, no
   broker, one line on the second serial port per durable commit.

The harness kills qemu (SIGKILL: the whole machine, page cache and all) at a
random moment, and at the next boot checks that every sequence number the
agent reported committed is in the journal. Every second cut serves the disk
through nbd_cache.py, a disk with a volatile write cache: writes not yet
flushed land or not, in random order, which reaches the moment between a
commit's writes and its flush that a kill of qemu alone almost never does.

Every `--series` cuts start again from a fresh filesystem, so that a check
boot exports a bounded journal. KVM is not needed: the VM runs under TCG.

usage: powercut.py --agent target/debug/edge-agent --cuts 10 [--seed N]
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import nbd_cache  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "buoy" / "powercut"
# What the guest loads before it can mount an ext4 virtio disk; their
# dependencies are added from each module's own `depends=`.
ROOT_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
INSTALL = "apt-get install qemu-system-x86 busybox-static e2fsprogs binutils"
DISK_MB = 256

AGENT_CONFIG = """device_id = "powercut"
[journal]
path = "/data/buoy/journal.redb"
commit_interval = "{commit_interval}"
max_bytes = "64MiB"
[kafka]
brokers = ["127.0.0.1:9"]
topic = "telemetry"
[[sensor]]
name = "weather"
kind = "simulated_weather"
interval = "{interval}"
seed = 1
"""

# The start of every guest's /init: busybox, the kernel's filesystems and
# modules, and `report` to the second serial port (the harness's channel).
PREAMBLE = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /data /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m.ko || echo "insmod $m failed"; done
R=/dev/ttyS1
report() { echo "$*" > $R; }
"""

INIT = PREAMBLE + r"""stop() { sync; umount /data 2>/dev/null; poweroff -f; }
n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1)); [ $n -gt 600 ] && { report "error no disk"; stop; }; sleep 0.1
done
mount -t ext4 /dev/vda /data || { report "error mount"; stop; }
report "mounted"
agent() { edge-agent -c /etc/buoy.toml "$@"; }
if [ -d /data/buoy ]; then
    agent journal stats --json > /tmp/stats 2> /tmp/stats.err
    report "stats $? $(cat /tmp/stats)"
    cat /tmp/stats.err
    # seq<TAB>line: the ranges of numbers present, and how many readings are
    # older than the one before them (the last token of a line is its time).
    agent journal export --with-seq 2> /tmp/export.err | awk -F '\t' '
        { s = $1 + 0; t = $2; sub(/.* /, "", t)
          if (n == 0) start = s; else if (s != prev + 1) { r = r start "-" prev ","; start = s }
          if (n > 0 && t < pt) bad++
          n++; prev = s; pt = t }
        END { if (n > 0) r = r start "-" prev; print "export " n + 0 " " bad + 0 " " r }' > $R
    cat /tmp/export.err
    report "quarantined $(ls /data/buoy | grep -c corrupt)"
fi
case " $(cat /proc/cmdline) " in
*" buoy.run=1 "*)
    mkdir -p /data/buoy
    report "running"
    RUST_LOG=warn agent run --report-commits $R
    report "error agent exited $?"
    ;;
esac
report "done"
stop
"""


def fail(message):
    print(f"powercut: {message}", file=sys.stderr)
    sys.exit(2)


def need(binary):
    if shutil.which(binary) is None:
        fail(f"{binary} not found: {INSTALL}")
    return shutil.which(binary)


# ----------------------------------------------------------------- the kernel


def module_depends(path):
    """The `depends=` of a kernel module's .modinfo section."""
    m = re.search(rb"depends=([^\0]*)\0", path.read_bytes())
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def kernel(modules=ROOT_MODULES, name="kernel"):
    """Debian's kernel and `modules` (with what they depend on), unpacked
    once into the cache directory `name`."""
    done = CACHE / name / "ready"
    if done.exists():
        return done.parent
    need("apt-get")
    need("dpkg")
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True
    ).stdout
    match = re.search(r"Depends: (linux-image-\S+)", depends)
    if not match:
        fail("apt-cache knows no linux-image-amd64 (this harness needs Debian's kernel package; "
             "run apt-get update)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", match.group(1)], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), f"{tmp}/x"], check=True)
        out = CACHE / name
        shutil.rmtree(out, ignore_errors=True)
        (out / "modules").mkdir(parents=True)
        shutil.copy(next(Path(f"{tmp}/x/boot").glob("vmlinuz-*")), out / "vmlinuz")
        found = {p.stem.replace("-", "_"): p for p in Path(f"{tmp}/x/lib/modules").rglob("*.ko")}
        order = []

        def add(module):
            if module in order:
                return
            if module not in found:
                fail(f"the kernel package has no module {module}")
            for dep in module_depends(found[module]):
                add(dep.replace("-", "_"))
            order.append(module)

        for module in modules:
            add(module)
        for module in order:
            shutil.copy(found[module], out / "modules" / f"{module}.ko")
        (out / "modules" / "order").write_text("\n".join(order) + "\n")
        done.write_text(match.group(1) + "\n")
    return out


# -------------------------------------------------------------- the initramfs


def cpio_entry(name, mode, data=b"", rdev=(0, 0), ino=[0]):
    ino[0] += 1
    name_bytes = name.encode() + b"\0"
    fields = [ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_bytes), 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad = lambda n: b"\0" * (-n % 4)  # noqa: E731
    return header + name_bytes + pad(len(header) + len(name_bytes)) + data + pad(len(data))


def libraries(binary):
    """The shared objects `binary` loads, the dynamic loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=> (/\S+)", out) + re.findall(r"^\s*(/\S+) \(", out, re.M)
    return sorted(set(libs))


def initramfs(agent, kernel_dir, config, path, init=INIT):
    busybox = Path("/bin/busybox")
    if not busybox.exists() or "statically linked" not in subprocess.run(
            ["file", "-L", str(busybox)], capture_output=True, text=True).stdout:
        fail(f"a static /bin/busybox is needed: {INSTALL}")
    stripped = path.parent / "edge-agent"
    subprocess.run([need("objcopy"), "--strip-debug", agent, str(stripped)], check=True)
    files = {"init": (0o100755, init.encode()),
             "bin/busybox": (0o100755, busybox.read_bytes()),
             "bin/edge-agent": (0o100755, stripped.read_bytes()),
             "etc/buoy.toml": (0o100644, config.encode())}
    for lib in libraries(agent):
        files[lib.lstrip("/")] = (0o100755, Path(lib).read_bytes())
    for ko in (kernel_dir / "modules").iterdir():
        files[f"modules/{ko.name}"] = (0o100644, ko.read_bytes())
    dirs = sorted({str(Path(n).parents[i]) for n in files for i in range(len(Path(n).parents) - 1)}
                  | {"dev", "proc", "sys", "tmp", "data"})
    out = bytearray()
    for d in dirs:
        out += cpio_entry(d, 0o40755)
    out += cpio_entry("dev/console", 0o20600, rdev=(5, 1))
    for name, (mode, data) in sorted(files.items()):
        out += cpio_entry(name, mode, data)
    out += cpio_entry("TRAILER!!!", 0)
    path.write_bytes(out)


# ------------------------------------------------------------------- the VM


class Boot:
    """One run of the VM, its reports read from the second serial port."""

    def __init__(self, work, index, disk_arg, run):
        self.report = work / f"boot-{index}.report"
        self.console = work / f"boot-{index}.console"
        cmdline = "console=ttyS0 quiet panic=-1 buoy.run=" + ("1" if run else "0")
        self.qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1",
             "-nodefaults", "-display", "none", "-no-reboot",
             "-kernel", str(work / "vmlinuz"), "-initrd", str(work / "initrd.cpio"),
             "-append", cmdline, "-drive", disk_arg,
             "-serial", f"file:{self.console}", "-serial", f"file:{self.report}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def lines(self):
        try:
            return [line.strip() for line in self.report.read_text(errors="replace").splitlines()]
        except FileNotFoundError:
            return []

    def wait_for(self, word, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.lines()
            if any(line.startswith(word) for line in lines):
                return
            if any(line.startswith("error") for line in lines) or self.qemu.poll() is not None:
                break
            time.sleep(0.05)
        self.fail(f"the VM did not report {word!r} within {timeout}s")

    def fail(self, why):
        self.kill()
        tail = self.console.read_text(errors="replace")[-3000:] if self.console.exists() else ""
        reports = [line for line in self.lines() if not line.isdigit()]
        fail(f"{why}; reports: {reports}\n"
             f"qemu: {self.qemu.stderr.read().decode(errors='replace')}\nconsole:\n{tail}")

    def kill(self):
        if self.qemu.poll() is None:
            self.qemu.send_signal(signal.SIGKILL)
        self.qemu.wait()

    def committed(self):
        """The highest sequence number the agent reported durable."""
        return max((int(line) for line in self.lines() if line.isdigit()), default=0)

    def check(self):
        """What the boot found: (stats, count, out of order, ranges, quarantined)."""
        found = {}
        for line in self.lines():
            word, _, rest = line.partition(" ")
            found[word] = rest
        if "export" not in found:
            return None
        # (An empty journal: awk printed no count before it said `n + 0`.)
        n, bad, *ranges = found["export"].split() if found["export"].split()[1:] else ["0", "0"]
        spans = [tuple(map(int, r.split("-"))) for r in (ranges[0].split(",") if ranges else [])]
        stats = json.loads(found["stats"].split(" ", 1)[1]) if " " in found.get("stats", "") else {}
        return stats, int(n), int(bad), spans, int(found.get("quarantined", "0"))


def missing(spans, committed):
    """How many of 1..=committed are not in `spans`."""
    present = sum(max(0, min(b, committed) - a + 1) for a, b in spans if a <= committed)
    return committed - present


class Harness:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.boots = 0
        self.totals = {"cuts": 0, "boots": 0, "readings_checked": 0, "lost": 0, "reused": 0,
                       "quarantines": 0, "cache_cuts": 0, "held_writes": 0, "landed_writes": 0}

    def fresh_disk(self):
        disk = self.work / "disk.img"
        disk.unlink(missing_ok=True)
        subprocess.run([need("mkfs.ext4"), "-q", "-F", "-b", "4096", "-E",
                        "lazy_itable_init=0,lazy_journal_init=0", str(disk), f"{DISK_MB}M"],
                       check=True)
        return disk

    def boot(self, disk, run, cached):
        self.boots += 1
        if cached:
            server = nbd_cache.Server(disk, self.rng.randrange(1 << 32))
            arg = f"if=virtio,format=raw,cache=writeback,file=nbd://127.0.0.1:{server.port}"
        else:
            server = None
            arg = f"if=virtio,format=raw,cache=writeback,file={disk}"
        return Boot(self.work, self.boots, arg, run), server

    def verify(self, boot, committed):
        """Checks what `boot` found against the highest promised number."""
        # No check: the journal's directory is gone, and everything in it.
        stats, n, bad, spans, quarantined = boot.check() or ({}, 0, 0, [], 0)
        lost = missing(spans, committed)
        self.totals["readings_checked"] += committed
        self.totals["lost"] += lost
        self.totals["reused"] += bad
        self.totals["quarantines"] += quarantined
        print(f"  check: {n} readings in the journal, {committed} promised, {lost} lost, "
              f"{bad} out of order, {quarantined} quarantined, stats {stats.get('records')} records",
              flush=True)

    def cut(self, disk, committed, check):
        """Boots (checking the last cut if `check`), runs the agent, cuts the power."""
        cached = self.totals["cuts"] % 2 == 1
        boot, server = self.boot(disk, True, cached)
        boot.wait_for("running", 180)
        if check:
            self.verify(boot, committed)
        run_for = self.rng.uniform(0.2, self.args.max_run)
        if server:
            # Then at one of the next few writes, mid-commit.
            time.sleep(run_for / 2)
            server.arm(self.rng.randint(1, 24))
            server.powered_off.wait(run_for / 2 + 10)
        else:
            time.sleep(run_for)
        if boot.qemu.poll() is not None:
            boot.fail("the VM stopped before the power cut (the agent exited)")
        boot.kill()
        held = ""
        if server:
            server.wait_idle(30)
            c = server.disk.cuts[-1]
            held = f", {c['landed']} of {c['held']} unflushed block writes landed"
            self.totals["cache_cuts"] += 1
            self.totals["held_writes"] += c["held"]
            self.totals["landed_writes"] += c["landed"]
            server.close()
        self.totals["cuts"] += 1
        promised = max(committed, boot.committed())
        print(f"cut {self.totals['cuts']} ({'volatile cache' if cached else 'plain disk'}) "
              f"after {run_for:.1f}s: {promised} readings promised{held}", flush=True)
        return promised

    def series(self, cuts):
        disk = self.fresh_disk()
        committed = 0
        for i in range(cuts):
            committed = self.cut(disk, committed, check=i > 0)
        boot, _ = self.boot(disk, False, False)
        boot.wait_for("done", 600)
        self.verify(boot, committed)

    def run(self):
        left = self.args.cuts
        while left > 0:
            self.series(min(left, self.args.series))
            left -= self.args.series
        self.totals["boots"] = self.boots
        return self.totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", required=True, help="the edge-agent binary to run in the VM")
    parser.add_argument("--cuts", type=int, default=10)
    parser.add_argument("--series", type=int, default=10, help="cuts per fresh filesystem")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--max-run", type=float, default=6.0,
                        help="longest sampling before a cut, seconds")
    parser.add_argument("--interval", default="2ms", help="the simulated sensor's interval")
    parser.add_argument("--commit-interval", default="50ms")
    parser.add_argument("--json", help="also write the totals here")
    args = parser.parse_args()
    need("qemu-system-x86_64")
    need("file")
    need("ldd")
    kernel_dir = kernel()
    with tempfile.TemporaryDirectory(prefix="buoy-powercut-") as tmp:
        work = Path(tmp)
        shutil.copy(kernel_dir / "vmlinuz", work / "vmlinuz")
        config = AGENT_CONFIG.format(interval=args.interval, commit_interval=args.commit_interval)
        initramfs(args.agent, kernel_dir, config, work / "initrd.cpio")
        print(f"powercut: {args.cuts} cuts, seed {args.seed}", flush=True)
        started = time.monotonic()
        totals = Harness(args, work).run()
        totals["seconds"] = round(time.monotonic() - started)
        totals["seed"] = args.seed
    print("powercut: " + json.dumps(totals), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(totals, indent=1) + "\n")
    if totals["lost"] or totals["reused"]:
        fail(f"{totals['lost']} committed readings lost, {totals['reused']} out of order")


if __name__ == "__main__":
    main()
