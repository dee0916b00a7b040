//! `Log::truncate_to`: at every batch boundary of a multi-segment log, inside batches, in
//! gaps, and after a crash in the middle of it.

mod common;

use std::path::Path;

use common::{
    batch, crc32c, open, open_with, read_raw, run, segment_files, small_config, stored_batch,
};
use protocol::record_batch::RecordBatchView;
use storage::{Fault, LogConfig, LogOptions, Offset, ScriptedFaults, StorageError};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..small_config()
    }
}

/// Producer 7's batch of two records with base sequence `seq`.
fn producer_batch(seq: i32) -> Vec<u8> {
    let mut b = batch(2, 150, 2_000);
    b[43..51].copy_from_slice(&7i64.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// (base, last, epoch, producer sequence or -1) of a stored batch.
fn header(b: &[u8]) -> (i64, i64, i32, i32) {
    let v = RecordBatchView::parse_verified(b).unwrap();
    (
        v.base_offset(),
        v.last_offset(),
        v.partition_leader_epoch(),
        if v.producer_id() == 7 {
            v.base_sequence()
        } else {
            -1
        },
    )
}

/// The template: 36 batches over several 4 KiB segments, epochs 0, 1 and 4, producer 7
/// every third batch. Returns the stored batches.
fn build_template(dir: &Path) -> Vec<Vec<u8>> {
    let d = dir.to_owned();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = out.clone();
    run(move || async move {
        let (log, _c, _r) = open(&d, config()).await;
        for i in 0..36 {
            let epoch = [0, 1, 4][i / 12];
            let b = if i % 3 == 0 {
                producer_batch(i as i32 / 3 * 2)
            } else {
                batch(1 + (i % 4) as i32, 300 + i * 23, 1_000 + i as i64)
            };
            let info = log.append(&b, epoch, 1 << 20, 0).await.unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
        }
        *o.lock().unwrap() = read_raw(&log).await;
        log.close().await.unwrap();
    });
    let stored = out.lock().unwrap().clone();
    assert!(segment_files(dir).len() >= 4, "several segments");
    stored
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The epoch entries a log holding exactly `batches` has.
fn epochs_of(batches: &[Vec<u8>]) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = Vec::new();
    for b in batches {
        let (base, _, epoch, _) = header(b);
        if out.last().is_none_or(|(e, _)| epoch > *e) {
            out.push((epoch, base));
        }
    }
    out
}

fn entries(log: &storage::Log) -> Vec<(i32, i64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset.0))
        .collect()
}

/// Truncates a copy of the template at `offset`, checks it, appends a plain batch in
/// epoch 9 and producer 7's next batch, restarts (cleanly or by a crash) and checks again.
fn truncate_case(template: &Path, stored: &[Vec<u8>], offset: i64, kept: usize, crash: bool) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    copy_dir(template, &dir);
    let kept_batches = stored[..kept].to_vec();
    let new_end = kept_batches.last().map_or(0, |b| header(b).1 + 1);
    let next_seq = kept_batches
        .iter()
        .rev()
        .map(|b| header(b).3)
        .find(|s| *s >= 0)
        .map_or(0, |s| s + 2);
    let case = format!("truncate_to({offset}), {kept} batches kept, crash {crash}");
    let (d, k, c) = (dir.clone(), kept_batches.clone(), case.clone());
    run(move || async move {
        let (log, _c, _r) = open(&d, config()).await;
        let end = log.truncate_to(Offset(offset)).await.unwrap();
        assert_eq!(end, Offset(new_end), "{c}");
        assert_eq!(log.log_end_offset(), Offset(new_end), "{c}");
        assert_eq!(log.durable_offset(), Offset(new_end), "{c}");
        assert_eq!(read_raw(&log).await, k, "{c}: exactly the kept batches");
        assert_eq!(entries(&log), epochs_of(&k), "{c}: epochs");
        // The time index and max timestamps forgot the removed batches.
        let max_ts = k
            .iter()
            .map(|b| RecordBatchView::parse(b).unwrap().max_timestamp())
            .max()
            .unwrap_or(-1);
        assert_eq!(log.max_timestamp(), max_ts, "{c}: max timestamp");
        assert!(
            log.batch_for_timestamp(max_ts + 1).await.unwrap().is_none(),
            "{c}: nothing after the kept batches' timestamps"
        );
        // Producer state was rebuilt to the cut: the next sequence after the last kept
        // batch is appended, not refused nor answered as a duplicate of a removed batch.
        let p = log
            .append(&producer_batch(next_seq), 9, 1 << 20, 0)
            .await
            .unwrap();
        assert!(!p.duplicate, "{c}");
        assert_eq!(p.base_offset, Offset(new_end), "{c}");
        let plain = log.append(&batch(3, 500, 5), 9, 1 << 20, 0).await.unwrap();
        log.wait_durable(plain.end_offset).await.unwrap();
        if !crash {
            log.close().await.unwrap();
        }
    });
    assert!(!dir.join("truncate-to").exists(), "{case}: marker removed");
    run(move || async move {
        let (log, _c, _r) = open(&dir, config()).await;
        let all = read_raw(&log).await;
        assert_eq!(all.len(), kept + 2, "{case}");
        assert_eq!(&all[..kept], &kept_batches[..], "{case}: after restart");
        assert_eq!(
            header(&all[kept]),
            (new_end, new_end + 1, 9, next_seq),
            "{case}"
        );
        assert_eq!(header(&all[kept + 1]).0, new_end + 2, "{case}");
        let mut want = epochs_of(&kept_batches);
        want.push((9, new_end));
        assert_eq!(entries(&log), want, "{case}: epochs after restart");
        // A retry of producer 7's last batch is still known as a duplicate.
        let dup = log
            .append(&producer_batch(next_seq), 9, 1 << 20, 0)
            .await
            .unwrap();
        assert!(dup.duplicate, "{case}");
        assert_eq!(dup.base_offset, Offset(new_end), "{case}");
    });
}

#[test]
fn truncate_at_every_batch_boundary_then_append_and_restart() {
    let template = tempfile::tempdir().unwrap();
    let stored = build_template(template.path());
    for (i, b) in stored.iter().enumerate() {
        truncate_case(template.path(), &stored, header(b).0, i, i % 2 == 0);
    }
}

#[test]
fn truncate_inside_a_batch_cuts_the_whole_batch() {
    let template = tempfile::tempdir().unwrap();
    let stored = build_template(template.path());
    for (i, b) in stored.iter().enumerate() {
        let (base, last, _, _) = header(b);
        if last > base {
            truncate_case(template.path(), &stored, last, i, i % 2 == 1);
        }
    }
}

#[test]
fn truncate_beyond_the_end_below_the_start_and_in_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, config()).await;
        let records = [
            stored_batch(0, 5, 1, 100),
            stored_batch(5, 5, 1, 100),
            stored_batch(50, 5, 2, 100),
        ]
        .concat();
        let info = log.append_as_follower(&records, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        assert_eq!(
            log.truncate_to(Offset(55)).await.unwrap(),
            Offset(55),
            "no-op"
        );
        assert_eq!(log.truncate_to(Offset(1_000)).await.unwrap(), Offset(55));
        // In the gap: the batch after it goes, the end is the end of the batch before it.
        assert_eq!(log.truncate_to(Offset(30)).await.unwrap(), Offset(10));
        assert_eq!(log.latest_epoch(), Some(1));
        assert_eq!(log.end_offset_for_epoch(2), None);
        assert_eq!(log.end_offset_for_epoch(1), Some((1, Offset(10))));
        // DeleteRecords moved the start into the second batch; cutting that batch moves
        // the start down to the new end (and reopening agrees).
        assert_eq!(log.delete_records(7).await.unwrap(), Offset(7));
        assert!(matches!(
            log.truncate_to(Offset(6)).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.truncate_to(Offset(7)).await.unwrap(), Offset(5));
        assert_eq!(log.log_start_offset(), Offset(5));
        let info = log.append(&batch(1, 10, 0), 3, 1 << 20, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        log.close().await.unwrap();
        let (log, _c, _r) = open(&path, config()).await;
        assert_eq!(log.log_start_offset(), Offset(5));
        assert_eq!(log.log_end_offset(), Offset(6));
        assert_eq!(
            entries(&log),
            vec![(3, 5)],
            "epoch 1 started at 7, above the new end"
        );
    });
}

#[test]
fn a_crash_in_the_middle_of_a_truncation_finishes_it_at_open() {
    let template = tempfile::tempdir().unwrap();
    let stored = build_template(template.path());
    // A batch boundary in the second segment.
    let files = segment_files(template.path());
    let second: i64 = files[1]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    let i = stored.iter().position(|b| header(b).0 > second).unwrap();
    let offset = header(&stored[i]).0;
    // What a kill leaves at each step after the marker is durable.
    for step in 0..3 {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("t-0");
        copy_dir(template.path(), &dir);
        std::fs::write(dir.join("truncate-to"), format!("{offset}\n")).unwrap();
        let segs = segment_files(&dir);
        if step >= 1 {
            // The newest segment deleted already.
            std::fs::remove_file(segs.last().unwrap()).unwrap();
        }
        if step >= 2 {
            // Every later segment deleted and the cut segment's index files too.
            for s in &segs[2..] {
                let _ = std::fs::remove_file(s);
            }
            let _ = std::fs::remove_file(segs[1].with_extension("index"));
        }
        let kept = stored[..i].to_vec();
        let d = dir.clone();
        run(move || async move {
            let (log, _c, _r) = open(&d, config()).await;
            assert_eq!(read_raw(&log).await, kept, "step {step}");
            assert_eq!(log.log_end_offset(), Offset(offset), "step {step}");
            assert_eq!(entries(&log), epochs_of(&kept), "step {step}");
            let info = log.append(&batch(1, 10, 0), 9, 1 << 20, 0).await.unwrap();
            assert_eq!(info.base_offset, Offset(offset));
            log.wait_durable(info.end_offset).await.unwrap();
        });
        assert!(
            !dir.join("truncate-to").exists(),
            "step {step}: marker removed"
        );
        assert_eq!(segment_files(&dir).len(), 2, "step {step}");
        let kept = stored[..i].to_vec();
        run(move || async move {
            // Crashed again after the append: the marker is gone, nothing more is cut.
            let (log, _c, _r) = open(&dir, config()).await;
            let all = read_raw(&log).await;
            assert_eq!(&all[..i], &kept[..], "step {step}");
            assert_eq!(all.len(), i + 1, "step {step}");
        });
    }
}

#[test]
fn a_failed_truncation_takes_the_log_offline_and_the_next_open_finishes_it() {
    let template = tempfile::tempdir().unwrap();
    let stored = build_template(template.path());
    // A boundary in the first segment: later segments are deleted before the cut fails.
    let i = 2;
    let offset = header(&stored[i]).0;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    copy_dir(template.path(), &dir);
    let d = dir.clone();
    run(move || async move {
        let faults = std::rc::Rc::new(ScriptedFaults::default());
        let options = LogOptions {
            faults: Some(faults.clone()),
        };
        let (log, _c, _r) = open_with(&d, config(), options).await;
        faults.queue_truncate(Fault::Fail(storage::fault::EIO));
        match log.truncate_to(Offset(offset)).await {
            Err(StorageError::Io { op, .. }) => assert_eq!(op, "truncate segment"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            log.read(Offset(0), 1 << 20, true).await,
            Err(StorageError::Offline { .. })
        ));
        assert!(matches!(
            log.append(&batch(1, 10, 0), 9, 1 << 20, 0).await,
            Err(StorageError::Offline { .. })
        ));
        assert_eq!(
            faults.operations().len(),
            1,
            "only the cut went through the seam"
        );
    });
    assert!(
        dir.join("truncate-to").exists(),
        "the marker stays for the next open"
    );
    assert_eq!(segment_files(&dir).len(), 1, "later segments went first");
    let kept = stored[..i].to_vec();
    run(move || async move {
        let (log, _c, _r) = open(&dir, config()).await;
        assert_eq!(read_raw(&log).await, kept);
        assert_eq!(log.log_end_offset(), Offset(offset));
        assert_eq!(entries(&log), epochs_of(&kept));
    });
}

#[test]
fn truncating_into_the_gap_after_a_sealed_segment_drops_its_zero_padding() {
    // A sealed segment's file ends in zero padding (direct I/O writes whole blocks) and,
    // trusted by its indexes at open, its size counts the padding. Cutting in the gap after
    // its last batch makes it active again: appends must follow the last batch, not the
    // padding, or recovery stops at the zeros and loses them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let config = || LogConfig {
        segment_offsets_max: 50,
        ..config()
    };
    let p = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p, config()).await;
        let records = [
            stored_batch(0, 5, 1, 100),
            stored_batch(5, 5, 1, 100),
            stored_batch(100, 5, 2, 100),
        ]
        .concat();
        let info = log.append_as_follower(&records, 0).await.unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
        log.close().await.unwrap();
    });
    assert_eq!(segment_files(&path).len(), 2);
    let p = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p, config()).await;
        assert_eq!(log.truncate_to(Offset(50)).await.unwrap(), Offset(10));
        let info = log.append(&batch(2, 10, 0), 3, 1 << 20, 0).await.unwrap();
        assert_eq!(info.base_offset, Offset(10));
        log.wait_durable(info.end_offset).await.unwrap();
    });
    run(move || async move {
        let (log, _c, _r) = open(&path, config()).await;
        let all: Vec<i64> = read_raw(&log).await.iter().map(|b| header(b).0).collect();
        assert_eq!(
            all,
            vec![0, 5, 10],
            "the append after the cut survives a restart"
        );
    });
}
