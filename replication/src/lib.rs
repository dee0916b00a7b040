//! Partition replica state for Sluice.
//!
//! Today every partition has one replica (this node), so the in-sync replica set is `{self}`
//! and the high watermark is the log's durable offset: a record is committed once it is
//! fdatasync'ed. The types here are the ones the produce and fetch paths use, so that the
//! Kafka-style follower fetch (LEO tracking, ISR, `min.insync.replicas`) can grow behind them
//! without changing the handlers.

use std::fmt;
use std::rc::Rc;

use storage::{Log, Offset};

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

/// The leader replica of one partition, owned by one shard.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Rc<Log>,
    pub leader_epoch: LeaderEpoch,
    pub leader: BrokerId,
}

impl Partition {
    /// Offset below which every record is replicated to the whole ISR and so visible to
    /// consumers. With a single replica it is the durable offset.
    pub fn high_watermark(&self) -> Offset {
        self.log.durable_offset()
    }

    /// Replicas in sync with the leader (just the leader for now).
    pub fn isr(&self) -> Vec<BrokerId> {
        vec![self.leader]
    }
}
