#!/usr/bin/env python3
"""Time for a 3-member consumer group to become Stable after its last member joins.

Three confluent-kafka (librdkafka) consumers subscribe to a fresh topic in a fresh group, one
after another; the clock starts when the last one subscribes and stops when all three hold
their assignment. Kafka semantics put `group.initial.rebalance.delay.ms` (broker side, 3000
by default) into this time; the rest is the clients' and the broker's work. Repeats --rounds
times with new groups and prints each time and the median.

usage: group_timing.py [--bootstrap 127.0.0.1:9092] [--rounds 5] [--partitions 12]
"""

import argparse
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic


def one_round(bootstrap, topic, partitions):
    group = f"timing-{uuid.uuid4().hex[:8]}"
    assigned = [None, None, None]
    stop = threading.Event()
    consumers = []

    def run(i, c):
        while not stop.is_set():
            c.poll(0.05)
            if assigned[i] is None and c.assignment():
                assigned[i] = time.monotonic()

    threads = []
    for i in range(3):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        c.subscribe([topic])
        consumers.append(c)
        last_join = time.monotonic()
        t = threading.Thread(target=run, args=(i, c))
        t.start()
        threads.append(t)
    deadline = time.monotonic() + 60
    while any(a is None for a in assigned) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    for c in consumers:
        c.close()
    if any(a is None for a in assigned):
        raise SystemExit("group did not form within 60 s")
    return (max(assigned) - last_join) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=12)
    a = ap.parse_args()
    topic = f"timing-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, a.partitions, 1)])[topic].result(30)
    times = [one_round(a.bootstrap, topic, a.partitions) for _ in range(a.rounds)]
    print("stable after last join (ms):", " ".join(f"{t:.0f}" for t in times),
          f"| median {statistics.median(times):.0f} ms")


if __name__ == "__main__":
    main()
