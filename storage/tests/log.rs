//! Log behaviour on a real directory under a glommio executor: append, read, roll, recovery.

mod common;

use std::path::Path;
use std::rc::Rc;

use common::{batch, crc32c, open, read_all, run, small_config};
use protocol::record_batch::{BatchIter, RecordBatchView};
use storage::{Log, LogConfig, Offset};

#[test]
fn append_assigns_offsets_and_reads_back_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        let mut expected = Vec::new();
        let mut next = 0i64;
        for i in 0..300 {
            let count = 1 + (i % 5);
            let info = log
                .append(
                    &batch(count, 300 + (i as usize * 7) % 900, 1000 + i as i64),
                    0,
                    1 << 20,
                    0,
                )
                .await
                .unwrap();
            assert_eq!(info.base_offset, Offset(next));
            log.wait_durable(info.end_offset).await.unwrap();
            expected.push((next, count));
            next += count as i64;
        }
        assert_eq!(log.durable_offset(), Offset(next));
        assert_eq!(read_all(&log).await, expected);
        // Reading from the middle of a batch returns that batch first.
        let (base, count) = expected[12];
        assert!(count > 1);
        let r = log.read(Offset(base + 1), 1, true).await.unwrap();
        let v = RecordBatchView::parse_verified(&r.records).unwrap();
        assert_eq!(v.base_offset(), base);
        assert!(
            std::fs::read_dir(&path)
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log"))
                .count()
                > 2,
            "rolled"
        );
        log.close().await.unwrap();
        // Reopen: same content, appends continue at the same offset.
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(next));
        assert_eq!(read_all(&log).await, expected);
        let info = log.append(&batch(2, 10, 5), 0, 1 << 20, 0).await.unwrap();
        assert_eq!(info.base_offset, Offset(next));
    });
}

#[test]
fn rejects_bad_crc_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        let mut good = batch(3, 100, 1);
        let mut both = good.clone();
        let mut bad = batch(1, 50, 1);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        both.extend_from_slice(&bad);
        assert!(log.append(&both, 0, 1 << 20, 0).await.is_err());
        assert!(
            log.append(&good[..good.len() - 3], 0, 1 << 20, 0)
                .await
                .is_err(),
            "truncated"
        );
        assert_eq!(log.log_end_offset(), Offset(0));
        good[0] = 9; // client base offsets are ignored
        let info = log.append(&good, 0, 1 << 20, 0).await.unwrap();
        assert_eq!((info.base_offset, info.end_offset), (Offset(0), Offset(3)));
    });
}

#[test]
fn recovery_truncates_torn_tail_and_rebuilds_missing_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let p2 = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p2, small_config()).await;
        for i in 0..200 {
            let info = log.append(&batch(2, 500, i), 0, 1 << 20, 0).await.unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
        }
        log.close().await.unwrap();
    });
    let mut logs: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    // Cut the active segment in the middle of its last batch, and drop an older index.
    let last = logs.last().unwrap().clone();
    let len = std::fs::metadata(&last).unwrap().len();
    let data = std::fs::read(&last).unwrap();
    let valid: usize = BatchIter::new(&data, true).map(|v| v.size_bytes()).sum();
    assert!(valid as u64 <= len);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(valid as u64 - 100)
        .unwrap();
    std::fs::remove_file(logs[0].with_extension("index")).unwrap();
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        let got = read_all(&log).await;
        assert_eq!(got.len(), 199, "only the torn batch is gone");
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (o, c))| *o == 2 * i as i64 && *c == 2));
        let info = log.append(&batch(1, 10, 0), 0, 1 << 20, 0).await.unwrap();
        assert_eq!(info.base_offset, Offset(398));
        log.wait_durable(info.end_offset).await.unwrap();
        assert_eq!(read_all(&log).await.len(), 200);
        assert!(logs[0].with_extension("index").exists(), "index rebuilt");
        let found = log
            .batch_for_timestamp(150)
            .await
            .unwrap()
            .expect("a batch");
        let view = RecordBatchView::parse(&found).unwrap();
        assert_eq!((view.base_offset(), view.max_timestamp()), (300, 150));
    });
}

#[test]
fn timestamp_lookup_finds_unindexed_batches_in_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    // Small segments so that some are sealed; an index interval so large that only each
    // segment's first batch is indexed. Timestamps go up and down, as create times may.
    let config = || LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 1 << 30,
        ..LogConfig::default()
    };
    let timestamps: Vec<i64> = (0..60).map(|i| 1000 + i * 10 + (i % 3) * 7).collect();
    let expect = |target: i64| -> Option<i64> {
        // The first batch (one record each) whose timestamp is at or after `target`.
        timestamps
            .iter()
            .position(|&t| t >= target)
            .map(|i| i as i64)
    };
    let ts = timestamps.clone();
    let p = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p, config()).await;
        for t in &ts {
            let info = log.append(&batch(1, 200, *t), 0, 1 << 20, 0).await.unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
        }
        log.close().await.unwrap();
    });
    assert!(
        std::fs::read_dir(&path).unwrap().count() > 6,
        "several segments"
    );
    for reopen in 0..2 {
        let p = path.clone();
        let ts = timestamps.clone();
        let expected: Vec<Option<i64>> = (990..1700).step_by(3).map(expect).collect();
        run(move || async move {
            let (log, _c, _r) = open(&p, config()).await;
            let mut got = Vec::new();
            for target in (990..1700).step_by(3) {
                let found = log.batch_for_timestamp(target).await.unwrap();
                got.push(found.map(|b| RecordBatchView::parse(&b).unwrap().base_offset()));
            }
            assert_eq!(got, expected, "reopen {reopen}; timestamps {ts:?}");
            log.close().await.unwrap();
        });
    }
}

/// An idempotent producer's batch: `batch` with producer id, epoch and base sequence set.
fn idempotent(pid: i64, epoch: i16, base_seq: i32, count: i32) -> Vec<u8> {
    let mut b = batch(count, 100, 1_000);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_seq.to_be_bytes());
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Appends and waits until durable; returns (base offset, duplicate).
async fn append_durably(log: &Rc<Log>, b: &[u8]) -> Result<(i64, bool), storage::StorageError> {
    let info = log.append(b, 0, 1 << 20, 0).await?;
    log.wait_durable(info.end_offset).await?;
    Ok((info.base_offset.0, info.duplicate))
}

#[test]
fn idempotent_retries_are_written_once_across_reopen_and_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let config = || LogConfig {
        segment_bytes: 4096,
        ..small_config()
    };
    // Producer 7 writes 40 batches of 3 records across several segments; other traffic
    // (plain batches) is interleaved.
    let p = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p, config()).await;
        for i in 0..40 {
            let (base, dup) = append_durably(&log, &idempotent(7, 0, i * 3, 3))
                .await
                .unwrap();
            assert!(!dup);
            assert_eq!(base, i as i64 * 4, "three records, then one plain record");
            append_durably(&log, &batch(1, 50, 1_000)).await.unwrap();
        }
        // A retry of a recent batch gets its original offset and writes nothing.
        let end = log.log_end_offset();
        assert_eq!(
            append_durably(&log, &idempotent(7, 0, 39 * 3, 3))
                .await
                .unwrap(),
            (156, true)
        );
        assert_eq!(log.log_end_offset(), end);
        log.close().await.unwrap();
    });
    // Clean reopen (snapshot at the end), then a "crash": the log is dropped without close,
    // so the next open replays from the last roll's snapshot.
    for round in 0..2 {
        let p = path.clone();
        run(move || async move {
            let (log, _c, _r) = open(&p, config()).await;
            for i in 36..40 {
                let got = append_durably(&log, &idempotent(7, 0, i * 3, 3))
                    .await
                    .unwrap();
                assert_eq!(got, (i as i64 * 4, true), "round {round}, batch {i}");
            }
            let next = append_durably(&log, &idempotent(7, 0, (40 + round) * 3, 3)).await;
            assert!(
                !next.unwrap().1,
                "round {round}: a new sequence is appended"
            );
            let gap = append_durably(&log, &idempotent(7, 0, 500, 3)).await;
            assert!(
                matches!(gap, Err(storage::StorageError::Producer(_))),
                "round {round}: {gap:?}"
            );
            if round == 0 {
                log.close().await.unwrap();
            }
        });
    }
    let records: usize = std::fs::read_dir(&path)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snapshot")
        })
        .count();
    assert!(records >= 1, "producer snapshots are written");
}

#[test]
fn snapshot_beyond_a_lost_tail_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let p = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p, small_config()).await;
        for i in 0..5 {
            append_durably(&log, &idempotent(3, 0, i, 1)).await.unwrap();
        }
        log.close().await.unwrap(); // snapshot at offset 5
    });
    // Lose the last batch, as if it had never reached the disk.
    // (The file may be longer than its data: direct I/O pads the last block with zeros.)
    let seg = path.join(format!("{:020}.log", 0));
    let four_batches = 4 * idempotent(3, 0, 4, 1).len() as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(four_batches)
        .unwrap();
    std::fs::remove_file(path.join(format!("{:020}.index", 0))).ok();
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(4));
        // Another producer's record takes offset 4. Then the client, whose sequence 4 is
        // gone, retries it: it must be written, not answered with offset 4.
        assert_eq!(
            append_durably(&log, &batch(1, 10, 1_000)).await.unwrap(),
            (4, false)
        );
        assert_eq!(
            append_durably(&log, &idempotent(3, 0, 4, 1)).await.unwrap(),
            (5, false)
        );
        assert_eq!(read_all(&log).await.len(), 6);
    });
}

fn segment_count(path: &Path) -> usize {
    std::fs::read_dir(path)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[test]
fn retention_deletes_whole_old_segments_and_moves_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        // 100 batches of ~2 KiB: several 64 KiB segments. Timestamps: batch i at i seconds.
        for i in 0..100i64 {
            let info = log
                .append(&batch(2, 2000, i * 1000), 0, 1 << 20, 0)
                .await
                .unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
        }
        let before = segment_count(&path);
        assert!(before >= 3);
        // Nothing is due: no limits set.
        assert_eq!(log.enforce_retention(1_000_000).await.unwrap(), 0);

        // By size: keep at most ~100 KiB.
        let mut c = small_config();
        c.retention_bytes = 100 << 10;
        log.set_config(c.clone());
        let deleted = log.enforce_retention(0).await.unwrap();
        assert!(deleted > 0);
        assert!(
            log.size_bytes() <= (100 << 10) + (64 << 10),
            "{}",
            log.size_bytes()
        );
        assert_eq!(segment_count(&path), before - deleted);
        let start = log.log_start_offset();
        assert!(start > Offset(0));
        assert!(
            log.read(Offset(0), 1 << 20, true).await.is_err(),
            "below the start"
        );
        let rest = read_all(&log).await;
        assert_eq!(rest.first().unwrap().0, start.0);
        assert_eq!(rest.last().unwrap().0, 198);

        // By time: at 100 s with 10 s retention, the segment holding batch 92 (newest 92 s)
        // is kept with the active one; at 200 s only the active one stays.
        c.retention_bytes = -1;
        c.retention_ms = 10_000;
        log.set_config(c);
        log.enforce_retention(100_000).await.unwrap();
        assert_eq!(segment_count(&path), 2);
        log.enforce_retention(200_000).await.unwrap();
        assert_eq!(segment_count(&path), 1, "only the active segment is left");
        log.close().await.unwrap();

        // The start survives a reopen (it is the first remaining segment's base).
        let start = {
            let (log, _c, _r) = open(&path, small_config()).await;
            let s = log.log_start_offset();
            assert_eq!(read_all(&log).await.last().unwrap().0, 198);
            log.close().await.unwrap();
            s
        };
        assert!(start > Offset(100));
    });
}

#[test]
fn delete_records_moves_the_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        for i in 0..60i64 {
            let info = log.append(&batch(1, 2000, i), 0, 1 << 20, 0).await.unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
        }
        assert!(
            log.delete_records(61).await.is_err(),
            "beyond the high watermark"
        );
        assert_eq!(log.delete_records(45).await.unwrap(), Offset(45));
        assert_eq!(
            log.delete_records(10).await.unwrap(),
            Offset(45),
            "never backwards"
        );
        assert_eq!(read_all(&log).await.first().unwrap().0, 45);
        log.close().await.unwrap();
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(log.log_start_offset(), Offset(45));
        assert_eq!(read_all(&log).await.len(), 15);
        assert_eq!(log.delete_records(-1).await.unwrap(), Offset(60));
        assert!(read_all(&log).await.is_empty());
    });
}

#[test]
fn log_append_time_stamps_batches_with_a_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-0");
    run(move || async move {
        let c = LogConfig {
            log_append_time: true,
            ..small_config()
        };
        let (log, _c, _r) = open(&path, c).await;
        let info = log
            .append(&batch(3, 100, 5), 0, 1 << 20, 1_700_000_000_123)
            .await
            .unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        let r = log.read(Offset(0), 1 << 20, true).await.unwrap();
        let v = RecordBatchView::parse_verified(&r.records).unwrap();
        assert!(v.is_log_append_time());
        assert_eq!(v.max_timestamp(), 1_700_000_000_123);
    });
}

/// A batch whose header claims `last_offset_delta` (with `count` records): what storage
/// sees from the coordinator or a replica, which are not checked record by record.
fn batch_spanning(count: i32, last_offset_delta: i32) -> Vec<u8> {
    let mut b = batch(count, 64, 1_000);
    b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn segments_roll_before_relative_offsets_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let config = LogConfig {
            segment_offsets_max: 100,
            ..small_config()
        };
        let (log, _c, _r) = open(&path, config.clone()).await;
        let mut expected = Vec::new();
        // 30 offsets per batch: a segment holds 3 (offsets 0..=89), the 4th would end at
        // relative offset 119 > 100 and goes to a new segment.
        for _ in 0..10 {
            let (base, _) = append_durably(&log, &batch_spanning(1, 29)).await.unwrap();
            expected.push((base, 1));
        }
        assert_eq!(log.log_end_offset(), Offset(300));
        assert_eq!(segment_count(&path), 4, "rolled at the offset limit");
        assert_eq!(read_all(&log).await, expected);
        // Every batch is found from any offset inside it.
        for (base, _) in &expected {
            let r = log.read(Offset(base + 17), 1, true).await.unwrap();
            let v = RecordBatchView::parse_verified(&r.records).unwrap();
            assert_eq!(v.base_offset(), *base);
        }
        // One batch that cannot fit in any segment is refused, nothing written.
        let err = log.append(&batch_spanning(1, 101), 0, 1 << 20, 0).await;
        assert!(
            matches!(err, Err(storage::StorageError::OffsetsOverflow { .. })),
            "{err:?}"
        );
        assert_eq!(log.log_end_offset(), Offset(300));
        log.close().await.unwrap();
        let (log, _c, _r) = open(&path, config).await;
        assert_eq!(read_all(&log).await, expected);
    });
}

#[test]
fn the_full_relative_offset_range_never_panics_the_index() {
    // The hardening issue's input: four batches claiming last_offset_delta 0x7ffffffe each.
    // The default limit (i32::MAX) rolls a segment for every one of them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        for i in 0..4i64 {
            let (base, _) = append_durably(&log, &batch_spanning(1, 0x7fff_fffe))
                .await
                .unwrap();
            assert_eq!(base, i * 0x7fff_ffff);
        }
        let (base, _) = append_durably(&log, &batch(3, 100, 5)).await.unwrap();
        assert_eq!(base, 4 * 0x7fff_ffff);
        assert_eq!(read_all(&log).await.len(), 5);
        log.close().await.unwrap();
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(read_all(&log).await.len(), 5);
    });
}
