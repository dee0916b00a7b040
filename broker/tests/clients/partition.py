#!/usr/bin/env python3
"""A network partition around a partition leader (run by hand as root for now; not yet in
run.sh: it needs network namespaces and nftables).

Three brokers, each in its own network namespace on a bridge (10.77.0.N), the test in the
root namespace reaching all of them. nftables inside the leader's namespace drops traffic
from the other brokers. Checks: the isolated leader never acknowledges an acks=all write;
the majority elects a new leader (time measured); after healing, the old leader truncates
its unacknowledged suffix and rejoins the ISR.

usage (root): python3 partition.py --broker target/release/sluice
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

NET = "10.77.0"
N = 3


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def setup():
    sh("ip", "link", "add", "br-sl", "type", "bridge")
    sh("ip", "addr", "add", f"{NET}.254/24", "dev", "br-sl")
    sh("ip", "link", "set", "br-sl", "up")
    for i in range(1, N + 1):
        sh("ip", "netns", "add", f"sl{i}")
        sh("ip", "link", "add", f"vsl{i}", "type", "veth", "peer", "name", "eth0", "netns", f"sl{i}")
        sh("ip", "link", "set", f"vsl{i}", "master", "br-sl")
        sh("ip", "link", "set", f"vsl{i}", "up")
        sh("ip", "-n", f"sl{i}", "addr", "add", f"{NET}.{i}/24", "dev", "eth0")
        sh("ip", "-n", f"sl{i}", "link", "set", "eth0", "up")
        sh("ip", "-n", f"sl{i}", "link", "set", "lo", "up")


def teardown():
    for i in range(1, N + 1):
        sh("ip", "link", "del", f"vsl{i}", check=False)
        sh("ip", "netns", "del", f"sl{i}", check=False)
    sh("ip", "link", "del", "br-sl", check=False)


def cut(node, others):
    ns = ["ip", "netns", "exec", f"sl{node}"]
    sh(*ns, "nft", "add", "table", "inet", "part")
    sh(*ns, "nft", "add", "chain", "inet", "part", "in", "{ type filter hook input priority 0; }")
    for o in others:
        sh(*ns, "nft", "add", "rule", "inet", "part", "in", "ip", "saddr", f"{NET}.{o}", "drop")


def heal(node):
    sh("ip", "netns", "exec", f"sl{node}", "nft", "delete", "table", "inet", "part", check=False)


def start(broker, d, i, props):
    home = os.path.join(d, f"node-{i}")
    os.makedirs(home, exist_ok=True)
    voters = ",".join(f"{j}@{NET}.{j}:9093" for j in range(1, N + 1))
    conf = os.path.join(home, "server.properties")
    with open(conf, "w") as f:
        f.write(f"node.id={i}\ncontroller.quorum.voters={voters}\n"
                f"controller.listener.names=CONTROLLER\n"
                f"listeners=PLAINTEXT://{NET}.{i}:9092,CONTROLLER://{NET}.{i}:9093\n"
                f"advertised.listeners=PLAINTEXT://{NET}.{i}:9092\n"
                f"log.dirs={home}/data\nsluice.admin.listen={NET}.{i}:9094\n")
        for p in props:
            f.write(p + "\n")
    log = open(os.path.join(home, "sluice.log"), "a")
    return subprocess.Popen(["ip", "netns", "exec", f"sl{i}", broker, "start", "--config", conf,
                             "--smp", "1"], stdout=log, stderr=subprocess.STDOUT)


def partition_info(admin, topic):
    md = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
    return md.leader, sorted(md.isrs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    args = ap.parse_args()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    teardown()
    setup()
    procs = []
    d = tempfile.mkdtemp(prefix="sluice-partition-")
    try:
        props = ["min.insync.replicas=2", "broker.session.timeout.ms=4000",
                 "broker.heartbeat.interval.ms=500", "replica.lag.time.max.ms=4000"]
        for i in range(1, N + 1):
            procs.append(start(os.path.abspath(args.broker), d, i, props))
        everyone = ",".join(f"{NET}.{i}:9092" for i in range(1, N + 1))
        admin = AdminClient({"bootstrap.servers": everyone})
        deadline = time.time() + 60
        while True:
            try:
                admin.create_topics([NewTopic("p", 1, 3)])["p"].result(20)
                break
            except Exception:  # noqa: BLE001 — brokers still registering
                if time.time() > deadline:
                    raise
                time.sleep(1)
        time.sleep(2)
        leader, isr = partition_info(admin, "p")
        print(f"leader {leader}, isr {isr}")
        p = Producer({"bootstrap.servers": everyone, "acks": "all"})
        for k in range(100):
            p.produce("p", value=f"before-{k}".encode())
        assert p.flush(30) == 0
        others = [i for i in range(1, N + 1) if i != leader]
        # The isolated leader: reachable from here only.
        cut(leader, others)
        for o in others:
            cut(o, [leader])
        cut_at = time.time()
        lone = Producer({"bootstrap.servers": f"{NET}.{leader}:9092", "acks": "all",
                         "message.timeout.ms": 15000, "topic.metadata.refresh.interval.ms": 600000})
        acked = []
        for k in range(20):
            lone.produce("p", value=f"isolated-{k}".encode(),
                         on_delivery=lambda e, m: acked.append(m.value()) if e is None else None)
        majority = AdminClient({"bootstrap.servers": ",".join(f"{NET}.{o}:9092" for o in others)})
        new_leader = leader
        while new_leader in (leader, -1):
            if time.time() - cut_at > 60:
                raise AssertionError("no new leader within 60 s")
            try:
                new_leader, _ = partition_info(majority, "p")
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.2)
        took = time.time() - cut_at
        lone.flush(20)
        if acked:
            raise AssertionError(f"the isolated leader acknowledged {len(acked)} acks=all writes")
        print(f"new leader {new_leader} {took:.1f} s after the cut; the isolated leader acknowledged nothing")
        heal(leader)
        for o in others:
            heal(o)
        deadline = time.time() + 60
        while True:
            l, isr = partition_info(majority, "p")
            if leader in isr:
                break
            if time.time() > deadline:
                raise AssertionError(f"old leader never rejoined the ISR: {isr}")
            time.sleep(0.5)
        log_path = os.path.join(d, f"node-{leader}", "sluice.log")
        with open(log_path, errors="replace") as f:
            if "truncating a diverged follower log" not in f.read():
                raise AssertionError("the old leader rejoined without truncating its suffix")
        # The partition holds what was acknowledged, and nothing the isolated leader took.
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": everyone, "group.id": "partition-check",
                      "enable.auto.commit": False})
        c.assign([TopicPartition("p", 0, 0)])
        values = []
        deadline = time.time() + 30
        while len(values) < 100 and time.time() < deadline:
            for m in c.consume(100, 1.0):
                if not m.error():
                    values.append(m.value().decode())
        c.close()
        if values != [f"before-{k}" for k in range(100)]:
            raise AssertionError(f"the log after healing: {values[:5]}... ({len(values)})")
        print(f"healed: old leader {leader} truncated its unacknowledged suffix and is back in "
              f"the ISR {isr}; the log holds the 100 acknowledged records only")
    finally:
        for pr in procs:
            pr.kill()
        teardown()
        print(f"logs in {d}")


if __name__ == "__main__":
    sys.exit(main())
