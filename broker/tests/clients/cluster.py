#!/usr/bin/env python3
"""Real clients against a 3-node cluster started by deploy/cluster.sh: confluent-kafka,
kafka-python, aiokafka and kcat each see three brokers, a 12-partition topic has leaders on
all three, each client produces to and consumes from every partition, and consumer groups
work whichever broker coordinates them.

usage: cluster.py --broker target/release/sluice
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
SCRIPT = os.path.join(ROOT, "deploy", "cluster.sh")
PARTITIONS = 12


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_base_port():
    """A base port whose 3-node ports are free (deploy/cluster.sh free-base-port)."""
    out = subprocess.run(["bash", SCRIPT, "free-base-port", "3", "--base-port", "23000"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return int(out.strip())


def confluent(bootstrap, topic):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=15)
    if sorted(md.brokers) != [1, 2, 3]:
        raise AssertionError(f"confluent-kafka sees brokers {sorted(md.brokers)}")
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        f.result(30)
    deadline = time.time() + 20
    while True:
        md = admin.list_topics(topic, timeout=15)
        parts = md.topics[topic].partitions
        leaders = {p.id: p.leader for p in parts.values()}
        if len(leaders) == PARTITIONS and all(l > 0 for l in leaders.values()):
            break
        if time.time() > deadline:
            raise AssertionError(f"leaders of {topic}: {leaders}")
        time.sleep(0.2)
    if set(leaders.values()) != {1, 2, 3}:
        raise AssertionError(f"12 partitions but leaders only on {set(leaders.values())}")
    log(f"confluent-kafka: 3 brokers, leaders {leaders}")
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(PARTITIONS):
        p.produce(topic, value=f"confluent-{i}".encode(), partition=i)
    if p.flush(30) != 0:
        raise AssertionError("confluent-kafka: messages left unsent")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, i, 0) for i in range(PARTITIONS)])
    seen = {}
    deadline = time.time() + 30
    while len(seen) < PARTITIONS and time.time() < deadline:
        m = c.poll(1)
        if m is None or m.error():
            continue
        if m.value() == f"confluent-{m.partition()}".encode():
            seen[m.partition()] = m.offset()
    c.close()
    if len(seen) != PARTITIONS:
        raise AssertionError(f"confluent-kafka consumed from {sorted(seen)}")
    log("confluent-kafka: produced to and consumed from every partition")
    return leaders


def kafka_python(bootstrap, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    p = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(PARTITIONS):
        p.send(topic, value=f"kafka-python-{i}".encode(), partition=i).get(timeout=30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, i) for i in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning()
    seen = set()
    deadline = time.time() + 30
    while len(seen) < PARTITIONS and time.time() < deadline:
        for tp, msgs in c.poll(1000).items():
            for m in msgs:
                if m.value == f"kafka-python-{tp.partition}".encode():
                    seen.add(tp.partition)
    brokers = {getattr(b, "nodeId", getattr(b, "node_id", None)) for b in c._client.cluster.brokers()}
    c.close()
    if brokers != {1, 2, 3}:
        raise AssertionError(f"kafka-python sees brokers {brokers}")
    if len(seen) != PARTITIONS:
        raise AssertionError(f"kafka-python consumed from {sorted(seen)}")
    log("kafka-python: 3 brokers; produced to and consumed from every partition")


def aiokafka_client(bootstrap, topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:
            for i in range(PARTITIONS):
                await p.send_and_wait(topic, f"aiokafka-{i}".encode(), partition=i)
            brokers = {getattr(b, "nodeId", getattr(b, "node_id", None))
                       for b in p.client.cluster.brokers()}
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await c.start()
        seen = set()
        try:
            c.assign([TopicPartition(topic, i) for i in range(PARTITIONS)])
            await c.seek_to_beginning()
            deadline = time.time() + 30
            while len(seen) < PARTITIONS and time.time() < deadline:
                batches = await c.getmany(timeout_ms=1000)
                for tp, msgs in batches.items():
                    for m in msgs:
                        if m.value == f"aiokafka-{tp.partition}".encode():
                            seen.add(tp.partition)
        finally:
            await c.stop()
        return brokers, seen

    brokers, seen = asyncio.run(run())
    if brokers != {1, 2, 3}:
        raise AssertionError(f"aiokafka sees brokers {brokers}")
    if len(seen) != PARTITIONS:
        raise AssertionError(f"aiokafka consumed from {sorted(seen)}")
    log("aiokafka: 3 brokers; produced to and consumed from every partition")


def kcat(bootstrap, topic):
    out = subprocess.run(["kcat", "-b", bootstrap, "-L", "-J"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    brokers = {b["id"] for b in json.loads(out)["brokers"]}
    if brokers != {1, 2, 3}:
        raise AssertionError(f"kcat sees brokers {brokers}")
    for i in range(PARTITIONS):
        subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", str(i)],
                       input=f"kcat-{i}\n", text=True, timeout=60, check=True)
    for i in range(PARTITIONS):
        out = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-p", str(i),
                              "-o", "beginning", "-e", "-q"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        if f"kcat-{i}" not in out.split("\n"):
            raise AssertionError(f"kcat: partition {i} gave {out!r}")
    log("kcat: 3 brokers; produced to and consumed from every partition")


def groups(bootstrap, topic, leaders):
    """Groups whose coordinators are on different brokers each consume the whole topic and
    commit; a fresh consumer of the group reads back exactly the committed offsets."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    coordinators = {}
    for g in range(8):
        group = f"cluster-group-{g}"
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got = 0
        deadline = time.time() + 60
        while got < 4 * PARTITIONS and time.time() < deadline:
            m = c.poll(1)
            if m is None or m.error():
                continue
            got += 1
        if got < 4 * PARTITIONS:
            raise AssertionError(f"{group}: consumed {got} of {4 * PARTITIONS}")
        c.commit(asynchronous=False)
        c.close()
        desc = admin.describe_consumer_groups([group])[group].result(30)
        coordinators[group] = desc.coordinator.id
        check = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        committed = check.committed([TopicPartition(topic, i) for i in range(PARTITIONS)],
                                    timeout=30)
        check.close()
        if any(tp.offset != 4 for tp in committed):
            raise AssertionError(f"{group}: committed {[(tp.partition, tp.offset) for tp in committed]}")
    if len(set(coordinators.values())) < 2:
        raise AssertionError(f"every group had the same coordinator: {coordinators}")
    log(f"consumer groups: committed and read back through coordinators {coordinators}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    args = ap.parse_args()
    script = SCRIPT
    base = free_base_port()
    with tempfile.TemporaryDirectory() as d:
        common = ["--dir", d, "--bin", os.path.abspath(args.broker), "--base-port", str(base)]
        subprocess.run(["bash", script, "up", "3", *common], check=True, timeout=180)
        bootstrap = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        try:
            leaders = confluent(bootstrap, "cluster-12")
            kafka_python(bootstrap, "cluster-12")
            aiokafka_client(bootstrap, "cluster-12")
            kcat(bootstrap, "cluster-12")
            groups(bootstrap, "cluster-12", leaders)
        except Exception:
            for i in (1, 2, 3):
                path = os.path.join(d, f"node-{i}", "sluice.log")
                with open(path, errors="replace") as f:
                    tail = f.readlines()[-30:]
                print(f"--- node {i} log tail ---\n{''.join(tail)}", file=sys.stderr)
            raise
        finally:
            subprocess.run(["bash", script, "down", *common], timeout=120)
    log("cluster: all checks passed")


if __name__ == "__main__":
    main()
