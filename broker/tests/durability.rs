//! Crash and recovery: acknowledged records survive kill -9; torn tails and lost indexes are
//! repaired at start-up; the log takes new writes afterwards.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{batch, Broker, Client};
use kafka_protocol::records::Compression;

const TOPIC: &str = "durable";
const PARTITIONS: i32 = 4;

/// Base offset of an acknowledged batch and the values it carried.
type AckedBatch = (i64, Vec<Vec<u8>>);

fn value(partition: i32, seq: u64) -> Vec<u8> {
    format!("p{partition}-seq{seq:08}-{}", "x".repeat(100)).into_bytes()
}

#[test]
fn kill9_during_acks_all_stream_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, 2, &[]);
    assert_eq!(broker.client().create_topic(TOPIC, PARTITIONS), 0);

    // Acknowledged batches per partition as the producer saw them.
    let acked: Arc<Mutex<BTreeMap<i32, Vec<AckedBatch>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let acked = acked.clone();
        let stop = stop.clone();
        let addr = broker.addr;
        std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut sent = Vec::new();
                for p in 0..PARTITIONS {
                    let values: Vec<Vec<u8>> = (0..10).map(|i| value(p, seq + i)).collect();
                    sent.push((
                        p,
                        batch(&values, 1_700_000_000_000, Compression::None),
                        values,
                    ));
                }
                seq += 10;
                let req: Vec<_> = sent.iter().map(|(p, b, _)| (*p, b.clone())).collect();
                // A failed request (the broker died) is simply not acknowledged.
                let Some(result) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    client.produce(TOPIC, &req, -1)
                }))
                .ok() else {
                    return;
                };
                let mut acked = acked.lock().unwrap();
                for ((p, err, base), (_, _, values)) in result.into_iter().zip(sent) {
                    assert_eq!(err, 0, "produce error on partition {p}");
                    acked.entry(p).or_default().push((base, values));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill9();
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(|v| v.len()).sum();
    assert!(
        total > 20,
        "the producer should have had time to get acks ({total})"
    );

    broker.restart();
    let mut client = broker.client();
    for (p, batches) in &acked {
        let stored = client.fetch_all(TOPIC, *p);
        for (base, values) in batches {
            for (i, v) in values.iter().enumerate() {
                let offset = base + i as i64;
                let r = stored.get(offset as usize).unwrap_or_else(|| {
                    panic!("partition {p}: acknowledged offset {offset} missing after kill -9")
                });
                assert_eq!(r.offset, offset);
                assert_eq!(
                    r.value.as_deref(),
                    Some(&v[..]),
                    "partition {p} offset {offset}"
                );
            }
        }
    }
    // The log takes new writes after recovery.
    let r = client.produce(
        TOPIC,
        &[(0, batch(&[b"after".to_vec()], 1, Compression::None))],
        -1,
    );
    assert_eq!(r[0].1, 0);
    let after = client.fetch_all(TOPIC, 0);
    assert_eq!(after.last().unwrap().value.as_deref(), Some(&b"after"[..]));
}

fn segment_files(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn recovers_from_truncated_segment_and_deleted_index() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Small segments so that there are sealed segments with index files.
    let mut broker = Broker::start(&data, 1, &["log.segment.bytes=16384"]);
    let mut client = broker.client();
    assert_eq!(client.create_topic(TOPIC, 1), 0);
    let mut expected = Vec::new();
    for round in 0..100 {
        let values: Vec<Vec<u8>> = (0..5).map(|i| value(0, round * 5 + i)).collect();
        let r = client.produce(
            TOPIC,
            &[(0, batch(&values, 1_000 + round as i64, Compression::None))],
            -1,
        );
        assert_eq!(r[0].1, 0);
        expected.extend(values);
    }
    broker.stop();
    let pdir = data.join(format!("{TOPIC}-0"));
    let logs = segment_files(&pdir, "log");
    assert!(logs.len() >= 3, "expected several segments, got {logs:?}");
    // Tear the last batch of the active segment and drop the first segment's index.
    let last = logs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 700)
        .unwrap();
    // What an independent reader finds intact in the torn segment.
    let torn = std::fs::read(last).unwrap();
    let mut intact = protocol::record_batch::BatchIter::new(&torn, true);
    let intact_records: i64 = intact.by_ref().map(|b| b.records_count() as i64).sum();
    assert!(intact.error().is_some(), "the cut must land inside a batch");
    let first_in_last: i64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let surviving = (first_in_last + intact_records) as usize;
    assert!(surviving < expected.len());
    std::fs::remove_file(logs[0].with_extension("index")).unwrap();
    std::fs::remove_file(logs[0].with_extension("timeindex")).unwrap();

    broker.restart();
    let mut client = broker.client();
    let stored = client.fetch_all(TOPIC, 0);
    // Exactly the batches after the cut are gone.
    assert_eq!(stored.len(), surviving, "records after recovery");
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.value.as_deref(), Some(&expected[i][..]), "offset {i}");
    }
    assert!(logs[0].with_extension("index").exists(), "index rebuilt");
    assert!(
        broker.log().contains("truncating torn or corrupt tail"),
        "recovery is logged"
    );
    let r = client.produce(
        TOPIC,
        &[(0, batch(&[b"new".to_vec()], 5, Compression::None))],
        -1,
    );
    assert_eq!((r[0].1, r[0].2), (0, stored.len() as i64));
    let again = client.fetch_all(TOPIC, 0);
    assert_eq!(again.last().unwrap().value.as_deref(), Some(&b"new"[..]));
}
