//! Partition replicas for Sluice: the one door through which the broker reaches a log.
//!
//! A [`Partition`] owns its [`storage::Log`] privately. Handlers append through
//! [`Partition::append`] with an [`Append`] that says who is appending, and read through
//! [`Partition::read`] with an [`Isolation`] that says how far they may see. What is visible
//! is decided here, not in storage: storage knows its log end offset (offsets assigned) and
//! its durable offset (fdatasync'ed); the partition holds the high watermark, the offset
//! below which every record is durable on every in-sync replica.
//!
//! Today each partition has one replica (this node), so the in-sync replica set is `{self}`
//! and the high watermark follows the durable offset. Follower fetching, ISR tracking and
//! `min.insync.replicas` grow behind these types without changing the handlers: the high
//! watermark becomes the minimum durable log end offset over the ISR, and a follower's
//! appends come in as [`Append::Replication`].
//!
//! ```text
//!   log start      high watermark     durable offset     log end offset
//!      |  visible to consumers  |  durable here only  | written, syncing |
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use protocol::record_batch::BatchIter;
use storage::{AppendInfo, GroupCommit, Log, LogConfig, Offset, StorageError};

pub mod metadata;
pub mod quorum;
pub mod replica;
pub mod wire;

/// Kafka's leader epoch: bumped on every leadership change of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Broker (node) id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BrokerId(pub i32);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Batches to append, by origin (Kafka's `AppendOrigin`). The origin decides what happens
/// to them: only client batches are checked against the client rules (by
/// `protocol::validate`, before they reach the partition), leader appends get offsets and
/// the leader epoch stamped, replicated batches keep what the leader gave them.
#[derive(Debug, Clone)]
pub enum Append {
    /// A producer's batches, already validated against the client rules on the
    /// connection's shard. Offsets and the leader epoch are assigned here; idempotent
    /// producers' sequences are checked.
    Client {
        records: Bytes,
        /// The topic's `max.message.bytes`.
        max_batch_bytes: usize,
    },
    /// The broker's own records (the group coordinator's `__consumer_offsets` writes):
    /// offsets and epoch assigned, no client rules, no size limit.
    Coordinator { records: Bytes },
    /// A leader's batches on a follower: stored byte for byte at the offsets and epochs
    /// they carry (CRCs verified, nothing assigned or re-encoded).
    Replication { records: Bytes },
}

impl Append {
    fn records(&self) -> &Bytes {
        match self {
            Append::Client { records, .. }
            | Append::Coordinator { records }
            | Append::Replication { records } => records,
        }
    }
}

/// How far a read may see (Kafka's `FetchIsolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Consumers with `read_uncommitted`: below the high watermark.
    HighWatermark,
    /// Consumers with `read_committed`: below the last stable offset. Without transactions
    /// (none are open on a Sluice log) it equals the high watermark.
    Committed,
}

/// What a read returns.
#[derive(Debug, Clone)]
pub struct Read {
    /// Whole batches as stored, all below the isolation's bound (possibly empty).
    pub records: Bytes,
    pub high_watermark: Offset,
    pub last_stable_offset: Offset,
    pub log_start_offset: Offset,
}

/// One replica of a partition, owned by one shard; today always the leader.
///
/// Its log is reachable only through its methods, so no caller can append without an
/// origin or read past what is visible:
///
/// ```compile_fail,E0616
/// fn bypass(p: &replication::Partition) -> &std::rc::Rc<storage::Log> {
///     &p.log
/// }
/// ```
pub struct Partition {
    topic: String,
    index: i32,
    log: Rc<Log>,
    /// This node.
    me: BrokerId,
    leader_epoch: Cell<LeaderEpoch>,
    leader: Cell<BrokerId>,
    role: RefCell<Role>,
    /// Offset below which records are visible; only moves forward.
    high_watermark: Cell<Offset>,
    /// Notified when the high watermark may have moved for another reason than this
    /// node's own durability (a follower's fetch, a leader's answer).
    visible: Rc<event_listener::Event>,
}

/// What this replica is for its current leader epoch.
enum Role {
    /// The leader, with what it knows of its followers.
    Leader(replica::LeaderState),
    /// A follower of `leader`, which last reported this high watermark.
    Follower { leader_high_watermark: Offset },
}

/// Why a follower's fetch is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFetchError {
    /// NOT_LEADER_OR_FOLLOWER: this replica does not lead.
    NotLeader,
    /// FENCED_LEADER_EPOCH: the follower knows an older epoch than this leader's.
    FencedLeaderEpoch,
    /// UNKNOWN_LEADER_EPOCH: the follower knows a newer one (this node has not seen it).
    UnknownLeaderEpoch,
    /// The follower is not a replica of this partition.
    NotReplica,
}

/// The leader's answer to a follower's fetch, before reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFetch {
    /// Read from the fetch offset (up to the log end); the high watermark to report.
    Read { high_watermark: Offset },
    /// The follower's log diverged: it truncates first (no records).
    Diverging {
        diverging: replica::DivergingEpoch,
        high_watermark: Offset,
    },
}

impl Partition {
    /// Opens (recovering) or creates the log in `dir` and serves it as the leader replica
    /// with epoch `leader_epoch`.
    pub async fn open(
        topic: &str,
        index: i32,
        dir: &Path,
        config: LogConfig,
        commit: Rc<GroupCommit>,
        leader: BrokerId,
        leader_epoch: LeaderEpoch,
    ) -> Result<Partition, StorageError> {
        let log = Log::open(dir, config, commit).await?;
        let high_watermark = Cell::new(log.durable_offset());
        let me = leader;
        let state = replica::LeaderState::new(
            replica::Leadership {
                me,
                epoch: leader_epoch,
                replicas: &[me],
                isr: &[me],
            },
            log.log_end_offset(),
            log.durable_offset(),
            u64::MAX,
            0,
        );
        Ok(Partition {
            topic: topic.to_owned(),
            index,
            log,
            me,
            leader_epoch: Cell::new(leader_epoch),
            leader: Cell::new(leader),
            role: RefCell::new(Role::Leader(state)),
            high_watermark,
            visible: Rc::new(event_listener::Event::new()),
        })
    }

    /// Leads the partition from now on, for `lead.epoch`, with the committed replicas and
    /// ISR; a follower's fetches older than `lag_max_ms` count as lagging. The high
    /// watermark stays where it was and moves on as followers fetch.
    pub fn become_leader(&self, lead: replica::Leadership<'_>, lag_max_ms: u64, now_ms: u64) {
        let state = replica::LeaderState::new(
            lead,
            self.log.log_end_offset(),
            self.high_watermark.get(),
            lag_max_ms,
            now_ms,
        );
        self.leader_epoch.set(lead.epoch);
        self.leader.set(self.me);
        *self.role.borrow_mut() = Role::Leader(state);
        self.visible.notify(usize::MAX);
    }

    /// Follows `leader` at `epoch` from now on: appends only what it replicates, and sees
    /// up to the high watermark the leader reports.
    pub fn become_follower(&self, leader: BrokerId, epoch: LeaderEpoch) {
        self.leader_epoch.set(epoch);
        self.leader.set(leader);
        *self.role.borrow_mut() = Role::Follower {
            leader_high_watermark: self.high_watermark.get(),
        };
        self.visible.notify(usize::MAX);
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader(_))
    }

    /// On the leader: each follower's lag in offsets behind this log's end (a follower that
    /// has not fetched yet counts from offset 0) and in milliseconds since it was last
    /// caught up (Kafka's `replica.lag.time.max.ms` measure).
    pub fn follower_lag(&self, now_ms: u64) -> Vec<(BrokerId, i64, u64)> {
        let end = self.log.log_end_offset().0;
        match &*self.role.borrow() {
            Role::Leader(l) => l
                .replicas()
                .into_iter()
                .skip(1)
                .map(|id| {
                    let f = l.follower(id);
                    let at = f.map_or(0, |p| p.log_end.0.max(0));
                    let ms = f.map_or(0, |p| now_ms.saturating_sub(p.last_caught_up_ms));
                    (id, (end - at).max(0), ms)
                })
                .collect(),
            Role::Follower { .. } => Vec::new(),
        }
    }

    /// On the leader: every replica, itself first (a follower answers nothing).
    pub fn leader_replicas(&self) -> Vec<BrokerId> {
        match &*self.role.borrow() {
            Role::Leader(l) => l.replicas(),
            Role::Follower { .. } => Vec::new(),
        }
    }

    /// The ISR as the controller last committed it (the leader's view; a follower answers
    /// nothing).
    pub fn committed_isr(&self) -> Vec<BrokerId> {
        match &*self.role.borrow() {
            Role::Leader(l) => l.isr().iter().copied().collect(),
            Role::Follower { .. } => Vec::new(),
        }
    }

    /// On the leader: a follower's fetch at `fetch_offset` (everything below it durable on
    /// the follower) whose last batch has `last_fetched_epoch`, made knowing
    /// `current_epoch` (-1: unknown). Records the follower's progress, moves the high
    /// watermark, and says what to send.
    pub fn replica_fetch(
        &self,
        follower: BrokerId,
        current_epoch: i32,
        fetch_offset: Offset,
        last_fetched_epoch: Option<LeaderEpoch>,
        now_ms: u64,
    ) -> Result<ReplicaFetch, ReplicaFetchError> {
        let epoch = self.leader_epoch.get();
        {
            let role = self.role.borrow();
            if !matches!(*role, Role::Leader(_)) {
                return Err(ReplicaFetchError::NotLeader);
            }
        }
        if current_epoch >= 0 && current_epoch < epoch.0 {
            return Err(ReplicaFetchError::FencedLeaderEpoch);
        }
        if current_epoch > epoch.0 {
            return Err(ReplicaFetchError::UnknownLeaderEpoch);
        }
        let leader_end = self.log.log_end_offset();
        if let Some(diverging) = replica::check_divergence(
            |e| {
                self.end_offset_for_epoch(LeaderEpoch(e))
                    .map(|(e, o)| (e.0, o))
            },
            fetch_offset,
            last_fetched_epoch,
        ) {
            return Ok(ReplicaFetch::Diverging {
                diverging,
                high_watermark: self.high_watermark(),
            });
        }
        let moved = {
            let mut role = self.role.borrow_mut();
            let Role::Leader(state) = &mut *role else {
                return Err(ReplicaFetchError::NotLeader);
            };
            if !state.on_fetch(follower, fetch_offset, leader_end, now_ms) {
                return Err(ReplicaFetchError::NotReplica);
            }
            let before = self.high_watermark.get();
            let hw = state.update_high_watermark(self.log.durable_offset());
            if hw > before {
                self.high_watermark.set(hw);
            }
            hw > before
        };
        if moved {
            self.visible.notify(usize::MAX);
        }
        Ok(ReplicaFetch::Read {
            high_watermark: self.high_watermark(),
        })
    }

    /// On a follower: the high watermark its leader reported.
    pub fn set_leader_high_watermark(&self, hw: Offset) {
        if let Role::Follower {
            leader_high_watermark,
        } = &mut *self.role.borrow_mut()
        {
            if hw > *leader_high_watermark {
                *leader_high_watermark = hw;
            }
        }
        // Kept current, so that a follower becoming leader starts from what it knew.
        self.high_watermark();
        self.visible.notify(usize::MAX);
    }

    /// On the leader: the ISR change to propose to the controller now, if any.
    pub fn isr_change(&self, now_ms: u64) -> Option<replica::IsrChange> {
        match &*self.role.borrow() {
            Role::Leader(l) => l.isr_change(now_ms),
            Role::Follower { .. } => None,
        }
    }

    /// On the leader: `change` was sent to the controller.
    pub fn isr_proposed(&self, change: &replica::IsrChange) {
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.propose(change);
        }
    }

    /// On the leader: the controller's answer to the change in flight (`None`: refused).
    pub fn isr_committed(&self, isr: Option<&[BrokerId]>) {
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.isr_committed(isr);
        }
        self.visible.notify(usize::MAX);
    }

    /// acks=all before an append: NOT_ENOUGH_REPLICAS when the ISR is below `min_isr`.
    pub fn check_acks_all(&self, min_isr: usize) -> Result<(), replica::AcksError> {
        match &*self.role.borrow() {
            Role::Leader(l) => l.check_before_append(min_isr),
            Role::Follower { .. } => Ok(()),
        }
    }

    /// acks=all after an append: waits until the high watermark passes `end_offset`, then
    /// answers NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below `min_isr` meanwhile.
    /// The caller bounds the wait with the request's timeout.
    pub async fn wait_replicated(
        &self,
        end_offset: Offset,
        min_isr: usize,
    ) -> Result<Result<(), replica::AcksError>, StorageError> {
        self.log.wait_durable(end_offset).await?;
        loop {
            let listen = self.listen_visible();
            self.high_watermark();
            if let Some(r) = match &*self.role.borrow() {
                Role::Leader(l) => l.acks_all_done(end_offset, min_isr),
                // Leadership moved meanwhile: the new leader may not have the batch.
                Role::Follower { .. } => Some(Err(replica::AcksError::NotLeader)),
            } {
                return Ok(r);
            }
            listen.await;
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch.get()
    }

    pub fn leader(&self) -> BrokerId {
        self.leader.get()
    }

    /// Replicas in sync with the leader as this replica knows them.
    pub fn isr(&self) -> Vec<BrokerId> {
        match &*self.role.borrow() {
            Role::Leader(l) => l.isr().iter().copied().collect(),
            Role::Follower { .. } => vec![self.leader.get()],
        }
    }

    /// Appends `append`'s batches (all or nothing) and returns where they landed once their
    /// offsets are assigned; they are not durable yet: await [`Partition::wait_committed`]
    /// before acknowledging them.
    pub async fn append(&self, append: Append, now_ms: u64) -> Result<AppendInfo, StorageError> {
        let max_batch_bytes = match &append {
            Append::Client {
                max_batch_bytes, ..
            } => *max_batch_bytes,
            Append::Coordinator { .. } => usize::MAX,
            Append::Replication { records } => {
                return self.log.append_as_follower(records, now_ms).await;
            }
        };
        self.log
            .append(
                append.records(),
                self.leader_epoch.get().0,
                max_batch_bytes,
                now_ms,
            )
            .await
    }

    /// Everything below this offset is on this node's disk (and readable: reads serve
    /// durable data only, so a follower's fetch waits for it too).
    pub fn durable_offset(&self) -> Offset {
        self.log.durable_offset()
    }

    /// Waits until every offset below `end_offset` is committed (below the high watermark),
    /// or the log fails.
    pub async fn wait_committed(&self, end_offset: Offset) -> Result<(), StorageError> {
        // One replica: committed once durable here.
        self.log.wait_durable(end_offset).await?;
        self.high_watermark();
        Ok(())
    }

    /// Offset below which every record is on every in-sync replica's disk and so visible
    /// to consumers: the minimum durable log end offset over the ISR (the leader's own
    /// durable offset while the ISR is the leader alone). Never moves backwards.
    pub fn high_watermark(&self) -> Offset {
        let durable = self.log.durable_offset();
        let hw = match &mut *self.role.borrow_mut() {
            Role::Leader(l) => l.update_high_watermark(durable),
            // A follower sees what its leader reported, and only what it holds itself.
            Role::Follower {
                leader_high_watermark,
            } => (*leader_high_watermark).min(durable),
        };
        if hw > self.high_watermark.get() {
            self.high_watermark.set(hw);
        }
        self.high_watermark.get()
    }

    /// The last stable offset: the high watermark, as no transaction is ever open.
    pub fn last_stable_offset(&self) -> Offset {
        self.high_watermark()
    }

    /// Completes when the visible offset may have moved (a fetch long-poll rechecks
    /// [`Partition::high_watermark`] after it). Register before checking, as with any
    /// event listener, so that no advance is missed in between.
    pub fn listen_visible(&self) -> impl Future<Output = ()> + 'static {
        // This node's durability moves it, and so do followers' fetches and leaders'
        // reports.
        let durable = self.log.listen_durable();
        let other = self.visible.listen();
        async move {
            futures_lite::future::or(durable, other).await;
        }
    }

    /// Reads whole batches from the one that contains `offset`, up to `max_bytes` (at least
    /// one batch when `min_one`), none at or past the isolation's bound.
    pub async fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        min_one: bool,
        isolation: Isolation,
    ) -> Result<Read, StorageError> {
        let high_watermark = self.high_watermark();
        let bound = match isolation {
            Isolation::HighWatermark => high_watermark,
            Isolation::Committed => self.last_stable_offset(),
        };
        let read = self.log.read(offset, max_bytes, min_one).await?;
        Ok(Read {
            records: below(read.records, bound),
            high_watermark,
            last_stable_offset: self.last_stable_offset(),
            log_start_offset: read.log_start_offset,
        })
    }

    /// A follower's read on the leader: whole batches from the one holding `offset` up to
    /// this node's durable offset (not the high watermark: followers replicate what is not
    /// yet committed), at least one batch, about `max_bytes`.
    pub async fn read_for_follower(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<Bytes, StorageError> {
        Ok(self.log.read(offset, max_bytes, true).await?.records)
    }

    /// Removes every batch at or after `offset` (a follower's divergent suffix after a
    /// leader change); returns the new log end offset.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, StorageError> {
        self.log.truncate_to(offset).await
    }

    /// On a follower whose whole log is older than its leader's log start (the leader's
    /// retention or DeleteRecords removed what it would fetch next): empties the log and
    /// starts it at `offset`, the leader's log start (Kafka's `truncateFullyAndStartAt`).
    pub async fn reset_to(&self, offset: Offset) -> Result<(), StorageError> {
        self.log.reset_to(offset).await?;
        if self.high_watermark.get() < offset {
            self.high_watermark.set(offset);
        }
        Ok(())
    }

    /// Kafka's OffsetsForLeaderEpoch: the largest epoch at or below `epoch` and the offset
    /// where the next one starts (or the log end for the latest).
    ///
    /// A leader's current epoch counts as starting at the log end when it has written
    /// nothing yet (Kafka writes that entry when a broker becomes leader; here it is
    /// implied until the epoch's first batch records it), so that a consumer or follower
    /// asking about an older epoch learns it ended at the log end, not "undefined".
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let current = self.leader_epoch.get();
        let latest = self.log.latest_epoch();
        let implied = self.is_leader() && latest.is_none_or(|l| l < current.0);
        if implied && epoch == current {
            return Some((current, self.log.log_end_offset()));
        }
        match self.log.end_offset_for_epoch(epoch.0) {
            Some((e, o)) => Some((LeaderEpoch(e), o)),
            // Above every stored epoch but below the implied current one: the latest
            // stored epoch (or, on a log with none, the asked one) ends at the log end.
            None if implied && epoch.0 >= 0 && epoch < current => {
                Some((latest.map_or(epoch, LeaderEpoch), self.log.log_end_offset()))
            }
            None => None,
        }
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
    }

    /// The epoch of this log's last batch, if any carries one (a follower's
    /// LastFetchedEpoch).
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.log.latest_epoch().map(LeaderEpoch)
    }

    /// This log's own OffsetsForLeaderEpoch answer, from its stored epochs only (a
    /// follower's side of a truncation).
    pub fn local_end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.log
            .end_offset_for_epoch(epoch.0)
            .map(|(e, o)| (LeaderEpoch(e), o))
    }

    /// Waits until every offset below `end_offset` is durable on this node (a follower
    /// reports only that much as fetched).
    pub async fn wait_durable(&self, end_offset: Offset) -> Result<(), StorageError> {
        self.log.wait_durable(end_offset).await
    }

    /// The leader epoch of the batch holding `offset` (the newest epoch starting at or
    /// before it); the current epoch for an offset past every stored batch's start, or on a
    /// log with no epochs yet.
    pub fn epoch_at(&self, offset: Offset) -> LeaderEpoch {
        self.log
            .epoch_entries()
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map_or(self.leader_epoch.get(), |e| LeaderEpoch(e.epoch))
    }

    /// The next offset to be assigned (written, perhaps not yet durable or visible).
    pub fn log_end_offset(&self) -> Offset {
        self.log.log_end_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Largest record timestamp appended so far, or -1.
    pub fn max_timestamp(&self) -> i64 {
        self.log.max_timestamp()
    }

    /// The first stored batch holding a record with a timestamp at or after `timestamp`
    /// (ListOffsets by time), if it is visible.
    pub async fn batch_for_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, StorageError> {
        let hw = self.high_watermark();
        Ok(self.log.batch_for_timestamp(timestamp).await?.filter(|b| {
            BatchIter::new(b, false)
                .next()
                .is_some_and(|v| v.last_offset() < hw.0)
        }))
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high watermark),
    /// never past the high watermark. Returns the new log start offset.
    pub async fn delete_records(&self, offset: i64) -> Result<Offset, StorageError> {
        let hw = self.high_watermark();
        let target = if offset < 0 { hw.0 } else { offset };
        if target > hw.0 {
            return Err(StorageError::OffsetOutOfRange {
                offset: Offset(target),
                log_start: self.log.log_start_offset(),
                log_end: hw,
            });
        }
        self.log.delete_records(target).await
    }

    /// On a follower: moves the log start up to the leader's (its retention or DeleteRecords
    /// moved it), as far as this replica has the log durably; never down.
    pub async fn follow_log_start(&self, leader_log_start: Offset) -> Result<(), StorageError> {
        let target = leader_log_start.min(self.log.durable_offset());
        if target > self.log.log_start_offset() {
            self.log.delete_records(target.0).await?;
        }
        Ok(())
    }

    pub async fn enforce_retention(&self, now_ms: u64) -> Result<usize, StorageError> {
        self.log.enforce_retention(now_ms).await
    }

    /// Settings that change at run time (topic configs).
    pub fn set_config(&self, config: LogConfig) {
        self.log.set_config(config)
    }

    /// Forgets idempotent producers idle longer than the log's expiration.
    pub fn expire_producers(&self, now_ms: u64) -> usize {
        self.log.expire_producers(now_ms)
    }

    /// Flushes and closes the log.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.log.close().await
    }

    /// Closes the log and removes its files (the topic was deleted).
    pub async fn delete(&self) -> Result<(), StorageError> {
        self.log.delete().await
    }
}

/// The leading whole batches of `records` that end below `bound`.
fn below(records: Bytes, bound: Offset) -> Bytes {
    let mut keep = 0;
    let mut iter = BatchIter::new(&records, false);
    for view in iter.by_ref() {
        if view.last_offset() >= bound.0 {
            break;
        }
        keep += view.size_bytes();
    }
    if keep == records.len() {
        records
    } else {
        records.slice(..keep)
    }
}

#[cfg(test)]
mod replica_sim;
#[cfg(test)]
mod tests;
