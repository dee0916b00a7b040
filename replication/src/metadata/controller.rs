//! The active controller's decisions, sans I/O: what records to propose for a request, a
//! heartbeat or the passing of time, given the committed image.
//!
//! The active controller (the quorum leader) is the only writer of the metadata log. For
//! each mutation it asks this module for the records, proposes them, and handles the next
//! mutation only once they are committed and applied (its image is then current), so two
//! decisions never race on a stale image. Time is an argument (`now_ms`); nothing here reads
//! a clock, so the same logic runs in the broker and in the simulation.
//!
//! Placement of a new partition: its replicas go to the unfenced brokers holding the fewest
//! replicas so far (lowest id on ties), one rack at a time when brokers have racks, and the
//! partition gets one shard index that every chosen broker runs (the least loaded such index
//! across them), so that each shard's replica fetcher only talks to the same index on its
//! peers and replication never crosses cores.
//!
//! Leadership: a fenced broker leads nothing. When a broker is fenced, each partition it led
//! gets the first other unfenced ISR member as leader, or none (offline) if there is none;
//! it leaves the ISR of partitions that keep other members. When a broker is unfenced, the
//! offline partitions whose ISR holds it get it back as leader.

use std::collections::{BTreeMap, BTreeSet};

use super::image::ClusterImage;
use super::records::{
    ConfigResource, Endpoint, MetadataRecord, TopicId, EPOCH_FROM_OFFSET, LEADER_UNCHANGED,
};

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub session_timeout_ms: u64,
    /// `sluice.replication.factor.max`: replication factors above it are refused.
    pub max_replication_factor: usize,
    /// `unclean.leader.election.enable` (false): with no ISR member alive, elect another
    /// live replica (losing what only the ISR had) instead of leaving the partition
    /// offline. A topic's own config overrides it.
    pub unclean_leader_election: bool,
}

/// The topic config that overrides [`ControllerConfig::unclean_leader_election`].
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

fn unclean_allowed(config: &ControllerConfig, topic: &super::image::TopicInfo) -> bool {
    match topic
        .configs
        .get(UNCLEAN_LEADER_ELECTION)
        .map(String::as_str)
    {
        Some("true") => true,
        Some("false") => false,
        _ => config.unclean_leader_election,
    }
}

/// How a leader election chooses (Kafka's ElectionType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The first replica, the preferred leader, if it is alive and in the ISR.
    Preferred,
    /// For a partition with no leader: a live ISR member, else any live replica (what it
    /// lacks is lost).
    Unclean,
}

/// Why an election left a partition's leader as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("the partition already has the leader this election would give it")]
    NotNeeded,
    #[error("the preferred leader is fenced or not in the ISR")]
    PreferredNotAvailable,
    #[error("no live replica can lead")]
    EligibleLeadersNotAvailable,
    #[error("unknown partition")]
    UnknownPartition,
}

/// A broker's registration request.
#[derive(Debug, Clone)]
pub struct Registration {
    pub broker_id: i32,
    pub incarnation: [u8; 16],
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub shards: u32,
}

/// A new topic as the controller is asked for it (defaults already applied).
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("broker {broker_id} is already registered by another running process")]
    DuplicateBrokerId { broker_id: i32 },
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("broker {broker_id} epoch {epoch} is stale: it re-registered since")]
    StaleBrokerEpoch { broker_id: i32, epoch: i64 },
    #[error("unknown topic id {0}")]
    UnknownTopic(TopicId),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("number of partitions {0} is invalid")]
    InvalidPartitions(i32),
    #[error("replication factor {requested} exceeds sluice.replication.factor.max ({max})")]
    ReplicationFactorOverMax { requested: i16, max: usize },
    #[error("replication factor {requested} is larger than the {available} available brokers")]
    InvalidReplicationFactor { requested: i16, available: usize },
    #[error("no broker runs shard index {0}")]
    NoCommonShard(usize),
    #[error("unknown partition {partition} of topic id {topic}")]
    UnknownPartition { topic: TopicId, partition: i32 },
    #[error("broker {broker} does not lead this partition (leader {leader})")]
    NotLeader { broker: i32, leader: i32 },
    #[error("leader epoch {got} is stale (current {current})")]
    FencedLeaderEpoch { got: i32, current: i32 },
    #[error("partition epoch {got} is not the current {current}: the ISR changed since")]
    InvalidUpdateVersion { got: i32, current: i32 },
    #[error("replica {0} cannot join the ISR (not a replica, or its broker is fenced)")]
    IneligibleReplica(i32),
    #[error("the ISR must hold the leader {0}")]
    LeaderNotInIsr(i32),
}

/// An ISR change a partition's leader asks for (Kafka's AlterPartition), made against
/// the leader and partition epochs it last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartition {
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// What a heartbeat answers a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Whether the broker is fenced once the records proposed with this reply commit.
    pub fenced: bool,
}

/// The active controller's in-memory state beside the image: when each broker was last
/// heard from. A new active controller starts with every registered broker heard from
/// "now", as Kafka's does, so a failover does not fence everyone at once.
#[derive(Debug, Default)]
pub struct Controller {
    last_heartbeat: BTreeMap<i32, u64>,
    /// When each broker last contacted this controller itself (not the "now" it was given
    /// at activation): only such a live session holds a broker id against another
    /// incarnation (as Kafka: a restarted node re-registers at once after a failover).
    contacted: BTreeMap<i32, u64>,
}

impl Controller {
    /// A controller that just became active at `now_ms`.
    pub fn activate(image: &ClusterImage, now_ms: u64) -> Controller {
        Controller {
            last_heartbeat: image.brokers.keys().map(|id| (*id, now_ms)).collect(),
            contacted: BTreeMap::new(),
        }
    }

    /// A broker (re)registers. A running broker with the same id but another incarnation
    /// holds the id until its session expires.
    pub fn register(
        &mut self,
        config: &ControllerConfig,
        image: &ClusterImage,
        reg: Registration,
        now_ms: u64,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if let Some(b) = image.brokers.get(&reg.broker_id) {
            let alive = self
                .contacted
                .get(&reg.broker_id)
                .is_some_and(|t| now_ms < t + config.session_timeout_ms);
            if b.incarnation != reg.incarnation && !b.fenced && alive {
                return Err(ControllerError::DuplicateBrokerId {
                    broker_id: reg.broker_id,
                });
            }
        }
        self.last_heartbeat.insert(reg.broker_id, now_ms);
        self.contacted.insert(reg.broker_id, now_ms);
        let mut records = Vec::new();
        // A re-registration moves the old incarnation's leaderships away first, except
        // those of partitions it is the only ISR member of: nobody else could lead them,
        // and taking them offline only to hand them back at the unfence would leave them
        // offline should the unfence fail to commit. They get a new leader epoch instead.
        if image.brokers.contains_key(&reg.broker_id) {
            let gone = BTreeSet::from([reg.broker_id]);
            records.extend(self.leaderships_moved(config, image, &gone, true));
        }
        records.push(MetadataRecord::RegisterBroker {
            broker_id: reg.broker_id,
            incarnation: reg.incarnation,
            broker_epoch: EPOCH_FROM_OFFSET,
            endpoints: reg.endpoints,
            rack: reg.rack,
            shards: reg.shards,
            fenced: true,
        });
        Ok(records)
    }

    /// A broker's heartbeat: `caught_up` says it has applied the log up to the controller's
    /// committed offset, so it may be unfenced.
    pub fn heartbeat(
        &mut self,
        config: &ControllerConfig,
        image: &ClusterImage,
        broker_id: i32,
        broker_epoch: i64,
        caught_up: bool,
        now_ms: u64,
    ) -> Result<(Vec<MetadataRecord>, HeartbeatReply), ControllerError> {
        let b = registered(image, broker_id, broker_epoch)?;
        self.last_heartbeat.insert(broker_id, now_ms);
        self.contacted.insert(broker_id, now_ms);
        if b.fenced && caught_up {
            let mut records = vec![MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            }];
            records.extend(self.leaderships_restored_to(config, image, broker_id));
            return Ok((records, HeartbeatReply { fenced: false }));
        }
        Ok((Vec::new(), HeartbeatReply { fenced: b.fenced }))
    }

    /// Fences every unfenced broker whose session expired by `now_ms`, moving its
    /// leaderships away.
    pub fn expire_sessions(
        &mut self,
        config: &ControllerConfig,
        image: &ClusterImage,
        now_ms: u64,
    ) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        let mut gone = BTreeSet::new();
        for (id, b) in &image.brokers {
            let last = *self.last_heartbeat.entry(*id).or_insert(now_ms);
            if !b.fenced && now_ms >= last + config.session_timeout_ms {
                records.push(MetadataRecord::FenceBroker {
                    broker_id: *id,
                    broker_epoch: b.epoch,
                });
                gone.insert(*id);
            }
        }
        // All of them at once: one partition change each, decided against every broker
        // that goes (one change per broker, each from the same image, would undo the
        // other's ISR removal).
        if !gone.is_empty() {
            records.extend(self.leaderships_moved(config, image, &gone, false));
        }
        records
    }

    /// A broker shutting down in an orderly way (SIGTERM): fenced at once, leaderships moved.
    pub fn controlled_shutdown(
        &mut self,
        config: &ControllerConfig,
        image: &ClusterImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let b = registered(image, broker_id, broker_epoch)?;
        let mut records = Vec::new();
        if !b.fenced {
            records.push(MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            });
        }
        records.extend(self.leaderships_moved_from(config, image, broker_id));
        Ok(records)
    }

    fn leaderships_moved_from(
        &self,
        config: &ControllerConfig,
        image: &ClusterImage,
        gone: i32,
    ) -> Vec<MetadataRecord> {
        self.leaderships_moved(config, image, &BTreeSet::from([gone]), false)
    }

    /// Moves the leaderships and ISR memberships of the brokers in `gone` away;
    /// `keep_sole`: partitions whose ISR is one of them alone keep it as leader.
    fn leaderships_moved(
        &self,
        config: &ControllerConfig,
        image: &ClusterImage,
        gone: &BTreeSet<i32>,
        keep_sole: bool,
    ) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        let usable =
            |b: i32| !gone.contains(&b) && image.brokers.get(&b).is_some_and(|x| !x.fenced);
        for (id, t) in &image.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                let leader_gone = gone.contains(&p.leader);
                let in_isr = p.isr.iter().any(|b| gone.contains(b));
                if !leader_gone && !in_isr {
                    continue;
                }
                if keep_sole && p.isr.len() == 1 && gone.contains(&p.isr[0]) {
                    // It keeps leading, but at a new epoch: the new incarnation may have
                    // lost an unsynced tail that a follower fetched, and only an epoch
                    // change lets that follower see its suffix as divergent (the same
                    // epoch over different records would pass the divergence check).
                    // Both records commit in one entry: never offline in between.
                    if gone.contains(&p.leader) {
                        for leader in [-1, p.leader] {
                            records.push(MetadataRecord::PartitionChange {
                                topic_id: *id,
                                partition: i as i32,
                                leader,
                                isr: None,
                                replicas: None,
                            });
                        }
                    }
                    continue;
                }
                let rest: Vec<i32> = p
                    .isr
                    .iter()
                    .copied()
                    .filter(|b| !gone.contains(b))
                    .collect();
                // The last ISR member stays in the ISR (it has everything), leaderless.
                let mut isr = if rest.is_empty() { p.isr.clone() } else { rest };
                let leader = if leader_gone {
                    match isr.iter().copied().find(|b| usable(*b)) {
                        Some(b) => b,
                        // No ISR member alive: unclean election, if allowed, takes another
                        // live replica as the only member (what it lacks is lost).
                        None => match p.replicas.iter().copied().find(|b| usable(*b)) {
                            Some(b) if unclean_allowed(config, t) => {
                                isr = vec![b];
                                b
                            }
                            _ => -1,
                        },
                    }
                } else {
                    LEADER_UNCHANGED
                };
                if leader == LEADER_UNCHANGED && isr == p.isr {
                    continue;
                }
                records.push(MetadataRecord::PartitionChange {
                    topic_id: *id,
                    partition: i as i32,
                    leader,
                    isr: (isr != p.isr).then_some(isr),
                    replicas: None,
                });
            }
        }
        records
    }

    /// One partition's election: the PartitionChange that gives it its new leader.
    pub fn elect(
        &self,
        image: &ClusterImage,
        election: ElectionType,
        topic_id: TopicId,
        partition: i32,
    ) -> Result<MetadataRecord, ElectionError> {
        let p = image
            .topics
            .get(&topic_id)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
            .ok_or(ElectionError::UnknownPartition)?;
        let alive = |b: i32| image.brokers.get(&b).is_some_and(|x| !x.fenced);
        let change = |leader: i32, isr: Option<Vec<i32>>| MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            isr,
            replicas: None,
        };
        match election {
            ElectionType::Preferred => {
                let preferred = *p.replicas.first().ok_or(ElectionError::UnknownPartition)?;
                if p.leader == preferred {
                    Err(ElectionError::NotNeeded)
                } else if alive(preferred) && p.isr.contains(&preferred) {
                    Ok(change(preferred, None))
                } else {
                    Err(ElectionError::PreferredNotAvailable)
                }
            }
            ElectionType::Unclean => {
                if p.leader >= 0 {
                    return Err(ElectionError::NotNeeded);
                }
                if let Some(b) = p.isr.iter().copied().find(|b| alive(*b)) {
                    return Ok(change(b, None));
                }
                match p.replicas.iter().copied().find(|b| alive(*b)) {
                    Some(b) => Ok(change(b, Some(vec![b]))),
                    None => Err(ElectionError::EligibleLeadersNotAvailable),
                }
            }
        }
    }

    /// The active controller's timer duty for `unclean.leader.election.enable` turned on
    /// (for the broker or a topic) after a partition went offline: every leaderless
    /// partition whose topic allows it and that has a live replica gets one, as Kafka's
    /// controller does for offline partitions when the config changes.
    pub fn unclean_elections(
        &self,
        config: &ControllerConfig,
        image: &ClusterImage,
    ) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for (id, t) in &image.topics {
            if !unclean_allowed(config, t) {
                continue;
            }
            for (i, p) in t.partitions.iter().enumerate() {
                if p.leader != -1 {
                    continue;
                }
                if let Ok(r) = self.elect(image, ElectionType::Unclean, *id, i as i32) {
                    records.push(r);
                }
            }
        }
        records
    }

    /// The partitions an automatic preferred-leader election should move back
    /// (`auto.leader.rebalance.enable`): of each live broker whose share of partitions it
    /// prefers but does not lead is above `imbalance_percent`, those it can lead now (in
    /// the ISR).
    pub fn imbalanced(&self, image: &ClusterImage, imbalance_percent: u32) -> Vec<(TopicId, i32)> {
        let mut preferred: BTreeMap<i32, (usize, Vec<(TopicId, i32)>)> = BTreeMap::new();
        for (id, t) in &image.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                let Some(&first) = p.replicas.first() else {
                    continue;
                };
                let entry = preferred.entry(first).or_default();
                entry.0 += 1;
                if p.leader != first && p.isr.contains(&first) {
                    entry.1.push((*id, i as i32));
                }
            }
        }
        preferred
            .into_iter()
            .filter(|(b, _)| image.brokers.get(b).is_some_and(|x| !x.fenced))
            .filter(|(_, (total, movable))| {
                movable.len() * 100 > *total * imbalance_percent as usize
            })
            .flat_map(|(_, (_, movable))| movable)
            .collect()
    }

    fn leaderships_restored_to(
        &self,
        config: &ControllerConfig,
        image: &ClusterImage,
        back: i32,
    ) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for (id, t) in &image.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.leader != -1 || !p.replicas.contains(&back) {
                    continue;
                }
                // An ISR member returning leads again; another replica only by an unclean
                // election, as the only member.
                let isr = if p.isr.contains(&back) {
                    None
                } else if unclean_allowed(config, t) {
                    Some(vec![back])
                } else {
                    continue;
                };
                records.push(MetadataRecord::PartitionChange {
                    topic_id: *id,
                    partition: i as i32,
                    leader: back,
                    isr,
                    replicas: None,
                });
            }
        }
        records
    }

    /// The records that create `topic`, its partitions placed (see the module doc).
    pub fn create_topic(
        &self,
        config: &ControllerConfig,
        image: &ClusterImage,
        topic: &NewTopic,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if image.topic_ids.contains_key(&topic.name) {
            return Err(ControllerError::TopicExists(topic.name.clone()));
        }
        if topic.partitions < 1 {
            return Err(ControllerError::InvalidPartitions(topic.partitions));
        }
        let mut records = vec![MetadataRecord::Topic {
            name: topic.name.clone(),
            topic_id: topic.topic_id,
        }];
        let mut placer = Placer::new(image);
        for p in 0..topic.partitions {
            let (replicas, shard_index) = placer.place(config, topic.replication_factor)?;
            records.push(MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition: p,
                isr: replicas.clone(),
                leader: replicas[0],
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
                shard_index,
            });
        }
        for (name, value) in &topic.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic,
                resource_name: topic.name.clone(),
                name: name.clone(),
                value: Some(value.clone()),
            });
        }
        Ok(records)
    }
}

impl Controller {
    /// The record for a leader's ISR change, checked as Kafka's controller checks it: the
    /// sender leads the partition at the current leader epoch, the change is based on the
    /// current partition epoch (so a stale change is refused), the ISR holds the leader and
    /// only replicas, and a replica joining it is on an unfenced broker. The ISR applies
    /// with the partition epoch bumped by one.
    pub fn alter_partition(
        &self,
        image: &ClusterImage,
        req: &AlterPartition,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let p = image
            .topics
            .get(&req.topic_id)
            .and_then(|t| t.partitions.get(usize::try_from(req.partition).ok()?))
            .ok_or(ControllerError::UnknownPartition {
                topic: req.topic_id,
                partition: req.partition,
            })?;
        if req.leader_epoch < p.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch {
                got: req.leader_epoch,
                current: p.leader_epoch,
            });
        }
        if req.leader != p.leader || req.leader_epoch != p.leader_epoch {
            return Err(ControllerError::NotLeader {
                broker: req.leader,
                leader: p.leader,
            });
        }
        if req.partition_epoch != p.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                got: req.partition_epoch,
                current: p.partition_epoch,
            });
        }
        let mut isr = req.isr.clone();
        isr.sort_unstable();
        isr.dedup();
        if !isr.contains(&req.leader) {
            return Err(ControllerError::LeaderNotInIsr(req.leader));
        }
        for r in &isr {
            let joins = !p.isr.contains(r);
            let unfenced = image.brokers.get(r).is_some_and(|b| !b.fenced);
            if !p.replicas.contains(r) || (joins && !unfenced) {
                return Err(ControllerError::IneligibleReplica(*r));
            }
        }
        // Keep the replicas' order for the members, as Kafka lists them.
        let isr: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| isr.contains(r))
            .collect();
        if isr == p.isr {
            return Ok(Vec::new());
        }
        Ok(vec![MetadataRecord::PartitionChange {
            topic_id: req.topic_id,
            partition: req.partition,
            leader: LEADER_UNCHANGED,
            isr: Some(isr),
            replicas: None,
        }])
    }

    /// The records that raise `topic_id`'s partition count to `count`, the new partitions
    /// placed like a new topic's (with the replication factor of its first partition).
    pub fn add_partitions(
        &self,
        config: &ControllerConfig,
        image: &ClusterImage,
        topic_id: TopicId,
        count: i32,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image
            .topics
            .get(&topic_id)
            .ok_or(ControllerError::UnknownTopic(topic_id))?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(ControllerError::InvalidPartitions(count));
        }
        let factor = topic.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
        let mut placer = Placer::new(image);
        let mut records = Vec::with_capacity((count - current) as usize);
        for p in current..count {
            let (replicas, shard_index) = placer.place(config, factor)?;
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: p,
                isr: replicas.clone(),
                leader: replicas[0],
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
                shard_index,
            });
        }
        Ok(records)
    }
}

/// The broker's registration, if `broker_epoch` is its current one.
fn registered(
    image: &ClusterImage,
    broker_id: i32,
    broker_epoch: i64,
) -> Result<&super::image::BrokerInfo, ControllerError> {
    let b = image
        .brokers
        .get(&broker_id)
        .ok_or(ControllerError::UnknownBroker(broker_id))?;
    if b.epoch != broker_epoch {
        return Err(ControllerError::StaleBrokerEpoch {
            broker_id,
            epoch: broker_epoch,
        });
    }
    Ok(b)
}

/// Replica and shard-index counts, updated as partitions are placed.
struct Placer<'a> {
    image: &'a ClusterImage,
    replicas: BTreeMap<i32, usize>,
    /// Replicas per (broker, shard index).
    shard_load: BTreeMap<(i32, u32), usize>,
    /// Partitions each broker is the preferred leader (first replica) of.
    preferred: BTreeMap<i32, usize>,
}

impl<'a> Placer<'a> {
    fn new(image: &'a ClusterImage) -> Placer<'a> {
        let mut replicas: BTreeMap<i32, usize> = image
            .brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, _)| (*id, 0))
            .collect();
        let mut shard_load = BTreeMap::new();
        let mut preferred = BTreeMap::new();
        for t in image.topics.values() {
            for p in &t.partitions {
                if let Some(first) = p.replicas.first() {
                    *preferred.entry(*first).or_insert(0) += 1;
                }
                for r in &p.replicas {
                    if let Some(n) = replicas.get_mut(r) {
                        *n += 1;
                    }
                    *shard_load.entry((*r, p.shard_index)).or_insert(0) += 1;
                }
            }
        }
        Placer {
            image,
            replicas,
            shard_load,
            preferred,
        }
    }

    fn place(
        &mut self,
        config: &ControllerConfig,
        factor: i16,
    ) -> Result<(Vec<i32>, u32), ControllerError> {
        let rf = usize::try_from(factor).unwrap_or(0);
        if rf == 0 || rf > self.replicas.len() {
            return Err(ControllerError::InvalidReplicationFactor {
                requested: factor,
                available: self.replicas.len(),
            });
        }
        if rf > config.max_replication_factor {
            return Err(ControllerError::ReplicationFactorOverMax {
                requested: factor,
                max: config.max_replication_factor,
            });
        }
        // Least loaded first; with racks, no second replica in a rack until every rack
        // with a usable broker has one.
        let mut order: Vec<(usize, i32)> = self.replicas.iter().map(|(b, n)| (*n, *b)).collect();
        order.sort_unstable();
        let rack = |b: i32| self.image.brokers.get(&b).and_then(|x| x.rack.clone());
        let mut chosen: Vec<i32> = Vec::with_capacity(rf);
        let mut racks_used: BTreeSet<Option<String>> = BTreeSet::new();
        let all_racks: BTreeSet<Option<String>> = order.iter().map(|(_, b)| rack(*b)).collect();
        while chosen.len() < rf {
            let fresh = order
                .iter()
                .map(|(_, b)| *b)
                .find(|b| !chosen.contains(b) && !racks_used.contains(&rack(*b)));
            let pick =
                fresh.or_else(|| order.iter().map(|(_, b)| *b).find(|b| !chosen.contains(b)));
            let pick = pick.expect("rf <= usable brokers");
            racks_used.insert(rack(pick));
            if racks_used.len() == all_racks.len() {
                racks_used.clear();
            }
            chosen.push(pick);
        }
        let shards = chosen
            .iter()
            .map(|b| {
                self.image
                    .brokers
                    .get(b)
                    .map(|x| x.shards)
                    .unwrap_or(1)
                    .max(1)
            })
            .min()
            .unwrap_or(1);
        let shard_index = (0..shards)
            .min_by_key(|s| {
                let load: usize = chosen
                    .iter()
                    .map(|b| self.shard_load.get(&(*b, *s)).copied().unwrap_or(0))
                    .sum();
                (load, *s)
            })
            .ok_or(ControllerError::NoCommonShard(0))?;
        // The first replica is the preferred leader: the chosen broker that leads fewest, so
        // that leaders spread as evenly as replicas do (equal replica counts alone would
        // put every leader on the lowest broker id).
        let first = (0..chosen.len())
            .min_by_key(|i| (self.preferred.get(&chosen[*i]).copied().unwrap_or(0), *i))
            .unwrap_or(0);
        chosen.rotate_left(first);
        *self.preferred.entry(chosen[0]).or_insert(0) += 1;
        for b in &chosen {
            *self.replicas.get_mut(b).expect("usable broker") += 1;
            *self.shard_load.entry((*b, shard_index)).or_insert(0) += 1;
        }
        Ok((chosen, shard_index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: ControllerConfig = ControllerConfig {
        session_timeout_ms: 9000,
        max_replication_factor: 3,
        unclean_leader_election: false,
    };

    fn reg(id: i32, rack: Option<&str>, shards: u32) -> Registration {
        Registration {
            broker_id: id,
            incarnation: [id as u8; 16],
            endpoints: vec![],
            rack: rack.map(str::to_owned),
            shards,
        }
    }

    /// Applies records at consecutive offsets after the image's.
    fn commit(image: &mut ClusterImage, records: Vec<MetadataRecord>) {
        for r in records {
            let at = image.offset + 1;
            image.apply(at, &r).unwrap();
        }
    }

    /// Three registered, unfenced brokers.
    fn cluster(racks: [Option<&str>; 3], shards: [u32; 3]) -> (ClusterImage, Controller) {
        let mut image = ClusterImage::default();
        let mut c = Controller::default();
        for i in 0..3 {
            let r = c
                .register(&CONFIG, &image, reg(i as i32 + 1, racks[i], shards[i]), 0)
                .unwrap();
            commit(&mut image, r);
            let epoch = image.brokers[&(i as i32 + 1)].epoch;
            let (r, reply) = c
                .heartbeat(&CONFIG, &image, i as i32 + 1, epoch, true, 0)
                .unwrap();
            assert!(!reply.fenced);
            commit(&mut image, r);
        }
        (image, c)
    }

    fn new_topic(name: &str, id: u8, partitions: i32, rf: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            topic_id: TopicId([id; 16]),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn partitions_spread_over_brokers_with_one_shard_index_every_replica_has() {
        let (mut image, c) = cluster([None, None, None], [2, 2, 1]);
        let r = c
            .create_topic(&CONFIG, &image, &new_topic("t", 1, 12, 1))
            .unwrap();
        commit(&mut image, r);
        let t = image.topic("t").unwrap().1;
        let mut per_broker = BTreeMap::new();
        for p in &t.partitions {
            assert_eq!(p.replicas.len(), 1);
            assert_eq!(p.leader, p.replicas[0]);
            *per_broker.entry(p.leader).or_insert(0) += 1;
            let shards = image.brokers[&p.leader].shards;
            assert!(
                p.shard_index < shards,
                "shard index {} on a {shards}-shard broker",
                p.shard_index
            );
        }
        assert_eq!(
            per_broker.values().copied().collect::<Vec<_>>(),
            vec![4, 4, 4]
        );
        // Broker 1's four partitions use both its shards evenly.
        let on_1: Vec<u32> = t
            .partitions
            .iter()
            .filter(|p| p.leader == 1)
            .map(|p| p.shard_index)
            .collect();
        assert_eq!(on_1.iter().filter(|s| **s == 0).count(), 2, "{on_1:?}");

        let r = c
            .create_topic(&CONFIG, &image, &new_topic("u", 2, 3, 3))
            .unwrap();
        commit(&mut image, r);
        let mut leaders = Vec::new();
        for p in &image.topic("u").unwrap().1.partitions {
            let mut replicas = p.replicas.clone();
            replicas.sort_unstable();
            assert_eq!(replicas, vec![1, 2, 3]);
            assert_eq!(p.shard_index, 0, "broker 3 runs one shard");
            leaders.push(p.leader);
        }
        // Every replica on every broker, so the first replica (the leader) spreads instead.
        leaders.sort_unstable();
        assert_eq!(
            leaders,
            vec![1, 2, 3],
            "leaders of an RF 3 topic on 3 brokers"
        );
    }

    /// Moves partition 0 of topic 1's leadership to `to` (ISR unchanged).
    fn lead(image: &mut ClusterImage, partition: i32, to: i32) {
        let r = MetadataRecord::PartitionChange {
            topic_id: TopicId([1; 16]),
            partition,
            leader: to,
            isr: None,
            replicas: None,
        };
        commit(image, vec![r]);
    }

    #[test]
    fn elections_follow_kafkas_rules() {
        let (mut image, c) = cluster([None, None, None], [1, 1, 1]);
        let r = c
            .create_topic(&CONFIG, &image, &new_topic("t", 1, 3, 3))
            .unwrap();
        commit(&mut image, r);
        let id = TopicId([1; 16]);
        let part = |image: &ClusterImage, i: usize| image.topics[&id].partitions[i].clone();
        let preferred = part(&image, 0).replicas[0];
        // The preferred leader already leads.
        assert_eq!(
            c.elect(&image, ElectionType::Preferred, id, 0),
            Err(ElectionError::NotNeeded)
        );
        assert_eq!(
            c.elect(&image, ElectionType::Preferred, id, 7),
            Err(ElectionError::UnknownPartition)
        );
        let other = part(&image, 0).replicas[1];
        lead(&mut image, 0, other);
        // Led elsewhere, preferred alive and in the ISR: moved back, epoch bumped.
        let epoch = part(&image, 0).leader_epoch;
        let r = c.elect(&image, ElectionType::Preferred, id, 0).unwrap();
        commit(&mut image, vec![r]);
        assert_eq!(part(&image, 0).leader, preferred);
        assert_eq!(part(&image, 0).leader_epoch, epoch + 1);
        // Preferred out of the ISR: not available.
        lead(&mut image, 0, other);
        let isr: Vec<i32> = part(&image, 0)
            .isr
            .into_iter()
            .filter(|b| *b != preferred)
            .collect();
        commit(
            &mut image,
            vec![MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: LEADER_UNCHANGED,
                isr: Some(isr),
                replicas: None,
            }],
        );
        assert_eq!(
            c.elect(&image, ElectionType::Preferred, id, 0),
            Err(ElectionError::PreferredNotAvailable)
        );
        // Unclean: a partition with a leader needs none.
        assert_eq!(
            c.elect(&image, ElectionType::Unclean, id, 0),
            Err(ElectionError::NotNeeded)
        );
        // Leaderless, its only ISR member fenced: a live replica leads alone.
        let p1 = part(&image, 1);
        let sole = p1.replicas[0];
        let sole_epoch = image.brokers[&sole].epoch;
        commit(
            &mut image,
            vec![
                MetadataRecord::PartitionChange {
                    topic_id: id,
                    partition: 1,
                    leader: -1,
                    isr: Some(vec![sole]),
                    replicas: None,
                },
                MetadataRecord::FenceBroker {
                    broker_id: sole,
                    broker_epoch: sole_epoch,
                },
            ],
        );
        let r = c.elect(&image, ElectionType::Unclean, id, 1).unwrap();
        commit(&mut image, vec![r]);
        let p1 = part(&image, 1);
        assert_ne!(p1.leader, sole);
        assert_eq!(p1.isr, vec![p1.leader]);
    }

    #[test]
    fn automatic_rebalance_moves_back_only_above_the_imbalance_share() {
        let (mut image, c) = cluster([None, None, None], [1, 1, 1]);
        let r = c
            .create_topic(&CONFIG, &image, &new_topic("t", 1, 30, 3))
            .unwrap();
        commit(&mut image, r);
        let id = TopicId([1; 16]);
        assert!(c.imbalanced(&image, 10).is_empty());
        // One of broker 1's ten preferred partitions led elsewhere: 10%, not above it.
        let of_1: Vec<i32> = (0..30)
            .filter(|i| image.topics[&id].partitions[*i as usize].replicas[0] == 1)
            .collect();
        assert_eq!(of_1.len(), 10);
        let elsewhere =
            |image: &ClusterImage, i: i32| image.topics[&id].partitions[i as usize].replicas[1];
        let to = elsewhere(&image, of_1[0]);
        lead(&mut image, of_1[0], to);
        assert!(c.imbalanced(&image, 10).is_empty());
        // Two of ten: 20%, both moved back.
        let to = elsewhere(&image, of_1[1]);
        lead(&mut image, of_1[1], to);
        let mut back = c.imbalanced(&image, 10);
        back.sort();
        assert_eq!(back, vec![(id, of_1[0]), (id, of_1[1])]);
        // A fenced preferred leader gets nothing back.
        let epoch = image.brokers[&1].epoch;
        commit(
            &mut image,
            vec![MetadataRecord::FenceBroker {
                broker_id: 1,
                broker_epoch: epoch,
            }],
        );
        assert!(c.imbalanced(&image, 10).is_empty());
    }

    #[test]
    fn replicas_go_to_distinct_racks_first() {
        let (mut image, c) = cluster([Some("a"), Some("a"), Some("b")], [1, 1, 1]);
        let r = c
            .create_topic(&CONFIG, &image, &new_topic("t", 1, 6, 2))
            .unwrap();
        commit(&mut image, r);
        for p in &image.topic("t").unwrap().1.partitions {
            let racks: BTreeSet<_> = p
                .replicas
                .iter()
                .map(|b| image.brokers[b].rack.clone())
                .collect();
            assert_eq!(racks.len(), 2, "replicas {:?} share a rack", p.replicas);
        }
    }

    #[test]
    fn bad_topics_are_refused_with_the_reason() {
        let (mut image, c) = cluster([None, None, None], [1, 1, 1]);
        let one = ControllerConfig {
            max_replication_factor: 1,
            unclean_leader_election: false,
            ..CONFIG
        };
        assert!(matches!(
            c.create_topic(&one, &image, &new_topic("t", 1, 1, 2)),
            Err(ControllerError::ReplicationFactorOverMax { requested: 2, .. })
        ));
        assert!(matches!(
            c.create_topic(&CONFIG, &image, &new_topic("t", 1, 1, 4)),
            Err(ControllerError::InvalidReplicationFactor {
                requested: 4,
                available: 3
            })
        ));
        assert_eq!(
            c.create_topic(&CONFIG, &image, &new_topic("t", 1, 0, 1)),
            Err(ControllerError::InvalidPartitions(0))
        );
        let r = c
            .create_topic(&CONFIG, &image, &new_topic("t", 1, 1, 1))
            .unwrap();
        commit(&mut image, r);
        assert_eq!(
            c.create_topic(&CONFIG, &image, &new_topic("t", 2, 1, 1)),
            Err(ControllerError::TopicExists("t".into()))
        );
    }

    #[test]
    fn a_silent_broker_is_fenced_its_partitions_go_offline_and_come_back_when_it_returns() {
        let (mut image, mut c) = cluster([None, None, None], [1, 1, 1]);
        let r = c
            .create_topic(&CONFIG, &image, &new_topic("t", 1, 3, 1))
            .unwrap();
        commit(&mut image, r);
        let r = c
            .create_topic(&CONFIG, &image, &new_topic("r", 2, 1, 3))
            .unwrap();
        commit(&mut image, r);
        // Brokers 1 and 2 keep heartbeating; 3 goes quiet.
        for t in [3000, 6000, 9000] {
            for b in [1, 2] {
                let e = image.brokers[&b].epoch;
                let (r, _) = c.heartbeat(&CONFIG, &image, b, e, true, t).unwrap();
                commit(&mut image, r);
            }
        }
        assert!(c.expire_sessions(&CONFIG, &image, 8999).is_empty());
        let r = c.expire_sessions(&CONFIG, &image, 9000);
        commit(&mut image, r);
        assert!(image.brokers[&3].fenced);
        let t = image.topic("t").unwrap().1;
        let offline: Vec<_> = t.partitions.iter().filter(|p| p.leader == -1).collect();
        assert_eq!(offline.len(), 1);
        assert_eq!(
            offline[0].isr,
            vec![3],
            "the last ISR member stays in the ISR"
        );
        assert_eq!(offline[0].leader_epoch, 1);
        let rp = &image.topic("r").unwrap().1.partitions[0];
        assert!(
            !rp.isr.contains(&3) && rp.leader != 3 && rp.leader != -1,
            "{rp:?}"
        );
        // Fencing is done once.
        assert!(c
            .expire_sessions(&CONFIG, &image, 20_000)
            .iter()
            .all(|r| !matches!(r, MetadataRecord::FenceBroker { broker_id: 3, .. })));
        // Broker 3 restarts: a new incarnation registers, catches up and is unfenced.
        let mut again = reg(3, None, 1);
        again.incarnation = [99; 16];
        let r = c.register(&CONFIG, &image, again, 21_000).unwrap();
        commit(&mut image, r);
        let e = image.brokers[&3].epoch;
        let (r, reply) = c.heartbeat(&CONFIG, &image, 3, e, false, 21_100).unwrap();
        assert!(r.is_empty() && reply.fenced, "not caught up: stays fenced");
        let (r, reply) = c.heartbeat(&CONFIG, &image, 3, e, true, 21_200).unwrap();
        assert!(!reply.fenced);
        commit(&mut image, r);
        let t = image.topic("t").unwrap().1;
        assert!(t.partitions.iter().all(|p| p.leader != -1));
        // The previous incarnation's epoch is refused.
        assert!(matches!(
            c.heartbeat(&CONFIG, &image, 3, e - 1, true, 21_300),
            Err(ControllerError::StaleBrokerEpoch { .. })
        ));
    }

    #[test]
    fn a_second_process_with_a_live_node_id_is_refused() {
        let (image, mut c) = cluster([None, None, None], [1, 1, 1]);
        let mut twin = reg(2, None, 1);
        twin.incarnation = [42; 16];
        assert_eq!(
            c.register(&CONFIG, &image, twin.clone(), 1000),
            Err(ControllerError::DuplicateBrokerId { broker_id: 2 })
        );
        // Once the first one's session is over, the id is free.
        assert!(c.register(&CONFIG, &image, twin, 10_000).is_ok());
    }

    #[test]
    fn a_restarted_node_re_registers_with_a_controller_it_never_spoke_to() {
        // A one-node cluster restarts: its new active controller knows the old
        // registration only from the log, so the new incarnation is not a duplicate.
        let (image, _) = cluster([None, None, None], [1, 1, 1]);
        let mut fresh = Controller::activate(&image, 1000);
        let mut again = reg(2, None, 1);
        again.incarnation = [42; 16];
        assert!(fresh.register(&CONFIG, &image, again.clone(), 1000).is_ok());
        // Now that it spoke, another incarnation is refused while the session lives.
        again.incarnation = [43; 16];
        assert_eq!(
            fresh.register(&CONFIG, &image, again, 2000),
            Err(ControllerError::DuplicateBrokerId { broker_id: 2 })
        );
    }

    #[test]
    fn alter_partition_refuses_stale_and_ineligible_changes() {
        let (mut image, mut c) = cluster([None, None, None], [1, 1, 1]);
        let t = new_topic("t", 9, 1, 3);
        let r = c.create_topic(&CONFIG, &image, &t).unwrap();
        commit(&mut image, r);
        let p = image.topics[&t.topic_id].partitions[0].clone();
        assert_eq!(p.isr, [1, 2, 3]);
        let req = |isr: &[i32], leader: i32, le: i32, pe: i32| AlterPartition {
            topic_id: t.topic_id,
            partition: 0,
            leader,
            leader_epoch: le,
            partition_epoch: pe,
            isr: isr.to_vec(),
        };
        let (l, le, pe) = (p.leader, p.leader_epoch, p.partition_epoch);
        let other = p.replicas.iter().copied().find(|r| *r != l).unwrap();
        let without: Vec<i32> = p.isr.iter().copied().filter(|r| *r != other).collect();
        // A shrink from the leader at the current epochs commits, bumping the partition epoch.
        let r = c
            .alter_partition(&image, &req(&without, l, le, pe))
            .unwrap();
        commit(&mut image, r);
        let now = image.topics[&t.topic_id].partitions[0].clone();
        assert_eq!(now.isr, without);
        assert_eq!(now.partition_epoch, pe + 1);
        assert_eq!(now.leader_epoch, le, "an ISR change keeps the leader epoch");
        // The same change again is stale: its partition epoch is the old one.
        assert_eq!(
            c.alter_partition(&image, &req(&without, l, le, pe)),
            Err(ControllerError::InvalidUpdateVersion {
                got: pe,
                current: pe + 1
            })
        );
        // Not the leader, an old leader epoch, no leader in the ISR, a stranger.
        assert!(matches!(
            c.alter_partition(&image, &req(&p.isr, other, le, pe + 1)),
            Err(ControllerError::NotLeader { .. })
        ));
        assert!(matches!(
            c.alter_partition(&image, &req(&p.isr, l, le - 1, pe + 1)),
            Err(ControllerError::FencedLeaderEpoch { .. })
        ));
        assert_eq!(
            c.alter_partition(&image, &req(&[other], l, le, pe + 1)),
            Err(ControllerError::LeaderNotInIsr(l))
        );
        assert_eq!(
            c.alter_partition(&image, &req(&[l, 7], l, le, pe + 1)),
            Err(ControllerError::IneligibleReplica(7))
        );
        // A fenced broker cannot rejoin; once unfenced it can.
        let epoch = image.brokers[&other].epoch;
        let r = c
            .controlled_shutdown(&CONFIG, &image, other, epoch)
            .unwrap();
        commit(&mut image, r);
        let pe = image.topics[&t.topic_id].partitions[0].partition_epoch;
        assert_eq!(
            c.alter_partition(&image, &req(&p.isr, l, le, pe)),
            Err(ControllerError::IneligibleReplica(other))
        );
        let (r, _) = c.heartbeat(&CONFIG, &image, other, epoch, true, 1).unwrap();
        commit(&mut image, r);
        let pe = image.topics[&t.topic_id].partitions[0].partition_epoch;
        let r = c.alter_partition(&image, &req(&p.isr, l, le, pe)).unwrap();
        commit(&mut image, r);
        assert_eq!(image.topics[&t.topic_id].partitions[0].isr, p.isr);
        // The unchanged ISR asks for nothing.
        let pe = image.topics[&t.topic_id].partitions[0].partition_epoch;
        assert_eq!(
            c.alter_partition(&image, &req(&p.isr, l, le, pe)),
            Ok(Vec::new())
        );
    }

    #[test]
    fn with_no_isr_member_alive_only_an_unclean_election_brings_a_leader() {
        for unclean in [false, true] {
            let (mut image, mut c) = cluster([None, None, None], [1, 1, 1]);
            let mut t = new_topic("u", 4, 1, 3);
            if unclean {
                t.configs
                    .insert(UNCLEAN_LEADER_ELECTION.into(), "true".into());
            }
            let r = c.create_topic(&CONFIG, &image, &t).unwrap();
            commit(&mut image, r);
            let p = image.topics[&t.topic_id].partitions[0].clone();
            // The ISR shrinks to the leader alone, then the leader's broker goes.
            let req = AlterPartition {
                topic_id: t.topic_id,
                partition: 0,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: vec![p.leader],
            };
            let r = c.alter_partition(&image, &req).unwrap();
            commit(&mut image, r);
            let epoch = image.brokers[&p.leader].epoch;
            let r = c
                .controlled_shutdown(&CONFIG, &image, p.leader, epoch)
                .unwrap();
            commit(&mut image, r);
            let now = image.topics[&t.topic_id].partitions[0].clone();
            if unclean {
                assert!(now.leader >= 0 && now.leader != p.leader, "{now:?}");
                assert_eq!(now.isr, [now.leader], "the new leader is the only member");
                assert_eq!(now.leader_epoch, p.leader_epoch + 1);
            } else {
                assert_eq!(now.leader, -1, "offline: {now:?}");
                assert_eq!(now.isr, [p.leader], "the last member keeps its place");
            }
        }
        // An offline partition whose returning broker is not in the ISR: led again only
        // with unclean election (here from the broker default).
        let config = ControllerConfig {
            unclean_leader_election: true,
            ..CONFIG
        };
        let (mut image, mut c) = cluster([None, None, None], [1, 1, 1]);
        let t = new_topic("v", 5, 1, 2);
        let r = c.create_topic(&config, &image, &t).unwrap();
        commit(&mut image, r);
        let p = image.topics[&t.topic_id].partitions[0].clone();
        let follower = p.replicas[1];
        let e_follower = image.brokers[&follower].epoch;
        // The follower leaves (ISR = leader), then the leader too: offline by now, since the
        // follower is down when the leader goes.
        let r = c
            .controlled_shutdown(&config, &image, follower, e_follower)
            .unwrap();
        commit(&mut image, r);
        let e_leader = image.brokers[&p.leader].epoch;
        let r = c
            .controlled_shutdown(&config, &image, p.leader, e_leader)
            .unwrap();
        commit(&mut image, r);
        assert_eq!(image.topics[&t.topic_id].partitions[0].leader, -1);
        let (r, _) = c
            .heartbeat(&config, &image, follower, e_follower, true, 5)
            .unwrap();
        commit(&mut image, r);
        let now = image.topics[&t.topic_id].partitions[0].clone();
        assert_eq!(now.leader, follower, "{now:?}");
        assert_eq!(now.isr, [follower]);
        let (r, _) = c
            .heartbeat(&CONFIG, &image, p.leader, e_leader, true, 6)
            .unwrap();
        commit(&mut image, r);
        assert_eq!(
            image.topics[&t.topic_id].partitions[0].leader, follower,
            "the old leader returns as a follower"
        );
    }

    #[test]
    fn turning_unclean_election_on_brings_an_offline_partition_back() {
        let (mut image, mut c) = cluster([None, None, None], [1, 1, 1]);
        let t = new_topic("w", 8, 1, 2);
        let r = c.create_topic(&CONFIG, &image, &t).unwrap();
        commit(&mut image, r);
        let p = image.topics[&t.topic_id].partitions[0].clone();
        let follower = p.replicas[1];
        let e_follower = image.brokers[&follower].epoch;
        let e_leader = image.brokers[&p.leader].epoch;
        // The follower leaves (the ISR is the leader alone), the leader goes too, and the
        // follower comes back: not in the ISR, so offline with unclean election off.
        for (b, e) in [(follower, e_follower), (p.leader, e_leader)] {
            let r = c.controlled_shutdown(&CONFIG, &image, b, e).unwrap();
            commit(&mut image, r);
        }
        let (r, _) = c
            .heartbeat(&CONFIG, &image, follower, e_follower, true, 5)
            .unwrap();
        commit(&mut image, r);
        assert_eq!(image.topics[&t.topic_id].partitions[0].leader, -1);
        assert!(
            c.unclean_elections(&CONFIG, &image).is_empty(),
            "unclean election is off"
        );
        // A topic's own "false" overrides the broker's "true".
        let broker_on = ControllerConfig {
            unclean_leader_election: true,
            ..CONFIG
        };
        let mut off = image.clone();
        off.topics
            .get_mut(&t.topic_id)
            .unwrap()
            .configs
            .insert(UNCLEAN_LEADER_ELECTION.into(), "false".into());
        assert!(c.unclean_elections(&broker_on, &off).is_empty());
        assert_eq!(c.unclean_elections(&broker_on, &image).len(), 1);
        // The topic turns it on: the live replica leads, alone in the ISR.
        image
            .topics
            .get_mut(&t.topic_id)
            .unwrap()
            .configs
            .insert(UNCLEAN_LEADER_ELECTION.into(), "true".into());
        let r = c.unclean_elections(&CONFIG, &image);
        assert_eq!(r.len(), 1, "{r:?}");
        commit(&mut image, r);
        let now = &image.topics[&t.topic_id].partitions[0];
        assert_eq!((now.leader, now.isr.clone()), (follower, vec![follower]));
        assert!(c.unclean_elections(&CONFIG, &image).is_empty(), "done once");
    }

    #[test]
    fn a_reregistration_keeps_what_only_it_can_lead() {
        let (mut image, mut c) = cluster([None, None, None], [1, 1, 1]);
        let solo = new_topic("solo", 6, 3, 1);
        let shared = new_topic("shared", 7, 3, 3);
        for t in [&solo, &shared] {
            let r = c.create_topic(&CONFIG, &image, t).unwrap();
            commit(&mut image, r);
        }
        // Broker 1 restarts (a new incarnation, its old session expired long ago).
        let mut again = reg(1, None, 1);
        again.incarnation = [42; 16];
        let r = c.register(&CONFIG, &image, again, 1_000_000).unwrap();
        commit(&mut image, r);
        for p in &image.topics[&solo.topic_id].partitions {
            if p.replicas == [1] {
                assert_eq!(p.leader, 1, "the only replica keeps leading: {p:?}");
                assert!(
                    p.leader_epoch > 0,
                    "a new incarnation leads at a new epoch: {p:?}"
                );
            }
        }
        for p in &image.topics[&shared.topic_id].partitions {
            assert_ne!(p.leader, 1, "led elsewhere while 1 catches up: {p:?}");
            assert!(!p.isr.contains(&1), "{p:?}");
        }
    }

    #[test]
    fn brokers_expiring_together_all_leave_the_isr() {
        let (mut image, mut c) = cluster([None, None, None], [1, 1, 1]);
        let t = new_topic("x", 8, 1, 3);
        let r = c.create_topic(&CONFIG, &image, &t).unwrap();
        commit(&mut image, r);
        let leader = image.topics[&t.topic_id].partitions[0].leader;
        // Only the leader keeps heartbeating; the two others fall silent together.
        let e = image.brokers[&leader].epoch;
        let (r, _) = c
            .heartbeat(&CONFIG, &image, leader, e, true, 9_500)
            .unwrap();
        commit(&mut image, r);
        let r = c.expire_sessions(&CONFIG, &image, 10_000);
        commit(&mut image, r);
        let p = &image.topics[&t.topic_id].partitions[0];
        assert_eq!(p.leader, leader);
        assert_eq!(p.isr, [leader], "both silent brokers out of the ISR: {p:?}");
    }
}
