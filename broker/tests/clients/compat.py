#!/usr/bin/env python3
"""Compatibility defects that real clients found, one check each through a real client
(each function says what it checks and what Sluice did before); `broker/tests/compat.rs`
holds the wire-level details of the same fixes.

usage: compat.py --broker target/release/sluice
"""

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check import Broker  # noqa: E402


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def null_error_messages(bootstrap):
    """kafka-python's create_topics result carries error_message None on success, as
    Kafka answers null (Sluice answered "")."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    result = admin.create_topics([NewTopic("compat-null", 1, 1)])
    topic = result["topics"][0]
    if topic["error_code"] != 0 or topic["error_message"] is not None:
        raise AssertionError(f"create_topics answered {topic}")
    admin.close()
    log("kafka-python: create_topics succeeded with error_message None")


def broker_configs(bootstrap, data_dir):
    """confluent-kafka's describe_configs of the BROKER resource gets every broker config
    under Kafka's names (listeners and advertised.listeners among them) with the values the
    broker runs with, STATIC_BROKER_CONFIG when set and DEFAULT_CONFIG otherwise, all
    read-only (Sluice gave 21 keys, no listeners, and log.dirs writable)."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.BROKER, "0")
    cfg = admin.describe_configs([res])[res].result(30)
    if len(cfg) < 40:
        raise AssertionError(f"{len(cfg)} broker configs: {sorted(cfg)}")
    listener = f"PLAINTEXT://{bootstrap}"
    want = {
        "listeners": (listener, ConfigSource.STATIC_BROKER_CONFIG),
        "advertised.listeners": (listener, ConfigSource.DEFAULT_CONFIG),
        "log.dirs": (data_dir, ConfigSource.STATIC_BROKER_CONFIG),
        "num.partitions": ("8", ConfigSource.STATIC_BROKER_CONFIG),
        "message.max.bytes": ("1048588", ConfigSource.DEFAULT_CONFIG),
    }
    for name, (value, source) in want.items():
        e = cfg.get(name)
        if e is None or e.value != value or e.source != source.value:
            raise AssertionError(f"{name}: {e} (want {value} from {source})")
    writable = [n for n, e in cfg.items() if not e.is_read_only]
    if writable:
        raise AssertionError(f"writable broker configs: {writable}")
    log(f"confluent: describe_configs(BROKER 0) gave {len(cfg)} configs, listeners "
        f"{listener} (static), advertised.listeners (default), all read-only")


def append_subtract(bootstrap):
    """confluent-kafka's incremental_alter_configs APPENDs `compact` to a default
    cleanup.policy, giving `delete,compact`, and SUBTRACTs `delete` from the default, giving
    an empty list (Sluice started both from an empty list)."""
    from confluent_kafka.admin import (
        AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for t in ("compat-append", "compat-subtract"):
        admin.create_topics([NewTopic(t, 1, 1)])[t].result(30)

    def alter(topic, op, value):
        res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry("cleanup.policy", value, incremental_operation=op)])
        admin.incremental_alter_configs([res])[res].result(30)
        got = ConfigResource(ConfigResource.Type.TOPIC, topic)
        return admin.describe_configs([got])[got].result(30)["cleanup.policy"].value

    got = alter("compat-append", AlterConfigOpType.APPEND, "compact")
    if got != "delete,compact":
        raise AssertionError(f"APPEND compact to the default gave {got!r}")
    got = alter("compat-subtract", AlterConfigOpType.SUBTRACT, "delete")
    if got != "":
        raise AssertionError(f"SUBTRACT delete from the default gave {got!r}")
    log("confluent: APPEND compact to the default cleanup.policy gave 'delete,compact'; "
        "SUBTRACT delete gave ''")


def api_versions(bootstrap):
    """kafka-python infers Kafka 4.1 from the advertised versions (it inferred 3.8); kcat
    (librdkafka 2.0.2, which cannot parse every ApiVersions v3 response) and confluent-kafka
    list, produce and consume with them."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    version = admin._manager.broker_version
    admin.close()
    if tuple(version[:2]) != (4, 1):
        raise AssertionError(f"kafka-python took the broker for Kafka {version}")
    topic = "compat-versions"
    md = subprocess.run(["kcat", "-b", bootstrap, "-L", "-J"], capture_output=True,
                        timeout=60)
    if md.returncode != 0 or b'"brokers"' not in md.stdout:
        raise AssertionError(f"kcat -L: {md.stderr.decode()[-500:]}")
    lines = "".join(f"v{i}\n" for i in range(50))
    subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", "0", "-z", "gzip"],
                   input=lines.encode(), check=True, capture_output=True, timeout=60)
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": "zstd"})
    for i in range(50, 100):
        p.produce(topic, value=f"v{i}".encode(), partition=0)
    if p.flush(30):
        raise AssertionError("confluent produce did not finish")
    out = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-p", "0", "-e",
                          "-q", "-f", "%s\n"], capture_output=True, check=True, timeout=60)
    if out.stdout.decode().split() != [f"v{i}" for i in range(100)]:
        raise AssertionError(f"kcat read {out.stdout[:200]!r}")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-versions"})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < 100 and time.time() < deadline:
        for m in c.consume(100, 0.5):
            if m.error():
                raise AssertionError(f"confluent consume: {m.error()}")
            got.append(m.value().decode())
    c.close()
    if got != [f"v{i}" for i in range(100)]:
        raise AssertionError(f"confluent read {len(got)} records")
    log(f"kafka-python infers Kafka {'.'.join(map(str, version))}; kcat (librdkafka 2.0.2) "
        "and confluent-kafka list, produce and consume")


def describe_topic_partitions(bootstrap):
    """kafka-python's describe_topic_partitions (API 75, which Sluice lacked) pages through
    topics with its cursor."""
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka.admin import KafkaAdminClient

    confluent = AdminClient({"bootstrap.servers": bootstrap})
    for t, n in (("compat-dtp-a", 3), ("compat-dtp-b", 2)):
        confluent.create_topics([NewTopic(t, n, 1)])[t].result(30)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    pages, cursor = [], None
    while True:
        r = admin.describe_topic_partitions(["compat-dtp-b", "compat-dtp-a"],
                                            response_partition_limit=2, cursor=cursor)
        page = []
        for t in r["topics"]:
            if t["error_code"] != 0 or t["is_internal"]:
                raise AssertionError(f"describe_topic_partitions: {t}")
            for p in t["partitions"]:
                if (p["leader_id"], p["replica_nodes"], p["isr_nodes"]) != (0, [0], [0]):
                    raise AssertionError(f"partition {p}")
                page.append(f"{t['name'][-1]}{p['partition_index']}")
        pages.append(" ".join(page))
        cursor = r["next_cursor"]
        if cursor is None or len(pages) > 5:
            break
    admin.close()
    if pages != ["a0 a1", "a2 b0", "b1"]:
        raise AssertionError(f"pages {pages}")
    log(f"kafka-python: describe_topic_partitions paged {pages} with its cursor")


def transactions(bootstrap, broker_log):
    """confluent-kafka's init_transactions fails at once with a fatal, clear error (it
    retried until its timeout), and the broker logs why."""
    from confluent_kafka import KafkaException, Producer

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "compat-tx"})
    started = time.time()
    try:
        p.init_transactions(30)
        raise AssertionError("init_transactions succeeded")
    except KafkaException as e:
        took = time.time() - started
        err = e.args[0]
        text = err.str()
        if took > 10 or not err.fatal() or "TRANSACTIONAL_ID_AUTHORIZATION_FAILED" not in \
                f"{err.name()} {text}" and "authorization" not in text.lower():
            raise AssertionError(f"after {took:.1f} s: {err.name()}: {text} "
                                 f"(fatal={err.fatal()})")
    with open(broker_log) as f:
        logged = [line for line in f if "transactions are not supported" in line]
    if not any("compat-tx" in line for line in logged):
        raise AssertionError("the broker did not log the refused transactional producer")
    log(f"confluent: init_transactions(30) failed after {took:.1f} s: {text}")


def tls_client(bootstrap, broker_log):
    """A real TLS ClientHello (Python's ssl) on the plaintext port is logged as a TLS
    client, not as a 369 MB frame, and the broker keeps serving."""
    host, port = bootstrap.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                raise AssertionError("a TLS handshake with the plaintext port succeeded")
        except (ssl.SSLError, ConnectionError, OSError):
            pass
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(broker_log) as f:
            text = f.read()
        if "a TLS client reached a plaintext listener" in text:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no TLS log line")
    if "bad frame length" in text:
        raise AssertionError("the ClientHello was still read as a frame length")
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    if not md.brokers:
        raise AssertionError("the broker stopped serving")
    log("tls: a ClientHello on the plaintext port was logged as a TLS client; "
        "the broker kept serving")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-compat-")
    data_dir = os.path.join(work, "data")
    broker_log = os.path.join(work, "broker.log")
    broker = Broker(args.broker, data_dir, broker_log)
    ok = False
    try:
        broker.start()
        null_error_messages(broker.bootstrap)
        broker_configs(broker.bootstrap, data_dir)
        append_subtract(broker.bootstrap)
        api_versions(broker.bootstrap)
        describe_topic_partitions(broker.bootstrap)
        transactions(broker.bootstrap, broker_log)
        tls_client(broker.bootstrap, broker_log)
        ok = True
    finally:
        broker.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    log("compat: all checks passed")


if __name__ == "__main__":
    main()
