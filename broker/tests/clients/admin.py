#!/usr/bin/env python3
"""Topic administration with real admin clients against a real `sluice` broker.

confluent-kafka's AdminClient and kafka-python's KafkaAdminClient each: describe a topic's
configs (defaults and their source), alter them (incrementally and wholesale) and see the
change, get INVALID_CONFIG for a bad value, add partitions and produce to the new ones, and
delete records (the consumer then starts at the new low watermark). A retention check: with
small segments and `retention.bytes`, old segments disappear and a consumer from the
beginning gets exactly the records that remain. The `sluice` CLI's produce and consume
against a client-created topic, read back by kcat and confluent-kafka.

usage: admin.py --broker target/release/sluice
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check import Broker  # noqa: E402


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def produce(bootstrap, topic, n, partition=None, size=100):
    from confluent_kafka import Producer

    # Batches of at most 16 KiB, so that segments of 64 KiB hold several.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 16384})
    errors = []
    for i in range(n):
        kw = {} if partition is None else {"partition": partition}
        p.produce(topic, value=b"x" * size, key=str(i),
                  on_delivery=lambda e, _m: e and errors.append(e), **kw)
    if p.flush(60) or errors:
        raise AssertionError(f"produce failed: {errors[:3]}")


def consume_all(bootstrap, topic, partitions):
    """(partition, offset) of everything readable from the beginning, via assignment."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "admin-check",
                  "enable.auto.commit": False})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in range(partitions)}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    want = sum(hi - lo for lo, hi in ends.values())
    got = []
    deadline = time.time() + 60
    while len(got) < want and time.time() < deadline:
        for m in c.consume(1000, 0.5):
            if not m.error():
                got.append((m.partition(), m.offset()))
    c.close()
    return ends, got


def confluent_checks(bootstrap):
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import (
        AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
        NewPartitions, NewTopic,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "admin-confluent"
    admin.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "3600000"})])[
        topic].result(30)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    cfg = admin.describe_configs([res])[res].result(30)
    if cfg["retention.ms"].value != "3600000" or \
            cfg["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value:
        raise AssertionError(f"retention.ms: {cfg['retention.ms']}")
    if cfg["segment.bytes"].value != "1073741824" or \
            cfg["segment.bytes"].source != ConfigSource.DEFAULT_CONFIG.value:
        raise AssertionError(f"segment.bytes: {cfg['segment.bytes']}")

    inc = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "200000",
                    incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([inc])[inc].result(30)
    cfg = admin.describe_configs([res])[res].result(30)
    if cfg["max.message.bytes"].value != "200000" or cfg["retention.ms"].value != "604800000":
        raise AssertionError(f"after incremental alter: {cfg['max.message.bytes']} "
                             f"{cfg['retention.ms']}")
    bad = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.SET)])
    try:
        admin.incremental_alter_configs([bad])[bad].result(30)
        raise AssertionError("a bad cleanup.policy was accepted")
    except KafkaException as e:
        if "INVALID_CONFIG" not in str(e) and "Invalid config" not in str(e):
            raise
    log("confluent: describe_configs (sources), incremental_alter_configs, INVALID_CONFIG")

    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
    md = admin.list_topics(topic, timeout=10).topics[topic]
    if len(md.partitions) != 4:
        raise AssertionError(f"{len(md.partitions)} partitions after create_partitions")
    produce(bootstrap, topic, 50, partition=3)

    deleted = admin.delete_records([TopicPartition(topic, 3, 20)])
    low = deleted[TopicPartition(topic, 3, 20)].result(30)
    if low.low_watermark != 20:
        raise AssertionError(f"delete_records low watermark {low}")
    ends, got = consume_all(bootstrap, topic, 4)
    if ends[3] != (20, 50) or sorted(o for p, o in got if p == 3) != list(range(20, 50)):
        raise AssertionError(f"after delete_records: {ends[3]}, {len(got)} records")
    log("confluent: create_partitions to 4 (produced to the new one), delete_records to 20")


def kafka_python_checks(bootstrap):
    from kafka import TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    topic = "admin-kafka-python"
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                        configs={"retention.bytes": "123456789"})])
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    text = str(described)
    if "retention.bytes" not in text or "123456789" not in text:
        raise AssertionError(f"kafka-python describe_configs: {text[:500]}")
    admin.create_partitions({topic: NewPartitions(3)})
    produce(bootstrap, topic, 30, partition=2)
    admin.delete_records({TopicPartition(topic, 2): 10})
    ends, _ = consume_all(bootstrap, topic, 3)
    if ends[2] != (10, 30):
        raise AssertionError(f"kafka-python delete_records: watermarks {ends[2]}")
    admin.close()
    log("kafka-python: alter_configs, describe_configs, create_partitions, delete_records")


def retention_check(bootstrap):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "admin-retention"
    admin.create_topics([NewTopic(topic, 1, 1, config={
        "segment.bytes": "65536", "retention.bytes": "200000"})])[topic].result(30)
    produce(bootstrap, topic, 2000, size=1000)  # about 2 MB
    # Wait for retention by the watermarks alone: a consumer reading from the beginning
    # while retention deletes segments under it resets to the end and waits for records
    # that are gone.
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "admin-probe"})
    deadline = time.time() + 30
    while time.time() < deadline:
        lo, hi = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        # retention.bytes plus at most the active 64 KiB segment: about 200-270 records.
        if hi - lo <= 300:
            break
        time.sleep(0.2)
    probe.close()
    ends, got = consume_all(bootstrap, topic, 1)
    lo, hi = ends[0]
    if not (0 < lo < hi == 2000 and hi - lo <= 300):
        raise AssertionError(f"retention did not move the start: {ends}")
    if sorted(o for _, o in got) != list(range(lo, hi)):
        raise AssertionError(f"consumer from the beginning got {len(got)} of {hi - lo}")
    log(f"retention: start moved to {lo} of {hi}; a consumer from the beginning read the "
        f"remaining {hi - lo} records")


def cli_interop(binary, bootstrap):
    """The `sluice` CLI against a topic a client created: its records read back by kcat and
    confluent-kafka, and a client's records read by `sluice consume`."""
    import json
    import subprocess

    from confluent_kafka.admin import AdminClient, NewTopic

    env = {**os.environ, "SLUICE_BOOTSTRAP": bootstrap}
    topic = "admin-cli"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    lines = "".join(f"k{i}|v{i}\n" for i in range(100))
    subprocess.run([binary, "produce", topic, "--key-separator", "|", "--header", "via=cli"],
                   input=lines.encode(), env=env, check=True, capture_output=True)
    ends, got = consume_all(bootstrap, topic, 3)
    if len(got) != 100:
        raise AssertionError(f"confluent read {len(got)} of the CLI's 100 records")
    kcat = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-e", "-q",
                           "-f", "%k=%s %h\n"], capture_output=True, check=True, timeout=60)
    rows = sorted(kcat.stdout.decode().split("\n"))[1:]
    if rows != sorted(f"k{i}=v{i} via=cli" for i in range(100)):
        raise AssertionError(f"kcat read {rows[:3]}... ({len(rows)} rows)")
    produce(bootstrap, topic, 50, partition=1)
    out = subprocess.run([binary, "consume", topic, "--partition", "1", "--from-beginning",
                          "--timeout-ms", "1500", "--format", "json"],
                         env=env, check=True, capture_output=True, timeout=60).stdout
    recs = [json.loads(line) for line in out.decode().splitlines()]
    lo, hi = ends[1]
    if len(recs) != hi - lo + 50 or [r["offset"] for r in recs] != list(range(lo, hi + 50)):
        raise AssertionError(f"sluice consume read {len(recs)} records of partition 1")
    log("cli: `sluice produce` read back by confluent-kafka and kcat (keys, headers); "
        "`sluice consume` read a client's records")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-admin-")
    broker = Broker(args.broker, os.path.join(work, "data"), os.path.join(work, "broker.log"),
                    extra_args=["--prop", "log.retention.check.interval.ms=500"])
    ok = False
    try:
        broker.start()
        confluent_checks(broker.bootstrap)
        kafka_python_checks(broker.bootstrap)
        retention_check(broker.bootstrap)
        cli_interop(args.broker, broker.bootstrap)
        ok = True
    finally:
        broker.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    log("admin: all checks passed")


if __name__ == "__main__":
    main()
