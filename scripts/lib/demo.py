#!/usr/bin/env python3
"""The story scripts/demo tells, with Buoy's real binaries on loopback:

  1 readings flowing      sensors -> edge-agent (journal) -> Kafka -> uplink -> VictoriaMetrics
  2 the link cut          the Kafka broker is stopped
  3 readings piling up    sampling goes on; every reading waits in the journal
  4 the link restored     the broker is started again, with what it held
  5 the backlog draining  live readings first, then the backlog, oldest first
  6 the end               the agent is stopped; what it sampled, journaled and
                          forwarded is set against what VictoriaMetrics holds
                          and what is on the topic: lost and duplicated are
                          computed, and the exit status is that check

On a terminal one status panel is redrawn in place; otherwise (CI, a log)
one line per phase is printed. scripts/demo installs and builds what this
needs, then runs it.

  demo_services.py  the processes: started, stopped, restarted
  demo_watch.py     what is read once a second: the agent's status, the
                    uplink's metrics, VictoriaMetrics; the phase lines
  demo_panel.py     the panel on a terminal, the lines otherwise
  demo_check.py     the final count

usage: demo.py --bin DIR [--seconds N] [--broker tansu|mock] [--keep]
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_check  # noqa: E402
import demo_panel  # noqa: E402
import demo_services  # noqa: E402
import demo_watch  # noqa: E402

DEVICE = "demo-gateway"
TOPIC = "telemetry"
DEAD_LETTERS = "telemetry.dlq"


def arguments():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="directory holding edge-agent, uplink and buoy-demo-kafka")
    p.add_argument("--seconds", type=int, default=120, help="length of the story (default 120; at least 40)")
    p.add_argument("--broker", choices=["tansu", "mock"], default=None,
                   help="tansu (the default when it is installed) or librdkafka's mock cluster")
    p.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    a = p.parse_args()
    if a.seconds < 40:
        p.error("--seconds: the story needs at least 40 seconds")
    if a.broker is None:
        a.broker = "tansu" if shutil.which("tansu") else "mock"
    return a


def configs(work, bootstrap, vm_port, metrics_port):
    agent = f"""device_id = "{DEVICE}"
[journal]
path = "{work}/journal.redb"
[kafka]
brokers = ["{bootstrap}"]
topic = "{TOPIC}"
[forward]
# A demo wants the link noticed back at once; in the field the default (30s)
# spares a flaky uplink.
max_retry_delay = "2s"
[status]
socket = "{work}/agent.sock"
log_interval = "10s"
[[sensor]]
name = "env"
kind = "simulated_weather"
interval = "250ms"
[[sensor]]
name = "visibility"
kind = "simulated_visibility"
interval = "500ms"
[[sensor]]
name = "cpu"
kind = "simulated_cpu_temperature"
interval = "1s"
[[sensor]]
name = "fan"
kind = "simulated_fan"
interval = "2s"
"""
    uplink = f"""[kafka]
brokers = ["{bootstrap}"]
topics = ["{TOPIC}"]
dead_letter_topic = "{DEAD_LETTERS}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[sink]]
kind = "victoriametrics"
url = "http://127.0.0.1:{vm_port}"
"""
    with open(f"{work}/edge-agent.toml", "w") as f:
        f.write(agent)
    with open(f"{work}/uplink.toml", "w") as f:
        f.write(uplink)


class Story:
    """The phases, their times, and what was seen in each."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.cut_at = round(seconds * 0.22)
        self.restore_at = round(seconds * 0.55)
        self.facts = {}


def run(a, work, say):
    svc = demo_services.Services(work, a.bin)
    bootstrap = svc.start_broker(a.broker, [TOPIC, DEAD_LETTERS])
    vm_port = svc.start_victoria()
    metrics_port = demo_services.free_port()
    configs(work, bootstrap, vm_port, metrics_port)
    svc.start_uplink()
    svc.start_agent()
    say.intro(a.broker, bootstrap, vm_port, work, demo_services.ui_url(vm_port, DEVICE))
    watch = demo_watch.Watch(svc, vm_port, metrics_port, DEVICE)
    story = Story(a.seconds)
    if not tell(a, svc, watch, story, say):
        return 1
    say.panel_done()
    final = svc.stop_agent()
    result = demo_check.check(final, a.broker, bootstrap, TOPIC, story.facts, vm_port, DEVICE)
    svc.stop_all()
    say.phase(6, result.lines[0])
    for line in result.lines[1:]:
        say.more(line)
    return 0 if result.ok else 1


def drained(watch, seen, elapsed):
    """Whether the agent has forwarded every reading journaled before the link
    came back (noted once, when it first has)."""
    if "forwarded" not in watch.marks and seen.forwarded >= watch.at("link_up")[1].journaled:
        watch.mark("forwarded", elapsed)
    return "forwarded" in watch.marks


def tell(a, svc, watch, story, say):
    """Phases 1 to 5, once a second; False if the story got stuck."""
    start = time.monotonic()
    phase = 1
    while True:
        elapsed = time.monotonic() - start
        svc.check_alive()
        seen = watch.sample(elapsed)
        if seen.points and "first" not in story.facts:
            story.facts["first"] = elapsed
            say.phase(1, f"the first reading reached VictoriaMetrics {elapsed:.0f} s after the agent started")
        if phase == 1 and elapsed >= story.cut_at and seen.points:
            say.phase(1, watch.flowing_line(elapsed))
            svc.stop_broker()
            story.facts["cut"] = time.time()
            watch.mark("cut", elapsed)
            say.phase(2, f"link cut: the Kafka broker was stopped at +{elapsed:.0f} s")
            phase = 3
        elif phase == 3 and elapsed >= story.restore_at:
            say.phase(3, watch.piled_line(elapsed))
            svc.restart_broker()
            story.facts["restore"] = time.time()
            watch.mark("restore", elapsed)
            phase = 4
        elif phase == 4 and seen.link_up:
            watch.mark("link_up", elapsed)
            story.facts["link_up"] = time.time()
            say.phase(4, watch.restored_line(elapsed))
            phase = 5
        elif phase == 5 and drained(watch, seen, elapsed) and (seen.points >= watch.at("link_up")[1].journaled
                                                               or elapsed >= a.seconds):
            say.phase(5, watch.drained_line(elapsed))
            phase = 6
        if phase == 6 and elapsed >= a.seconds:
            return True
        if elapsed >= a.seconds + 60:
            say.panel_done()
            say.phase(phase, f"stuck: phase {phase} did not end within {a.seconds + 60} s; see the logs")
            return False
        say.panel(watch, story, phase, elapsed)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start - elapsed)))


def main():
    a = arguments()
    work = tempfile.mkdtemp(prefix="buoy-demo.")
    say = demo_panel.Output(sys.stdout, a.seconds)
    status = 1
    try:
        status = run(a, work, say)
    except demo_services.DemoError as e:
        say.panel_done()
        print(f"demo: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        say.panel_done()
        status = 130
    finally:
        demo_services.stop_everything()
        if a.keep or status not in (0, 130):
            print(f"logs and data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


def interrupted(*_):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM, and SIGHUP (the terminal closed): stop every process, as on Ctrl-C.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    sys.exit(main())
