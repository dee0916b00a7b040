//! `ProducerStateManager`: what a partition knows about each idempotent producer, so that a
//! retried batch is acknowledged with its original offsets instead of being written twice,
//! and a batch out of sequence or from a fenced epoch is refused.
//!
//! For each producer id it keeps the current epoch, the sequence and offset ranges of the
//! last [`PRODUCER_BATCHES_MAX`] batches (as Kafka does) and the last batch's max timestamp
//! (for `producer.id.expiration.ms`). The rules follow Kafka's `ProducerAppendInfo`:
//!
//! - a batch without a producer id (-1) is not tracked;
//! - an epoch older than the producer's current one is refused;
//! - a batch equal in epoch and sequence range to a remembered one is a duplicate;
//! - in the current epoch the first sequence must follow the last one (wrapping after
//!   `i32::MAX` to 0); a new epoch must start at sequence 0;
//! - a producer the partition does not know (new, or its state expired) may start at any
//!   sequence, as Kafka accepts since KIP-360.
//!
//! The state is rebuilt on open from the newest usable snapshot plus the batch headers after
//! it (see `Log::open`). Snapshot file `<offset, 20 digits>.snapshot`, all integers
//! big-endian; it describes every batch below `offset`:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SLPS` |
//! | 2 | format version, 1 |
//! | 8 | offset: i64 |
//! | 4 | producer count: u32 |
//! | per producer | producer_id i64, epoch i16, last_timestamp i64, batch count u8, then per batch first_seq i32, last_seq i32, first_offset i64, last_offset i64 |
//! | 4 | CRC32C of every byte before it |
//!
//! A fixed hand-written layout rather than `rkyv`: the file is read once per partition at
//! start-up, so zero-copy access buys nothing, and a byte-level description that other tools
//! can read matters more.

use std::collections::{HashMap, VecDeque};

use protocol::record_batch::RecordBatchView;
use thiserror::Error;

use crate::Offset;

/// Batches remembered per producer for duplicate detection (Kafka keeps five, which is also
/// the most requests a client may have in flight with idempotence on).
pub const PRODUCER_BATCHES_MAX: usize = 5;

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
const SNAPSHOT_VERSION: u16 = 1;
const NO_PRODUCER_ID: i64 = -1;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`PRODUCER_BATCHES_MAX`].
    pub batches: VecDeque<BatchMeta>,
    /// Max timestamp of the producer's last batch.
    pub last_timestamp: i64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerCheck {
    /// Write it.
    Append,
    /// Already written: acknowledge with these offsets, write nothing.
    Duplicate(BatchMeta),
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProducerError {
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {found} where {expected} was expected"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        found: i32,
    },
    #[error("an idempotent produce must carry exactly one batch per partition, not {batches}")]
    TooManyBatches { batches: usize },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

/// The sequence after `seq`, wrapping as Kafka's does.
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The last sequence of a batch: base sequence plus last offset delta, wrapping.
pub fn last_seq_of(view: &RecordBatchView<'_>) -> i32 {
    let base = view.base_sequence();
    let delta = view.last_offset_delta();
    if base > i32::MAX - delta {
        delta - (i32::MAX - base) - 1
    } else {
        base + delta
    }
}

impl ProducerStateManager {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides what to do with `view` (offsets not yet assigned).
    pub fn check(&self, view: &RecordBatchView<'_>) -> Result<ProducerCheck, ProducerError> {
        let producer_id = view.producer_id();
        if producer_id == NO_PRODUCER_ID {
            return Ok(ProducerCheck::Append);
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(ProducerCheck::Append);
        };
        let epoch = view.producer_epoch();
        let first_seq = view.base_sequence();
        if epoch < entry.epoch {
            return Err(ProducerError::StaleEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            if first_seq != 0 {
                return Err(ProducerError::OutOfOrderSequence {
                    producer_id,
                    epoch,
                    expected: 0,
                    found: first_seq,
                });
            }
            return Ok(ProducerCheck::Append);
        }
        let last_seq = last_seq_of(view);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(ProducerCheck::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(last) if next_seq(last.last_seq) != first_seq => {
                Err(ProducerError::OutOfOrderSequence {
                    producer_id,
                    epoch,
                    expected: next_seq(last.last_seq),
                    found: first_seq,
                })
            }
            _ => Ok(ProducerCheck::Append),
        }
    }

    /// Remembers a batch as stored (offsets assigned). Batches must come in log order.
    pub fn record(&mut self, view: &RecordBatchView<'_>) {
        let producer_id = view.producer_id();
        if producer_id == NO_PRODUCER_ID {
            return;
        }
        let epoch = view.producer_epoch();
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(PRODUCER_BATCHES_MAX),
                last_timestamp: view.max_timestamp(),
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: view.base_sequence(),
            last_seq: last_seq_of(view),
            first_offset: view.base_offset(),
            last_offset: view.last_offset(),
        });
        entry.last_timestamp = view.max_timestamp();
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than `now_ms`.
    pub fn expire(&mut self, now_ms: u64, expiration_ms: u64) -> usize {
        let before = self.producers.len();
        let now = now_ms as i64;
        let expiration = expiration_ms.min(i64::MAX as u64) as i64;
        self.producers
            .retain(|_, e| now.saturating_sub(e.last_timestamp) < expiration);
        before - self.producers.len()
    }

    /// The snapshot file's bytes for the state of every batch below `offset`.
    pub fn encode_snapshot(&self, offset: Offset) -> Vec<u8> {
        let mut out = Vec::with_capacity(22 + self.producers.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&offset.0.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; `None` when it is damaged in any way (the caller then rebuilds
    /// from an older snapshot or from the log).
    pub fn decode_snapshot(bytes: &[u8]) -> Option<(Offset, ProducerStateManager)> {
        let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC || r.u16()? != SNAPSHOT_VERSION {
            return None;
        }
        let offset = Offset(r.i64()?);
        let count = r.u32()? as usize;
        let mut state = ProducerStateManager::default();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let n = r.take(1)?[0] as usize;
            if n > PRODUCER_BATCHES_MAX {
                return None;
            }
            let mut batches = VecDeque::with_capacity(PRODUCER_BATCHES_MAX);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            state.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                },
            );
        }
        r.0.is_empty().then_some((offset, state))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header-only v2 batch (records are opaque to the state manager).
    fn batch(pid: i64, epoch: i16, base_seq: i32, count: i32, base_offset: i64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base_offset.to_be_bytes());
        b.extend_from_slice(&49i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&base_seq.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b
    }

    fn check(s: &ProducerStateManager, b: &[u8]) -> Result<ProducerCheck, ProducerError> {
        s.check(&RecordBatchView::parse(b).unwrap())
    }

    fn record(s: &mut ProducerStateManager, b: &[u8]) {
        s.record(&RecordBatchView::parse(b).unwrap());
    }

    #[test]
    fn duplicates_are_found_in_the_last_five_batches_only() {
        let mut s = ProducerStateManager::default();
        for i in 0..7 {
            let b = batch(7, 0, i * 10, 10, 100 + i as i64 * 10);
            assert_eq!(check(&s, &b), Ok(ProducerCheck::Append));
            record(&mut s, &b);
        }
        // Batches 2..=6 are remembered; 0 and 1 have left the window.
        let dup = check(&s, &batch(7, 0, 20, 10, 0)).unwrap();
        assert_eq!(
            dup,
            ProducerCheck::Duplicate(BatchMeta {
                first_seq: 20,
                last_seq: 29,
                first_offset: 120,
                last_offset: 129
            })
        );
        assert!(matches!(
            check(&s, &batch(7, 0, 10, 10, 0)),
            Err(ProducerError::OutOfOrderSequence {
                expected: 70,
                found: 10,
                ..
            })
        ));
        // Same first sequence but another length is not the same batch.
        assert!(check(&s, &batch(7, 0, 60, 5, 0)).is_err());
    }

    #[test]
    fn gaps_epochs_and_unknown_producers() {
        let mut s = ProducerStateManager::default();
        // Unknown producer: any sequence starts it (KIP-360).
        let first = batch(1, 3, 500, 5, 0);
        assert_eq!(check(&s, &first), Ok(ProducerCheck::Append));
        record(&mut s, &first);
        assert!(matches!(
            check(&s, &batch(1, 3, 506, 1, 0)),
            Err(ProducerError::OutOfOrderSequence {
                expected: 505,
                found: 506,
                ..
            })
        ));
        assert_eq!(
            check(&s, &batch(1, 3, 505, 1, 0)),
            Ok(ProducerCheck::Append)
        );
        assert!(matches!(
            check(&s, &batch(1, 2, 505, 1, 0)),
            Err(ProducerError::StaleEpoch {
                epoch: 2,
                current: 3,
                ..
            })
        ));
        assert!(matches!(
            check(&s, &batch(1, 4, 7, 1, 0)),
            Err(ProducerError::OutOfOrderSequence {
                expected: 0,
                found: 7,
                ..
            })
        ));
        let bumped = batch(1, 4, 0, 2, 10);
        assert_eq!(check(&s, &bumped), Ok(ProducerCheck::Append));
        record(&mut s, &bumped);
        assert_eq!(s.entry(1).unwrap().epoch, 4);
        assert_eq!(
            s.entry(1).unwrap().batches.len(),
            1,
            "a new epoch starts afresh"
        );
        // Non-idempotent batches are never judged.
        assert_eq!(
            check(&s, &batch(-1, -1, -1, 3, 0)),
            Ok(ProducerCheck::Append)
        );
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = ProducerStateManager::default();
        let b = batch(9, 0, i32::MAX - 1, 4, 0);
        assert_eq!(
            last_seq_of(&RecordBatchView::parse(&b).unwrap()),
            1,
            "MAX-1, MAX, 0, 1"
        );
        record(&mut s, &b);
        assert_eq!(check(&s, &batch(9, 0, 2, 1, 0)), Ok(ProducerCheck::Append));
        assert!(check(&s, &batch(9, 0, 0, 1, 0)).is_err());
    }

    #[test]
    fn expiry_forgets_idle_producers() {
        let mut s = ProducerStateManager::default();
        record(&mut s, &batch(1, 0, 0, 1, 0)); // timestamp 1000
        assert_eq!(s.expire(1500, 1000), 0);
        assert_eq!(s.expire(2000, 1000), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let mut s = ProducerStateManager::default();
        for i in 0..8 {
            record(&mut s, &batch(i % 3, 1, (i / 3) as i32 * 2, 2, i * 2));
        }
        let bytes = s.encode_snapshot(Offset(16));
        assert_eq!(
            ProducerStateManager::decode_snapshot(&bytes),
            Some((Offset(16), s.clone()))
        );
        for cut in [0, 1, 10, bytes.len() - 1] {
            assert!(ProducerStateManager::decode_snapshot(&bytes[..cut]).is_none());
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(ProducerStateManager::decode_snapshot(&flipped).is_none());
    }
}
