//! Which shard of this node serves a partition: node-local placement, apart from the
//! cluster metadata (Redpanda's shard table).
//!
//! The metadata image says, for each partition, which replicas hold it and the
//! [`ShardIndex`] the controller chose for it (the same on every broker that holds it).
//! This table turns that into the [`ShardId`] of a shard running on this node, given how
//! many shards run here: index `i` is served by shard `i % smp`, so a data directory written
//! with more shards than now run still opens. Handlers route by this table
//! (`Shard::owner_of`); each shard builds its copy when it applies a metadata image, in the
//! same step that installs the image, so the two always agree.

use std::collections::HashMap;

use crate::metadata::{MetadataImage, ShardIndex};
use crate::shard::ShardId;

#[derive(Debug, Default)]
pub struct ShardTable {
    /// Per topic, the serving shard of each partition (by partition index); none for a
    /// partition this node holds no replica of.
    topics: HashMap<String, Vec<Option<ShardId>>>,
}

impl ShardTable {
    /// The placement on `smp` local shards of `image`'s partitions that broker `node`
    /// holds a replica of.
    pub fn build(image: &MetadataImage, smp: usize, node: i32) -> ShardTable {
        let topics = image
            .topics
            .iter()
            .map(|(name, t)| {
                let shards = t
                    .partitions
                    .iter()
                    .map(|p| p.is_on(node).then(|| local_shard(p.shard_index, smp)))
                    .collect();
                (name.clone(), shards)
            })
            .collect();
        ShardTable { topics }
    }

    /// The shard of this node that serves `partition` of `topic`, if it exists here.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<ShardId> {
        let shards = self.topics.get(topic)?;
        *shards.get(usize::try_from(partition).ok()?)?
    }

    /// Every (topic, partition) served by `shard`.
    pub fn served_by(&self, shard: ShardId) -> impl Iterator<Item = (&str, i32)> {
        self.topics.iter().flat_map(move |(name, shards)| {
            shards
                .iter()
                .enumerate()
                .filter(move |(_, s)| **s == Some(shard))
                .map(move |(p, _)| (name.as_str(), p as i32))
        })
    }
}

fn local_shard(index: ShardIndex, smp: usize) -> ShardId {
    ShardId(index.0 as usize % smp.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionMeta, TopicMeta};

    #[test]
    fn indexes_beyond_the_running_shards_wrap_and_unknown_partitions_have_no_owner() {
        let mut image = MetadataImage::default();
        let partitions = [0, 3, 1].into_iter().map(PartitionMeta::on_shard).collect();
        image.topics.insert(
            "t".into(),
            TopicMeta {
                id: "00".repeat(16),
                partitions,
                configs: Default::default(),
            },
        );
        let table = ShardTable::build(&image, 2, 0);
        assert_eq!(table.owner("t", 0), Some(ShardId(0)));
        assert_eq!(table.owner("t", 1), Some(ShardId(1)));
        assert_eq!(table.owner("t", 2), Some(ShardId(1)));
        assert_eq!(table.owner("t", 3), None);
        assert_eq!(table.owner("t", -1), None);
        assert_eq!(table.owner("u", 0), None);
        let mut on_1: Vec<_> = table.served_by(ShardId(1)).collect();
        on_1.sort();
        assert_eq!(on_1, vec![("t", 1), ("t", 2)]);
    }

    #[test]
    fn partitions_of_other_brokers_have_no_local_owner() {
        let mut image = MetadataImage::default();
        let on = |shard, replicas: Vec<i32>| PartitionMeta {
            leader: replicas[0],
            isr: replicas.clone(),
            replicas,
            ..PartitionMeta::on_shard(shard)
        };
        image.topics.insert(
            "t".into(),
            TopicMeta {
                id: "00".repeat(16),
                partitions: vec![on(0, vec![1]), on(0, vec![2]), on(1, vec![2, 1])],
                configs: Default::default(),
            },
        );
        let table = ShardTable::build(&image, 2, 1);
        assert_eq!(table.owner("t", 0), Some(ShardId(0)));
        assert_eq!(table.owner("t", 1), None);
        assert_eq!(table.owner("t", 2), Some(ShardId(1)));
        assert_eq!(table.served_by(ShardId(0)).count(), 1);
    }
}
