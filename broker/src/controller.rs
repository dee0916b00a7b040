//! The controller: the single writer of the metadata image, running on shard 0.
//!
//! Every change (create or delete topics) is serialized by one lock, written to disk, and
//! only then published to every shard (each opens or deletes its logs) before the caller is
//! answered — so once CreateTopics returns, a produce on any shard finds its partition.
//!
//! Placement: each new partition goes to the shard that owns the fewest partitions so far
//! (lowest shard id on ties), and that choice is persisted with the image.
//!
//! A replicated metadata log (KRaft-style, on a proven consensus library) replaces the
//! JSON image when clustering arrives; this one-voter form keeps the same publish order.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::metadata::{random_id, validate_topic_name, MetadataImage, PartitionMeta, TopicMeta};
use crate::shard::{Shard, ShardId};

/// Producer ids a shard takes from the controller at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Largest partition count one CreateTopics may ask for (`sluice.topic.partitions.max`).
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    /// -1 means the broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1 means the broker default (1).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CreateTopicError {
    #[error("topic already exists")]
    AlreadyExists,
    #[error("{0}")]
    InvalidName(&'static str),
    #[error("number of partitions {0} is invalid")]
    InvalidPartitions(i32),
    #[error("replication factor {requested} is larger than the {brokers} available brokers")]
    InvalidReplicationFactor { requested: i16, brokers: i32 },
    #[error("{0}")]
    InvalidConfig(String),
    #[error("metadata could not be stored: {0}")]
    Storage(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeleteTopicError {
    #[error("unknown topic")]
    Unknown,
    #[error("internal topics cannot be deleted")]
    Internal,
    #[error("topic deletion is disabled (delete.topic.enable=false)")]
    Disabled,
    #[error("metadata could not be stored: {0}")]
    Storage(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CreatePartitionsError {
    #[error("unknown topic")]
    Unknown,
    #[error("topic currently has {current} partitions, which is not fewer than the requested {requested}")]
    NotMore { current: usize, requested: i32 },
    #[error("{0} partitions exceed sluice.topic.partitions.max")]
    TooMany(i32),
    #[error("the partition count of an internal topic cannot change")]
    Internal,
    #[error("metadata could not be stored: {0}")]
    Storage(String),
}

/// One change to a topic's configs (IncrementalAlterConfigs' operations; AlterConfigs is
/// a `replace` with `Set`s).
#[derive(Debug, Clone)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AlterConfigsError {
    #[error("unknown topic")]
    Unknown,
    #[error("{0}")]
    Invalid(String),
    #[error("metadata could not be stored: {0}")]
    Storage(String),
}

pub struct Controller {
    config: Arc<BrokerConfig>,
    image: RefCell<MetadataImage>,
    lock: Semaphore,
}

impl Controller {
    pub fn new(config: Arc<BrokerConfig>) -> Controller {
        Controller {
            config,
            image: RefCell::new(MetadataImage::default()),
            lock: Semaphore::new(1),
        }
    }

    /// Loads the persisted image and publishes it to every shard.
    pub async fn bootstrap(&self, shard: &Shard) -> Result<()> {
        let image = MetadataImage::load(&self.config.data_dir)?;
        tracing::info!(
            topics = image.topics.len(),
            version = image.version,
            "metadata loaded"
        );
        *self.image.borrow_mut() = image.clone();
        self.publish(shard, Arc::new(image)).await
    }

    async fn publish(&self, shard: &Shard, image: Arc<MetadataImage>) -> Result<()> {
        let mut waits = Vec::new();
        for target in 0..shard.shard_count() {
            let image = image.clone();
            waits.push(shard.invoke_on(ShardId(target), move |s| async move {
                s.apply_metadata(image).await.map_err(|e| e.to_string())
            }));
        }
        for (target, r) in futures::future::join_all(waits)
            .await
            .into_iter()
            .enumerate()
        {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("shard {target} could not apply metadata: {e}"),
                Err(e) => anyhow::bail!("{e}"),
            }
        }
        Ok(())
    }

    /// Makes `next` the image: a new version, stored, then published to every shard.
    async fn commit(&self, shard: &Shard, mut next: MetadataImage) -> Result<()> {
        next.version += 1;
        next.store(&self.config.data_dir)?;
        *self.image.borrow_mut() = next.clone();
        self.publish(shard, Arc::new(next)).await
    }

    pub async fn create_topics(
        &self,
        shard: &Shard,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, CreateTopicError>> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return specs
                .iter()
                .map(|_| Err(CreateTopicError::Storage("controller stopped".into())))
                .collect();
        };
        let mut next = self.image.borrow().clone();
        let mut load = shard_loads(&next, shard.shard_count());
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            let r = self.plan_topic(&mut next, &mut load, spec);
            results.push(r);
        }
        if validate_only || results.iter().all(|r| r.is_err()) {
            return results;
        }
        if let Err(e) = self.commit(shard, next).await {
            tracing::error!(error = %e, "create topics failed");
            return results
                .into_iter()
                .map(|r| r.and(Err(CreateTopicError::Storage(e.to_string()))))
                .collect();
        }
        results
    }

    fn plan_topic(
        &self,
        image: &mut MetadataImage,
        load: &mut [usize],
        spec: TopicSpec,
    ) -> Result<TopicMeta, CreateTopicError> {
        validate_topic_name(&spec.name).map_err(CreateTopicError::InvalidName)?;
        if image.topics.contains_key(&spec.name) {
            return Err(CreateTopicError::AlreadyExists);
        }
        for (name, value) in &spec.configs {
            crate::topic_config::validate(name, value).map_err(CreateTopicError::InvalidConfig)?;
        }
        let partitions = if spec.num_partitions == -1 {
            self.config.num_partitions
        } else {
            spec.num_partitions
        };
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            return Err(CreateTopicError::InvalidPartitions(spec.num_partitions));
        }
        if spec.replication_factor != -1 && spec.replication_factor != 1 {
            return Err(CreateTopicError::InvalidReplicationFactor {
                requested: spec.replication_factor,
                brokers: 1,
            });
        }
        let metas = (0..partitions).map(|_| place(load)).collect();
        let topic = TopicMeta {
            id: random_id(),
            partitions: metas,
            configs: spec.configs,
        };
        image.topics.insert(spec.name, topic.clone());
        Ok(topic)
    }

    /// Adds partitions to existing topics (placed like new ones: least-loaded shard first).
    pub async fn create_partitions(
        &self,
        shard: &Shard,
        requests: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), CreatePartitionsError>> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return requests
                .iter()
                .map(|_| Err(CreatePartitionsError::Storage("controller stopped".into())))
                .collect();
        };
        let mut next = self.image.borrow().clone();
        let mut load = shard_loads(&next, shard.shard_count());
        let results: Vec<Result<(), CreatePartitionsError>> = requests
            .iter()
            .map(|(name, count)| {
                if name == crate::group::OFFSETS_TOPIC {
                    return Err(CreatePartitionsError::Internal);
                }
                let topic = next
                    .topics
                    .get_mut(name)
                    .ok_or(CreatePartitionsError::Unknown)?;
                let current = topic.partitions.len();
                if *count <= current as i32 {
                    return Err(CreatePartitionsError::NotMore {
                        current,
                        requested: *count,
                    });
                }
                if *count > TOPIC_PARTITIONS_MAX {
                    return Err(CreatePartitionsError::TooMany(*count));
                }
                for _ in current..*count as usize {
                    topic.partitions.push(place(&mut load));
                }
                Ok(())
            })
            .collect();
        if validate_only || results.iter().all(|r| r.is_err()) {
            return results;
        }
        if let Err(e) = self.commit(shard, next).await {
            tracing::error!(error = %e, "create partitions failed");
            return results
                .into_iter()
                .map(|r| r.and(Err(CreatePartitionsError::Storage(e.to_string()))))
                .collect();
        }
        results
    }

    /// Changes topic configs: each request is `(topic, replace all first?, operations)`,
    /// checked as a whole (one bad operation changes nothing of that topic), persisted and
    /// published; shards apply the new settings to open logs.
    pub async fn alter_topic_configs(
        &self,
        shard: &Shard,
        requests: Vec<(String, bool, Vec<ConfigOp>)>,
        validate_only: bool,
    ) -> Vec<Result<(), AlterConfigsError>> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return requests
                .iter()
                .map(|_| Err(AlterConfigsError::Storage("controller stopped".into())))
                .collect();
        };
        let mut next = self.image.borrow().clone();
        let results: Vec<Result<(), AlterConfigsError>> = requests
            .into_iter()
            .map(|(name, replace, ops)| {
                let topic = next
                    .topics
                    .get_mut(&name)
                    .ok_or(AlterConfigsError::Unknown)?;
                let mut configs = if replace {
                    BTreeMap::new()
                } else {
                    topic.configs.clone()
                };
                for op in ops {
                    apply_config_op(&mut configs, op).map_err(AlterConfigsError::Invalid)?;
                }
                topic.configs = configs;
                Ok(())
            })
            .collect();
        if validate_only || results.iter().all(|r| r.is_err()) {
            return results;
        }
        if let Err(e) = self.commit(shard, next).await {
            tracing::error!(error = %e, "alter configs failed");
            return results
                .into_iter()
                .map(|r| r.and(Err(AlterConfigsError::Storage(e.to_string()))))
                .collect();
        }
        results
    }

    /// Hands out the next block of producer ids once it is persisted: a restart never hands
    /// out an id twice (ids of a block never used are skipped, as in Kafka).
    pub async fn allocate_producer_ids(&self) -> Result<std::ops::Range<i64>> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            anyhow::bail!("controller stopped");
        };
        let mut next = self.image.borrow().clone();
        let start = next.next_producer_id;
        let end = start
            .checked_add(PRODUCER_ID_BLOCK_SIZE)
            .ok_or_else(|| anyhow::anyhow!("producer ids exhausted"))?;
        next.next_producer_id = end;
        next.store(&self.config.data_dir)?;
        self.image.borrow_mut().next_producer_id = end;
        Ok(start..end)
    }

    pub async fn delete_topics(
        &self,
        shard: &Shard,
        names: Vec<String>,
    ) -> Vec<Result<(), DeleteTopicError>> {
        if !self.config.delete_topic_enable {
            return names
                .iter()
                .map(|_| Err(DeleteTopicError::Disabled))
                .collect();
        }
        let Ok(_permit) = self.lock.acquire_permit(1).await else {
            return names
                .iter()
                .map(|_| Err(DeleteTopicError::Storage("controller stopped".into())))
                .collect();
        };
        let mut next = self.image.borrow().clone();
        let results: Vec<_> = names
            .iter()
            .map(|n| {
                if n == crate::group::OFFSETS_TOPIC {
                    return Err(DeleteTopicError::Internal);
                }
                next.topics
                    .remove(n)
                    .map(|_| ())
                    .ok_or(DeleteTopicError::Unknown)
            })
            .collect();
        if results.iter().all(|r| r.is_err()) {
            return results;
        }
        if let Err(e) = self.commit(shard, next).await {
            tracing::error!(error = %e, "delete topics failed");
            return results
                .into_iter()
                .map(|r| r.and(Err(DeleteTopicError::Storage(e.to_string()))))
                .collect();
        }
        results
    }
}

/// Partitions per shard in `image` (placement counts them to pick the least-loaded shard).
fn shard_loads(image: &MetadataImage, shards: usize) -> Vec<usize> {
    let mut load = vec![0usize; shards];
    for t in image.topics.values() {
        for p in &t.partitions {
            load[p.shard % shards] += 1;
        }
    }
    load
}

/// Places one new partition on the shard that owns the fewest (lowest id on ties).
fn place(load: &mut [usize]) -> PartitionMeta {
    let (shard, _) = load
        .iter()
        .enumerate()
        .min_by_key(|(i, n)| (**n, *i))
        .expect("at least one shard");
    load[shard] += 1;
    PartitionMeta { shard }
}

/// Applies one config operation to a topic's set configs, validating the result.
fn apply_config_op(configs: &mut BTreeMap<String, String>, op: ConfigOp) -> Result<(), String> {
    use crate::topic_config::{def, validate};
    let list_def = |name: &str| match def(name) {
        Some(d) if d.is_list() => Ok(d),
        Some(_) => Err(format!(
            "{name} is not a list: APPEND and SUBTRACT do not apply"
        )),
        None => Err(format!("unknown topic config name: {name}")),
    };
    match op {
        ConfigOp::Set(name, value) => {
            validate(&name, &value)?;
            configs.insert(name, value);
        }
        ConfigOp::Delete(name) => {
            if def(&name).is_none() {
                return Err(format!("unknown topic config name: {name}"));
            }
            configs.remove(&name);
        }
        ConfigOp::Append(name, value) => {
            list_def(&name)?;
            let mut items: Vec<String> = configs
                .get(&name)
                .map(|v| v.split(',').map(|i| i.trim().to_owned()).collect())
                .unwrap_or_default();
            items.retain(|i| !i.is_empty());
            for add in value.split(',').map(str::trim) {
                if !add.is_empty() && !items.iter().any(|i| i == add) {
                    items.push(add.to_owned());
                }
            }
            let joined = items.join(",");
            validate(&name, &joined)?;
            configs.insert(name, joined);
        }
        ConfigOp::Subtract(name, value) => {
            list_def(&name)?;
            let gone: Vec<&str> = value.split(',').map(str::trim).collect();
            let items: Vec<String> = configs
                .get(&name)
                .map(|v| {
                    v.split(',')
                        .map(|i| i.trim().to_owned())
                        .filter(|i| !i.is_empty() && !gone.contains(&i.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            if items.is_empty() {
                configs.remove(&name);
            } else {
                let joined = items.join(",");
                validate(&name, &joined)?;
                configs.insert(name, joined);
            }
        }
    }
    Ok(())
}
