"""What scripts/demo reads once a second: the agent's status (its own
`edge-agent status --json`), the uplink's metrics, and VictoriaMetrics (the
readings as the database holds them). Keeps the history the panel's
sparklines and the phase lines are drawn from."""
import collections
import json
import time
import urllib.parse
import urllib.request

SPARK = "▁▂▃▄▅▆▇█"
WINDOW_S = 60
STEP_S = 2
HISTORY = 120  # samples kept, one a second

# The fields shown per sensor: (sensor, VictoriaMetrics metric, label, unit, format).
FIELDS = [
    ("env", "weather_temperature_c", "temperature", "°C", "{:8.2f}"),
    ("env", "weather_pressure_hpa", "pressure", "hPa", "{:8.1f}"),
    ("visibility", "visibility_visibility_m", "visibility", "m", "{:8.0f}"),
    ("cpu", "host_cpu_temperature_c", "CPU temperature", "°C", "{:8.1f}"),
    ("fan", "fan_fan_rpm", "fan speed", "rpm", "{:8.0f}"),
]
# One field per measurement: its samples count the readings.
COUNTED = ["weather_pressure_hpa", "visibility_visibility_m", "host_cpu_temperature_c", "fan_fan_rpm"]


def sparkline(values, width):
    """values: numbers or None (no data); the last `width`, scaled to their range."""
    values = list(values)[-width:]
    present = [v for v in values if v is not None]
    if not present:
        return "·" * width
    low, high = min(present), max(present)
    span = (high - low) or 1.0
    chars = ["·" if v is None else SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in values]
    return "·" * (width - len(chars)) + "".join(chars)


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def prometheus_text(url):
    values = {}
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
    return values


class Seen:
    """One second's look at the pipeline."""

    def __init__(self, elapsed, state, uplink, fields, points):
        self.elapsed, self.state, self.uplink, self.fields, self.points = elapsed, state, uplink, fields, points
        state = state or {}
        journal = state.get("journal") or {}
        self.link = state.get("link", {}).get("state", "not answering")
        self.link_up = self.link == "up"
        self.backlog = journal.get("records")
        self.oldest = journal.get("oldest_unsent_age_s")
        self.sampled = state.get("sampled", 0)
        self.journaled = state.get("journaled", 0)
        self.forwarded = state.get("forwarded", 0)
        self.written = sum(v for k, v in uplink.items() if k.startswith("uplink_lines_written_total"))
        self.lag = sum(v for k, v in uplink.items() if k.startswith("uplink_consumer_lag"))


class Watch:
    def __init__(self, svc, vm_port, metrics_port, device):
        self.svc, self.device = svc, device
        self.vm = f"http://127.0.0.1:{vm_port}"
        self.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        # Enough for the rates and sparklines; a long demo does not grow.
        self.history = collections.deque(maxlen=HISTORY)
        self.marks = {}

    def _vm(self, path, **params):
        return get_json(f"{self.vm}{path}?{urllib.parse.urlencode(params)}")["data"]["result"]

    def _fields(self, now):
        """Per shown field: the values of the last minute in STEP_S buckets (None:
        nothing in VictoriaMetrics for that bucket), and the latest value's time."""
        names = "|".join(f[1] for f in FIELDS)
        query = f'max_over_time({{device_id="{self.device}",__name__=~"{names}"}}[{STEP_S}s]) keep_metric_names'
        start = int(now) - WINDOW_S
        steps = list(range(start, int(now) + 1, STEP_S))
        out = {}
        for series in self._vm("/api/v1/query_range", query=query, start=start, end=steps[-1], step=f"{STEP_S}s"):
            name = series["metric"].get("__name__")
            by_time = {int(t): float(v) for t, v in series["values"]}
            out.setdefault(name, ([by_time.get(t) for t in steps], max(by_time) if by_time else None))
        return out

    def _points(self):
        names = "|".join(COUNTED)
        result = self._vm("/api/v1/query",
                          query=f'sum(count_over_time({{device_id="{self.device}",__name__=~"{names}"}}[1h]))')
        return int(float(result[0]["value"][1])) if result else 0

    def sample(self, elapsed):
        now = time.time()
        state = self.svc.agent_status()
        try:
            uplink = prometheus_text(self.metrics)
        except OSError:
            uplink = {}
        try:
            fields, points = self._fields(now), self._points()
        except OSError:
            fields, points = {}, (self.history[-1].points if self.history else 0)
        seen = Seen(elapsed, state, uplink, fields, points)
        self.history.append(seen)
        return seen

    def last(self):
        return self.history[-1]

    def rate(self, attr, seconds=5):
        """Per second over the last `seconds` samples."""
        recent = [s for s in self.history if s.elapsed >= self.history[-1].elapsed - seconds]
        if len(recent) < 2 or recent[-1].elapsed == recent[0].elapsed:
            return 0.0
        return (getattr(recent[-1], attr) - getattr(recent[0], attr)) / (recent[-1].elapsed - recent[0].elapsed)

    def series(self, attr):
        return [getattr(s, attr) for s in self.history]

    def mark(self, name, elapsed):
        self.marks[name] = (elapsed, self.history[-1])

    def at(self, name):
        return self.marks[name]

    # One line per phase, for output that is not a terminal (and the record).
    def flowing_line(self, elapsed):
        s = self.last()
        return (f"readings flowing: in {elapsed:.0f} s the agent sampled {s.sampled} readings "
                f"({self.rate('sampled'):.1f}/s) and forwarded {s.forwarded}; "
                f"VictoriaMetrics holds {s.points}; Kafka link {s.link}")

    def piled_line(self, elapsed):
        s = self.last()
        cut_t, cut = self.at("cut")
        oldest = f"{s.oldest:.1f} s" if s.oldest is not None else "?"
        return (f"readings piling up: {elapsed - cut_t:.0f} s without a broker; Kafka link {s.link}; "
                f"sampling went on ({s.sampled - cut.sampled} readings, {self.rate('sampled'):.1f}/s); "
                f"{s.backlog} wait in the journal, the oldest {oldest}; VictoriaMetrics holds {s.points}, "
                f"what was forwarded before the cut ({cut.forwarded})")

    def restored_line(self, elapsed):
        restore_t, _ = self.at("restore")
        return (f"link restored: the broker started again at +{restore_t:.0f} s; "
                f"the agent's Kafka link was up {elapsed - restore_t:.0f} s later")

    def drained_line(self, elapsed):
        up_t, up = self.at("link_up")
        forwarded_t, _ = self.at("forwarded")
        waiting = up.journaled - self.at("cut")[1].forwarded
        s = self.last()
        landed = (f"in VictoriaMetrics within {elapsed - up_t:.0f} s ({s.points} readings there)"
                  if s.points >= up.journaled else f"VictoriaMetrics holds {s.points} so far")
        return (f"backlog drained: the {waiting} readings journaled since the cut were forwarded "
                f"within {forwarded_t - up_t:.0f} s of the link coming back, while sampling went on, "
                f"and {landed}")
