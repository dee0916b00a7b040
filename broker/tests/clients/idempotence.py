#!/usr/bin/env python3
"""Idempotent producers of real clients while the broker is killed with -9, twice.

For each client (confluent-kafka with enable.idempotence=true, kafka-python and aiokafka with
their idempotent producers): produce `--records` records numbered 0..N-1 across 8 partitions
of a topic of its own. When a third and when two thirds of the records are acknowledged, the
broker is killed with SIGKILL and started again on the same data. Then every partition is read
back: each number must appear exactly once (no duplicate, no gap) and the numbers must rise
within each partition (the producer's order).

A kill rarely lands between a batch's fsync and its acknowledgement, so on its own it seldom
makes a client resend a batch the broker already has. The clients therefore reach the broker
through `DroppingProxy` (the broker advertises the proxy's address), which swallows every
`--drop-every`-th Produce response and cuts that connection: the batch is stored, the client
never hears so, and resends it with the same sequence numbers.

usage: idempotence.py --broker target/release/sluice [--records N] [--clients a,b]
"""

import argparse
import asyncio
import os
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check import PARTITIONS, Broker, confluent_consume  # noqa: E402


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_frame(sock):
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


class DroppingProxy:
    """A TCP proxy for Kafka frames that loses every `drop_every`-th Produce response."""

    def __init__(self, upstream_port, drop_every):
        self.upstream_port = upstream_port
        self.drop_every = drop_every
        self.produce_responses = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            produce_ids = set()
            threading.Thread(target=self._requests, args=(client, upstream, produce_ids),
                             daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, produce_ids),
                             daemon=True).start()

    @staticmethod
    def _close(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _requests(self, client, upstream, produce_ids):
        try:
            while True:
                frame = read_frame(client)
                api_key, _version, correlation = struct.unpack(">hhi", frame[:8])
                if api_key == 0:
                    produce_ids.add(correlation)
                upstream.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError:
            self._close(client, upstream)

    def _responses(self, upstream, client, produce_ids):
        try:
            while True:
                frame = read_frame(upstream)
                correlation = struct.unpack(">i", frame[:4])[0]
                if correlation in produce_ids:
                    produce_ids.discard(correlation)
                    with self.lock:
                        self.produce_responses += 1
                        drop = self.produce_responses % self.drop_every == 0
                        self.dropped += drop
                    if drop:
                        self._close(client, upstream)
                        return
                client.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError:
            self._close(client, upstream)


class Killer:
    """Kills and restarts the broker when the acknowledged count crosses each threshold."""

    def __init__(self, broker, thresholds):
        self.broker = broker
        self.thresholds = list(thresholds)
        self.acked = 0
        self.kills = 0
        self.lock = threading.Lock()
        self.thread = None

    def ack(self, n=1):
        with self.lock:
            self.acked += n
            self._maybe_restart()

    def _maybe_restart(self):
        due = self.thresholds and self.acked >= self.thresholds[0]
        if due and self.thread is None:
            self.thresholds.pop(0)
            self.thread = threading.Thread(target=self._restart)
            self.thread.start()

    def _restart(self):
        self.broker.kill()
        self.kills += 1
        print(f"  kill -9 #{self.kills} after {self.acked} acks", flush=True)
        time.sleep(0.5)
        self.broker.start()
        time.sleep(0.5)  # let traffic flow before a next kill that is already due
        with self.lock:
            self.thread = None
            self._maybe_restart()

    def join(self):
        while True:
            with self.lock:
                t = self.thread
            if t is None:
                return
            t.join()


def value(i):
    return f"{i:09d}".encode()


def produce_confluent(bootstrap, topic, n, killer):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "reconnect.backoff.max.ms": 500,
        }
    )
    errors = []

    def done(err, _msg):
        if err:
            errors.append(str(err))
        else:
            killer.ack()

    for i in range(n):
        while True:
            try:
                p.produce(topic, key=str(i % 1009), value=value(i), on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        if i % 2000 == 0:
            p.poll(0)
    left = p.flush(300)
    if left or errors:
        raise AssertionError(f"{left} undelivered, errors {errors[:3]}")


def produce_kafka_python(bootstrap, topic, n, killer):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        compression_type="lz4",
        reconnect_backoff_max_ms=500,
    )
    futures = []
    for i in range(n):
        f = p.send(topic, key=str(i % 1009).encode(), value=value(i))
        f.add_callback(lambda _md: killer.ack())
        futures.append(f)
    p.flush(300)
    for f in futures:
        f.get(0)
    p.close()


def produce_aiokafka(bootstrap, topic, n, killer):
    async def run():
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await admin.close()
        p = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            linger_ms=5,
            compression_type="lz4",
            request_timeout_ms=10000,
        )
        await p.start()
        try:
            pending = []
            for i in range(n):
                fut = await p.send(topic, key=str(i % 1009).encode(), value=value(i))
                fut.add_done_callback(lambda f: f.exception() is None and killer.ack())
                pending.append(fut)
                if len(pending) >= 20000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await p.stop()

    asyncio.run(run())


PRODUCERS = {
    "confluent": produce_confluent,
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
}


def verify(recs, n):
    problems = []
    seen = {}
    for r in recs:
        i = int(r.value)
        if i in seen:
            problems.append(f"{i} stored twice (p{seen[i][0]}@{seen[i][1]}, p{r.partition}@{r.offset})")
        seen[i] = (r.partition, r.offset)
    missing = [i for i in range(n) if i not in seen]
    if missing:
        problems.append(f"{len(missing)} records missing, first {missing[:5]}")
    by_partition = {}
    for r in sorted(recs, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(r.partition, []).append(int(r.value))
    for p, values in by_partition.items():
        if values != sorted(values):
            problems.append(f"partition {p}: producer order broken")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--clients", default=",".join(PRODUCERS))
    ap.add_argument("--drop-every", type=int, default=7,
                    help="lose every Nth Produce response (0: no proxy)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-idempotence-")
    broker = Broker(os.path.abspath(args.broker), os.path.join(work, "data"),
                    os.path.join(work, "broker.log"))
    proxy = None
    if args.drop_every:
        proxy = DroppingProxy(broker.port, args.drop_every)
        broker.extra_args = ["--prop", f"advertised.listeners=PLAINTEXT://127.0.0.1:{proxy.port}"]
        bootstrap = f"127.0.0.1:{proxy.port}"
    else:
        bootstrap = broker.bootstrap
    failures = []
    try:
        broker.start()
        for name in args.clients.split(","):
            topic = f"idempotent-{name}"
            n = args.records
            killer = Killer(broker, [n // 3, 2 * n // 3])
            began = time.time()
            dropped_before = proxy.dropped if proxy else 0
            try:
                PRODUCERS[name](bootstrap, topic, n, killer)
                killer.join()
                took = time.time() - began
                if killer.kills != 2:
                    raise AssertionError(f"the broker was killed {killer.kills} times, not 2")
                dropped = (proxy.dropped if proxy else 0) - dropped_before
                if proxy and dropped == 0:
                    raise AssertionError("no Produce response was dropped: nothing was resent")
                recs = confluent_consume(bootstrap, topic)
                problems = verify(recs, n)
            except Exception as e:  # a client failure is a finding
                killer.join()
                problems = [f"{e!r}"]
                took = time.time() - began
            if problems:
                failures.append(f"{name}: {problems[:5]}")
                print(f"FAIL {name}: {problems[:5]}", flush=True)
            else:
                print(f"ok   {name}: {n} records, 2 x kill -9, {dropped} Produce responses "
                      f"lost, no duplicate, no gap, in order ({took:.0f} s)", flush=True)
    finally:
        broker.kill()
    if failures:
        with open(broker.log_path) as f:
            print("\nbroker log tail:\n" + "".join(f.readlines()[-30:]))
        sys.exit(1)


if __name__ == "__main__":
    main()
