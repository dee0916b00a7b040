//! The cluster image: what the committed metadata log says, applied record by record.
//!
//! Every node applies the same committed records in the same order, so every node's image
//! is the same at the same offset. [`ClusterImage::apply`] is deterministic: a record that
//! does not fit the image (a partition of an unknown topic, a fence with a stale broker
//! epoch) changes nothing and returns an error that the caller logs — every node refuses it
//! alike, so the images stay equal. The active controller checks its proposals against its
//! own image first, so such records only come from a bug or a race it lost.
//!
//! A snapshot of the image is the list of records that rebuilds it
//! ([`ClusterImage::to_records`]), encoded with the records' own format, as KRaft does.

use std::collections::BTreeMap;

use super::records::{
    ConfigResource, Endpoint, MetadataRecord, TopicId, EPOCH_FROM_OFFSET, LEADER_UNCHANGED,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub incarnation: [u8; 16],
    /// Offset of the broker's latest registration: requests carrying an older epoch come
    /// from a previous incarnation and are refused.
    pub epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub shards: u32,
    pub fenced: bool,
}

impl BrokerInfo {
    /// The endpoint clients are told of: the PLAINTEXT listener, else the first.
    pub fn client_endpoint(&self) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.name == "PLAINTEXT")
            .or(self.endpoints.first())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when the partition has no leader (offline).
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub shard_index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterImage {
    /// Offset of the last record applied.
    pub offset: u64,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<TopicId, TopicInfo>,
    pub topic_ids: BTreeMap<String, TopicId>,
    /// Broker configs: key "" for the cluster-wide default, else the broker id.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    pub next_producer_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("broker {broker} epoch {epoch} is stale (current {current})")]
    StaleEpoch {
        broker: i32,
        epoch: i64,
        current: i64,
    },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic id {0} is already in use")]
    TopicIdInUse(TopicId),
    #[error("unknown topic id {0}")]
    UnknownTopic(TopicId),
    #[error("partition {partition} of topic {topic} is not the next one ({next})")]
    PartitionOutOfOrder {
        topic: TopicId,
        partition: i32,
        next: usize,
    },
    #[error("unknown partition {partition} of topic {topic}")]
    UnknownPartition { topic: TopicId, partition: i32 },
    #[error("the producer id block end {0} is below the current one")]
    ProducerIdsBackwards(i64),
    #[error("leader {leader} of partition {partition} of topic {topic} would not be in its ISR")]
    LeaderOutsideIsr {
        topic: TopicId,
        partition: i32,
        leader: i32,
    },
}

impl ClusterImage {
    pub fn topic(&self, name: &str) -> Option<(&TopicId, &TopicInfo)> {
        let id = self.topic_ids.get(name)?;
        Some((id, self.topics.get(id)?))
    }

    /// Applies one committed batch (one Raft entry at `offset`) as a whole: on error nothing
    /// of it changed the image (every voter refuses the same batch the same way).
    pub fn apply_batch(
        &mut self,
        offset: u64,
        records: &[MetadataRecord],
    ) -> Result<(), ApplyError> {
        if let [one] = records {
            return self.apply(offset, one);
        }
        let mut next = self.clone();
        for r in records {
            if let Err(e) = next.apply_inner(offset, r) {
                self.offset = offset;
                return Err(e);
            }
        }
        next.offset = offset;
        *self = next;
        Ok(())
    }

    /// Applies the record committed at `offset`. On error nothing changed.
    pub fn apply(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), ApplyError> {
        let result = self.apply_inner(offset, record);
        self.offset = offset;
        result
    }

    fn apply_inner(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation,
                broker_epoch,
                endpoints,
                rack,
                shards,
                fenced,
            } => {
                let (epoch, fenced) = if *broker_epoch == EPOCH_FROM_OFFSET {
                    (offset as i64, true)
                } else {
                    (*broker_epoch, *fenced)
                };
                self.brokers.insert(
                    *broker_id,
                    BrokerInfo {
                        incarnation: *incarnation,
                        epoch,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        shards: *shards,
                        fenced,
                    },
                );
            }
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => {
                self.broker_at(*broker_id, *broker_epoch)?;
                self.brokers.remove(broker_id);
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_at(*broker_id, *broker_epoch)?.fenced = true,
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_at(*broker_id, *broker_epoch)?.fenced = false,
            MetadataRecord::Topic { name, topic_id } => {
                if self.topic_ids.contains_key(name) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                if self.topics.contains_key(topic_id) {
                    return Err(ApplyError::TopicIdInUse(*topic_id));
                }
                self.topic_ids.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicInfo {
                        name: name.clone(),
                        partitions: Vec::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                shard_index,
            } => {
                let t = self
                    .topics
                    .get_mut(topic_id)
                    .ok_or(ApplyError::UnknownTopic(*topic_id))?;
                let info = PartitionInfo {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    shard_index: *shard_index,
                };
                match usize::try_from(*partition) {
                    Ok(p) if p < t.partitions.len() => t.partitions[p] = info,
                    Ok(p) if p == t.partitions.len() => t.partitions.push(info),
                    _ => {
                        return Err(ApplyError::PartitionOutOfOrder {
                            topic: *topic_id,
                            partition: *partition,
                            next: t.partitions.len(),
                        })
                    }
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
            } => {
                let p = self
                    .topics
                    .get_mut(topic_id)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?))
                    .ok_or(ApplyError::UnknownPartition {
                        topic: *topic_id,
                        partition: *partition,
                    })?;
                // A change decided on a stale image (a leader in an ISR that has since
                // shrunk) is refused: a leader is always an ISR member and a replica.
                let next_leader = if *leader == LEADER_UNCHANGED {
                    p.leader
                } else {
                    *leader
                };
                let next_isr = isr.as_ref().unwrap_or(&p.isr);
                let next_replicas = replicas.as_ref().unwrap_or(&p.replicas);
                if next_leader >= 0
                    && !(next_isr.contains(&next_leader) && next_replicas.contains(&next_leader))
                {
                    return Err(ApplyError::LeaderOutsideIsr {
                        topic: *topic_id,
                        partition: *partition,
                        leader: next_leader,
                    });
                }
                if next_leader != p.leader {
                    p.leader = next_leader;
                    p.leader_epoch += 1;
                }
                if let Some(isr) = isr {
                    p.isr = isr.clone();
                }
                if let Some(replicas) = replicas {
                    p.replicas = replicas.clone();
                }
                p.partition_epoch += 1;
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let t = self
                    .topics
                    .remove(topic_id)
                    .ok_or(ApplyError::UnknownTopic(*topic_id))?;
                self.topic_ids.remove(&t.name);
            }
            MetadataRecord::Config {
                resource,
                resource_name,
                name,
                value,
            } => {
                let configs = match resource {
                    ConfigResource::Topic => {
                        let Some(id) = self.topic_ids.get(resource_name) else {
                            // A config of a topic deleted meanwhile: nothing to change.
                            return Ok(());
                        };
                        &mut self
                            .topics
                            .get_mut(id)
                            .expect("ids and topics agree")
                            .configs
                    }
                    ConfigResource::Broker => self
                        .broker_configs
                        .entry(resource_name.clone())
                        .or_default(),
                };
                match value {
                    Some(v) => {
                        configs.insert(name.clone(), v.clone());
                    }
                    None => {
                        configs.remove(name);
                    }
                }
            }
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                if *next_producer_id < self.next_producer_id {
                    return Err(ApplyError::ProducerIdsBackwards(*next_producer_id));
                }
                self.next_producer_id = *next_producer_id;
            }
        }
        Ok(())
    }

    fn broker_at(&mut self, id: i32, epoch: i64) -> Result<&mut BrokerInfo, ApplyError> {
        let b = self
            .brokers
            .get_mut(&id)
            .ok_or(ApplyError::UnknownBroker(id))?;
        if b.epoch != epoch {
            return Err(ApplyError::StaleEpoch {
                broker: id,
                epoch,
                current: b.epoch,
            });
        }
        Ok(b)
    }

    /// The records that rebuild this image from an empty one (a snapshot's contents).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for (id, b) in &self.brokers {
            out.push(MetadataRecord::RegisterBroker {
                broker_id: *id,
                incarnation: b.incarnation,
                broker_epoch: b.epoch,
                endpoints: b.endpoints.clone(),
                rack: b.rack.clone(),
                shards: b.shards,
                fenced: b.fenced,
            });
        }
        for (id, t) in &self.topics {
            out.push(MetadataRecord::Topic {
                name: t.name.clone(),
                topic_id: *id,
            });
            for (i, p) in t.partitions.iter().enumerate() {
                out.push(MetadataRecord::Partition {
                    topic_id: *id,
                    partition: i as i32,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    shard_index: p.shard_index,
                });
            }
            for (name, value) in &t.configs {
                out.push(MetadataRecord::Config {
                    resource: ConfigResource::Topic,
                    resource_name: t.name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        for (broker, configs) in &self.broker_configs {
            for (name, value) in configs {
                out.push(MetadataRecord::Config {
                    resource: ConfigResource::Broker,
                    resource_name: broker.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        if self.next_producer_id > 0 {
            out.push(MetadataRecord::ProducerIds {
                broker_id: -1,
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            });
        }
        out
    }

    /// The snapshot bytes: the image's offset, then each record length-prefixed.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = self.offset.to_be_bytes().to_vec();
        for r in self.to_records() {
            let b = r.encode();
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<ClusterImage, SnapshotError> {
        let offset = bytes
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .ok_or(SnapshotError::Truncated)?;
        let mut image = ClusterImage::default();
        let mut at = 8;
        while at < bytes.len() {
            let len = bytes
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or(SnapshotError::Truncated)?;
            let body = bytes
                .get(at + 4..at + 4 + len)
                .ok_or(SnapshotError::Truncated)?;
            let record = MetadataRecord::decode(body).map_err(SnapshotError::Record)?;
            image.apply(offset, &record).map_err(SnapshotError::Apply)?;
            at += 4 + len;
        }
        image.offset = offset;
        Ok(image)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("metadata snapshot truncated")]
    Truncated,
    #[error("metadata snapshot record: {0}")]
    Record(super::records::DecodeError),
    #[error("metadata snapshot record does not apply: {0}")]
    Apply(ApplyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: u8) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: TopicId([id; 16]),
        }
    }

    fn partition(id: u8, p: i32, leader: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id: TopicId([id; 16]),
            partition: p,
            replicas: vec![leader],
            isr: vec![leader],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            shard_index: p as u32,
        }
    }

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation: [id as u8; 16],
            broker_epoch: EPOCH_FROM_OFFSET,
            endpoints: vec![],
            rack: None,
            shards: 2,
            fenced: true,
        }
    }

    fn build(records: &[MetadataRecord]) -> (ClusterImage, Vec<Result<(), ApplyError>>) {
        let mut image = ClusterImage::default();
        let results = records
            .iter()
            .enumerate()
            .map(|(i, r)| image.apply(i as u64 + 1, r))
            .collect();
        (image, results)
    }

    #[test]
    fn brokers_register_fenced_with_their_offset_as_epoch_and_stale_epochs_are_refused() {
        let (mut image, results) = build(&[register(1), register(2)]);
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(image.brokers[&2].epoch, 2);
        assert!(image.brokers[&2].fenced);
        let unfence = MetadataRecord::UnfenceBroker {
            broker_id: 2,
            broker_epoch: 2,
        };
        image.apply(3, &unfence).unwrap();
        assert!(!image.brokers[&2].fenced);
        // Broker 2 restarts: a new registration, a new epoch; the old epoch is stale.
        image.apply(4, &register(2)).unwrap();
        assert_eq!(
            image.apply(5, &unfence),
            Err(ApplyError::StaleEpoch {
                broker: 2,
                epoch: 2,
                current: 4
            })
        );
        assert!(image.brokers[&2].fenced, "a refused record changes nothing");
    }

    #[test]
    fn partitions_change_with_epochs_and_topics_go() {
        let (mut image, results) = build(&[topic("t", 1), partition(1, 0, 1), partition(1, 1, 2)]);
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert!(
            image.apply(4, &partition(1, 3, 1)).is_err(),
            "a gap in partitions"
        );
        assert!(image.apply(4, &topic("t", 2)).is_err(), "a name taken");
        let change = MetadataRecord::PartitionChange {
            topic_id: TopicId([1; 16]),
            partition: 1,
            leader: 3,
            isr: Some(vec![3]),
            replicas: Some(vec![2, 3]),
        };
        image.apply(5, &change).unwrap();
        let p = &image.topic("t").unwrap().1.partitions[1];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (3, 1, 1));
        let isr_only = MetadataRecord::PartitionChange {
            topic_id: TopicId([1; 16]),
            partition: 1,
            leader: LEADER_UNCHANGED,
            isr: Some(vec![3, 2]),
            replicas: None,
        };
        image.apply(6, &isr_only).unwrap();
        let p = &image.topic("t").unwrap().1.partitions[1];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (3, 1, 2));
        // A change decided on a stale image: the leader would be outside the ISR.
        let stale = MetadataRecord::PartitionChange {
            topic_id: TopicId([1; 16]),
            partition: 1,
            leader: 2,
            isr: Some(vec![3]),
            replicas: None,
        };
        assert!(matches!(
            image.apply(6, &stale),
            Err(ApplyError::LeaderOutsideIsr { leader: 2, .. })
        ));
        let p = &image.topic("t").unwrap().1.partitions[1];
        assert_eq!(
            (p.leader, p.isr.clone()),
            (3, vec![3, 2]),
            "refused: nothing changed"
        );
        image
            .apply(
                7,
                &MetadataRecord::RemoveTopic {
                    topic_id: TopicId([1; 16]),
                },
            )
            .unwrap();
        assert!(image.topic("t").is_none());
        // The name is free again.
        image.apply(8, &topic("t", 3)).unwrap();
    }

    #[test]
    fn a_snapshot_rebuilds_the_same_image() {
        let (mut image, _) = build(&[
            register(1),
            register(2),
            MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 1,
            },
            topic("a", 1),
            partition(1, 0, 1),
            partition(1, 1, 2),
            topic("b", 2),
            partition(2, 0, 2),
            MetadataRecord::Config {
                resource: ConfigResource::Topic,
                resource_name: "a".into(),
                name: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Broker,
                resource_name: "".into(),
                name: "log.retention.ms".into(),
                value: Some("5".into()),
            },
            MetadataRecord::ProducerIds {
                broker_id: 1,
                broker_epoch: 1,
                next_producer_id: 2000,
            },
        ]);
        image
            .apply(
                12,
                &MetadataRecord::PartitionChange {
                    topic_id: TopicId([1; 16]),
                    partition: 0,
                    leader: -1,
                    isr: Some(vec![]),
                    replicas: None,
                },
            )
            .unwrap();
        let bytes = image.encode_snapshot();
        let back = ClusterImage::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, image);
        for cut in 1..bytes.len() {
            if let Ok(partial) = ClusterImage::decode_snapshot(&bytes[..cut]) {
                assert_ne!(partial, image, "a cut snapshot decoded to the whole image");
            }
        }
    }
}
