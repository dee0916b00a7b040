//! Disk faults injected through the log's fault seam (`storage::fault`): torn writes followed
//! by a crash, failed fdatasyncs, a full disk, a slow disk.

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::{batch, open, open_with, read_all, run, small_config};
use protocol::record_batch::BatchIter;
use storage::fault::{EIO, ENOSPC};
use storage::{Fault, IoOp, LogConfig, LogOptions, Offset, ScriptedFaults, StorageError};

fn faulty() -> (Rc<ScriptedFaults>, LogOptions) {
    let faults = Rc::new(ScriptedFaults::default());
    let options = LogOptions {
        faults: Some(faults.clone()),
    };
    (faults, options)
}

/// Batch `i` of the tests: one record, 700 bytes of filler (761 bytes stored).
fn nth(i: i64) -> Vec<u8> {
    batch(1, 700, 1_000 + i)
}

const BATCH_BYTES: u64 = 761;

#[test]
fn a_torn_write_at_every_block_of_the_tail_keeps_exactly_the_whole_batches_on_disk() {
    // Three batches durable (2283 bytes: the tail block is partial), then five more in one
    // append, whose single write is torn after k blocks for every k.
    let mut k = 0usize;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let p = path.clone();
        let torn = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0usize)));
        let t = torn.clone();
        run(move || async move {
            let (faults, options) = faulty();
            let (log, _c, _r) = open_with(&p, small_config(), options).await;
            for i in 0..3 {
                let info = log.append(&nth(i), 0, 1 << 20, 0).await.unwrap();
                log.wait_durable(info.end_offset).await.unwrap();
            }
            faults.queue_write(Fault::Torn {
                keep_bytes: k * 512,
            });
            let five: Vec<u8> = (3..8).flat_map(nth).collect();
            let info = log.append(&five, 0, 1 << 20, 0).await.unwrap();
            assert_eq!(info.end_offset, Offset(8));
            let waited = log.wait_durable(info.end_offset).await;
            assert!(waited.is_err(), "k {k}: a torn write is never acknowledged");
            assert_eq!(log.durable_offset(), Offset(3), "k {k}");
            assert!(matches!(
                log.append(&nth(9), 0, 1 << 20, 0).await,
                Err(StorageError::Offline { .. })
            ));
            let Some(IoOp::Write { position, len, .. }) = faults
                .operations()
                .into_iter()
                .rfind(|op| matches!(op, IoOp::Write { .. }))
            else {
                panic!("no write");
            };
            *t.lock().unwrap() = (position, len);
            // The process dies: the log is dropped without close.
        });
        let (position, len) = *torn.lock().unwrap();
        assert_eq!(position, 2048, "the write starts at the partial tail block");
        // The three durable batches were on disk already; the torn write rewrote their tail
        // block with the same bytes and added whatever of its first k blocks is new.
        let reached = (3 * BATCH_BYTES).max(position + (k as u64 * 512).min(len as u64));
        // Whole batches whose last byte reached the file.
        let kept = (0..8u64)
            .take_while(|i| (i + 1) * BATCH_BYTES <= reached)
            .count() as i64;
        run(move || async move {
            let (log, _c, _r) = open(&path, small_config()).await;
            let got = read_all(&log).await;
            assert_eq!(
                got,
                (0..kept).map(|o| (o, 1)).collect::<Vec<_>>(),
                "torn after {k} blocks ({reached} bytes reached the file)"
            );
            let info = log.append(&nth(20), 0, 1 << 20, 0).await.unwrap();
            assert_eq!(info.base_offset, Offset(kept), "k {k}");
            log.wait_durable(info.end_offset).await.unwrap();
            let r = log.read(Offset(0), 1 << 20, true).await.unwrap();
            assert_eq!(BatchIter::new(&r.records, true).count() as i64, kept + 1);
        });
        if k * 512 >= len {
            break;
        }
        k += 1;
    }
    assert!(k >= 7, "the tail write spans {k} blocks");
}

#[test]
fn a_failed_fdatasync_takes_the_log_offline_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let p = path.clone();
    run(move || async move {
        let (faults, options) = faulty();
        let (log, _c, _r) = open_with(&p, small_config(), options).await;
        let info = log.append(&nth(0), 0, 1 << 20, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        faults.set_syncs(Fault::Fail(EIO));
        // Three producers waiting on the same round.
        let tasks: Vec<_> = (1..4)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let info = log.append(&nth(i), 0, 1 << 20, 0).await?;
                    log.wait_durable(info.end_offset).await
                })
            })
            .collect();
        for t in tasks {
            let got = t.await;
            assert!(
                got.is_err(),
                "acknowledged after a failed fdatasync: {got:?}"
            );
        }
        assert_eq!(log.durable_offset(), Offset(1), "nothing more is durable");
        assert!(faults.syncs() >= 2);
        let later = log.append(&nth(9), 0, 1 << 20, 0).await;
        assert!(
            matches!(later, Err(StorageError::Offline { .. })),
            "{later:?}"
        );
        assert!(matches!(
            log.read(Offset(0), 1 << 20, true).await,
            Err(StorageError::Offline { .. })
        ));
        assert!(log.wait_durable(Offset(2)).await.is_err());
    });
    run(move || async move {
        // Restarted: the acknowledged batch is there and the log takes appends again.
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(read_all(&log).await.first(), Some(&(0, 1)));
        let info = log.append(&nth(10), 0, 1 << 20, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
    });
}

#[test]
fn enospc_on_fallocate_refuses_the_append_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let config = LogConfig {
        preallocate_bytes: 4096,
        ..small_config()
    };
    run(move || async move {
        let (faults, options) = faulty();
        let (log, _c, _r) = open_with(&path, config.clone(), options).await;
        let info = log.append(&nth(0), 0, 1 << 20, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        faults.set_allocates(Fault::Fail(ENOSPC));
        let big = batch(1, 6000, 5);
        match log.append(&big, 0, 1 << 20, 0).await {
            Err(StorageError::Io { op, source, .. }) => {
                assert_eq!(op, "fallocate segment");
                assert_eq!(source.raw_os_error(), Some(ENOSPC));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(log.log_end_offset(), Offset(1), "nothing appended");
        assert_eq!(read_all(&log).await, vec![(0, 1)], "still readable");
        // Space freed: appends go on.
        faults.set_allocates(Fault::Proceed);
        let info = log.append(&big, 0, 1 << 20, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        log.close().await.unwrap();
        let (log, _c, _r) = open(&path, config).await;
        assert_eq!(read_all(&log).await, vec![(0, 1), (1, 1)]);
    });
}

#[test]
fn enospc_on_write_takes_the_log_offline_until_reopened() {
    // Today's behaviour: space is reserved by fallocate before anything is written, so a
    // write that still fails is an I/O error like any other and the log goes offline.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let p = path.clone();
    run(move || async move {
        let (faults, options) = faulty();
        let (log, _c, _r) = open_with(&p, small_config(), options).await;
        let info = log.append(&nth(0), 0, 1 << 20, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        faults.queue_write(Fault::Fail(ENOSPC));
        let info = log.append(&nth(1), 0, 1 << 20, 0).await.unwrap();
        assert!(log.wait_durable(info.end_offset).await.is_err());
        assert_eq!(log.durable_offset(), Offset(1));
        assert!(matches!(
            log.append(&nth(2), 0, 1 << 20, 0).await,
            Err(StorageError::Offline { .. })
        ));
    });
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(
            read_all(&log).await,
            vec![(0, 1)],
            "the failed write left nothing"
        );
        let info = log.append(&nth(3), 0, 1 << 20, 0).await.unwrap();
        assert_eq!(info.base_offset, Offset(1));
        log.wait_durable(info.end_offset).await.unwrap();
    });
}

#[test]
fn on_a_slow_disk_appends_wait_for_the_sync_and_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (faults, options) = faulty();
        let (log, commit, _r) = open_with(&path, small_config(), options).await;
        faults.set_syncs(Fault::Delay(Duration::from_millis(300)));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let info = log.append(&nth(i), 0, 1 << 20, 0).await.unwrap();
                    log.wait_durable(info.end_offset).await.unwrap();
                })
            })
            .collect();
        glommio::timer::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            log.durable_offset(),
            Offset(0),
            "nothing durable before the sync"
        );
        for t in tasks {
            t.await;
        }
        assert_eq!(log.durable_offset(), Offset(20));
        assert!(
            faults.syncs() <= 3 && commit.rounds() <= 3,
            "20 appends, {} fdatasyncs in {} rounds",
            faults.syncs(),
            commit.rounds()
        );
    });
}
