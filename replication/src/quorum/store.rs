//! The in-memory mirror of a voter's durable Raft state, read by `raft::RawNode`.
//!
//! raft-rs reads its log through the [`raft::Storage`] trait; the node writes it through
//! [`QuorumStore`]'s methods as each `Ready` asks, and returns the same writes to its driver
//! ([`super::Writes`]) to make durable. After a restart the store is rebuilt from what the
//! driver recovered ([`super::DiskState`]), so the mirror and the disk agree.
//!
//! Layout: `snapshot` covers every index up to `snapshot.metadata.index`; `entries` hold the
//! indexes after it, contiguous (`entries[i].index == snapshot index + 1 + i`).

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{Error, GetEntriesContext, RaftState, Storage, StorageError};

#[derive(Debug, Clone, Default)]
pub struct QuorumStore {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl QuorumStore {
    /// A fresh voter of a new quorum: an empty log whose configuration is `voters` (every
    /// voter starts from the same state, so no snapshot needs to be sent at first).
    pub fn bootstrap(voters: &[u64]) -> QuorumStore {
        let mut snapshot = Snapshot::default();
        snapshot
            .mut_metadata()
            .set_conf_state(ConfState::from((voters.to_vec(), vec![])));
        QuorumStore {
            hard_state: HardState::default(),
            snapshot,
            entries: Vec::new(),
        }
    }

    /// The store as a restart recovered it.
    pub fn recovered(
        hard_state: HardState,
        snapshot: Snapshot,
        entries: Vec<Entry>,
    ) -> QuorumStore {
        let mut store = QuorumStore {
            hard_state,
            snapshot,
            entries: Vec::new(),
        };
        let first = store.snapshot_index() + 1;
        // Entries the snapshot already covers are dropped; a gap ends the usable log.
        for (next, e) in (first..).zip(entries.into_iter().filter(|e| e.index >= first)) {
            if e.index != next {
                break;
            }
            store.entries.push(e);
        }
        store
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn entries_ref(&self) -> &[Entry] {
        &self.entries
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or_else(|| self.snapshot_index())
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Appends `entries`, replacing whatever the log held from `entries[0].index` on
    /// (a new leader overwrites an uncommitted suffix).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let first_index = self.snapshot_index() + 1;
        if first.index < first_index {
            // Raft never sends entries the snapshot covers; skip any that would be.
            let skip = (first_index - first.index) as usize;
            if skip >= entries.len() {
                return;
            }
            return self.append(&entries[skip..]);
        }
        let keep = (first.index - first_index) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        debug_assert_eq!(self.last() + 1, first.index, "appended entries leave a gap");
        self.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot received from the leader: it replaces the whole log.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        let term = snapshot.get_metadata().term;
        // The snapshot replaces the whole log (raft restores its own log the same way).
        self.entries.clear();
        self.snapshot = snapshot;
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < term {
            self.hard_state.term = term;
        }
    }

    /// Replaces the log up to `index` (applied, at most the commit index) by a snapshot
    /// holding `data`, the state machine's image at that index.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), Error> {
        if index <= self.snapshot_index() {
            return Err(Error::Store(StorageError::Compacted));
        }
        if index > self.hard_state.commit || index > self.last() {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let term = self.term(index)?;
        let conf_state = self.snapshot.get_metadata().get_conf_state().clone();
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        let drop = (index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = snapshot;
        Ok(())
    }
}

impl Storage for QuorumStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.snapshot.get_metadata().get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.snapshot_index() + 1;
        if low < first {
            return Err(Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let lo = (low - first) as usize;
        let hi = (high - first) as usize;
        let mut out = Vec::with_capacity(hi - lo);
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        for e in &self.entries[lo..hi] {
            size += protobuf::Message::compute_size(e) as u64;
            // At least one entry, however large.
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot_index();
        if idx == snap {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < snap {
            return Err(Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - snap - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            // The state machine has not snapshotted that far yet; raft asks again later.
            return Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn recovery_drops_what_the_snapshot_covers_and_stops_at_a_gap() {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 1;
        let entries = vec![
            entry(2, 1),
            entry(3, 1),
            entry(4, 2),
            entry(5, 2),
            entry(7, 2),
        ];
        let s = QuorumStore::recovered(HardState::default(), snap, entries);
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.term(3).unwrap(), 1);
        assert_eq!(s.term(5).unwrap(), 2);
        assert!(s.term(2).is_err());
    }

    #[test]
    fn appends_replace_a_conflicting_suffix_and_compaction_keeps_terms() {
        let mut s = QuorumStore::bootstrap(&[1, 2, 3]);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        s.append(&[entry(2, 2)]);
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        // Only committed entries may be compacted.
        assert!(s.compact(2, vec![]).is_err());
        s.set_commit(2);
        s.compact(2, b"image".to_vec()).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(s.snapshot(0, 2).unwrap().get_data(), b"image");
        assert_eq!(
            s.snapshot(0, 2)
                .unwrap()
                .get_metadata()
                .get_conf_state()
                .voters,
            vec![1, 2, 3]
        );
        assert!(s
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .is_err());
    }
}
