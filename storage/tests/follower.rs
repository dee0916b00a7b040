//! Follower appends (Kafka's `appendAsFollower`): batches stored at the offsets and leader
//! epochs they carry, byte for byte.

mod common;

use common::{
    batch, crc32c, open, read_all, read_raw, run, segment_files, small_config, stored_batch,
};
use protocol::record_batch::{BatchError, RecordBatchView};
use storage::{LogConfig, Offset, StorageError};

/// A leader log with batches in epochs 0, 2 and 5, some of several records; returns its
/// stored batches.
async fn leader_batches(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let (leader, _c, _r) = open(dir, rolling()).await;
    for i in 0..60i64 {
        let epoch = match i {
            0..=19 => 0,
            20..=39 => 2,
            _ => 5,
        };
        let b = batch(1 + (i % 4) as i32, 200 + (i as usize * 37) % 700, 1_000 + i);
        let info = leader.append(&b, epoch, 1 << 20, 0).await.unwrap();
        leader.wait_durable(info.end_offset).await.unwrap();
    }
    let stored = read_raw(&leader).await;
    leader.close().await.unwrap();
    stored
}

/// Small segments, so that both logs roll several times.
fn rolling() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        ..small_config()
    }
}

fn header(b: &[u8]) -> (i64, i64, i32, u32) {
    let v = RecordBatchView::parse_verified(b).unwrap();
    (
        v.base_offset(),
        v.last_offset(),
        v.partition_leader_epoch(),
        v.crc(),
    )
}

#[test]
fn follower_stores_leader_bytes_exactly_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (leader_dir, follower_dir) = (dir.path().join("leader"), dir.path().join("follower"));
    let f = follower_dir.clone();
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = shared.clone();
    run(move || async move {
        let mut stored = leader_batches(&leader_dir).await;
        // A gap, as a compacted leader log has: 50 offsets with no batch, then a batch in
        // epoch 7, then one right after it.
        let end = header(stored.last().unwrap()).1 + 1;
        stored.push(stored_batch(end + 50, 3, 7, 300));
        stored.push(stored_batch(end + 53, 1, 7, 100));
        let (follower, _c, _r) = open(&f, rolling()).await;
        // Several batches per call, as a fetch response carries them.
        for chunk in stored.chunks(3) {
            let records = chunk.concat();
            let info = follower.append_as_follower(&records, 0).await.unwrap();
            assert_eq!(info.base_offset.0, header(&chunk[0]).0);
            assert_eq!(info.end_offset.0, header(chunk.last().unwrap()).1 + 1);
            follower.wait_durable(info.end_offset).await.unwrap();
            assert_eq!(follower.durable_offset(), info.end_offset);
        }
        assert_eq!(
            read_raw(&follower).await,
            stored,
            "bytes as the leader stored them"
        );
        assert_eq!(follower.log_end_offset().0, end + 54);
        // Then a crash: the log is dropped without close.
        *out.lock().unwrap() = stored;
    });
    let expected = shared.lock().unwrap().clone();
    let f = follower_dir.clone();
    assert!(segment_files(&f).len() > 2, "the follower rolled segments");
    for round in 0..2 {
        let f = follower_dir.clone();
        let expected = expected.clone();
        run(move || async move {
            let (follower, _c, _r) = open(&f, rolling()).await;
            let got = read_raw(&follower).await;
            assert_eq!(got.len(), expected.len(), "round {round}");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g, e, "round {round}");
                assert_eq!(header(g), header(e));
            }
            let epochs: Vec<(i32, i64)> = follower
                .epoch_entries()
                .iter()
                .map(|e| (e.epoch, e.start_offset.0))
                .collect();
            let starts = |epoch: i32| {
                expected
                    .iter()
                    .map(|b| header(b))
                    .find(|h| h.2 == epoch)
                    .unwrap()
                    .0
            };
            assert_eq!(
                epochs,
                vec![(0, 0), (2, starts(2)), (5, starts(5)), (7, starts(7))]
            );
            // A read inside the gap returns the batch after it.
            let gap_start = header(&expected[59]).1 + 1;
            let r = follower
                .read(Offset(gap_start + 10), 1, true)
                .await
                .unwrap();
            assert_eq!(header(&r.records).0, gap_start + 50);
            if round == 0 {
                follower.close().await.unwrap();
            }
        });
    }
}

#[test]
fn follower_append_refuses_overlaps_and_bad_batches_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        let info = log
            .append_as_follower(&stored_batch(10, 5, 1, 100), 0)
            .await
            .unwrap();
        assert_eq!(
            (info.base_offset, info.end_offset),
            (Offset(10), Offset(15))
        );
        log.wait_durable(info.end_offset).await.unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("below the log end", stored_batch(14, 1, 1, 10)),
            (
                "overlapping batches",
                [stored_batch(20, 3, 1, 10), stored_batch(22, 1, 1, 10)].concat(),
            ),
            (
                "going back",
                [stored_batch(30, 1, 1, 10), stored_batch(25, 1, 1, 10)].concat(),
            ),
            ("bad CRC", {
                let mut b = stored_batch(40, 1, 1, 10);
                *b.last_mut().unwrap() ^= 1;
                b
            }),
            ("truncated", stored_batch(40, 1, 1, 10)[..50].to_vec()),
            ("empty", Vec::new()),
        ];
        for (name, records) in cases {
            let got = log.append_as_follower(&records, 0).await;
            assert!(
                matches!(got, Err(StorageError::InvalidBatch { .. })),
                "{name}: {got:?}"
            );
            assert_eq!(log.log_end_offset(), Offset(15), "{name}: nothing appended");
        }
        let got = log.append_as_follower(&stored_batch(14, 1, 1, 10), 0).await;
        assert!(matches!(
            got,
            Err(StorageError::InvalidBatch {
                source: BatchError::UnexpectedBaseOffset {
                    expected: 15,
                    found: 14
                },
                ..
            })
        ));
        // Right at the log end, and after a gap: both fine.
        let info = log
            .append_as_follower(
                &[stored_batch(15, 1, 1, 10), stored_batch(100, 2, 3, 10)].concat(),
                0,
            )
            .await
            .unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        assert_eq!(
            read_all(&log).await,
            vec![(10, 5), (15, 1), (100, 2)],
            "nothing from the refused calls"
        );
        assert_eq!(log.latest_epoch(), Some(3));
    });
}

/// An idempotent producer's batch at `base_offset`, as a leader stored it.
fn idempotent_at(base_offset: i64, pid: i64, seq: i32, count: i32) -> Vec<u8> {
    let mut b = stored_batch(base_offset, count, 1, 50);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn follower_records_producer_state_without_judging_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        // Sequences 0..=2, then 10..=11: a leader would refuse the jump, a follower copies.
        let records = [idempotent_at(0, 9, 0, 3), idempotent_at(3, 9, 10, 2)].concat();
        let info = log.append_as_follower(&records, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        // Became leader: a retry of the last batch is a duplicate with its original offsets,
        // the next sequence is appended.
        let retry = log
            .append(&idempotent_at(0, 9, 10, 2), 2, 1 << 20, 0)
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (Offset(3), Offset(4))
        );
        let next = log
            .append(&idempotent_at(0, 9, 12, 1), 2, 1 << 20, 0)
            .await
            .unwrap();
        assert!(!next.duplicate);
        assert_eq!(next.base_offset, Offset(5));
    });
}

#[test]
fn a_follower_batch_past_the_segment_offset_limit_starts_a_segment_at_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f-0");
    let config = || LogConfig {
        segment_offsets_max: 1000,
        ..small_config()
    };
    let p = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p, config()).await;
        for base in [0i64, 10, 5_000, 5_010, 1_000_000] {
            let info = log
                .append_as_follower(&stored_batch(base, 2, 0, 50), 0)
                .await
                .unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
        }
        log.close().await.unwrap();
    });
    let names: Vec<String> = segment_files(&path)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            format!("{:020}.log", 0),
            format!("{:020}.log", 5_000),
            format!("{:020}.log", 1_000_000)
        ]
    );
    run(move || async move {
        let (log, _c, _r) = open(&path, config()).await;
        assert_eq!(
            read_all(&log).await,
            vec![(0, 2), (10, 2), (5_000, 2), (5_010, 2), (1_000_000, 2)]
        );
        assert_eq!(log.log_end_offset(), Offset(1_000_002));
    });
}

/// A follower log of a few segments (epochs 0 and 2, a producer's batches among them).
async fn behind(dir: &std::path::Path) -> Offset {
    let (log, _c, _r) = open(dir, rolling()).await;
    let mut next = 0i64;
    for i in 0..30 {
        let epoch = if i < 15 { 0 } else { 2 };
        let b = stored_batch(next, 2, epoch, 300);
        let info = log.append_as_follower(&b, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        next = info.end_offset.0;
    }
    log.close().await.unwrap();
    Offset(next)
}

#[test]
fn a_follower_behind_the_leaders_start_empties_its_log_and_starts_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    run(move || async move {
        let end = behind(&d).await;
        assert!(segment_files(&d).len() > 1, "several segments");
        let (log, _c, _r) = open(&d, rolling()).await;
        // Below the log end is truncate_to's job: refused, nothing changes.
        assert!(matches!(
            log.reset_to(Offset(end.0 - 1)).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.log_end_offset(), end);
        // At the end: nothing to skip.
        log.reset_to(end).await.unwrap();
        assert_eq!(log.log_start_offset(), Offset(0));
        let start = Offset(end.0 + 1000);
        log.reset_to(start).await.unwrap();
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.durable_offset()
            ),
            (start, start, start)
        );
        assert_eq!(log.latest_epoch(), None, "no epochs left");
        assert!(read_all(&log).await.is_empty());
        // The leader's next batch lands at its own offsets and epoch.
        let info = log
            .append_as_follower(&stored_batch(start.0, 3, 7, 100), 0)
            .await
            .unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        assert_eq!(log.end_offset_for_epoch(7), Some((7, Offset(start.0 + 3))));
        log.close().await.unwrap();
        // Reopened: the same log, one segment.
        let (log, _c, _r) = open(&d, rolling()).await;
        assert_eq!(read_all(&log).await, vec![(start.0, 3)]);
        assert_eq!(log.log_start_offset(), start);
        assert_eq!(segment_files(&d).len(), 1);
    });
}

#[test]
fn a_reset_cut_short_by_a_crash_is_finished_at_open() {
    // What a kill leaves after the marker is durable: the old segments all there (step 0),
    // the new segment created too (step 1), some old ones deleted as well (step 2).
    for step in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        run(move || async move {
            let end = behind(&d).await;
            let start = end.0 + 500;
            std::fs::write(d.join("reset-to"), format!("{start}\n")).unwrap();
            let old = segment_files(&d);
            if step >= 1 {
                std::fs::write(d.join(format!("{start:020}.log")), b"").unwrap();
            }
            if step >= 2 {
                std::fs::remove_file(&old[0]).unwrap();
            }
            let (log, _c, _r) = open(&d, rolling()).await;
            assert_eq!(
                (log.log_start_offset(), log.log_end_offset()),
                (Offset(start), Offset(start)),
                "step {step}"
            );
            assert!(read_all(&log).await.is_empty(), "step {step}");
            assert_eq!(log.latest_epoch(), None, "step {step}");
            let info = log
                .append_as_follower(&stored_batch(start, 1, 3, 50), 0)
                .await
                .unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
            log.close().await.unwrap();
            assert!(!d.join("reset-to").exists(), "step {step}: marker removed");
            assert_eq!(segment_files(&d).len(), 1, "step {step}");
        });
    }
}
