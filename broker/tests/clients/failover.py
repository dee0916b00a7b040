#!/usr/bin/env python3
"""Leader failover under load: nothing acknowledged lost, nothing duplicated, one history.

A 3-node cluster (deploy/cluster.sh), a topic with replication factor 3 and
min.insync.replicas=2. Idempotent acks=all producers of confluent-kafka, kafka-python and
aiokafka write continuously (each to every partition, its own numbered values) while the
leader of one of the partitions is killed with SIGKILL every `--interval` seconds for
`--rounds` rounds, and started again after a short random pause. Consumers of
confluent-kafka and kafka-python read every partition from the start throughout. At the end
every partition is read back whole, and the checker judges the history:

- every acknowledged record is in the final log, at the offset it was acknowledged at;
- no record is stored twice (idempotent retries across a failover are de-duplicated);
- each producer's records keep their order within a partition;
- every consumer saw, at each offset, the record the final log holds there (no consumer
  ever read a suffix that a failover later discarded), at increasing offsets.

The checker has a self-test (run first, every time): it is fed a good history and
histories with a lost, a duplicated, a moved, a reordered and a divergent record, and
must pass the first and name the fault in each of the others.

Before that, a consumer group whose coordinator's broker is killed must find the new
coordinator, keep every committed offset, and resume from them.

usage: failover.py --broker target/release/sluice [--rounds 20] [--interval 15]
       failover.py --self-test
(internal: failover.py --role produce-confluent|... --bootstrap B --topic T --out F --stop F)
"""

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
SCRIPT = os.path.join(ROOT, "deploy", "cluster.sh")
PARTITIONS = 3
PRODUCERS = ["confluent", "kafka-python", "aiokafka"]
CONSUMERS = ["confluent", "kafka-python"]
# Each producer keeps at most this many records unacknowledged (a steady, modest load on a
# 2-core machine that also runs three brokers).
IN_FLIGHT = 200


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------
# The checker


def check_history(acked, consumed, final):
    """Returns a list of problems (empty when the history is correct).

    acked: {producer: [(partition, offset, value)]} in acknowledgement order;
    consumed: {consumer: [(partition, offset, value)]} in consumption order;
    final: [(partition, offset, value)], the whole log of every partition in offset order.
    A value names its producer and its sequence number: "<producer>-<seq>".
    """
    problems = []
    at = {}
    where = {}
    last = {}
    for p, o, v in final:
        if p in last and o <= last[p]:
            problems.append(f"unordered: final log, partition {p} offset {o} after {last[p]}")
        last[p] = o
        at[(p, o)] = v
        if v in where:
            problems.append(f"duplicate: {v} at p{where[v][0]}@{where[v][1]} and p{p}@{o}")
        else:
            where[v] = (p, o)
    for producer, records in acked.items():
        lost = []
        for p, o, v in records:
            if v not in where:
                lost.append(f"{v} (acknowledged at p{p}@{o})")
            elif where[v] != (p, o):
                problems.append(
                    f"moved: {v} acknowledged at p{p}@{o}, stored at p{where[v][0]}@{where[v][1]}"
                )
        if lost:
            problems.append(f"lost: {len(lost)} acknowledged records of {producer}, first {lost[:3]}")
    # A producer's records keep their order within a partition.
    seqs = {}
    for p, o, v in final:
        producer, _, seq = v.rpartition("-")
        prev = seqs.get((producer, p))
        if prev is not None and int(seq) <= prev:
            problems.append(f"reordered: {v} at p{p}@{o} after {producer}-{prev}")
        seqs[(producer, p)] = int(seq)
    for consumer, records in consumed.items():
        pos = {}
        divergent = []
        for p, o, v in records:
            if p in pos and o <= pos[p]:
                problems.append(f"backwards: consumer {consumer}, partition {p} offset {o} after {pos[p]}")
            pos[p] = o
            if at.get((p, o)) != v:
                divergent.append(f"p{p}@{o} read {v}, log holds {at.get((p, o))}")
        if divergent:
            problems.append(
                f"divergent: consumer {consumer} read {len(divergent)} records the log does "
                f"not hold, first {divergent[:3]}"
            )
    return problems


def self_test():
    """The checker must pass a good history and name each kind of fault."""
    final = []
    acked = {"a": [], "b": []}
    for p in range(2):
        for i in range(10):
            v = f"{'ab'[i % 2]}-{p * 100 + i}"
            final.append((p, i, v))
            acked[v[0]].append((p, i, v))
    consumed = {"c": list(final)}
    assert check_history(acked, consumed, final) == [], check_history(acked, consumed, final)

    def expect(kind, acked, consumed, final):
        problems = check_history(acked, consumed, final)
        if not any(x.startswith(kind + ":") for x in problems):
            raise AssertionError(f"self-test: a {kind} history passed: {problems}")

    # Lost: an acknowledged record missing from the final log.
    expect("lost", acked, {}, [r for r in final if r != (0, 4, "a-4")])
    # Duplicate: the same record stored twice.
    expect("duplicate", acked, {}, final + [(1, 10, "a-104")])
    # Moved: stored, but not where it was acknowledged.
    moved = [(p, o + 1 if (p, o) == (1, 9) else o, v) for p, o, v in final]
    expect("moved", acked, {}, moved)
    # Reordered: a producer's later record before its earlier one.
    swapped = list(final)
    swapped[0], swapped[2] = (0, 0, "a-2"), (0, 2, "a-0")
    expect("reordered", {}, {}, swapped)
    # Divergent: a consumer read a record that a failover later replaced.
    seen = list(final)
    seen[3] = (0, 3, "b-999")
    expect("divergent", {}, {"c": seen}, final)
    # A consumer going backwards.
    expect("backwards", {}, {"c": final[:5] + [final[2]]}, final)
    log("checker self-test: a good history passes; lost, duplicate, moved, reordered, "
        "divergent and backwards histories are each caught")


# ---------------------------------------------------------------------------------------
# Producers and consumers (each in its own process: --role)


class Recorder:
    """Appends one JSON line per record to `path` (flushed, so a crash loses nothing
    already written)."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def record(self, *fields):
        self.f.write(json.dumps(fields) + "\n")


def stopped(path):
    return os.path.exists(path)


def produce_confluent(args, out, errors):
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 300000,
        "reconnect.backoff.max.ms": 500,
    })
    state = {"in_flight": 0}

    def done(err, msg):
        state["in_flight"] -= 1
        if err:
            errors.record(str(err), msg.value().decode())
        else:
            out.record(msg.partition(), msg.offset(), msg.value().decode())

    seq = 0
    while not stopped(args.stop):
        if state["in_flight"] >= IN_FLIGHT:
            p.poll(0.05)
            continue
        p.produce(args.topic, value=f"confluent-{seq}".encode(), partition=seq % PARTITIONS,
                  on_delivery=done)
        state["in_flight"] += 1
        seq += 1
        p.poll(0)
        time.sleep(0.002)
    left = p.flush(300)
    if left:
        errors.record(f"{left} records still undelivered at the end", "")


def produce_kafka_python(args, out, errors):
    from kafka import KafkaProducer

    p = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        retries=2**31 - 1,
        delivery_timeout_ms=300000,
        request_timeout_ms=30000,
        reconnect_backoff_max_ms=500,
    )
    pending = []
    seq = 0
    while not stopped(args.stop):
        v = f"kafka-python-{seq}"
        pending.append((v, p.send(args.topic, value=v.encode(), partition=seq % PARTITIONS)))
        seq += 1
        while len(pending) >= IN_FLIGHT or (pending and pending[0][1].is_done):
            v, f = pending.pop(0)
            try:
                md = f.get(300)
                out.record(md.partition, md.offset, v)
            except Exception as e:  # noqa: BLE001 — every failure is recorded
                errors.record(repr(e), v)
        time.sleep(0.002)
    p.flush(300)
    for v, f in pending:
        try:
            md = f.get(300)
            out.record(md.partition, md.offset, v)
        except Exception as e:  # noqa: BLE001
            errors.record(repr(e), v)
    p.close()


def produce_aiokafka(args, out, errors):
    async def run():
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(
            bootstrap_servers=args.bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=30000,
            retry_backoff_ms=200,
        )
        await p.start()
        pending = []

        async def settle(v, fut):
            try:
                md = await fut
                out.record(md.partition, md.offset, v)
            except Exception as e:  # noqa: BLE001
                errors.record(repr(e), v)

        try:
            seq = 0
            while not stopped(args.stop):
                v = f"aiokafka-{seq}"
                try:
                    fut = await p.send(args.topic, value=v.encode(), partition=seq % PARTITIONS)
                except Exception as e:  # noqa: BLE001
                    errors.record(repr(e), v)
                    await asyncio.sleep(0.5)
                    continue
                pending.append(asyncio.ensure_future(settle(v, fut)))
                seq += 1
                if len(pending) >= IN_FLIGHT:
                    await pending.pop(0)
                await asyncio.sleep(0.002)
            await asyncio.gather(*pending)
        finally:
            await p.stop()

    asyncio.run(run())


class CaughtUp:
    """A consumer's end: once the stop file (the final log's end offsets) is there, when
    every partition is read to its end, or 120 s after that at the latest."""

    def __init__(self, stop):
        self.stop = stop
        self.ends = None
        self.deadline = None

    def done(self, pos):
        if self.ends is None and stopped(self.stop):
            with open(self.stop) as f:
                self.ends = {int(k): v for k, v in json.load(f).items()}
            self.deadline = time.time() + 120
        return self.ends is not None and (
            all(pos.get(p, 0) >= e for p, e in self.ends.items()) or time.time() > self.deadline)


def consume_confluent(args, out, errors):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "failover-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # A consumer must never be told its offset is out of range: its offsets are below
        # the high watermark, which no failover takes back.
        "auto.offset.reset": "error",
    })
    c.assign([TopicPartition(args.topic, p, 0) for p in range(PARTITIONS)])
    pos = {}
    until = CaughtUp(args.stop)
    while not until.done(pos):
        for m in c.consume(1000, 0.5):
            if m.error():
                errors.record(str(m.error()), "")
                continue
            out.record(m.partition(), m.offset(), m.value().decode())
            pos[m.partition()] = m.offset() + 1
    c.close()


def consume_kafka_python(args, out, errors):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="none",
        consumer_timeout_ms=500,
    )
    tps = [TopicPartition(args.topic, p) for p in range(PARTITIONS)]
    c.assign(tps)
    for tp in tps:
        c.seek(tp, 0)
    pos = {}
    until = CaughtUp(args.stop)
    while not until.done(pos):
        try:
            polled = c.poll(500, max_records=1000)
        except Exception as e:  # noqa: BLE001
            errors.record(repr(e), "")
            time.sleep(0.5)
            continue
        for _tp, msgs in polled.items():
            for m in msgs:
                out.record(m.partition, m.offset, m.value.decode())
                pos[m.partition] = m.offset + 1
    c.close()


ROLES = {
    "produce-confluent": produce_confluent,
    "produce-kafka-python": produce_kafka_python,
    "produce-aiokafka": produce_aiokafka,
    "consume-confluent": consume_confluent,
    "consume-kafka-python": consume_kafka_python,
}


def run_role(args):
    out = Recorder(args.out)
    errors = Recorder(args.out + ".errors")
    ROLES[args.role](args, out, errors)


# ---------------------------------------------------------------------------------------
# The cluster and the kills


class Cluster:
    """deploy/cluster.sh with this run's options."""

    def __init__(self, common):
        self.common = common

    def __call__(self, *args):
        subprocess.run(["bash", SCRIPT, *args, *self.common], check=True, timeout=180)


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(json.loads(line)) for line in f if line.strip()]


def read_final(bootstrap, topic):
    """Every partition read back whole, up to its high watermark."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-final",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in range(PARTITIONS)}
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        out, pos = [], {}
        deadline = time.time() + 300
        while any(pos.get(p, 0) < e for p, e in ends.items()):
            if time.time() > deadline:
                raise AssertionError(f"final read stopped at {pos}, ends {ends}")
            for m in c.consume(10000, 1.0):
                if m.error():
                    raise AssertionError(f"final read: {m.error()}")
                out.append((m.partition(), m.offset(), m.value().decode()))
                pos[m.partition()] = m.offset() + 1
        return sorted(out), ends
    finally:
        c.close()


def leaders(bootstrap, topic):
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=20)
    return {p.id: p.leader for p in md.topics[topic].partitions.values()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--bootstrap")
    ap.add_argument("--topic")
    ap.add_argument("--out")
    ap.add_argument("--stop")
    args = ap.parse_args()
    if args.role:
        return run_role(args)
    self_test()
    if args.self_test:
        return
    if not args.broker:
        ap.error("--broker is needed")
    out = subprocess.run(["bash", SCRIPT, "free-base-port", "3", "--base-port", "24000"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    base = int(out.strip())
    random.seed(int(os.environ.get("SLUICE_FAILOVER_SEED", "1")))
    with tempfile.TemporaryDirectory(prefix="sluice-failover-") as d:
        common = ["--dir", d, "--bin", os.path.abspath(args.broker), "--base-port", str(base),
                  "--prop", "sluice.replication.factor.max=3",
                  "--prop", "default.replication.factor=3",
                  "--prop", "min.insync.replicas=2"]
        cluster = Cluster(common)
        cluster("up", "3")
        bootstrap = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        procs = []
        try:
            run(args, d, bootstrap, cluster, procs)
        except BaseException:
            for i in (1, 2, 3):
                path = os.path.join(d, f"node-{i}", "sluice.log")
                with open(path, errors="replace") as f:
                    tail = f.readlines()[-40:]
                print(f"--- node {i} log tail ---\n{''.join(tail)}", file=sys.stderr)
            raise
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            subprocess.run(["bash", SCRIPT, "down", *common], timeout=120)


def coordinator_failover(bootstrap, cluster):
    """A consumer group whose coordinator's broker is killed finds the new coordinator (the
    new leader of its replicated `__consumer_offsets` partition) and goes on; no committed
    offset is lost, and a new member resumes exactly at the committed offsets."""
    from confluent_kafka import (ConsumerGroupTopicPartitions, Consumer, KafkaException,
                                 Producer)
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group, n = "coordinated", "failover-group", 3000
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(n):
        p.produce(topic, value=f"c-{i}".encode(), partition=i % PARTITIONS)
    if p.flush(60):
        raise AssertionError("coordinator test: records left unsent")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 30000})
    c.subscribe([topic])
    committed = {}

    def consume_and_commit(count, deadline_s):
        got = 0
        deadline = time.time() + deadline_s
        while got < count:
            if time.time() > deadline:
                raise AssertionError(f"coordinator test: consumed {got} of {count}")
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            got += 1
            if got % 100 == 0:
                while True:
                    try:
                        for tp in c.commit(asynchronous=False):
                            if tp.error:
                                raise KafkaException(tp.error)
                            if tp.offset >= 0:  # -1001: nothing consumed there since assigned
                                committed[tp.partition] = tp.offset
                        break
                    except KafkaException as e:
                        if time.time() > deadline:
                            raise AssertionError(f"coordinator test: commit never succeeded: {e}")
                        time.sleep(0.5)

    consume_and_commit(900, 60)
    before = admin.describe_consumer_groups([group])[group].result(30).coordinator.id
    cluster("kill", str(before))
    killed_at = time.time()
    consume_and_commit(900, 120)
    moved = time.time() - killed_at
    c.close()
    after = admin.describe_consumer_groups([group])[group].result(30).coordinator.id
    stored = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    stored = {tp.partition: tp.offset for tp in stored.result(30).topic_partitions}
    if after == before:
        raise AssertionError(f"coordinator test: node {before} was killed but still coordinates")
    if stored != committed:
        raise AssertionError(f"coordinator test: committed {committed}, the coordinator has {stored}")
    # A new member resumes at the committed offsets, not before and not after.
    c2 = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                   "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c2.subscribe([topic])
    first = {}
    deadline = time.time() + 30
    while time.time() < deadline:
        m = c2.poll(1.0)
        if m is not None and not m.error():
            first.setdefault(m.partition(), m.offset())
    c2.close()
    # A partition committed at its end has nothing more to give.
    want = {p: committed.get(p, 0) for p in range(PARTITIONS)
            if committed.get(p, 0) < n // PARTITIONS}
    if first != want:
        raise AssertionError(f"coordinator test: resumed at {first}, committed {want}")
    cluster("start", str(before))
    log(f"coordinator failover: node {before} killed, node {after} coordinates; 900 more "
        f"records consumed and committed {moved:.1f} s after the kill; committed offsets "
        f"{committed} kept and resumed from")


def rolling_restart(bootstrap, topic, cluster, files, procs):
    """SIGTERM one broker at a time under the same acks=all load, each started again and back
    in every ISR before the next: the producers see no error (only retriable ones, which
    they retry), and the longest time any producer went without an acknowledgement is
    reported."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    errors_before = {p: len(read_lines(files[f"produce-{p}"] + ".errors")) for p in PRODUCERS}
    # Per producer and partition: a stall of one partition must not hide behind the others.
    keys = [(p, i) for p in PRODUCERS for i in range(PARTITIONS)]
    counts = dict.fromkeys(keys, 0)
    last_ack = dict.fromkeys(keys, time.time())
    longest = dict.fromkeys(keys, 0.0)

    def sample():
        now = time.time()
        for p in PRODUCERS:
            per = dict.fromkeys(range(PARTITIONS), 0)
            for partition, _o, _v in read_lines(files[f"produce-{p}"]):
                per[partition] += 1
            for i, n in per.items():
                if n > counts[(p, i)]:
                    counts[(p, i)] = n
                    last_ack[(p, i)] = now
                longest[(p, i)] = max(longest[(p, i)], now - last_ack[(p, i)])
        dead = [x for x in procs if x.poll() is not None]
        if dead:
            raise AssertionError(f"rolling restart: a client process exited: {[x.args[3] for x in dead]}")

    def in_every_isr(node):
        md = admin.list_topics(topic, timeout=20).topics[topic].partitions.values()
        return all(node in p.isrs for p in md)

    started = time.time()
    for node in (1, 2, 3):
        stop = subprocess.Popen(["bash", SCRIPT, "stop", str(node), *cluster.common],
                                stdout=subprocess.DEVNULL)
        while stop.poll() is None:
            sample()
            time.sleep(0.2)
        cluster("start", str(node))
        deadline = time.time() + 120
        while not in_every_isr(node):
            if time.time() > deadline:
                raise AssertionError(f"rolling restart: node {node} never rejoined the ISR")
            sample()
            time.sleep(0.2)
    # A last look once the load has run on for a while after the last restart.
    settle = time.time() + 3
    while time.time() < settle:
        sample()
        time.sleep(0.2)
    new_errors = {p: read_lines(files[f"produce-{p}"] + ".errors")[errors_before[p]:]
                  for p in PRODUCERS}
    if any(new_errors.values()):
        raise AssertionError(f"rolling restart: producers saw errors: "
                             f"{ {p: e[:3] for p, e in new_errors.items() if e} }")
    log(f"rolling restart: 3 brokers restarted one at a time in {time.time() - started:.1f} s, "
        f"no producer error; longest time without an acknowledgement: "
        f"{', '.join(f'{p} {max(longest[(p, i)] for i in range(PARTITIONS)):.2f} s' for p in PRODUCERS)} "
        f"(longest of its partitions)")


def run(args, d, bootstrap, cluster, procs):
    from confluent_kafka.admin import AdminClient, NewTopic

    coordinator_failover(bootstrap, cluster)
    topic = "failover"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)
    deadline = time.time() + 30
    while not all(l > 0 for l in leaders(bootstrap, topic).values()):
        if time.time() > deadline:
            raise AssertionError(f"no leaders for {topic}")
        time.sleep(0.5)
    stop_producers = os.path.join(d, "stop-producers")
    stop_consumers = os.path.join(d, "stop-consumers")
    files = {}
    for role in [f"produce-{p}" for p in PRODUCERS] + [f"consume-{c}" for c in CONSUMERS]:
        files[role] = os.path.join(d, f"{role}.jsonl")
        stop = stop_producers if role.startswith("produce") else stop_consumers
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--role", role, "--bootstrap", bootstrap,
             "--topic", topic, "--out", files[role], "--stop", stop],
            stdout=open(files[role] + ".log", "w"), stderr=subprocess.STDOUT))
    time.sleep(args.interval / 2)
    stalls = []
    for r in range(args.rounds):
        started = time.time()
        partition = r % PARTITIONS
        victim = leaders(bootstrap, topic)[partition]
        if victim <= 0:
            raise AssertionError(f"round {r}: partition {partition} has no leader")
        acked_before = sum(len(read_lines(files[f"produce-{p}"])) for p in PRODUCERS)
        cluster("kill", str(victim))
        time.sleep(random.uniform(0.5, 4.0))
        cluster("start", str(victim))
        # Produce goes on: wait until every producer has been acknowledged again.
        counts = {p: len(read_lines(files[f"produce-{p}"])) for p in PRODUCERS}
        wait_from = time.time()
        while True:
            now = {p: len(read_lines(files[f"produce-{p}"])) for p in PRODUCERS}
            if all(now[p] > counts[p] for p in PRODUCERS):
                break
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise AssertionError(f"round {r}: a client process exited: {[p.args[3] for p in dead]}")
            if time.time() - wait_from > 120:
                raise AssertionError(f"round {r}: producers stalled after the restart: {now}")
            time.sleep(0.2)
        stalls.append(time.time() - started)
        acked_after = sum(now.values())
        log(f"round {r + 1}/{args.rounds}: killed node {victim} (leader of partition "
            f"{partition}); acknowledged {acked_before} -> {acked_after}; every producer "
            f"acknowledged again {time.time() - started:.1f} s after the kill")
        time.sleep(max(0.0, args.interval - (time.time() - started)))
    rolling_restart(bootstrap, topic, cluster, files, procs)
    open(stop_producers, "w").close()
    for p in procs[: len(PRODUCERS)]:
        p.wait(timeout=400)
    final, ends = read_final(bootstrap, topic)
    with open(stop_consumers + ".tmp", "w") as f:
        json.dump(ends, f)
    os.rename(stop_consumers + ".tmp", stop_consumers)
    for p in procs[len(PRODUCERS):]:
        p.wait(timeout=200)
    acked = {p: read_lines(files[f"produce-{p}"]) for p in PRODUCERS}
    consumed = {c: read_lines(files[f"consume-{c}"]) for c in CONSUMERS}
    problems = check_history(acked, consumed, final)
    for c in CONSUMERS:
        got = {}
        for p, o, _v in consumed[c]:
            got[p] = o + 1
        if any(got.get(p, 0) < e for p, e in ends.items()):
            problems.append(f"consumer {c} stopped at {got}, the log ends at {ends}")
    errors = {role: read_lines(files[role] + ".errors") for role in files}
    for role, errs in errors.items():
        if errs:
            log(f"{role}: {len(errs)} errors reported, first {errs[:3]}")
    # Consumers must not have been told to reset (out of range) or seen other errors.
    for c in CONSUMERS:
        if errors[f"consume-{c}"]:
            problems.append(f"consumer {c} saw errors: {errors[f'consume-{c}'][:3]}")
    for p in PRODUCERS:
        if not acked[p]:
            problems.append(f"producer {p} never acknowledged")
    log(f"history: {sum(len(a) for a in acked.values())} acknowledged "
        f"({', '.join(f'{p} {len(a)}' for p, a in acked.items())}), "
        f"{len(final)} in the final log, consumed "
        f"{', '.join(f'{c} {len(r)}' for c, r in consumed.items())}; longest time from a kill "
        f"to every producer acknowledged again {max(stalls):.1f} s, median "
        f"{sorted(stalls)[len(stalls) // 2]:.1f} s")
    if problems:
        for x in problems:
            log(f"PROBLEM {x}")
        raise AssertionError(f"{len(problems)} problems in the history")
    log(f"failover: {args.rounds} leader kills, no acknowledged record lost, no duplicate, "
        "every consumer saw the final log")
    preferred_election(bootstrap, topic)


def preferred_election(bootstrap, topic):
    """After the kills, a preferred-leader election (confluent-kafka's elect_leaders, every
    partition) puts each partition's leadership back on its first replica."""
    from confluent_kafka import ElectionType
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    results = admin.elect_leaders(ElectionType.PREFERRED, None).result(60)
    elected = sorted((tp.topic, tp.partition) for tp, err in results.items() if err is None)
    deadline = time.time() + 30
    while True:
        md = admin.list_topics(topic, timeout=20).topics[topic].partitions.values()
        off = {p.id: (p.leader, p.replicas[0]) for p in md if p.leader != p.replicas[0]}
        if not off:
            break
        if time.time() > deadline:
            raise AssertionError(f"preferred election left leaders off their first replica: {off}")
        time.sleep(0.5)
    log(f"preferred leader election: {len(elected)} partitions moved back "
        f"({elected[:6]}), every partition of {topic} led by its first replica")


if __name__ == "__main__":
    sys.exit(main())
