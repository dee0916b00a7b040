//! The metadata quorum's Raft core, sans I/O.
//!
//! Consensus is raft-rs (the TiKV implementation): a `RawNode` that is ticked, stepped with
//! peers' messages and asked to propose, and that hands back `Ready`s. [`QuorumNode`] wraps it
//! so that a driver only moves data: [`QuorumNode::handle_ready`] returns an [`Output`] with
//! the writes to make durable, the messages to send once they are, and the committed entries
//! to apply, in that order. The node never touches a clock, a socket or a file, so the same
//! code runs under glommio timers and TCP in the broker and under the seeded simulator in
//! this module's tests (dropped, delayed, duplicated and reordered messages, partitions,
//! crash-restarts that lose what was not yet durable).
//!
//! The driver's contract, from raft's safety argument:
//! 1. `Output::writes` are durable (fdatasync'ed) before any of `Output::messages` is sent
//!    — a vote or an append acknowledgement must never outlive a crash that forgets it.
//! 2. `Output::committed` entries are applied in order, each once per process lifetime;
//!    after a restart, applying resumes from the snapshot the store recovered.
//! 3. A restart rebuilds the node from exactly what was durable ([`DiskState`]).
//!
//! Election timing: raft-rs draws each election timeout from `[min, max)` with the thread's
//! RNG. The broker gives it a range; the simulator pins `max = min + 1` per node, so that a
//! seed decides every timeout.

pub mod disk;
pub mod store;
pub mod voters;

use raft::eraftpb::{Entry, EntryType, HardState, Message, Snapshot};
use raft::{Config, RawNode, StateRole};

pub use raft::eraftpb;
pub use store::QuorumStore;

/// Node id in the quorum (`node.id`).
pub type NodeId = u64;

#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub id: NodeId,
    /// Every voter, this node included (`controller.quorum.voters`).
    pub voters: Vec<NodeId>,
    /// Ticks without a leader's word before a follower campaigns: drawn from
    /// `[election_ticks_min, election_ticks_max)`.
    pub election_ticks_min: usize,
    pub election_ticks_max: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Largest append message in bytes (at least one entry is always sent).
    pub max_message_bytes: u64,
    /// Appends in flight to one follower before the leader waits for acknowledgements.
    pub max_inflight_messages: usize,
}

impl QuorumConfig {
    fn raft(&self, applied: u64) -> Config {
        Config {
            id: self.id,
            election_tick: self.election_ticks_min,
            min_election_tick: self.election_ticks_min,
            max_election_tick: self.election_ticks_max,
            heartbeat_tick: self.heartbeat_ticks,
            max_size_per_msg: self.max_message_bytes,
            max_inflight_msgs: self.max_inflight_messages,
            applied,
            // A partitioned voter that rejoins does not depose a working leader (pre-vote),
            // and a leader that lost its quorum steps down (check quorum).
            pre_vote: true,
            check_quorum: true,
            ..Config::default()
        }
    }
}

/// What a voter had durably when it stopped.
#[derive(Debug, Clone, Default)]
pub struct DiskState {
    pub hard_state: HardState,
    /// The newest snapshot (the bootstrap configuration when none was taken yet).
    pub snapshot: Snapshot,
    /// Entries after the snapshot, in index order.
    pub entries: Vec<Entry>,
}

/// Writes one `Ready` asks for, to be made durable in this order before its messages go.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// A snapshot from the leader: replaces the state and every entry it covers.
    pub snapshot: Option<Snapshot>,
    /// Entries to append; they replace any stored entries from `entries[0].index` on.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// One step's work for the driver (see the module doc for the order).
#[derive(Debug, Default)]
pub struct Output {
    pub writes: Writes,
    pub messages: Vec<Message>,
    /// Committed entries to apply, in index order. Raft's own entries (the empty entry a
    /// new leader appends, configuration changes) are left out; their indexes still count.
    pub committed: Vec<Committed>,
    /// A snapshot to install in the state machine before `committed` (a lagging follower
    /// caught up by snapshot).
    pub restore: Option<Snapshot>,
}

/// A committed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("proposal refused: {0}")]
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
#[error("raft: {0}")]
pub struct QuorumError(#[from] raft::Error);

pub struct QuorumNode {
    raw: RawNode<QuorumStore>,
    /// The hard state the driver was last told to write.
    written: HardState,
}

impl QuorumNode {
    /// A voter of a new quorum (empty log, configuration `config.voters`).
    pub fn bootstrap(config: &QuorumConfig) -> Result<QuorumNode, QuorumError> {
        let store = QuorumStore::bootstrap(&config.voters);
        Self::with_store(config, store, 0)
    }

    /// A voter restarted from what it had durably.
    pub fn restart(config: &QuorumConfig, disk: DiskState) -> Result<QuorumNode, QuorumError> {
        let applied = disk.snapshot.get_metadata().index;
        let store = QuorumStore::recovered(disk.hard_state, disk.snapshot, disk.entries);
        Self::with_store(config, store, applied)
    }

    fn with_store(
        config: &QuorumConfig,
        store: QuorumStore,
        applied: u64,
    ) -> Result<QuorumNode, QuorumError> {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let written = store.hard_state().clone();
        let raw = RawNode::new(&config.raft(applied), store, &logger)?;
        Ok(QuorumNode { raw, written })
    }

    pub fn id(&self) -> NodeId {
        self.raw.raft.id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            id => Some(id),
        }
    }

    /// Index of the newest snapshot the log starts after.
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    /// Whether the commit index is in this node's current term: a new leader knows
    /// everything committed before it only once an entry of its own term has committed.
    pub fn committed_in_term(&self) -> bool {
        let log = &self.raw.raft.raft_log;
        log.term(log.committed).ok() == Some(self.raw.raft.term)
    }

    /// Index of the newest entry in this node's log (after a `propose` on the leader: the
    /// proposed entry's index).
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The hard state the store holds (what the driver was last told to write, or newer).
    pub fn hard_state(&self) -> HardState {
        self.raw.store().hard_state().clone()
    }

    /// The stored entries after `index` (a driver that compacts its files at `index` keeps
    /// these).
    pub fn entries_after(&self, index: u64) -> Vec<Entry> {
        self.raw
            .store()
            .entries_ref()
            .iter()
            .filter(|e| e.index > index)
            .cloned()
            .collect()
    }

    /// The entries carrying data with index in `(after, upto]`, in order, up to about
    /// `max_bytes` (one entry at least), for a metadata observer; `None` when the store no
    /// longer holds the entries right after `after` (they are in the snapshot).
    pub fn data_entries(
        &self,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Option<Vec<(u64, Vec<u8>)>> {
        if after < self.snapshot_index() {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.raw.store().entries_ref() {
            if e.index <= after {
                continue;
            }
            if e.index > upto || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                bytes += e.data.len();
                out.push((e.index, e.data.to_vec()));
            }
        }
        Some(out)
    }

    /// Starts an election now instead of waiting for the election timeout (a quorum of one
    /// has no one to wait for).
    pub fn campaign(&mut self) -> Result<(), QuorumError> {
        self.raw.campaign().map_err(QuorumError)
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Each voter's highest replicated index as the leader sees it (empty on followers).
    pub fn progress(&self) -> Vec<(NodeId, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut v: Vec<(NodeId, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect();
        v.sort_unstable();
        v
    }

    /// The leader's view of each follower, for a simulation failure report.
    #[cfg(test)]
    fn debug_progress(&self) -> String {
        let mut v: Vec<String> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, pr)| format!("{id}:{:?}", pr))
            .collect();
        v.sort();
        let tail: Vec<String> = self
            .raw
            .store()
            .entries_ref()
            .iter()
            .rev()
            .take(3)
            .map(|e| {
                format!(
                    "{}/{}:{:?}",
                    e.index,
                    e.term,
                    String::from_utf8_lossy(&e.data)
                )
            })
            .collect();
        format!(
            "tail {tail:?} last {} first {} snap {} prs {v:?}",
            self.raw.raft.raft_log.last_index(),
            self.raw.raft.raft_log.first_index(),
            self.raw.store().snapshot_index()
        )
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Takes a message from a peer. Messages from nodes outside the quorum, and malformed
    /// ones raft refuses, are dropped with an error for the caller to log.
    pub fn step(&mut self, msg: Message) -> Result<(), QuorumError> {
        self.raw.step(msg).map_err(QuorumError)
    }

    /// Proposes a record; it is committed (or lost, if leadership changes first) later,
    /// and shows up in some `Output::committed`.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        self.raw.propose(Vec::new(), data).map_err(|e| match e {
            raft::Error::ProposalDropped => ProposeError::NotLeader {
                leader: self.leader(),
            },
            e => ProposeError::Refused(e.to_string()),
        })
    }

    /// Tells the leader whether a snapshot it sent to `to` arrived; until it hears, it
    /// sends that follower nothing else.
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// Tells the node that a message to `to` could not be sent (the connection is down).
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.raw.report_unreachable(to);
    }

    /// Replaces the log up to `index` (applied) by a snapshot holding `data`, the state
    /// machine's image at `index`. Returns the snapshot to store durably; the entries it
    /// covers may then be deleted from disk.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<Snapshot, QuorumError> {
        self.raw.mut_store().compact(index, data)?;
        Ok(self.raw.store().snapshot_ref().clone())
    }

    /// The node's work since the last call, if any (see the module doc for what the
    /// driver must do with it and in which order).
    pub fn handle_ready(&mut self) -> Option<Output> {
        if !self.raw.has_ready() {
            return None;
        }
        let mut out = Output::default();
        let mut rd = self.raw.ready();
        out.messages.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.raw.mut_store().apply_snapshot(snap.clone());
            out.writes.snapshot = Some(snap.clone());
            out.restore = Some(snap);
        }
        push_committed(&mut out.committed, rd.take_committed_entries());
        if !rd.entries().is_empty() {
            self.raw.mut_store().append(rd.entries());
            out.writes.entries = rd.entries().clone();
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        out.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        out.messages.extend(light.take_messages());
        push_committed(&mut out.committed, light.take_committed_entries());
        self.raw.advance_apply();
        // The hard state (term, vote, commit) is written whole whenever any part changed.
        let hs = self.raw.store().hard_state().clone();
        if hs != self.written {
            self.written = hs.clone();
            out.writes.hard_state = Some(hs);
        }
        Some(out)
    }
}

fn push_committed(out: &mut Vec<Committed>, entries: Vec<Entry>) {
    for e in entries {
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            out.push(Committed {
                index: e.index,
                term: e.term,
                data: e.data.to_vec(),
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod sim;
