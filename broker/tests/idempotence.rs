//! Idempotent producers against the real binary: a retried batch is written once and
//! acknowledged with its original offset, also after a clean restart and after kill -9;
//! gaps, stale epochs and multi-batch idempotent produces get Kafka's error codes.

mod common;

use bytes::{Bytes, BytesMut};
use common::{Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_RECORD: i16 = 87;
const TOPIC: &str = "idem";

/// One batch of `count` records of producer `pid`/`epoch`, sequences from `seq`.
fn idem_batch(pid: i64, epoch: i16, seq: i32, count: i32, tag: &str) -> Bytes {
    idem_batch_at(pid, epoch, seq, count, tag, 1_700_000_000_000)
}

fn idem_batch_at(pid: i64, epoch: i16, seq: i32, count: i32, tag: &str, ts: i64) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i,
            timestamp: ts,
            key: None,
            value: Some(Bytes::from(format!("{tag}-{}", seq + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::Lz4,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

fn init_producer_id(c: &mut Client) -> (i64, i16) {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let resp = c.send(&req, 4);
    assert_eq!(resp.error_code, 0);
    (resp.producer_id.0, resp.producer_epoch)
}

/// (error code, base offset) of a one-partition produce of `b` to partition 0.
fn produce(c: &mut Client, b: &Bytes) -> (i16, i64) {
    let r = c.produce(TOPIC, &[(0, b.clone())], -1);
    (r[0].1, r[0].2)
}

#[test]
fn retries_are_written_once_across_restart_and_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), 2, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 2), 0);
    let (pid, epoch) = init_producer_id(&mut c);
    assert_eq!(epoch, 0);

    let first = idem_batch(pid, 0, 0, 5, "a");
    let second = idem_batch(pid, 0, 5, 5, "a");
    assert_eq!(produce(&mut c, &first), (0, 0));
    let plain = common::batch(&[b"plain".to_vec()], 1, Compression::None);
    assert_eq!(c.produce(TOPIC, &[(0, plain)], -1)[0].1, 0);
    assert_eq!(produce(&mut c, &second), (0, 6));
    for _ in 0..10 {
        assert_eq!(produce(&mut c, &first), (0, 0), "retry of the first batch");
        assert_eq!(
            produce(&mut c, &second),
            (0, 6),
            "retry of the second batch"
        );
    }

    broker.restart();
    let mut c = broker.client();
    assert_eq!(produce(&mut c, &second), (0, 6), "after a clean restart");
    broker.kill9();
    broker.spawn();
    let mut c = broker.client();
    assert_eq!(produce(&mut c, &first), (0, 0), "after kill -9");
    assert_eq!(produce(&mut c, &second), (0, 6), "after kill -9");
    assert_eq!(produce(&mut c, &idem_batch(pid, 0, 10, 5, "a")), (0, 11));

    let values: Vec<Bytes> = c
        .fetch_all(TOPIC, 0)
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(values.len(), 16, "5 + 1 + 5 + 5 records, each once");
    let mut unique = values.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), values.len());

    let (next_pid, _) = init_producer_id(&mut c);
    assert_ne!(next_pid, pid, "producer ids are not reused after a restart");
    assert!(broker.is_running());
}

#[test]
fn gaps_stale_epochs_and_batch_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 1), 0);
    let (pid, _) = init_producer_id(&mut c);
    let (other, _) = init_producer_id(&mut c);
    assert_ne!(pid, other);

    assert_eq!(produce(&mut c, &idem_batch(pid, 0, 0, 3, "b")), (0, 0));
    let (err, _) = produce(&mut c, &idem_batch(pid, 0, 7, 1, "b"));
    assert_eq!(err, OUT_OF_ORDER_SEQUENCE_NUMBER, "a gap after sequence 2");
    // A bumped epoch starts again at sequence 0; the old epoch is then fenced.
    assert_eq!(produce(&mut c, &idem_batch(pid, 1, 0, 2, "c")), (0, 3));
    let (err, _) = produce(&mut c, &idem_batch(pid, 0, 3, 1, "b"));
    assert_eq!(err, INVALID_PRODUCER_EPOCH);
    let (err, _) = produce(&mut c, &idem_batch(pid, 2, 4, 1, "d"));
    assert_eq!(
        err, OUT_OF_ORDER_SEQUENCE_NUMBER,
        "a new epoch must start at 0"
    );
    // Kafka takes exactly one batch per partition from an idempotent producer.
    let mut two = BytesMut::from(&idem_batch(other, 0, 0, 1, "e")[..]);
    two.extend_from_slice(&idem_batch(other, 0, 1, 1, "e"));
    let (err, _) = produce(&mut c, &two.freeze());
    assert_eq!(err, INVALID_RECORD);

    assert_eq!(
        c.fetch_all(TOPIC, 0).len(),
        5,
        "only the accepted batches are stored"
    );
    assert!(broker.is_running());
}

#[test]
fn idle_producers_expire() {
    let dir = tempfile::tempdir().unwrap();
    let props = [
        "producer.id.expiration.ms=1500",
        "producer.id.expiration.check.interval.ms=100",
    ];
    let mut broker = Broker::start(&dir.path().join("data"), 1, &props);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, 1), 0);
    let (pid, _) = init_producer_id(&mut c);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let first = idem_batch_at(pid, 0, 0, 3, "x", now);
    assert_eq!(produce(&mut c, &first), (0, 0));
    let gap = idem_batch_at(pid, 0, 7, 1, "x", now);
    assert_eq!(produce(&mut c, &gap).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // The producer's state is gone: like Kafka, any sequence starts it afresh.
    assert_eq!(produce(&mut c, &gap), (0, 3));
    assert!(broker.is_running());
}
