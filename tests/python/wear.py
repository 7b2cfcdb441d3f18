#!/usr/bin/env python3
"""Flash wear of the journal at a field rate, measured at a VM's disk.

The real edge-agent runs in the same qemu VM as powercut.py (Debian's kernel,
a busybox initramfs, ext4 on a virtio disk), sampling one simulated sensor
every 200 ms (5 readings/s). After a warm-up the guest reads its disk's
write counter (`/sys/block/vda/stat`, sectors written: what reached the
block device, the filesystem's own journal included) and the agent's
`write_bytes` (`/proc/<pid>/io`), waits, and reads both again.

Each run is one agent binary and one `journal.commit_interval`, with the
link up (Tansu on the host, reached through qemu's user network, so every
reading is acknowledged and deleted) or down (a closed port: the backlog
grows). Runs go in parallel, one VM each.

usage: wear.py --agent NAME=PATH [--agent ...] [--intervals 100ms,1s,5s]
               [--minutes 10] [--warmup 60] [--mount defaults] [--json FILE]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import powercut  # noqa: E402

MODULES = powercut.ROOT_MODULES + ["virtio_net"]
READINGS_PER_SECOND = 5

CONFIG = """device_id = "wear"
[journal]
path = "/data/buoy/journal.redb"
commit_interval = "{interval}"
[kafka]
brokers = ["{broker}"]
topic = "telemetry"
[[sensor]]
name = "weather"
kind = "simulated_weather"
interval = "200ms"
seed = 1
"""

INIT = powercut.PREAMBLE + r"""arg() { sed -n "s/.*buoy\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
stop() { sync; umount /data 2>/dev/null; poweroff -f; }
n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1)); [ $n -gt 600 ] && { report "error no disk"; stop; }; sleep 0.1
done
mount -t ext4 -o "$(arg mount)" /dev/vda /data || { report "error mount"; stop; }
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
mkdir -p /data/buoy
RUST_LOG=warn edge-agent -c /etc/buoy.toml run > /tmp/agent.log 2>&1 &
pid=$!
report "started $(cut -d' ' -f1 /proc/uptime)"
counters() { echo "$(cut -d' ' -f1 /proc/uptime) $(awk '{print $7}' /sys/block/vda/stat) $(sed -n 's/^write_bytes: //p' /proc/$pid/io) $(head -1 /proc/fs/jbd2/vda-8/info | cut -d' ' -f1)"; }
sleep "$(arg warmup)"
report "start $(counters)"
sleep "$(arg seconds)"
report "end $(counters)"
kill $pid; wait $pid
report "stats $(edge-agent -c /etc/buoy.toml journal stats --json 2>/dev/null)"
tail -5 /tmp/agent.log
report "done"
stop
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    powercut.fail(f"nothing listens on {port} after {timeout}s")


class Tansu:
    """A broker the guests reach at 10.0.2.2 (qemu's user network maps it
    to the host's loopback). The topic is created first with the broker
    advertising 127.0.0.1 (for the host's admin client), then the broker is
    restarted on the same SQLite store advertising 10.0.2.2."""

    def __init__(self, work):
        if shutil.which("tansu") is None:
            powercut.fail("tansu not found: cargo install tansu --locked --version 0.6.0 "
                          "--features dynostore,libsql")
        self.work, self.port, self.proc = work, free_port(), None
        self.start("127.0.0.1")
        subprocess.run([sys.executable, "-c", """
import sys, time
from kafka.admin import KafkaAdminClient, NewTopic
for attempt in range(60):
    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sys.argv[1]}")
        break
    except Exception:
        time.sleep(0.5)
admin.create_topics([NewTopic("telemetry", 1, 1)])
""", str(self.port)], check=True)
        self.stop()
        self.start("10.0.2.2")

    def start(self, advertised):
        self.proc = subprocess.Popen(
            ["tansu", "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://{advertised}:{self.port}",
             "--storage-engine", "sqlite://broker.db"],
            cwd=self.work, env={**os.environ, "RUST_LOG": "warn"},
            stdout=subprocess.DEVNULL, stderr=open(self.work / "tansu.log", "ab"))
        wait_for_port(self.port, 30)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Run:
    """One VM: one agent, one commit interval, the link up or down."""

    def __init__(self, work, name, agent, interval, link_up, port, args, kernel_dir):
        self.label = (name, interval, "up" if link_up else "down")
        self.dir = work / "-".join(self.label)
        self.dir.mkdir()
        broker = f"10.0.2.2:{port}" if link_up else "10.0.2.2:9"
        powercut.initramfs(agent, kernel_dir, CONFIG.format(interval=interval, broker=broker),
                           self.dir / "initrd.cpio", init=INIT)
        disk = self.dir / "disk.img"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-E",
                        "lazy_itable_init=0,lazy_journal_init=0", str(disk),
                        f"{powercut.DISK_MB}M"], check=True)
        self.report = self.dir / "report"
        cmdline = (f"console=ttyS0 quiet panic=-1 buoy.mount={args.mount} "
                   f"buoy.warmup={args.warmup} buoy.seconds={int(args.minutes * 60)}")
        self.qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1",
             "-nodefaults", "-display", "none", "-no-reboot",
             "-kernel", str(kernel_dir / "vmlinuz"), "-initrd", str(self.dir / "initrd.cpio"),
             "-append", cmdline,
             "-drive", f"if=virtio,format=raw,cache=writeback,file={disk}",
             "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
             "-serial", f"file:{self.dir / 'console'}", "-serial", f"file:{self.report}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def found(self):
        try:
            lines = self.report.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return {}
        return {line.split(" ", 1)[0]: line.split(" ", 1)[1] if " " in line else ""
                for line in lines}

    def result(self):
        """Bytes per day at the disk and from the agent's own I/O."""
        f = self.found()
        if "done" not in f or "start" not in f or "end" not in f:
            tail = (self.dir / "console").read_text(errors="replace")[-2000:]
            powercut.fail(f"{self.label}: the VM did not finish: {f}\nconsole:\n{tail}")
        (t0, s0, w0, j0), (t1, s1, w1, j1) = (map(float, f[k].split()) for k in ("start", "end"))
        per_day = 86400 / (t1 - t0)
        stats = json.loads(f["stats"]) if f.get("stats", "").startswith("{") else {}
        # What the sensor really gave (a busy host slows the VM's timers).
        rate = (stats.get("next_seq", 1) - 1) / (t1 - float(f["started"]))
        return {"agent": self.label[0], "commit_interval": self.label[1], "link": self.label[2],
                "seconds": round(t1 - t0, 1),
                "disk_bytes_per_day": (s1 - s0) * 512 * per_day,
                "process_bytes_per_day": (w1 - w0) * per_day,
                "ext4_journal_commits_per_hour": (j1 - j0) * per_day / 24,
                "readings_per_second": round(rate, 2),
                "readings_waiting_at_end": stats.get("records")}


def floor(interval):
    """One 4 KiB block per commit, at most one commit per reading."""
    seconds = {"ms": 1e-3, "s": 1}
    number = float(interval.rstrip("ms"))
    unit = interval[len(interval.rstrip("ms")):]
    commits = 86400 / max(number * seconds[unit], 1 / READINGS_PER_SECOND)
    return commits * 4096


def table(results, agents):
    """Per interval and link: the floor, then each agent at the disk and by
    its own count (MB/day), ext4 journal commits per hour, readings/s."""
    head = "| commit_interval | link | floor (MB/day) |"
    for a in agents:
        head += f" {a}: at the disk | {a}: agent's write_bytes | {a}: ext4 commits/h |"
    lines = [head, "|" + "---|" * (3 + 3 * len(agents))]
    rows = {}
    for r in results:
        rows.setdefault((r["commit_interval"], r["link"]), {})[r["agent"]] = r
    for (interval, link), by in rows.items():
        line = f"| {interval} | {link} | {floor(interval) / 1e6:.0f} |"
        for a in agents:
            r = by.get(a)
            line += (f" {r['disk_bytes_per_day'] / 1e6:.0f} | {r['process_bytes_per_day'] / 1e6:.0f}"
                     f" | {r['ext4_journal_commits_per_hour']:.0f} |") if r else " | | |"
        lines.append(line)
    rates = [r["readings_per_second"] for r in results]
    lines.append(f"\nReadings sampled per second in the VMs: {min(rates)}–{max(rates)}; "
                 f"measured for {min(r['seconds'] for r in results):.0f} s each.")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", action="append", required=True, help="NAME=PATH of an edge-agent")
    p.add_argument("--intervals", default="100ms,1s,5s")
    p.add_argument("--links", default="up,down")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--mount", default="defaults", help="ext4 mount options in the guest")
    p.add_argument("--json")
    args = p.parse_args()
    for binary in ("qemu-system-x86_64", "mkfs.ext4"):
        powercut.need(binary)
    kernel_dir = powercut.kernel(MODULES, "kernel-net")
    work = Path(tempfile.mkdtemp(prefix="buoy-wear-"))
    tansu = Tansu(work)
    runs = []
    try:
        for spec in args.agent:
            name, path = spec.split("=", 1)
            for interval in args.intervals.split(","):
                for link in args.links.split(","):
                    runs.append(Run(work, name, path, interval, link == "up", tansu.port,
                                    args, kernel_dir))
        deadline = time.monotonic() + args.warmup + args.minutes * 60 + 600
        for run in runs:
            try:
                run.qemu.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.qemu.kill()
        results = [run.result() for run in runs]
    finally:
        for run in runs:
            if run.qemu.poll() is None:
                run.qemu.kill()
        tansu.stop()
    print(table(results, [name for name, _ in (spec.split("=", 1) for spec in args.agent)]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
