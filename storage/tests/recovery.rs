//! Recovery of hand-made segment files: gaps between batches are data, torn and corrupt
//! tails are not.

mod common;

use common::{read_all, run, small_config, stored_batch};
use protocol::record_batch::RecordBatchView;
use storage::Offset;

fn segment_name(base: i64) -> String {
    format!("{base:020}.log")
}

#[test]
fn recovery_keeps_gapped_batches_and_cuts_every_kind_of_bad_tail() {
    // Offsets 0..=2, a gap, 10..=11, a gap, 100.
    let good = [
        stored_batch(0, 3, 0, 120),
        stored_batch(10, 2, 0, 80),
        stored_batch(100, 1, 1, 40),
    ];
    let good_bytes: Vec<u8> = good.concat();
    let flipped = {
        let mut b = stored_batch(200, 1, 1, 40);
        b[70] ^= 0x10;
        b
    };
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", Vec::new()),
        ("zero padding", vec![0; 300]),
        ("zero padding shorter than a length", vec![0; 5]),
        ("a torn batch", stored_batch(200, 1, 1, 40)[..40].to_vec()),
        ("a batch whose header is whole but whose body is cut", {
            stored_batch(200, 1, 1, 400)[..100].to_vec()
        }),
        ("a bad CRC", flipped),
        ("a base offset going back", stored_batch(50, 1, 1, 40)),
        (
            "a base offset equal to the last batch's",
            stored_batch(100, 1, 1, 40),
        ),
        ("garbage", (0..200u32).map(|i| (i * 7 + 3) as u8).collect()),
    ];
    for (name, tail) in tails {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g-0");
        std::fs::create_dir_all(&path).unwrap();
        let file = path.join(segment_name(0));
        std::fs::write(&file, [good_bytes.clone(), tail].concat()).unwrap();
        let p = path.clone();
        let name2 = name.to_owned();
        run(move || async move {
            let (log, _c, _r) = common::open(&p, small_config()).await;
            assert_eq!(
                read_all(&log).await,
                vec![(0, 3), (10, 2), (100, 1)],
                "{name2}: every whole batch kept"
            );
            assert_eq!(log.log_end_offset(), Offset(101), "{name2}");
            // A fetch inside a gap gets the next batch.
            for (at, base) in [(3, 10), (5, 10), (11, 10), (12, 100), (50, 100), (100, 100)] {
                let r = log.read(Offset(at), 1, true).await.unwrap();
                let v = RecordBatchView::parse_verified(&r.records).unwrap();
                assert_eq!(v.base_offset(), base, "{name2}: fetch at {at}");
            }
            let info = log
                .append(&stored_batch(0, 1, 0, 10), 1, 1 << 20, 0)
                .await
                .unwrap();
            assert_eq!(info.base_offset, Offset(101), "{name2}");
            log.wait_durable(info.end_offset).await.unwrap();
            log.close().await.unwrap();
        });
        // The bad tail was cut before the new batch was written: it reads back whole.
        let data = std::fs::read(&file).unwrap();
        assert_eq!(&data[..good_bytes.len()], &good_bytes[..], "{name}");
        run(move || async move {
            let (log, _c, _r) = common::open(&path, small_config()).await;
            assert_eq!(
                read_all(&log).await,
                vec![(0, 3), (10, 2), (100, 1), (101, 1)],
                "{name}: after reopen"
            );
        });
    }
}

#[test]
fn a_sealed_gapped_segment_is_trusted_or_rebuilt_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g-0");
    std::fs::create_dir_all(&path).unwrap();
    // A sealed segment with gaps (no index files: rebuilt at the first open, loaded at the
    // second), then an active one after another gap.
    let first: Vec<u8> = (0..40)
        .flat_map(|i| stored_batch(i * 10, 2, 0, 200))
        .collect();
    std::fs::write(path.join(segment_name(0)), first).unwrap();
    std::fs::write(
        path.join(segment_name(1_000)),
        stored_batch(1_000, 1, 0, 10),
    )
    .unwrap();
    let mut expected: Vec<(i64, i32)> = (0..40).map(|i| (i * 10, 2)).collect();
    expected.push((1_000, 1));
    for round in 0..2 {
        let p = path.clone();
        let expected = expected.clone();
        run(move || async move {
            let (log, _c, _r) = common::open(&p, small_config()).await;
            assert_eq!(read_all(&log).await, expected, "round {round}");
            let r = log.read(Offset(395), 1, true).await.unwrap();
            let v = RecordBatchView::parse_verified(&r.records).unwrap();
            assert_eq!(
                v.base_offset(),
                1_000,
                "round {round}: across the segment gap"
            );
            log.close().await.unwrap();
        });
        assert!(path.join(format!("{:020}.index", 0)).exists());
    }
}
