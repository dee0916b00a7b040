#!/usr/bin/env python3
"""Real Kafka clients against a real `sluice` broker, end to end.

For each client (librdkafka through confluent-kafka, librdkafka 2.0.2 through Debian's kcat,
kafka-python, aiokafka, kafkajs) and each compression codec (none, gzip, snappy, lz4, zstd):
create an 8-partition topic, produce `--records` keyed records with headers and timestamps,
then restart the broker (SIGTERM, start again on the same data directory) and consume every
topic back by partition assignment. A topic passes only when every record is there exactly
once with the right key, value, headers and timestamp, offsets are contiguous and the
producer's order is intact in each partition, and every key lives in one partition.

kafkajs' consumer always joins a group, so its topics are read back with confluent-kafka
(by assignment, like the others); groups.py covers kafkajs as a group consumer.

usage: check.py --broker target/release/sluice [--records N] [--clients a,b]
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

PARTITIONS = 8
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
T0 = 1_700_000_000_000
HERE = os.path.dirname(os.path.abspath(__file__))


def key_of(i):
    return f"key-{i % 997}"


def value_of(client, codec, i):
    # Must match kafkajs_produce.js.
    return f"{client}|{codec}|{i}|" + "x" * (i % 61)


@dataclass
class Rec:
    partition: int
    offset: int
    key: str
    value: str
    headers: dict
    ts: int


def text(b):
    return None if b is None else (b.decode() if isinstance(b, (bytes, bytearray)) else b)


def headers_dict(pairs):
    return {k: text(v) for k, v in (pairs or [])}


class Broker:
    def __init__(self, binary, data_dir, log_path, extra_args=()):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "start",
                "--listen",
                self.bootstrap,
                "--data-dir",
                self.data_dir,
                "--prop",
                f"num.partitions={PARTITIONS}",
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("broker did not start listening within 30 s")

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        if code != 0:
            raise RuntimeError(f"broker exited with {code} after SIGTERM")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# Clients: each has `produce(topic, codec, n)` (creating the topic) and `consume(topic)`.


class Confluent:
    name = "confluent"
    exact = True  # per-record timestamps and headers set by the producer

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def produce(self, topic, codec, n):
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        p = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "compression.type": codec,
                "acks": "all",
                "linger.ms": 10,
            }
        )
        state = {"ok": 0, "errors": []}

        def done(err, _msg):
            if err:
                state["errors"].append(str(err))
            else:
                state["ok"] += 1

        for i in range(n):
            args = dict(
                key=key_of(i),
                value=value_of(self.name, codec, i),
                headers=[("seq", str(i).encode()), ("client", self.name.encode())],
                timestamp=T0 + i,
                on_delivery=done,
            )
            while True:
                try:
                    p.produce(topic, **args)
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 5000 == 0:
                p.poll(0)
        left = p.flush(60)
        if left or state["errors"] or state["ok"] != n:
            raise AssertionError(
                f"{left} undelivered, {state['ok']} acknowledged, errors {state['errors'][:3]}"
            )

    def consume(self, topic):
        return confluent_consume(self.bootstrap, topic)


def confluent_consume(bootstrap, topic):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "sluice-check-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    try:
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        want = sum(ends.values())
        out = []
        deadline = time.time() + 120
        while len(out) < want and time.time() < deadline:
            for m in c.consume(10000, 1.0):
                if m.error():
                    raise AssertionError(f"consume error: {m.error()}")
                out.append(
                    Rec(
                        m.partition(),
                        m.offset(),
                        text(m.key()),
                        text(m.value()),
                        headers_dict(m.headers()),
                        m.timestamp()[1],
                    )
                )
        return out
    finally:
        c.close()


class KafkaPython:
    name = "kafka-python"
    exact = True

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def produce(self, topic, codec, n):
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        admin.close()
        # kafka-python 3's defaults: idempotence on, acks=all.
        p = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            compression_type=None if codec == "none" else codec,
            linger_ms=10,
        )
        futures = [
            p.send(
                topic,
                key=key_of(i).encode(),
                value=value_of(self.name, codec, i).encode(),
                headers=[("seq", str(i).encode()), ("client", self.name.encode())],
                timestamp_ms=T0 + i,
            )
            for i in range(n)
        ]
        p.flush(60)
        for f in futures:
            f.get(0)  # raises the delivery error, if any
        p.close()

    def consume(self, topic):
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning()
        want = sum(c.end_offsets(tps).values())
        out = []
        deadline = time.time() + 120
        while len(out) < want and time.time() < deadline:
            for tp, msgs in c.poll(1000, max_records=10000).items():
                for m in msgs:
                    out.append(
                        Rec(
                            tp.partition,
                            m.offset,
                            text(m.key),
                            text(m.value),
                            headers_dict(m.headers),
                            m.timestamp,
                        )
                    )
        c.close()
        return out


class AioKafka:
    name = "aiokafka"
    exact = True

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def produce(self, topic, codec, n):
        asyncio.run(self._produce(topic, codec, n))

    async def _produce(self, topic, codec, n):
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            resp = await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
            errors = [e for e in resp.topic_errors if e[1] != 0]
            if errors:
                raise AssertionError(f"create_topics: {errors}")
        finally:
            await admin.close()
        p = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            compression_type=None if codec == "none" else codec,
            acks="all",
            linger_ms=10,
        )
        await p.start()
        try:
            futures = []
            for i in range(n):
                futures.append(
                    await p.send(
                        topic,
                        key=key_of(i).encode(),
                        value=value_of(self.name, codec, i).encode(),
                        headers=[("seq", str(i).encode()), ("client", self.name.encode())],
                        timestamp_ms=T0 + i,
                    )
                )
            await p.flush()
            await asyncio.gather(*futures)
        finally:
            await p.stop()

    def consume(self, topic):
        return asyncio.run(self._consume(topic))

    async def _consume(self, topic):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            c.assign(tps)
            await c.seek_to_beginning()
            want = sum((await c.end_offsets(tps)).values())
            out = []
            deadline = time.time() + 120
            while len(out) < want and time.time() < deadline:
                batches = await c.getmany(timeout_ms=1000, max_records=10000)
                for tp, msgs in batches.items():
                    for m in msgs:
                        out.append(
                            Rec(
                                tp.partition,
                                m.offset,
                                text(m.key),
                                text(m.value),
                                headers_dict(m.headers),
                                m.timestamp,
                            )
                        )
            return out
        finally:
            await c.stop()


class Kcat:
    """Debian's kcat links librdkafka 2.0.2. Its producer sets only static headers and the
    current time, so those are what is checked. The topic is auto-created on first produce
    (the broker runs with num.partitions=8)."""

    name = "kcat"
    exact = False

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def produce(self, topic, codec, n):
        lines = "".join(f"{key_of(i)}\t{value_of(self.name, codec, i)}\n" for i in range(n))
        subprocess.run(
            [
                "kcat", "-b", self.bootstrap, "-P", "-t", topic, "-K", "\t",
                "-z", codec, "-H", f"client={self.name}", "-X", "acks=all",
                "-X", "linger.ms=10",
            ],
            input=lines.encode(),
            check=True,
            timeout=300,
        )
        meta = json.loads(
            subprocess.run(
                ["kcat", "-b", self.bootstrap, "-L", "-t", topic, "-J"],
                capture_output=True, check=True, timeout=60,
            ).stdout
        )
        parts = meta["topics"][0]["partitions"]
        if len(parts) != PARTITIONS:
            raise AssertionError(f"auto-created {topic} has {len(parts)} partitions")

    def consume(self, topic):
        out = []
        for p in range(PARTITIONS):
            res = subprocess.run(
                [
                    "kcat", "-b", self.bootstrap, "-C", "-t", topic, "-p", str(p),
                    "-o", "beginning", "-e", "-q", "-J",
                ],
                capture_output=True, check=True, timeout=300,
            )
            for line in res.stdout.decode().splitlines():
                m = json.loads(line)
                h = m.get("headers") or []
                out.append(
                    Rec(
                        m["partition"],
                        m["offset"],
                        m["key"],
                        m["payload"],
                        dict(zip(h[0::2], h[1::2])),
                        m["ts"],
                    )
                )
        return out


class KafkaJs:
    name = "kafkajs"
    exact = True

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def produce(self, topic, codec, n):
        subprocess.run(
            [
                "node", os.path.join(HERE, "kafkajs_produce.js"), self.bootstrap, topic,
                codec, str(n), str(T0), str(PARTITIONS),
            ],
            check=True,
            timeout=600,
            env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
        )

    def consume(self, topic):
        return confluent_consume(self.bootstrap, topic)


CLIENTS = {c.name: c for c in [Confluent, Kcat, KafkaPython, AioKafka, KafkaJs]}


# ---------------------------------------------------------------------------------------


def verify(client, codec, recs, n, window):
    """Returns a list of problems (empty when the topic is exactly what was produced)."""
    problems = []
    if len(recs) != n:
        problems.append(f"consumed {len(recs)} records, produced {n}")
    seen = set()
    key_partition = {}
    by_partition = {}
    for r in recs:
        try:
            seq = int(r.value.split("|")[2])
        except (AttributeError, IndexError, ValueError):
            problems.append(f"p{r.partition}@{r.offset}: unexpected value {r.value!r:.60}")
            continue
        if seq in seen:
            problems.append(f"seq {seq} consumed twice")
        seen.add(seq)
        if r.value != value_of(client.name, codec, seq):
            problems.append(f"p{r.partition}@{r.offset}: value {r.value!r:.60}")
        if r.key != key_of(seq):
            problems.append(f"p{r.partition}@{r.offset}: key {r.key!r} for seq {seq}")
        if key_partition.setdefault(r.key, r.partition) != r.partition:
            problems.append(f"key {r.key} in partitions {key_partition[r.key]} and {r.partition}")
        if r.headers.get("client") != client.name:
            problems.append(f"p{r.partition}@{r.offset}: headers {r.headers}")
        if client.exact:
            if r.headers.get("seq") != str(seq):
                problems.append(f"p{r.partition}@{r.offset}: headers {r.headers} for seq {seq}")
            if r.ts != T0 + seq:
                problems.append(f"p{r.partition}@{r.offset}: timestamp {r.ts} for seq {seq}")
        elif not window[0] <= r.ts <= window[1]:
            problems.append(f"p{r.partition}@{r.offset}: timestamp {r.ts} outside {window}")
        by_partition.setdefault(r.partition, []).append((r.offset, seq))
    missing = n - len(seen)
    if missing > 0:
        problems.append(f"{missing} records never consumed")
    for p, rows in by_partition.items():
        offsets = [o for o, _ in rows]
        if offsets != list(range(len(rows))):
            problems.append(f"partition {p}: offsets are not 0..{len(rows) - 1} in order")
        seqs = [s for _, s in rows]
        if seqs != sorted(seqs):
            problems.append(f"partition {p}: producer order broken")
    if n >= 10 * PARTITIONS and len(by_partition) != PARTITIONS:
        problems.append(f"records landed in {len(by_partition)} partitions, not {PARTITIONS}")
    return problems


def self_test():
    """The verifier must reject each kind of damage it exists to catch."""
    import copy
    import zlib

    class Fake:
        name, exact = "fake", True

    n = 200
    good, next_offset = [], [0] * PARTITIONS
    for i in range(n):
        p = zlib.crc32(key_of(i).encode()) % PARTITIONS
        good.append(Rec(p, next_offset[p], key_of(i), value_of("fake", "none", i),
                        {"seq": str(i), "client": "fake"}, T0 + i))
        next_offset[p] += 1
    assert verify(Fake, "none", good, n, (0, 0)) == [], verify(Fake, "none", good, n, (0, 0))

    def damaged(f):
        recs = copy.deepcopy(good)
        f(recs)
        return verify(Fake, "none", recs, n, (0, 0))

    def swap_in_partition(recs):
        a, b = [i for i, r in enumerate(recs) if r.partition == recs[0].partition][:2]
        recs[a].value, recs[b].value = recs[b].value, recs[a].value
        recs[a].key, recs[b].key = recs[b].key, recs[a].key
        recs[a].headers, recs[b].headers = recs[b].headers, recs[a].headers
        recs[a].ts, recs[b].ts = recs[b].ts, recs[a].ts

    cases = {
        "lost": lambda r: r.pop(),
        "duplicated": lambda r: r.append(copy.deepcopy(r[0])),
        "reordered": swap_in_partition,
        "timestamp": lambda r: setattr(r[3], "ts", r[3].ts + 1),
        "header": lambda r: r[4].headers.update(seq="0"),
        "value": lambda r: setattr(r[5], "value", r[5].value + "y"),
        "key moved": lambda r: setattr(r[6], "partition", (r[6].partition + 1) % PARTITIONS),
    }
    for what, f in cases.items():
        assert damaged(f), f"verify() accepted a {what} record"


def main():
    self_test()
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True, help="path to the sluice binary")
    ap.add_argument("--records", type=int, default=100_000, help="records per topic")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--codecs", default=",".join(CODECS))
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-clients-")
    broker = Broker(os.path.abspath(args.broker), os.path.join(work, "data"),
                    os.path.join(work, "broker.log"))
    failures = []
    produced = []
    try:
        broker.start()
        for name in args.clients.split(","):
            client = CLIENTS[name](broker.bootstrap)
            for codec in args.codecs.split(","):
                topic = f"check-{name}-{codec}"
                began = time.time()
                try:
                    client.produce(topic, codec, args.records)
                except Exception as e:  # a client failure is a finding, not a crash
                    failures.append(f"{topic}: produce failed: {e!r}")
                    print(f"FAIL produce {topic}: {e!r}", flush=True)
                    continue
                took = time.time() - began
                window = (int(began * 1000) - 1000, int(time.time() * 1000) + 1000)
                produced.append((client, codec, topic, window))
                print(f"produced {args.records} to {topic} in {took:.1f} s", flush=True)

        print("restarting the broker (SIGTERM, then start on the same data)", flush=True)
        broker.stop()
        broker.start()

        for client, codec, topic, window in produced:
            began = time.time()
            try:
                recs = client.consume(topic)
                problems = verify(client, codec, recs, args.records, window)
            except Exception as e:
                problems = [f"consume failed: {e!r}"]
            took = time.time() - began
            if problems:
                failures.append(f"{topic}: {problems[:5]} ({len(problems)} problems)")
                print(f"FAIL {topic}: {problems[:5]}", flush=True)
            else:
                print(f"ok   {topic}: {len(recs)} records verified in {took:.1f} s", flush=True)
    finally:
        broker.kill()

    if failures:
        print("\nFAILURES:\n  " + "\n  ".join(failures))
        with open(broker.log_path) as f:
            print("\nbroker log tail:\n" + "".join(f.readlines()[-40:]))
        sys.exit(1)
    print(f"all {len(produced)} client/codec topics verified")


if __name__ == "__main__":
    main()
