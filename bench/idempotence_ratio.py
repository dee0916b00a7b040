#!/usr/bin/env python3
"""Produce throughput with idempotence on vs off, side by side in one run.

Starts a release broker (`--smp 2`), then alternates the same confluent-kafka (librdkafka)
workload with `enable.idempotence` false and true, `--rounds` times each, and prints the
median records/s of each and their ratio. librdkafka caps in-flight requests at 5 with
idempotence on; `--max-in-flight 5` applies that cap to both modes, which isolates what the
broker's producer-state checks cost.

usage: bench/idempotence_ratio.py [--records N] [--value-bytes B] [--rounds R]
                                  [--max-in-flight K]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "broker", "tests", "clients"))
from check import Broker  # noqa: E402


def run_once(bootstrap, topic, n, value, idempotent, max_in_flight):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": idempotent,
        "acks": "all",
        "linger.ms": 5,
    }
    if max_in_flight:
        conf["max.in.flight.requests.per.connection"] = max_in_flight
    p = Producer(conf)
    began = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, key=str(i % 1024))
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError("undelivered records")
    return n / (time.perf_counter() - began)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-in-flight", type=int, default=0,
                    help="max.in.flight.requests.per.connection for both modes (0: the "
                    "client's defaults, which idempotence caps at 5)")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "broker"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="sluice-idem-bench-")
    broker = Broker(os.path.join(ROOT, "target", "release", "sluice"),
                    os.path.join(work, "data"), os.path.join(work, "broker.log"))
    rates = {False: [], True: []}
    try:
        broker.start()
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("idem-bench", 8, 1)])["idem-bench"].result(30)
        value = b"v" * args.value_bytes
        for r in range(args.rounds):
            for idempotent in (False, True):
                rate = run_once(broker.bootstrap, "idem-bench", args.records, value, idempotent,
                                args.max_in_flight)
                rates[idempotent].append(rate)
                print(f"round {r}: idempotence={idempotent}: {rate:,.0f} records/s", flush=True)
    finally:
        broker.kill()
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median off {off:,.0f} records/s, on {on:,.0f} records/s, on/off = {on / off:.3f}")


if __name__ == "__main__":
    main()
