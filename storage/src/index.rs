//! Sparse indexes of one segment, kept in memory and persisted beside the data file.
//!
//! `.index` (OffsetIndex): a sequence of 8-byte entries, big-endian,
//! `relative_offset: u32` (offset − segment base offset) then `position: u32` (byte position
//! of the batch in the `.log` file). One entry for the first batch of the segment and then
//! about every `index.interval.bytes`. Entries strictly increase in both fields.
//!
//! `.timeindex` (TimeIndex): a sequence of 12-byte entries, big-endian,
//! `timestamp: i64` (largest batch max-timestamp so far) then `relative_offset: u32` (the
//! base offset of the batch that carried it). Timestamps strictly increase.
//!
//! Both files are written whole (`<name>.tmp`, fsync, rename, directory fsync, on the
//! blocking pool) once a sealed segment is wholly durable — by that flush, before it
//! acknowledges — on clean shutdown, and at open after a rebuild. A truncation deletes the
//! files of the segment it cuts (which becomes the active segment, whose indexes are always
//! rebuilt at open) and the entries of the removed batches. On startup a file that is
//! missing, of a size that is not a multiple of its entry size, not monotonic, or that
//! points past the segment's data is ignored and the index is rebuilt by scanning the
//! segment.

use std::io::Write;
use std::path::Path;

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Default, Clone)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    /// Adds an entry; one that would not strictly increase both fields is left out (the
    /// index is sparse, so a missing entry only lengthens a scan) and reported as `false`.
    /// The log rolls segments so that this does not happen; it is not an assertion because
    /// recovered files are input too.
    pub fn push(&mut self, entry: OffsetEntry) -> bool {
        if let Some(last) = self.entries.last() {
            if entry.relative_offset <= last.relative_offset || entry.position <= last.position {
                return false;
            }
        }
        self.entries.push(entry);
        true
    }

    /// The last entry at or before `relative_offset`, or the segment start.
    pub fn lookup(&self, relative_offset: u32) -> OffsetEntry {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
        } else {
            self.entries[i - 1]
        }
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    /// Drops the entries at or after byte `position` (the segment was truncated there).
    pub fn truncate_to_position(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|e| (e.position as u64) < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Decodes and checks an index file's bytes against the segment's data size.
    pub fn decode(bytes: &[u8], data_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let e = OffsetEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_be_bytes(chunk[4..8].try_into().ok()?),
            };
            if let Some(last) = index.entries.last() {
                if e.relative_offset <= last.relative_offset || e.position <= last.position {
                    return None;
                }
            }
            if e.position as u64 >= data_bytes {
                return None;
            }
            index.entries.push(e);
        }
        Some(index)
    }
}

#[derive(Debug, Default, Clone)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records `timestamp` if it is larger than every earlier one.
    pub fn maybe_push(&mut self, entry: TimeEntry) {
        match self.entries.last() {
            Some(last) if entry.timestamp <= last.timestamp => {}
            _ => self.entries.push(entry),
        }
    }

    /// Drops the entries of batches at or after `relative_offset` (the segment was
    /// truncated before the batch that starts there).
    pub fn truncate_from(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    /// Largest timestamp indexed so far.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp)
    }

    /// The relative offset from which to scan for the first batch with a timestamp at or
    /// after `timestamp`. An entry's timestamp is the max so far, so every batch up to the
    /// last entry below `timestamp` is below it too: scan from that entry (or from the start
    /// when none is). When no entry reaches `timestamp` the answer, if any, is in the
    /// unindexed tail after the last entry; the caller checks the segment's max timestamp.
    pub fn scan_start(&self, timestamp: i64) -> u32 {
        let i = self.entries.partition_point(|e| e.timestamp < timestamp);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].relative_offset
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let e = TimeEntry {
                timestamp: i64::from_be_bytes(chunk[0..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().ok()?),
            };
            if let Some(last) = index.entries.last() {
                if e.timestamp <= last.timestamp || e.relative_offset < last.relative_offset {
                    return None;
                }
            }
            index.entries.push(e);
        }
        Some(index)
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename. Blocking, and without the
/// directory fsync: kept for the broker's metadata file; storage uses
/// `files::write_atomically`.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut idx = OffsetIndex::default();
        idx.push(OffsetEntry {
            relative_offset: 10,
            position: 4096,
        });
        idx.push(OffsetEntry {
            relative_offset: 20,
            position: 8192,
        });
        assert_eq!(idx.lookup(5).position, 0);
        assert_eq!(idx.lookup(10).position, 4096);
        assert_eq!(idx.lookup(19).position, 4096);
        assert_eq!(idx.lookup(1000).position, 8192);
        let round = OffsetIndex::decode(&idx.encode(), 10_000).unwrap();
        assert_eq!(round.entries(), idx.entries());
    }

    #[test]
    fn corrupt_offset_index_is_rejected() {
        let mut idx = OffsetIndex::default();
        idx.push(OffsetEntry {
            relative_offset: 1,
            position: 100,
        });
        idx.push(OffsetEntry {
            relative_offset: 2,
            position: 200,
        });
        let bytes = idx.encode();
        assert!(
            OffsetIndex::decode(&bytes[..7], 1000).is_none(),
            "ragged size"
        );
        assert!(
            OffsetIndex::decode(&bytes, 150).is_none(),
            "points past data"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert!(
            OffsetIndex::decode(&swapped, 1000).is_none(),
            "not monotonic"
        );
    }

    #[test]
    fn time_index_scan_start() {
        let mut t = TimeIndex::default();
        t.maybe_push(TimeEntry {
            timestamp: 100,
            relative_offset: 0,
        });
        t.maybe_push(TimeEntry {
            timestamp: 90,
            relative_offset: 5,
        });
        t.maybe_push(TimeEntry {
            timestamp: 200,
            relative_offset: 10,
        });
        assert_eq!(t.scan_start(50), 0);
        assert_eq!(t.scan_start(150), 0);
        assert_eq!(t.scan_start(200), 0);
        assert_eq!(t.scan_start(201), 10, "past every entry: scan the tail");
        assert_eq!(TimeIndex::decode(&t.encode()).unwrap().entries.len(), 2);
    }
}
