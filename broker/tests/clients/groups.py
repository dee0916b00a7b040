#!/usr/bin/env python3
"""Consumer groups with real clients against a real `sluice` broker.

For each scenario (librdkafka through confluent-kafka with the range, roundrobin and
cooperative-sticky assignors, kafka-python, aiokafka, kafkajs) a 12-partition topic is
consumed by a group of worker processes (group_worker.py / group_worker.js) that commit
synchronously after processing:

  1. three members split the partitions (every partition has exactly one owner);
  2. a fourth joins; 3. one leaves cleanly; 4. one is killed with SIGKILL and must be
     removed after its session timeout (measured); 5. the broker is killed with SIGKILL and
     restarted: the members carry on from the committed offsets; 6. the broker is stopped
     cleanly and restarted, and a member is replaced by a new process, which resumes from
     the committed offsets.

Records are produced between the steps; at the end every record must have been processed
exactly once by the group (nothing lost, nothing twice). With cooperative-sticky, members
must never revoke partitions they keep. Then, for librdkafka: static membership (a member
restarted within the session timeout gets its partitions back and nobody else rebalances),
publish/subscribe (a second group reads every record again), and the admin clients of
confluent-kafka and kafka-python list and describe the groups, read their offsets (lag 0),
refuse to delete a live group (NON_EMPTY_GROUP) and delete an empty one.

usage: groups.py --broker target/release/sluice [--scenarios a,b] [--keep]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check import Broker  # noqa: E402

PARTITIONS = 12
SESSION_MS = 6000
BATCH = 1200
SCENARIOS = ["range", "roundrobin", "cooperative-sticky", "kafka-python", "aiokafka", "kafkajs"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


ALL_WORKERS = []  # every worker started, killed at exit whatever happened


class Worker:
    def __init__(self, scenario, bootstrap, topic, group, name, dir, instance_id=None):
        self.name = name
        self.dir = dir
        self.status_path = os.path.join(dir, f"{name}.status")
        if os.path.exists(self.status_path):
            os.remove(self.status_path)
        if scenario == "kafkajs":
            cmd = ["node", os.path.join(HERE, "group_worker.js"), bootstrap, topic, group,
                   name, dir, str(SESSION_MS)]
        else:
            client = scenario if scenario in ("kafka-python", "aiokafka") else "confluent"
            cmd = [sys.executable, os.path.join(HERE, "group_worker.py"), "--client", client,
                   "--bootstrap", bootstrap, "--topic", topic, "--group", group, "--name", name,
                   "--dir", dir, "--session-ms", str(SESSION_MS)]
            if client == "confluent":
                cmd += ["--assignor", scenario if scenario in SCENARIOS[:3] else "range"]
            if instance_id:
                cmd += ["--instance-id", instance_id]
        self.err = open(os.path.join(dir, f"{name}.stderr"), "a")
        self.proc = subprocess.Popen(cmd, stdout=self.err, stderr=self.err)
        ALL_WORKERS.append(self)

    def status(self):
        try:
            with open(self.status_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def wait_split(workers, timeout=90):
    """Waits until the workers' assignments cover every partition exactly once (stable for
    2 s); returns {name: set(partitions)}."""
    deadline = time.time() + timeout
    stable_since, last = None, None
    while time.time() < deadline:
        for w in workers:
            if not w.alive():
                raise AssertionError(f"worker {w.name} died: see {w.dir}/{w.name}.stderr")
        sts = {w.name: w.status() for w in workers}
        split = None
        if all(s is not None for s in sts.values()):
            parts = [p for s in sts.values() for p in s["assigned"]]
            if sorted(parts) == list(range(PARTITIONS)) and all(s["assigned"] for s in sts.values()):
                split = {n: set(s["assigned"]) for n, s in sts.items()}
        if split is not None and split == last:
            if time.time() - stable_since >= 2:
                return split
        else:
            stable_since = time.time()
        last = split
        time.sleep(0.2)
    raise AssertionError(
        f"no clean split of {PARTITIONS} partitions among {[w.name for w in workers]} "
        f"within {timeout} s: {[(w.name, (w.status() or {}).get('assigned')) for w in workers]}"
    )


def produce(bootstrap, topic, n, start):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(start, start + n):
        p.produce(topic, key=f"k{i}", value=f"v{i}",
                  on_delivery=lambda err, _m: err and errors.append(err))
    left = p.flush(60)
    if left or errors:
        raise AssertionError(f"produce: {left} undelivered, errors {errors[:3]}")


def processed(dir, names):
    """All (partition, offset) lines the named workers wrote."""
    out = []
    for n in names:
        path = os.path.join(dir, f"{n}.out")
        if os.path.exists(path):
            with open(path) as f:
                out += [tuple(map(int, line.split())) for line in f if line.strip()]
    return out


def end_offsets(bootstrap, topic):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-groups-probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


def wait_consumed(bootstrap, topic, dir, names, timeout=90):
    ends = end_offsets(bootstrap, topic)
    want = sum(ends.values())
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = processed(dir, names)
        if len(set(got)) >= want:
            return got
        time.sleep(0.2)
    raise AssertionError(f"group processed {len(set(processed(dir, names)))} of {want} records")


def check_exactly_once(bootstrap, topic, dir, names):
    ends = end_offsets(bootstrap, topic)
    got = processed(dir, names)
    want = {(p, o) for p in range(PARTITIONS) for o in range(ends[p])}
    seen = set(got)
    lost = want - seen
    dups = len(got) - len(seen)
    if lost or dups or seen - want:
        raise AssertionError(
            f"{len(lost)} records lost (e.g. {sorted(lost)[:5]}), {dups} processed twice, "
            f"{len(seen - want)} unknown"
        )
    return len(want)


def create_topic(bootstrap, topic):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)


def events_since(worker, index):
    return (worker.status() or {"events": []})["events"][index:]


def scenario(broker, name, dir, results):
    topic, group = f"groups-{name}", f"group-{name}"
    bootstrap = broker.bootstrap
    create_topic(bootstrap, topic)
    produced = 0
    names = []

    def spawn(n):
        names.append(n)
        return Worker(name, bootstrap, topic, group, n, dir)

    def batch():
        nonlocal produced
        produce(bootstrap, topic, BATCH, produced)
        produced += BATCH
        wait_consumed(bootstrap, topic, dir, names)

    log(f"{name}: three members")
    t0 = time.time()
    a, b, c = spawn(f"{name}-a"), spawn(f"{name}-b"), spawn(f"{name}-c")
    split = wait_split([a, b, c])
    log(f"{name}: split {sorted(map(sorted, split.values()))} after {time.time() - t0:.1f} s")
    batch()

    marks = {w.name: len(w.status()["events"]) for w in (a, b, c)}
    log(f"{name}: a fourth joins")
    d = spawn(f"{name}-d")
    split4 = wait_split([a, b, c, d])
    if name == "cooperative-sticky":
        for w in (a, b, c):
            kept = split[w.name] & split4[w.name]
            for kind, parts in events_since(w, marks[w.name]):
                if kind == "revoke" and set(parts) & kept:
                    raise AssertionError(
                        f"{w.name} revoked {sorted(set(parts) & kept)} that it kept: "
                        "not an incremental rebalance")
        log(f"{name}: incremental: no member revoked a partition it kept")
    batch()

    log(f"{name}: one leaves")
    b.stop()
    wait_split([a, c, d])
    batch()

    log(f"{name}: one is killed (SIGKILL)")
    c.kill()
    t_kill = time.time()
    wait_split([a, d], timeout=SESSION_MS / 1000 + 60)
    removed_after = time.time() - t_kill
    log(f"{name}: killed member's partitions reassigned after {removed_after:.1f} s "
        f"(session.timeout.ms={SESSION_MS})")
    if removed_after < SESSION_MS / 1000 - 1:
        raise AssertionError("partitions moved before the session timeout: wrong member removed?")
    batch()

    log(f"{name}: broker killed (SIGKILL) and restarted")
    broker.kill()
    broker.start()
    wait_split([a, d])
    batch()

    log(f"{name}: broker stopped (SIGTERM) and restarted; a member replaced by a new process")
    broker.stop()
    broker.start()
    a.stop()
    e = spawn(f"{name}-e")
    wait_split([d, e])
    batch()
    n = check_exactly_once(bootstrap, topic, dir, names)
    log(f"{name}: {n} records, each processed exactly once by the group")
    results[name] = {"records": n, "session_removal_s": round(removed_after, 1)}
    for w in (d, e):
        w.stop()


def static_membership(broker, dir):
    topic, group = "groups-static", "group-static"
    bootstrap = broker.bootstrap
    create_topic(bootstrap, topic)
    ws = [Worker("range", bootstrap, topic, group, f"static-{i}", dir, instance_id=f"inst-{i}")
          for i in range(3)]
    split = wait_split(ws)
    marks = {w.name: len(w.status()["events"]) for w in ws}
    log("static: member 1 killed and restarted within the session timeout")
    ws[1].kill()
    ws[1] = Worker("range", bootstrap, topic, group, "static-1b", dir, instance_id="inst-1")
    split2 = wait_split(ws)
    if split2["static-1b"] != split["static-1"]:
        raise AssertionError(f"restarted static member got {split2['static-1b']}, "
                             f"had {split['static-1']}")
    for w in (ws[0], ws[2]):
        ev = events_since(w, marks[w.name])
        if ev:
            raise AssertionError(f"{w.name} rebalanced after a static restart: {ev}")
    log("static: same partitions back, no rebalance of the others")
    for w in ws:
        w.stop()


def pubsub_and_admin(broker, dir):
    """A second group reads the whole range topic again; admin clients see both groups."""
    from confluent_kafka import ConsumerGroupState, TopicPartition
    from confluent_kafka.admin import AdminClient
    from kafka.admin import KafkaAdminClient

    bootstrap = broker.bootstrap
    topic = "groups-range"
    w = Worker("range", bootstrap, topic, "group-second", "second", dir)
    wait_split([w])
    got = wait_consumed(bootstrap, topic, dir, ["second"])
    n = check_exactly_once(bootstrap, topic, dir, ["second"])
    log(f"pub/sub: a second group read all {n} records again ({len(got)} lines)")

    ends = end_offsets(bootstrap, topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = {g.group_id: g.state for g in admin.list_consumer_groups().result(30).valid}
    if listed.get("group-second") != ConsumerGroupState.STABLE:
        raise AssertionError(f"confluent list_consumer_groups: {listed}")
    desc = admin.describe_consumer_groups(["group-second"])["group-second"].result(30)
    if desc.state != ConsumerGroupState.STABLE or len(desc.members) != 1:
        raise AssertionError(f"describe: {desc.state} {desc.members}")
    owned = sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions)
    if owned != list(range(PARTITIONS)):
        raise AssertionError(f"describe shows assignment {owned}")
    from confluent_kafka import ConsumerGroupTopicPartitions

    req = ConsumerGroupTopicPartitions("group-second",
                                       [TopicPartition(topic, p) for p in range(PARTITIONS)])
    offs = admin.list_consumer_group_offsets([req])["group-second"].result(30)
    lag = {tp.partition: ends[tp.partition] - tp.offset for tp in offs.topic_partitions}
    if any(lag.values()):
        raise AssertionError(f"lag after consuming everything: {lag}")
    log("admin (confluent): listed Stable, described with its assignment, lag 0 everywhere")

    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap)
    groups = {g["group_id"]: g["group_state"] for g in kadmin.list_groups()}
    if groups.get("group-second") != "Stable" or groups.get("group-range") != "Empty":
        raise AssertionError(f"kafka-python list_groups: {groups}")
    kdesc = kadmin.describe_groups(["group-second"])["group-second"]
    if kdesc["group_state"] != "Stable" or len(kdesc["members"]) != 1:
        raise AssertionError(f"kafka-python describe_groups: {kdesc}")
    koffs = kadmin.list_group_offsets({"group-range": None})["group-range"]
    klag = {tp.partition: ends[tp.partition] - om.offset for tp, om in koffs.items()}
    if sorted(klag) != list(range(PARTITIONS)) or any(klag.values()):
        raise AssertionError(f"kafka-python offsets of group-range: lag {klag}")
    log("admin (kafka-python): listed, described, committed offsets = end offsets")
    sub = kadmin.delete_group_offsets("group-second", [TopicPartition(topic, 0)])
    if [e.__name__ for e in sub.values()] != ["GroupSubscribedToTopicError"]:
        raise AssertionError(f"OffsetDelete on a subscribed topic: {sub}")

    live = kadmin.delete_groups(["group-second"])
    if live["group-second"] != "NonEmptyGroupError":
        raise AssertionError(f"deleting a live group: {live}")
    fut = admin.delete_consumer_groups(["group-second"])["group-second"]
    try:
        fut.result(30)
        raise AssertionError("confluent deleted a live group")
    except Exception as e:  # noqa: BLE001 - checking the Kafka error inside
        if "NON_EMPTY_GROUP" not in str(e):
            raise
    log("admin: deleting the live group is refused with NON_EMPTY_GROUP (both clients)")
    w.stop()
    admin.delete_consumer_groups(["group-second"])["group-second"].result(30)
    done = kadmin.delete_groups(["group-range", "no-such-group"])
    if done != {"group-range": "OK", "no-such-group": "GroupIdNotFoundError"}:
        raise AssertionError(f"kafka-python delete_groups: {done}")
    left = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    if "group-second" in left or "group-range" in left:
        raise AssertionError(f"deleted groups still listed: {left}")
    log("admin: empty groups deleted (confluent and kafka-python) and gone from the list")
    kadmin.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-groups-")
    broker = Broker(args.broker, os.path.join(work, "data"), os.path.join(work, "broker.log"),
                    extra_args=["--prop", "group.initial.rebalance.delay.ms=1000"])
    results = {}
    ok = False
    try:
        broker.start()
        for name in args.scenarios.split(","):
            scenario(broker, name, work, results)
        if "range" in args.scenarios.split(","):
            static_membership(broker, work)
            pubsub_and_admin(broker, work)
        ok = True
    finally:
        for w in ALL_WORKERS:
            if w.alive():
                w.kill()
        broker.kill()
        print(json.dumps(results))
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    log("groups: all checks passed")


if __name__ == "__main__":
    main()
