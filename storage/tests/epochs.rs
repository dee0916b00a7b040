//! The leader-epoch cache of a log and its `leader-epoch-checkpoint` file.

mod common;

use std::path::Path;

use common::{batch, open, run, small_config, stored_batch};
use storage::{LogConfig, Offset};

const CHECKPOINT: &str = "leader-epoch-checkpoint";

fn entries(log: &storage::Log) -> Vec<(i32, i64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset.0))
        .collect()
}

fn checkpoint(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(CHECKPOINT)).unwrap()
}

/// Leader appends in epochs 0, 0, 2, 1 (stale: ignored), 5, then follower batches in 7.
/// Offsets: 0..=1, 2..=3, 4..=5, 6..=7, 8..=9, then 20..=21 and 22.
async fn fill(log: &std::rc::Rc<storage::Log>) {
    for epoch in [0, 0, 2, 1, 5] {
        let info = log
            .append(&batch(2, 100, 0), epoch, 1 << 20, 0)
            .await
            .unwrap();
        log.wait_durable(info.end_offset).await.unwrap();
    }
    let records = [stored_batch(20, 2, 7, 50), stored_batch(22, 1, 6, 50)].concat();
    let info = log.append_as_follower(&records, 0).await.unwrap();
    log.wait_durable(info.end_offset).await.unwrap();
}

const FILLED: &[(i32, i64)] = &[(0, 0), (2, 4), (5, 8), (7, 20)];

#[test]
fn appends_start_epochs_and_offsets_for_leader_epoch_answers_as_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e-0");
    run(move || async move {
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log.end_offset_for_epoch(0), None);
        fill(&log).await;
        assert_eq!(entries(&log), FILLED);
        // Durable before the appends were acknowledged, in Kafka's format.
        assert_eq!(checkpoint(&path), "0\n4\n0 0\n2 4\n5 8\n7 20\n");
        assert_eq!(log.latest_epoch(), Some(7));
        let table: &[(i32, Option<(i32, i64)>)] = &[
            (-1, None),
            (0, Some((0, 4))),
            (1, Some((0, 4))),
            (2, Some((2, 8))),
            (4, Some((2, 8))),
            (5, Some((5, 20))),
            (6, Some((5, 20))),
            (7, Some((7, 23))),
            (8, None),
        ];
        for (epoch, want) in table {
            assert_eq!(
                log.end_offset_for_epoch(*epoch).map(|(e, o)| (e, o.0)),
                *want,
                "epoch {epoch}"
            );
        }
        log.close().await.unwrap();
        let (log, _c, _r) = open(&path, small_config()).await;
        assert_eq!(entries(&log), FILLED);
        assert_eq!(log.end_offset_for_epoch(7), Some((7, Offset(23))));
    });
}

#[test]
fn a_missing_damaged_leading_or_lagging_checkpoint_is_made_right_at_open() {
    let base = tempfile::tempdir().unwrap();
    let template = base.path().join("template");
    let t = template.clone();
    run(move || async move {
        let (log, _c, _r) = open(&t, small_config()).await;
        fill(&log).await;
        log.close().await.unwrap();
    });
    let cases: &[(&str, Option<&str>)] = &[
        ("missing", None),
        ("empty", Some("")),
        ("garbage", Some("\u{1}\u{2}xyz")),
        ("another version", Some("1\n4\n0 0\n2 4\n5 8\n7 20\n")),
        ("count not matching", Some("0\n5\n0 0\n2 4\n5 8\n7 20\n")),
        ("not increasing", Some("0\n4\n0 0\n5 4\n2 8\n7 20\n")),
        // Parses, but is ahead of the log (a lost tail) and behind it (a crash between the
        // data's fdatasync and the checkpoint's rename).
        ("ahead", Some("0\n5\n0 0\n2 4\n5 8\n7 20\n9 500\n")),
        ("behind", Some("0\n2\n0 0\n2 4\n")),
    ];
    for (name, content) in cases {
        let dir = base.path().join(name.replace(' ', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&template).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        match content {
            None => std::fs::remove_file(dir.join(CHECKPOINT)).unwrap(),
            Some(c) => std::fs::write(dir.join(CHECKPOINT), c).unwrap(),
        }
        let d = dir.clone();
        let name = name.to_string();
        run(move || async move {
            let (log, _c, _r) = open(&d, small_config()).await;
            assert_eq!(entries(&log), FILLED, "{name}");
        });
        assert_eq!(checkpoint(&dir), "0\n4\n0 0\n2 4\n5 8\n7 20\n", "rewritten");
    }
}

#[test]
fn retention_and_delete_records_trim_the_cache_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e-0");
    let config = || LogConfig {
        segment_bytes: 4096,
        ..small_config()
    };
    let p = path.clone();
    run(move || async move {
        let (log, _c, _r) = open(&p, config()).await;
        // 30 batches of ~1 KiB (3 or 4 per segment), a new epoch every 5 batches.
        for i in 0..30i64 {
            let info = log
                .append(&batch(1, 1000, i * 1000), (i / 5) as i32, 1 << 20, 0)
                .await
                .unwrap();
            log.wait_durable(info.end_offset).await.unwrap();
        }
        assert_eq!(
            entries(&log),
            (0..6).map(|e| (e, e as i64 * 5)).collect::<Vec<_>>()
        );
        let mut c = config();
        c.retention_bytes = 12 << 10;
        log.set_config(c);
        assert!(log.enforce_retention(0).await.unwrap() > 0);
        let start = log.log_start_offset().0;
        assert!(start > 5, "retention moved the start to {start}");
        let want = |start: i64| -> Vec<(i32, i64)> {
            let floor = (start / 5) as i32;
            std::iter::once((floor, start))
                .chain(((floor + 1)..6).map(|e| (e, e as i64 * 5)))
                .collect()
        };
        assert_eq!(entries(&log), want(start), "after retention");
        let target = (start / 5 + 1) * 5 + 2;
        assert_eq!(log.delete_records(target).await.unwrap(), Offset(target));
        assert_eq!(entries(&log), want(target), "after DeleteRecords");
        log.close().await.unwrap();
        let (log, _c, _r) = open(&p, config()).await;
        assert_eq!(entries(&log), want(target), "after reopen");
    });
}
