#!/usr/bin/env python3
"""Metadata-quorum measurements on a 3-node cluster started by deploy/cluster.sh:

1. propagation: CreateTopics (through one node) returns -> the topic is in every broker's
   Metadata; p50 / p99 over --topics creations;
2. controller failover: kill -9 of the active controller -> the next CreateTopics through a
   surviving node succeeds; each of --failovers rounds (the killed node restarted between);
3. start-up with --partitions partitions in the metadata log: one node restarted, spawn ->
   "sluice ready".

usage: bench/cluster_metadata.py --broker target/release/sluice [--topics 100]
       [--failovers 3] [--partitions 10000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(ROOT, "deploy", "cluster.sh")


def free_base_port():
    """A base port whose 3-node ports are free (deploy/cluster.sh free-base-port)."""
    out = subprocess.run(["bash", SCRIPT, "free-base-port", "3", "--base-port", "25000"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return int(out.strip())


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=10000)
    args = ap.parse_args()
    from confluent_kafka.admin import AdminClient, NewTopic

    base = free_base_port()
    with tempfile.TemporaryDirectory() as d:
        common = ["--dir", d, "--bin", os.path.abspath(args.broker), "--base-port", str(base),
                  "--prop", "sluice.log.preallocate.bytes=1048576"]
        run = lambda *a: subprocess.run(["bash", SCRIPT, *a, *common], check=True,
                                        stdout=subprocess.DEVNULL, timeout=300)
        run("up", "3")
        addrs = [f"127.0.0.1:{base + i}" for i in range(3)]
        admins = [AdminClient({"bootstrap.servers": a}) for a in addrs]

        def controller():
            for i in range(3):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{base + 200 + i}/v1/brokers",
                                                timeout=2) as r:
                        c = json.load(r)["cluster"]["controller"]
                        if c is not None:
                            return c
                except OSError:
                    pass
            return None

        def create(admin, name, partitions=1, timeout=30, exist_ok=False):
            from confluent_kafka import KafkaError, KafkaException

            for f in admin.create_topics([NewTopic(name, partitions, 1)],
                                         operation_timeout=timeout).values():
                try:
                    f.result(timeout)
                except KafkaException as e:
                    # The client retries a request whose connection broke (a node of the
                    # failover rounds restarted): the first try may have created it.
                    if not (exist_ok and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):
                        raise

        try:
            # 1. propagation
            lat = []
            for i in range(args.topics):
                name = f"prop-{i}"
                create(admins[i % 3], name)
                t0 = time.perf_counter()
                pending = set(range(3))
                while pending:
                    for j in list(pending):
                        md = admins[j].list_topics(name, timeout=5)
                        t = md.topics.get(name)
                        if t is not None and t.error is None and t.partitions:
                            pending.discard(j)
                lat.append((time.perf_counter() - t0) * 1000)
            print(f"metadata propagation over {len(lat)} topics: p50 {statistics.median(lat):.2f} ms,"
                  f" p99 {pct(lat, 0.99):.2f} ms, max {max(lat):.2f} ms")

            # 2. failover
            gaps = []
            for r in range(args.failovers):
                c = controller()
                survivor = c % 3  # node c+1's index is c; the next node
                subprocess.run(["bash", SCRIPT, "kill", str(c), *common], check=True,
                               stdout=subprocess.DEVNULL)
                t0 = time.perf_counter()
                k = 0
                while True:
                    try:
                        create(admins[survivor], f"fail-{r}-{k}", timeout=10)
                        break
                    except Exception:
                        k += 1
                        time.sleep(0.01)
                gaps.append((time.perf_counter() - t0) * 1000)
                subprocess.run(["bash", SCRIPT, "start", str(c), *common], check=True,
                               stdout=subprocess.DEVNULL, timeout=300)
            print(f"controller failover (kill -9 -> next CreateTopics ok): "
                  + ", ".join(f"{g:.0f} ms" for g in gaps)
                  + f"; median {statistics.median(gaps):.0f} ms")

            # 3. start-up with many partitions in the metadata log
            per_topic = 1000
            for i in range(max(1, args.partitions // per_topic)):
                create(admins[0], f"many-{i}", per_topic, timeout=120, exist_ok=True)
            times = []
            for node in (1, 2):
                subprocess.run(["bash", SCRIPT, "stop", str(node), *common], check=True,
                               stdout=subprocess.DEVNULL, timeout=120)
                t0 = time.perf_counter()
                subprocess.run(["bash", SCRIPT, "start", str(node), *common], check=True,
                               stdout=subprocess.DEVNULL, timeout=600)
                times.append(time.perf_counter() - t0)
            print(f"start-up with {args.partitions} partitions in the metadata log "
                  f"(~{args.partitions // 3} local): " + ", ".join(f"{t:.2f} s" for t in times))
        finally:
            subprocess.run(["bash", SCRIPT, "down", *common], stdout=subprocess.DEVNULL,
                           timeout=300)


if __name__ == "__main__":
    main()
