#!/usr/bin/env python3
"""Reads every record of a Kafka topic with kafka-python and prints one JSON
object per record. kafka-python is a pure-Python client, so what it sees does
not depend on librdkafka, which both Buoy binaries use.

usage: read_topic.py BOOTSTRAP TOPIC IDLE_SECONDS [EXPECTED]

Stops after IDLE_SECONDS without a new record, or once EXPECTED records
have been read and a further idle second brought nothing. Counts what it
reads; it never trusts the broker's end offsets.
"""
import base64
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main():
    bootstrap, topic, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
    expected = int(sys.argv[4]) if len(sys.argv) > 4 else None
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    deadline = time.time() + 30
    partitions = None
    while not partitions:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            if time.time() > deadline:
                sys.exit(f"topic {topic} not found")
            time.sleep(0.5)
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    consumer.seek_to_beginning()
    count = 0
    last = time.time()
    while True:
        batch = consumer.poll(timeout_ms=500)
        for records in batch.values():
            for m in records:
                count += 1
                print(json.dumps({
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": m.key.decode("utf-8", "replace") if m.key is not None else None,
                    "headers": {k: v.decode("utf-8", "replace") for k, v in (m.headers or [])},
                    "value_b64": base64.b64encode(m.value or b"").decode(),
                }))
        if batch:
            last = time.time()
        quiet = time.time() - last
        if quiet >= idle or (expected is not None and count >= expected and quiet >= 1):
            break
    consumer.close()


if __name__ == "__main__":
    main()
