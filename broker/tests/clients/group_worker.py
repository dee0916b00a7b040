#!/usr/bin/env python3
"""One consumer-group member for groups.py, driven by a real client library.

It subscribes to --topic in --group and, for every batch it receives, appends one line
"partition offset" per record to <dir>/<name>.out (flushed), then commits the processed
offsets synchronously. On revocation it commits what it processed of the revoked partitions
first. Its state (current assignment, assignment events, records seen) is rewritten
atomically to <dir>/<name>.status after every poll. SIGTERM makes it close cleanly (leaving
the group); SIGKILL from the test does not.

usage: group_worker.py --client confluent|kafka-python|aiokafka --bootstrap H:P --topic T
                       --group G --name N --dir D [--assignor A] [--instance-id I]
                       [--session-ms MS]
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time


class State:
    def __init__(self, args):
        self.args = args
        self.out = open(os.path.join(args.dir, f"{args.name}.out"), "a")
        self.status_path = os.path.join(args.dir, f"{args.name}.status")
        self.assigned = set()
        self.events = []
        self.seen = 0
        self.commit_failures = 0
        self.processed = {}  # partition -> next offset to commit
        self.stop = False
        signal.signal(signal.SIGTERM, self.on_term)
        self.write_status()

    def on_term(self, *_):
        self.stop = True

    def record(self, partition, offset):
        self.out.write(f"{partition} {offset}\n")
        self.processed[partition] = offset + 1
        self.seen += 1

    def flush(self):
        self.out.flush()

    def assign(self, parts):
        parts = set(parts)
        self.events.append(["assign", sorted(parts)])
        self.assigned |= parts
        self.write_status()

    def revoke(self, parts):
        parts = set(parts)
        self.events.append(["revoke", sorted(parts)])
        self.assigned -= parts
        for p in parts:
            self.processed.pop(p, None)
        self.write_status()

    def set_assignment(self, parts):
        parts = set(parts)
        if parts != self.assigned:
            self.assigned = parts
        self.write_status()

    def write_status(self):
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "assigned": sorted(self.assigned),
                    "events": self.events,
                    "seen": self.seen,
                    "commit_failures": self.commit_failures,
                    "t": time.time(),
                },
                f,
            )
        os.replace(tmp, self.status_path)


def run_confluent(args, st):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": args.session_ms,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": args.assignor or "range",
        "topic.metadata.refresh.interval.ms": 2000,
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    c = Consumer(conf)
    cooperative = conf["partition.assignment.strategy"] == "cooperative-sticky"

    def commit(parts):
        offs = [
            TopicPartition(args.topic, p, st.processed[p]) for p in parts if p in st.processed
        ]
        if not offs:
            return
        for _ in range(20):
            try:
                c.commit(offsets=offs, asynchronous=False)
                return
            except KafkaException as e:
                st.commit_failures += 1
                if not e.args[0].retriable():
                    print(f"{args.name}: commit failed: {e}", file=sys.stderr)
                    return
                time.sleep(0.1)

    def on_assign(consumer, parts):
        if cooperative:
            consumer.incremental_assign(parts)
        else:
            consumer.assign(parts)
        st.assign(p.partition for p in parts)

    def on_revoke(consumer, parts):
        st.flush()
        commit([p.partition for p in parts])
        if cooperative:
            consumer.incremental_unassign(parts)
        else:
            consumer.unassign()
        st.revoke(p.partition for p in parts)

    def on_lost(consumer, parts):
        if cooperative:
            consumer.incremental_unassign(parts)
        else:
            consumer.unassign()
        st.revoke(p.partition for p in parts)

    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    while not st.stop:
        msgs = c.consume(500, 0.2)
        done = set()
        for m in msgs:
            if m.error():
                continue
            st.record(m.partition(), m.offset())
            done.add(m.partition())
        st.flush()
        commit(sorted(done))
        st.write_status()
    c.close()


def run_kafka_python(args, st):
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.errors import CommitFailedError, KafkaError
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=args.session_ms,
        heartbeat_interval_ms=500,
        metadata_max_age_ms=2000,
    )

    def commit(parts):
        offs = {
            TopicPartition(args.topic, p): OffsetAndMetadata(st.processed[p], "", -1)
            for p in parts
            if p in st.processed
        }
        if not offs:
            return
        for _ in range(20):
            try:
                c.commit(offs)
                return
            except CommitFailedError as e:
                st.commit_failures += 1
                print(f"{args.name}: commit failed: {e}", file=sys.stderr)
                return
            except KafkaError:
                st.commit_failures += 1
                time.sleep(0.1)

    class Listener(ConsumerRebalanceListener):
        # kafka-python 3 runs listeners on its IO thread, where a blocking commit is refused;
        # nothing is pending here anyway: every batch is committed before the next poll.
        def on_partitions_revoked(self, revoked):
            st.revoke(tp.partition for tp in revoked)

        def on_partitions_assigned(self, assigned):
            st.assign(tp.partition for tp in assigned)

    c.subscribe([args.topic], listener=Listener())
    while not st.stop:
        try:
            batch = c.poll(timeout_ms=200, max_records=500)
        except KafkaError as e:
            # kafka-python 3 raises connection errors out of poll() while the broker is
            # restarting (the test restarts it on purpose); an application retries.
            print(f"{args.name}: poll failed, retrying: {e!r}", file=sys.stderr)
            time.sleep(0.2)
            continue
        done = set()
        for tp, recs in batch.items():
            for r in recs:
                st.record(tp.partition, r.offset)
            done.add(tp.partition)
        st.flush()
        commit(sorted(done))
        st.set_assignment(tp.partition for tp in c.assignment())
    c.close()


def run_aiokafka(args, st):
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.errors import CommitFailedError, KafkaError

    async def main():
        c = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=args.session_ms,
            heartbeat_interval_ms=500,
            metadata_max_age_ms=2000,
        )

        async def commit(parts):
            offs = {
                TopicPartition(args.topic, p): st.processed[p]
                for p in parts
                if p in st.processed
            }
            if not offs:
                return
            for _ in range(20):
                try:
                    await c.commit(offs)
                    return
                except CommitFailedError as e:
                    st.commit_failures += 1
                    print(f"{args.name}: commit failed: {e}", file=sys.stderr)
                    return
                except KafkaError:
                    st.commit_failures += 1
                    await asyncio.sleep(0.1)

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                st.flush()
                await commit([tp.partition for tp in revoked])
                st.revoke(tp.partition for tp in revoked)

            async def on_partitions_assigned(self, assigned):
                st.assign(tp.partition for tp in assigned)

        await c.start()
        c.subscribe([args.topic], listener=Listener())
        try:
            while not st.stop:
                batch = await c.getmany(timeout_ms=200, max_records=500)
                done = set()
                for tp, recs in batch.items():
                    for r in recs:
                        st.record(tp.partition, r.offset)
                    done.add(tp.partition)
                st.flush()
                await commit(sorted(done))
                st.set_assignment(tp.partition for tp in c.assignment())
        finally:
            await c.stop()

    asyncio.run(main())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--assignor")
    ap.add_argument("--instance-id")
    ap.add_argument("--session-ms", type=int, default=6000)
    args = ap.parse_args()
    st = State(args)
    {"confluent": run_confluent, "kafka-python": run_kafka_python, "aiokafka": run_aiokafka}[
        args.client
    ](args, st)
    st.flush()
    st.assigned = set()
    st.write_status()


if __name__ == "__main__":
    main()
