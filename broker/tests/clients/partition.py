#!/usr/bin/env python3
"""A network partition around a partition leader (run.sh runs it where network namespaces
can be made: as root, with nftables).

Three brokers, each in its own network namespace on a bridge (10.77.0.N), the test in the
root namespace reaching all of them. nftables inside the leader's namespace drops traffic
from the other brokers. Checks: the isolated leader never acknowledges an acks=all write;
the majority elects a new leader (time measured); after healing, the old leader truncates
its unacknowledged suffix and rejoins the ISR. Then a partition whose ISR is gone stays
offline with unclean election off, and comes back with it on, the loss logged (`isr_gone`).

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


def diagnose(d):
    """What each broker believed when the test gave up: its view of the cluster, from its
    admin endpoint."""
    import urllib.request
    for i in range(1, N + 1):
        try:
            with urllib.request.urlopen(f"http://{NET}.{i}:9094/v1/brokers", timeout=5) as r:
                print(f"node {i} /v1/brokers: {r.read().decode()[:2000]}")
        except Exception as e:  # noqa: BLE001
            print(f"node {i} /v1/brokers: {e}")


def metadata_v0(node, topic):
    """(leader, sorted isr, error code) of `topic`'s partition 0 as broker `node` itself
    reports it.

    A raw Metadata v0 request on one connection to that broker, not a client's view: an
    AdminClient may route its metadata request to any broker it has learned, including the
    isolated one, whose answer is stale by design."""
    import socket
    import struct
    name = topic.encode()
    body = struct.pack(">hhih", 3, 0, 7, 4) + b"test" + struct.pack(">ih", 1, len(name)) + name
    with socket.create_connection((f"{NET}.{node}", 9092), timeout=5) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-response")
            buf += chunk
    pos = 8  # size, correlation id

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal pos
        n = take(">h")
        v = buf[pos:pos + n].decode()
        pos += n
        return v

    for _ in range(take(">i")):
        take(">i")
        string()
        take(">i")
    for _ in range(take(">i")):
        err = take(">h")
        string()
        if err:
            raise RuntimeError(f"topic error {err} from node {node}")
        for _ in range(take(">i")):
            perr, pid, leader = take(">hii")
            replicas = [take(">i") for _ in range(take(">i"))]
            isr = [take(">i") for _ in range(take(">i"))]
            if pid == 0:
                return leader, sorted(isr), perr
    raise RuntimeError(f"node {node} reported no partition 0 of {topic}")


def partition_info(admin, topic):
    md = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
    return md.leader, sorted(md.isrs)


def views(nodes, topic):
    """Each broker's own view of `topic` (None where it did not answer)."""
    out = []
    for n in nodes:
        try:
            out.append(metadata_v0(n, topic))
        except Exception:  # noqa: BLE001
            out.append(None)
    return out


def wait_for(what, timeout, check):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.3)


def read_all(bootstrap, topic, want):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    values = []
    deadline = time.time() + 30
    while len(values) < want and time.time() < deadline:
        for m in c.consume(100, 1.0):
            if not m.error():
                values.append(m.value().decode())
    # A little longer: anything beyond what is expected must show up too.
    for m in c.consume(100, 2.0):
        if not m.error():
            values.append(m.value().decode())
    c.close()
    return values


def count_in_logs(d, nodes, text):
    n = 0
    for i in nodes:
        with open(os.path.join(d, f"node-{i}", "sluice.log"), errors="replace") as f:
            n += f.read().count(text)
    return n


def isr_gone(d):
    """Unclean leader election under a partition. Topic `u` on brokers a (leader) and b,
    min.insync.replicas 1: b is cut off (the ISR shrinks to [a]), a takes records only it
    has, then a is cut off and b comes back: the ISR is gone. With unclean election off `u`
    stays offline; turned on, b leads, the loss is logged, and a, healed, truncates to b's
    log."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, NewTopic, ResourceType)
    everyone = ",".join(f"{NET}.{i}:9092" for i in range(1, N + 1))
    admin = AdminClient({"bootstrap.servers": everyone})
    wait_for("every broker back in p's ISR", 60,
             lambda: all(v and v[1] == [1, 2, 3] for v in views([1, 2, 3], "p")))
    # (Sluice places the two replicas itself: explicit replica assignments are refused in a
    # cluster for now.)
    admin.create_topics([NewTopic("u", 1, 2, config={
        "min.insync.replicas": "1", "unclean.leader.election.enable": "false"})])["u"].result(30)
    placed = wait_for("u led with an ISR of two everywhere", 30, lambda: (
        lambda vs: vs[0] if all(v and v[:2] == vs[0][:2] and len(v[1]) == 2 for v in vs)
        else None)(views([1, 2, 3], "u")))
    a = placed[0]
    b = next(r for r in placed[1] if r != a)
    c = next(i for i in range(1, N + 1) if i not in (a, b))
    print(f"u: leader {a}, follower {b}; {c} holds no replica")
    prod = Producer({"bootstrap.servers": f"{NET}.{a}:9092", "acks": "all",
                     "message.timeout.ms": 20000})
    for k in range(10):
        prod.produce("u", value=f"both-{k}".encode())
    assert prod.flush(30) == 0
    # Broker 2 cut off: fenced, out of the ISR.
    cut(b, [a, c])
    cut(a, [b])
    cut(c, [b])
    wait_for("ISR of u shrunk to the leader", 60,
             lambda: all(v and v[:2] == (a, [a]) for v in views([a, c], "u")))
    only_a = []
    for k in range(10):
        prod.produce("u", value=f"only-a-{k}".encode(),
                     on_delivery=lambda e, m: only_a.append(m) if e is None else None)
    assert prod.flush(30) == 0 and len(only_a) == 10, "acks=all with an ISR of one, min.insync 1"
    # The ISR goes: a cut off (it drops everything coming in, so nothing passes while the
    # other rules change), b back with c.
    cut(a, [b, c])
    heal(b)
    heal(c)
    cut(b, [a])
    cut(c, [a])
    offline_at = wait_for("u offline (leader -1) in the majority's view", 60,
                          lambda: all(v and v[0] == -1 for v in views([b, c], "u"))
                          and time.time())
    wait_for("b unfenced again (back in p's ISR)", 60,
             lambda: all(v and b in v[1] for v in views([b, c], "p")))
    # Unclean election off: offline it stays, LEADER_NOT_AVAILABLE (5), for as long again
    # as the session timeout and more.
    until = time.time() + 8
    while time.time() < until:
        for v in views([b, c], "u"):
            if v and (v[0] != -1 or v[2] != 5):
                raise AssertionError(f"u came back with unclean election off: {v}")
        time.sleep(0.3)
    if count_in_logs(d, [1, 2, 3], "unclean leader election"):
        raise AssertionError("an unclean election was logged while it was off")
    print(f"ISR gone: u offline for {time.time() - offline_at:.1f} s with unclean election off")
    # Turned on (through the majority; a request may reach the isolated a first).
    majority_admin = AdminClient({"bootstrap.servers": f"{NET}.{b}:9092,{NET}.{c}:9092"})
    on = ConfigResource(ResourceType.TOPIC, "u", incremental_configs=[
        ConfigEntry("unclean.leader.election.enable", "true",
                    incremental_operation=AlterConfigOpType.SET)])

    def turn_on():
        try:
            majority_admin.incremental_alter_configs([on])[on].result(15)
            return time.time()
        except Exception as e:  # noqa: BLE001
            print(f"alter configs: {e}; again")
            return None
    on_at = wait_for("unclean.leader.election.enable=true set", 90, turn_on)
    wait_for("u led by b after the unclean election", 30,
             lambda: all(v and v[:2] == (b, [b]) for v in views([b, c], "u")))
    took = time.time() - on_at
    if not count_in_logs(d, [1, 2, 3], "unclean leader election"):
        raise AssertionError("the unclean election's loss was not logged")
    values = read_all(f"{NET}.{b}:9092", "u", 10)
    if values != [f"both-{k}" for k in range(10)]:
        raise AssertionError(f"u after the unclean election: {values}")
    print(f"unclean election on: {b} leads u {took:.1f} s later, the loss (10 records "
          f"only {a} had) logged; u holds the 10 records both had")
    truncations = count_in_logs(d, [a], "truncating a diverged follower log")
    heal(a)
    heal(b)
    heal(c)
    wait_for("a back in u's ISR", 60,
             lambda: all(v and v[:2] == (b, sorted([a, b])) for v in views([b, c], "u")))
    if count_in_logs(d, [a], "truncating a diverged follower log") <= truncations:
        raise AssertionError(f"{a} rejoined u without truncating its suffix")
    prod.produce("u", value=b"after")
    assert prod.flush(30) == 0
    values = read_all(everyone, "u", 11)
    if values != [f"both-{k}" for k in range(10)] + ["after"]:
        raise AssertionError(f"u after healing: {values}")
    print(f"healed: {a} truncated the records only it had and follows {b}")


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
        new_leader = leader
        while new_leader in (leader, -1):
            if time.time() - cut_at > 60:
                diagnose(d)
                raise AssertionError("no new leader within 60 s")
            for o in others:
                try:
                    l, _, _ = metadata_v0(o, "p")
                except Exception:  # noqa: BLE001
                    continue
                if l not in (leader, -1):
                    new_leader = l
                    break
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
            # Every majority broker's own view, not a client's (which may still be the old
            # leader's stale one).
            views = []
            for o in others:
                try:
                    views.append(metadata_v0(o, "p"))
                except Exception:  # noqa: BLE001
                    views.append(None)
            isr = views[0][1] if views[0] else []
            if all(v and leader in v[1] for v in views):
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
        isr_gone(d)
    finally:
        for pr in procs:
            pr.kill()
        teardown()
        print(f"logs in {d}")


if __name__ == "__main__":
    sys.exit(main())
