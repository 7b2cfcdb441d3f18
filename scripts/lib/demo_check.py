"""The end of scripts/demo: with the agent stopped, what it journaled is set
against what is on the Kafka topic (read with kafka-python, which shares no
code with the agent or the uplink) and against the points VictoriaMetrics
holds. Nothing here is a constant: lost and duplicated are counted."""
import json
import time
import urllib.parse
import urllib.request

LIVE_HORIZON_S = 5  # forward.live_horizon: younger readings are sent first


class Result:
    def __init__(self, ok, lines):
        self.ok, self.lines = ok, lines


def unescape(text):
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def split_unescaped(text, sep):
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def reading_key(line):
    """(tags, timestamp in ms) of one line of line protocol: what identifies
    its point in VictoriaMetrics (the series' labels, the sample's time)."""
    series = split_unescaped(line, " ")[0]
    tags = tuple(sorted(tuple(unescape(p) for p in split_unescaped(t, "=")[:2])
                        for t in split_unescaped(series, ",")[1:]))
    return tags, int(line.rsplit(" ", 1)[1]) // 1_000_000


def read_topic(bootstrap, topic, broker, idle_s=3):
    """Every record of the topic, in offset order: (offset, buoy-seq, line)."""
    from kafka import KafkaConsumer, TopicPartition
    # kafka-python 3 cannot decode the mock cluster's answer to ApiVersions v3;
    # told the protocol version, it does not ask.
    pinned = {"api_version": (2, 1)} if broker == "mock" else {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", **pinned)
    partitions = consumer.partitions_for_topic(topic) or {0}
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    consumer.seek_to_beginning()
    records, last = [], time.monotonic()
    while time.monotonic() - last < idle_s:
        batch = consumer.poll(timeout_ms=500)
        for msgs in batch.values():
            for m in msgs:
                headers = {k: v.decode() for k, v in (m.headers or [])}
                records.append((m.offset, headers.get("buoy-seq"), m.value.decode()))
        if batch:
            last = time.monotonic()
    consumer.close()
    return sorted(records)


def vm_readings(vm_port, device):
    """Distinct (labels, millisecond) of the device's points in VictoriaMetrics:
    the fields of one reading share them, so each is one reading."""
    match = urllib.parse.urlencode({"match[]": f'{{device_id="{device}"}}'})
    keys = set()
    with urllib.request.urlopen(f"http://127.0.0.1:{vm_port}/api/v1/export?{match}", timeout=30) as r:
        for line in r:
            series = json.loads(line)
            labels = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
            keys.update((labels, int(t)) for t in series["timestamps"])
    return keys


def wait_for_points(vm_port, device, wanted, seconds=60):
    """VictoriaMetrics' points once the uplink has written every reading (or
    what it holds after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        keys = vm_readings(vm_port, device)
        if wanted <= keys or time.monotonic() > deadline:
            return keys
        time.sleep(1)


def live_first(records, facts):
    """How many live readings reached Kafka before the first reading of the
    backlog: live, sampled within the live horizon of the moment the demo
    saw the link back up (so surely live when the agent saw it); backlog,
    sampled during the outage, older than the horizon when the broker came
    back (so surely backlog). None when there was no such backlog."""
    live_from = (facts["link_up"] - LIVE_HORIZON_S) * 1000
    backlog_from, backlog_to = facts["cut"] * 1000, (facts["restore"] - LIVE_HORIZON_S) * 1000
    live_before = 0
    for _, _, line in records:
        t = reading_key(line)[1]
        if backlog_from <= t < backlog_to:
            return live_before
        if t >= live_from:
            live_before += 1
    return None


def tally(journaled, in_journal, sent, points):
    """(lost, duplicated, ok): `sent` are the keys of the readings on the topic,
    `points` those in the database. A reading journaled is lost unless it is
    still in the journal or its point is in the database; a point that is no
    sent reading's is a duplicate (a reading written twice as two points)."""
    delivered = len(sent & points)
    lost = journaled - in_journal - delivered
    duplicated = len(points) - delivered
    return lost, duplicated, lost == 0 and duplicated == 0


def check(final, broker, bootstrap, topic, facts, vm_port, device):
    journaled, in_journal = final["journaled"], (final.get("journal") or {}).get("records", 0)
    records = read_topic(bootstrap, topic, broker)
    by_seq = {}
    for _, seq, line in records:
        by_seq.setdefault(seq, reading_key(line))
    expected = set(by_seq.values())
    points = wait_for_points(vm_port, device, expected)
    lost, duplicated, ok = tally(journaled, in_journal, expected, points)
    resent = len(records) - len(by_seq)
    first = live_first(records, facts)
    lines = [
        f"end: the agent sampled {final['sampled']} readings, journaled {journaled}, forwarded {final['forwarded']}"
        + (f"; {in_journal} still in its journal" if in_journal else ""),
        f"Kafka topic {topic}: {len(records)} records, {len(by_seq)} distinct readings (buoy-seq)"
        + (f", {resent} sent twice after the outage (the same reading, the same point)" if resent else ""),
        f"VictoriaMetrics: {len(points)} readings (distinct series and millisecond)",
        ("live readings first: " + (f"{first} live readings reached Kafka before the first of the backlog"
                                    if first else "no: the backlog went first" if first == 0 else
                                    "not seen (no backlog older than the live horizon)")),
        (f"check: journaled {journaled} = {len(points)} in VictoriaMetrics"
         + (f" + {in_journal} in the journal" if in_journal else "")
         + f": {lost} lost, {duplicated} duplicated" + ("" if ok else "  FAILED")),
    ]
    return Result(ok, lines)
