"""How scripts/demo shows itself: on a terminal, one status panel redrawn in
place once a second (the phase lines follow once it ends); otherwise one
line per phase as it happens."""
import shutil
import time

import demo_watch

PHASES = ["readings flowing", "link cut", "readings piling up in the journal", "link restored",
          "backlog draining", "end"]
STEPS = ["flowing", "link cut", "piling up", "restored", "draining", "count"]


def clock(seconds):
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Output:
    def __init__(self, stream, seconds):
        self.out, self.seconds = stream, seconds
        self.terminal = stream.isatty()
        self.drawn = 0  # lines of the panel on screen
        self.record = []  # phase lines, printed after the panel on a terminal

    def _print(self, text=""):
        self.out.write(text + "\n")
        self.out.flush()

    def intro(self, broker, bootstrap, vm_port, work, ui):
        url, query = ui
        self._print(f"demo: Kafka: {broker_words(broker)} at {bootstrap}")
        self._print(f"demo: VictoriaMetrics at http://127.0.0.1:{vm_port}; logs and data in {work}")
        if url:
            self._print(f"demo: graph the readings in VictoriaMetrics' UI while the demo runs: {url}")
        else:
            self._print("demo: this VictoriaMetrics has no web UI (Debian's package leaves vmui out); "
                        "with VictoriaMetrics' own release its UI would graph this query, at "
                        f"http://127.0.0.1:{vm_port}/vmui/ : {query}")

    def phase(self, number, text):
        line = f"demo {number}/6 {text}"
        if self.terminal and self.drawn:
            self.record.append(line)
        else:
            self._print(line)

    def more(self, text):
        self.phase_continuation(text)

    def phase_continuation(self, text):
        line = f"         {text}"
        if self.terminal and self.drawn:
            self.record.append(line)
        else:
            self._print(line)

    def panel(self, watch, story, phase, elapsed):
        if not self.terminal:
            return
        columns, rows = shutil.get_terminal_size()
        lines = panel_lines(watch, story, phase, elapsed, self.seconds, 30 if columns >= 100 else 20)
        if rows <= len(lines):
            return  # redrawn in place it would scroll: the phase lines follow at the end
        # A line longer than the terminal would wrap, and the redraw land a line off.
        lines = [line[:columns - 1] for line in lines]
        lines[0] = f"\x1b[1m{lines[0]}\x1b[0m"
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A\r")
        self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)

    def panel_done(self):
        if self.drawn:
            self.drawn = 0
            for line in self.record:
                self._print(line)
            self.record.clear()


def broker_words(kind):
    if kind == "mock":
        return ("librdkafka's mock cluster (the Tansu broker is not installed yet; "
                "scripts/test installs it, or: cargo install tansu --locked --version 0.6.0 --features dynostore,libsql)")
    return "the Tansu broker, its data in sqlite"


def panel_lines(watch, story, phase, elapsed, seconds, spark_width):
    s = watch.last()
    title = PHASES[phase - 1] if phase < 6 else "backlog drained, readings flowing; then the count"
    steps = "  ".join(("✓ " if i + 1 < phase else "▶ " if i + 1 == phase else "· ") + p for i, p in enumerate(STEPS))
    lines = [
        f"Buoy demo  {clock(elapsed)} / {clock(seconds)}   phase {phase}/6: {title}",
        "─" * 78,
        " " + steps,
        "",
        f" {'sensor':<11} {'field':<16} {'latest':>13}   last minute in VictoriaMetrics",
    ]
    for sensor, metric, label, unit, fmt in demo_watch.FIELDS:
        values, latest_t = s.fields.get(metric, ([], None))
        present = [v for v in values if v is not None]
        latest = (fmt.format(present[-1]) + f" {unit:<4}") if present else f"{'—':>8} {unit:<4}"
        age = time.time() - latest_t if latest_t else 0
        stale = f" {age:.0f}s old" if age > 5 else ""
        lines.append(f" {sensor:<11} {label:<16} {latest:>13}   {demo_watch.sparkline(values, spark_width)}{stale}")
    lines.append("")
    link = s.link.upper() if s.link in ("up", "down") else s.link
    note = f"  (broker stopped {elapsed - story.cut_at:.0f} s ago)" if phase in (3, 4) else ""
    lines.append(f" Kafka link   {link}{note}")
    oldest = f", oldest {s.oldest:.1f} s" if s.oldest else ""
    backlog = f"{s.backlog} readings waiting{oldest}" if s.backlog is not None else "?"
    backlog_spark = demo_watch.sparkline([b for b in watch.series("backlog")][-spark_width:], spark_width)
    lines.append(f" journal      {backlog:<36} {backlog_spark}")
    lines.append(f" agent        sampled {s.sampled} ({watch.rate('sampled'):.1f}/s) · journaled {s.journaled}"
                 f" · forwarded {s.forwarded} ({watch.rate('forwarded'):.1f}/s)")
    lines.append(f" uplink       wrote {s.written:.0f} lines ({watch.rate('written'):.1f}/s) · lag {s.lag:.0f}")
    lines.append(f" VictoriaMetrics  {s.points} readings")
    return lines
