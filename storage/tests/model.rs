//! A seeded random walk over leader appends, follower appends with gaps, DeleteRecords,
//! truncations, torn writes and clean or crash restarts, checked against a model (the list of batches the log must hold).
//! A failure prints the seed and the step; `SLUICE_MODEL_SEED=<n>` replays one seed,
//! `SLUICE_MODEL_STEPS=<n>` walks longer.

mod common;

use std::path::Path;

use std::rc::Rc;

use common::{batch, open_with, read_raw, run, stored_batch};
use protocol::record_batch::{set_base_offset, set_partition_leader_epoch, RecordBatchView};
use storage::{Fault, LeaderEpochFileCache, LogConfig, LogOptions, Offset, ScriptedFaults};

/// xorshift64*: small, deterministic, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config() -> LogConfig {
    LogConfig {
        // Rolls by size and, more often, by offsets (follower gaps make those start a
        // segment after a gap).
        segment_bytes: 12 << 10,
        segment_offsets_max: 100,
        index_interval_bytes: 512,
        preallocate_bytes: 16 << 10,
        write_buffer_bytes: 4096,
        ..LogConfig::default()
    }
}

fn header(b: &[u8]) -> (i64, i64, i32) {
    let v = RecordBatchView::parse_verified(b).unwrap();
    (v.base_offset(), v.last_offset(), v.partition_leader_epoch())
}

/// The model: every batch the log holds (some maybe below the start), the start and end
/// offsets, and the leader-epoch cache as Kafka's operations leave it (the cache's own
/// semantics are unit-tested in `leader_epoch.rs` against Kafka's answers).
struct Model {
    batches: Vec<Vec<u8>>,
    start: i64,
    end: i64,
    epochs: LeaderEpochFileCache,
}

impl Model {
    fn appended(&mut self, b: Vec<u8>) {
        let (base, last, epoch) = header(&b);
        self.epochs.assign(epoch, Offset(base));
        self.end = last + 1;
        self.batches.push(b);
    }
}

async fn check(log: &storage::Log, m: &Model, at: &str) {
    assert_eq!(log.log_end_offset(), Offset(m.end), "{at}: log end");
    assert_eq!(log.durable_offset(), Offset(m.end), "{at}: durable");
    assert_eq!(log.log_start_offset(), Offset(m.start), "{at}: log start");
    // Reads begin with the batch containing the start.
    let model: Vec<&Vec<u8>> = m
        .batches
        .iter()
        .filter(|b| header(b).1 >= m.start)
        .collect();
    let epochs = m.epochs.entries().to_vec();
    let got = read_raw(log).await;
    assert_eq!(got.len(), model.len(), "{at}: batch count");
    for (i, (g, m)) in got.iter().zip(&model).enumerate() {
        assert_eq!(g, *m, "{at}: batch {i} ({:?})", header(m));
    }
    assert_eq!(log.epoch_entries(), epochs, "{at}: epochs");
}

fn pick_offset(rng: &mut Rng, model: &[Vec<u8>], end: i64, dir: &Path) -> i64 {
    let any = |rng: &mut Rng| rng.below(end as u64 + 1) as i64;
    if model.is_empty() {
        return any(rng);
    }
    let i = rng.below(model.len() as u64) as usize;
    let (base, last, _) = header(&model[i]);
    match rng.below(6) {
        5 => {
            // Just below a segment's base: the end of the segment before it, or its gap.
            let bases: Vec<i64> = common::segment_files(dir)
                .iter()
                .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
                .filter(|b| *b > 0)
                .collect();
            match bases.get(rng.below(bases.len().max(1) as u64) as usize) {
                Some(b) => b - rng.below(3) as i64,
                None => any(rng),
            }
        }
        0 | 1 => base,
        2 => base + rng.below((last - base + 1) as u64) as i64,
        3 => {
            // In the gap before batch `i`, if it has one.
            let prev_end = i.checked_sub(1).map_or(0, |p| header(&model[p]).1 + 1);
            if base > prev_end {
                prev_end + rng.below((base - prev_end) as u64) as i64
            } else {
                base
            }
        }
        _ => any(rng),
    }
}

fn walk(seed: u64, steps: usize, dir: &Path) {
    let dir = dir.to_owned();
    run(move || async move {
        let mut rng = Rng(seed.wrapping_mul(2) | 1);
        let mut m = Model {
            batches: Vec::new(),
            start: 0,
            end: 0,
            epochs: LeaderEpochFileCache::default(),
        };
        let mut epoch = 0i32;
        let faults = Rc::new(ScriptedFaults::default());
        let options = || LogOptions {
            faults: Some(faults.clone()),
        };
        let (mut log, mut _c, mut _r) = open_with(&dir, config(), options()).await;
        for step in 0..steps {
            let at = format!("seed {seed} step {step}");
            match rng.below(100) {
                0..=34 => {
                    // Leader append of one to three batches.
                    let n = 1 + rng.below(3) as usize;
                    let mut records = Vec::new();
                    let mut expected = Vec::new();
                    let mut next = m.end;
                    for _ in 0..n {
                        let count = 1 + rng.below(4) as i32;
                        let mut b = batch(count, 50 + rng.below(900) as usize, step as i64);
                        records.extend_from_slice(&b);
                        set_base_offset(&mut b, next);
                        set_partition_leader_epoch(&mut b, epoch);
                        next += count as i64;
                        expected.push(b);
                    }
                    let info = log.append(&records, epoch, 1 << 20, 0).await.unwrap();
                    assert_eq!(info.base_offset, Offset(m.end), "{at}");
                    log.wait_durable(info.end_offset).await.unwrap();
                    expected.into_iter().for_each(|b| m.appended(b));
                }
                35..=64 => {
                    // Follower append of one to four batches, a gap of up to 80 offsets
                    // before one in three.
                    let n = 1 + rng.below(4) as usize;
                    let mut records = Vec::new();
                    let mut batches = Vec::new();
                    let mut next = m.end;
                    for _ in 0..n {
                        let gap = if rng.below(3) == 0 { rng.below(80) } else { 0 };
                        let base = next + gap as i64;
                        let count = 1 + rng.below(4) as i32;
                        let b = stored_batch(base, count, epoch, 50 + rng.below(900) as usize);
                        records.extend_from_slice(&b);
                        next = base + count as i64;
                        batches.push(b);
                    }
                    let info = log.append_as_follower(&records, 0).await.unwrap();
                    log.wait_durable(info.end_offset).await.unwrap();
                    batches.into_iter().for_each(|b| m.appended(b));
                }
                65..=69 => epoch += 1 + rng.below(2) as i32,
                70..=74 => {
                    // DeleteRecords up to anywhere in [start, end].
                    let target = m.start + rng.below((m.end - m.start) as u64 + 1) as i64;
                    let got = log.delete_records(target).await.unwrap();
                    if target > m.start {
                        m.start = target;
                        m.epochs.truncate_from_start(Offset(target));
                    }
                    assert_eq!(got, Offset(m.start), "{at}: delete_records({target})");
                }
                75..=89 => {
                    // Truncation at a point worth trying: a batch's base, inside a batch,
                    // inside a gap, just below a segment, or anywhere in [start, end].
                    let offset =
                        pick_offset(&mut rng, &m.batches, m.end, &dir).clamp(m.start, m.end);
                    let kept = m
                        .batches
                        .iter()
                        .take_while(|b| header(b).1 < offset)
                        .count();
                    let kept_end = m.batches[..kept].last().map_or(0, |b| header(b).1 + 1);
                    let first_removed = m.batches.get(kept).map(|b| header(b).0);
                    let new_end = log.truncate_to(Offset(offset)).await.unwrap();
                    if offset >= m.end {
                        assert_eq!(new_end, Offset(m.end), "{at}: no-op");
                    } else {
                        // The end of the last kept batch, or the base of the segment that
                        // lost all its batches: between the two, never above `offset`.
                        let most = first_removed.map_or(offset, |f| f.min(offset));
                        assert!(
                            (kept_end..=most).contains(&new_end.0),
                            "{at}: truncate_to({offset}) -> {new_end}, kept end {kept_end}, first removed {first_removed:?}"
                        );
                        m.batches.truncate(kept);
                        m.end = new_end.0;
                        m.start = m.start.min(m.end);
                        m.epochs.truncate_from_end(new_end);
                    }
                }
                90..=94 => {
                    check(&log, &m, &at).await;
                    log.close().await.unwrap();
                    (log, _c, _r) = open_with(&dir, config(), options()).await;
                    check(&log, &m, &format!("{at} after a clean restart")).await;
                }
                95..=97 => {
                    // A crash in the middle of a leader append's write (its first k blocks
                    // reach the file) or after its fdatasync failed (the write went
                    // through, or not). Recovery keeps a prefix of the attempted batches.
                    let n = 1 + rng.below(4) as usize;
                    let mut records = Vec::new();
                    let mut attempted = Vec::new();
                    let mut next = m.end;
                    for _ in 0..n {
                        let count = 1 + rng.below(4) as i32;
                        let mut b = batch(count, 50 + rng.below(900) as usize, step as i64);
                        records.extend_from_slice(&b);
                        set_base_offset(&mut b, next);
                        set_partition_leader_epoch(&mut b, epoch);
                        next += count as i64;
                        attempted.push(b);
                    }
                    if rng.below(3) == 0 {
                        faults.queue_sync(Fault::Fail(storage::fault::EIO));
                    } else {
                        faults.queue_write(Fault::Torn {
                            keep_bytes: 512 * rng.below(9) as usize,
                        });
                    }
                    let info = log.append(&records, epoch, 1 << 20, 0).await.unwrap();
                    assert!(log.wait_durable(info.end_offset).await.is_err(), "{at}");
                    drop(log);
                    (log, _c, _r) = open_with(&dir, config(), options()).await;
                    let shown = read_raw(&log).await;
                    let old = m.batches.iter().filter(|b| header(b).1 >= m.start).count();
                    assert!(
                        shown.len() >= old,
                        "{at}: torn write lost acknowledged batches"
                    );
                    let survived = shown.len() - old;
                    assert!(survived <= attempted.len(), "{at}");
                    assert_eq!(
                        &shown[old..],
                        &attempted[..survived],
                        "{at}: a prefix survives"
                    );
                    let kept_end = if survived > 0 {
                        header(&attempted[survived - 1]).1 + 1
                    } else {
                        m.end
                    };
                    attempted.truncate(survived);
                    attempted.into_iter().for_each(|b| m.appended(b));
                    // An empty segment the append rolled to may end the log further on.
                    let end = log.log_end_offset().0;
                    assert!((kept_end..=next).contains(&end), "{at}: end {end}");
                    m.end = end;
                    check(&log, &m, &format!("{at} after a failed write")).await;
                }
                _ => {
                    drop(log);
                    (log, _c, _r) = open_with(&dir, config(), options()).await;
                    check(&log, &m, &format!("{at} after a crash")).await;
                }
            }
        }
        check(&log, &m, &format!("seed {seed} end")).await;
    });
}

#[test]
fn random_walks_of_appends_truncations_and_restarts_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("a number")],
        Err(_) => vec![1, 2, 3, 42],
    };
    let steps = std::env::var("SLUICE_MODEL_STEPS").map_or(300, |s| s.parse().expect("a number"));
    for seed in seeds {
        let dir = tempfile::tempdir().unwrap();
        walk(seed, steps, &dir.path().join("m-0"));
    }
}
