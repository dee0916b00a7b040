//! `LeaderEpochFileCache`: for each leader epoch of a partition, the first offset written
//! in it, as Kafka keeps it. A follower asks its leader, with OffsetsForLeaderEpoch, where
//! its latest epoch ended on the leader and truncates there; the leader answers from this.
//!
//! Entries strictly increase in both epoch and start offset. An entry is added when a batch
//! carrying an epoch (>= 0) greater than the latest one is appended, leader or follower
//! append alike, with that batch's base offset. Truncating the log's end
//! (`Log::truncate_to`) removes the entries that start at or after the new end; moving its
//! start (retention, DeleteRecords) drops the entries wholly before it and moves the last of
//! those up to the new start.
//!
//! File `leader-epoch-checkpoint` in the log directory, Kafka's checkpoint text format
//! (ASCII, `\n` line ends, decimal integers):
//!
//! ```text
//! 0                 line 1: format version, always 0
//! 2                 line 2: number of entries that follow
//! 0 0               then per entry: epoch, one space, start offset
//! 3 150
//! ```
//!
//! It is written whole, atomically (`leader-epoch-checkpoint.tmp`, fsync, rename, fsync of
//! the directory), on the blocking thread pool, never on the shard thread, by the flush
//! that makes the first batch of a new epoch durable, after the data's fdatasync (so the
//! file never names a batch that is not on disk); that batch is acknowledged only after
//! the file is in place, and a failed write takes the log offline like a failed fdatasync
//! (Kafka marks the log directory offline). At open a failed write is only logged and
//! retried by the next flush: the file is reconciled with the log at every open. A file that is
//! missing or does not parse exactly (wrong version, count not matching the lines, an entry
//! that is not two integers, entries not strictly increasing, a negative value) is
//! ignored, and the cache is rebuilt from the batch headers of the log.

use crate::Offset;

/// The checkpoint file's name in the log directory.
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_VERSION: u32 = 0;

/// One epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: Offset,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochFileCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochFileCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` if `epoch` is newer than every known one
    /// (and not negative, Kafka's "no epoch"). Entries at or after `start_offset` of an older
    /// epoch would contradict it and are removed first. Returns whether anything changed.
    pub fn assign(&mut self, epoch: i32, start_offset: Offset) -> bool {
        if epoch < 0 || start_offset.0 < 0 || self.latest_epoch().is_some_and(|l| epoch <= l) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's `endOffsetFor` (OffsetsForLeaderEpoch): for the requested epoch, the largest
    /// known epoch at or below it and the offset where that epoch ended — the start offset of
    /// the next larger epoch, or `log_end_offset` when the requested epoch is the latest.
    /// A requested epoch below every known one answers itself with the first entry's start
    /// offset (as Kafka does). `None` (Kafka's UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET) when
    /// the request is -1, the cache is empty or the epoch is above the latest.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: Offset) -> Option<(i32, Offset)> {
        if epoch < 0 {
            return None;
        }
        if self.latest_epoch() == Some(epoch) {
            return Some((epoch, log_end_offset));
        }
        let higher = self.entries.iter().find(|e| e.epoch > epoch)?;
        match self.entries.iter().rev().find(|e| e.epoch <= epoch) {
            Some(floor) => Some((floor.epoch, higher.start_offset)),
            None => Some((epoch, higher.start_offset)),
        }
    }

    /// After the log's end moved back to `end_offset`: forgets epochs starting at or after
    /// it. Returns whether anything changed.
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// After the log's start moved up to `start_offset`: the entries starting at or below it
    /// go, except that the last of them stays with its start moved up to `start_offset`
    /// (its epoch still covers the new first offset). Returns whether anything changed.
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> bool {
        let below = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if below == 0 {
            return false;
        }
        let floor = self.entries[below - 1];
        if below == 1 && floor.start_offset == start_offset {
            return false;
        }
        self.entries.drain(..below);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: floor.epoch,
                start_offset,
            },
        );
        true
    }

    /// The checkpoint file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset.0));
        }
        out.into_bytes()
    }

    /// Parses a checkpoint file strictly; `None` when anything is off.
    pub fn decode(bytes: &[u8]) -> Option<LeaderEpochFileCache> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim().parse::<u32>().ok()? != CHECKPOINT_VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = LeaderEpochFileCache::default();
        for _ in 0..count {
            let mut fields = lines.next()?.split_whitespace();
            let epoch: i32 = fields.next()?.parse().ok()?;
            let start: i64 = fields.next()?.parse().ok()?;
            if fields.next().is_some() || epoch < 0 || start < 0 {
                return None;
            }
            if let Some(last) = cache.entries.last() {
                if epoch <= last.epoch || start <= last.start_offset.0 {
                    return None;
                }
            }
            cache.entries.push(EpochEntry {
                epoch,
                start_offset: Offset(start),
            });
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochFileCache {
        let mut c = LeaderEpochFileCache::default();
        for (e, o) in entries {
            assert!(c.assign(*e, Offset(*o)));
        }
        c
    }

    fn pairs(c: &LeaderEpochFileCache) -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset.0))
            .collect()
    }

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        let c = cache(&[(1, 0), (3, 100), (6, 250)]);
        let leo = Offset(300);
        // (requested, expected) as Kafka's LeaderEpochFileCache.endOffsetFor answers.
        let table: &[(i32, Option<(i32, i64)>)] = &[
            (-1, None),
            (0, Some((0, 0))),
            (1, Some((1, 100))),
            (2, Some((1, 100))),
            (3, Some((3, 250))),
            (5, Some((3, 250))),
            (6, Some((6, 300))),
            (7, None),
        ];
        for (requested, expected) in table {
            assert_eq!(
                c.end_offset_for(*requested, leo).map(|(e, o)| (e, o.0)),
                *expected,
                "epoch {requested}"
            );
        }
        assert_eq!(LeaderEpochFileCache::default().end_offset_for(0, leo), None);
    }

    #[test]
    fn assign_only_moves_forward() {
        let mut c = cache(&[(1, 0), (3, 100)]);
        assert!(!c.assign(3, Offset(200)), "same epoch");
        assert!(!c.assign(2, Offset(200)), "older epoch");
        assert!(!c.assign(-1, Offset(200)), "no epoch");
        // A newer epoch starting before an entry replaces the entries it contradicts.
        assert!(c.assign(4, Offset(50)));
        assert_eq!(pairs(&c), vec![(1, 0), (4, 50)]);
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 0), (3, 100), (6, 250)]);
        assert!(!c.truncate_from_end(Offset(251)));
        assert!(c.truncate_from_end(Offset(250)));
        assert_eq!(pairs(&c), vec![(1, 0), (3, 100)]);
        assert!(!c.truncate_from_start(Offset(0)));
        assert!(c.truncate_from_start(Offset(120)));
        assert_eq!(pairs(&c), vec![(3, 120)]);
        assert!(!c.truncate_from_start(Offset(120)));
        let mut c = cache(&[(1, 0), (3, 100)]);
        assert!(c.truncate_from_start(Offset(100)));
        assert_eq!(pairs(&c), vec![(3, 100)]);
        assert!(c.truncate_from_end(Offset(0)));
        assert!(c.entries().is_empty());
    }

    #[test]
    fn checkpoint_round_trips_in_kafka_format_and_rejects_damage() {
        let c = cache(&[(0, 0), (3, 150)]);
        assert_eq!(c.encode(), b"0\n2\n0 0\n3 150\n");
        assert_eq!(LeaderEpochFileCache::decode(&c.encode()), Some(c));
        assert_eq!(
            LeaderEpochFileCache::decode(b"0\n0\n"),
            Some(LeaderEpochFileCache::default())
        );
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n3 150\n",
            b"0\n1\n0\n",
            b"0\n1\n0 0 0\n",
            b"0\n2\n3 0\n1 150\n",
            b"0\n2\n1 10\n3 10\n",
            b"0\n1\n-1 0\n",
            b"0\n1\nx 0\n",
            b"0\n1\n0 0",
        ] {
            if bad == b"0\n1\n0 0" {
                // No final line end still parses (Kafka's reader is line based).
                assert!(LeaderEpochFileCache::decode(bad).is_some());
                continue;
            }
            assert_eq!(LeaderEpochFileCache::decode(bad), None, "{bad:?}");
        }
    }
}
