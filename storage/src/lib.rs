//! The per-partition log of Sluice.
//!
//! A [`Log`] is a directory of [`segment::LogSegment`]s named by base offset. Record batches
//! are stored exactly as produced (after base-offset assignment), written with direct I/O
//! through glommio's `DmaFile`, indexed by a sparse [`index::OffsetIndex`] and
//! [`index::TimeIndex`], and made durable by the shard's [`GroupCommit`] task, which writes
//! and fdatasyncs every dirty log once per round for all appends that arrived meanwhile.
//!
//! For replication a log also takes a leader's batches as they are
//! ([`Log::append_as_follower`]), cuts itself back to a batch boundary ([`Log::truncate_to`],
//! crash safe) and keeps Kafka's [`leader_epoch::LeaderEpochFileCache`] for
//! OffsetsForLeaderEpoch. Tests inject disk faults through [`fault::FaultPlan`]; small files
//! are written off the shard thread ([`files`]).
//!
//! Architecture invariant: storage never chooses Kafka error codes and never reads the clock;
//! callers pass `now_ms`.

pub mod config;
pub mod error;
pub mod fault;
pub mod files;
pub mod group_commit;
pub mod index;
pub mod leader_epoch;
pub mod log;
pub mod offset;
pub mod producer_state;
pub mod segment;

pub use config::LogConfig;
pub use error::StorageError;
pub use fault::{Fault, FaultPlan, IoOp, ScriptedFaults};
pub use group_commit::GroupCommit;
pub use leader_epoch::{EpochEntry, LeaderEpochFileCache};
pub use log::{AppendInfo, Log, LogOptions, ReadInfo};
pub use offset::Offset;
