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

use std::cell::Cell;
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
    leader_epoch: LeaderEpoch,
    leader: BrokerId,
    /// Offset below which records are visible; only moves forward.
    high_watermark: Cell<Offset>,
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
        Ok(Partition {
            topic: topic.to_owned(),
            index,
            log,
            leader_epoch,
            leader,
            high_watermark,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn leader(&self) -> BrokerId {
        self.leader
    }

    /// Replicas in sync with the leader (just the leader for now).
    pub fn isr(&self) -> Vec<BrokerId> {
        vec![self.leader]
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
                self.leader_epoch.0,
                max_batch_bytes,
                now_ms,
            )
            .await
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
        let isr_min = self.log.durable_offset();
        if isr_min > self.high_watermark.get() {
            self.high_watermark.set(isr_min);
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
        // The high watermark follows the durable offset while the ISR is the leader alone.
        self.log.listen_durable()
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

    /// Removes every batch at or after `offset` (a follower's divergent suffix after a
    /// leader change); returns the new log end offset.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, StorageError> {
        self.log.truncate_to(offset).await
    }

    /// Kafka's OffsetsForLeaderEpoch: the largest epoch at or below `epoch` and the offset
    /// where the next one starts (or the log end for the latest).
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.log
            .end_offset_for_epoch(epoch.0)
            .map(|(e, o)| (LeaderEpoch(e), o))
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
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
mod tests;
