//! What the group APIs share: the `__consumer_offsets` topic, created on first use with its
//! own partition count and configs (as Kafka creates it), and running work on the shard that
//! owns a group's partition of it.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;

use crate::api::RequestContext;
use crate::controller::{CreateTopicError, TopicSpec};
use crate::controller_client::ControllerClient;
use crate::group::{partition_for, Reply, OFFSETS_TOPIC};
use crate::metadata::MetadataImage;
use crate::shard::{GroupWriteError, Shard, ShardId};

/// The metadata image once `__consumer_offsets` exists (creating it if needed).
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<Arc<MetadataImage>, ResponseError> {
    let image = shard.metadata();
    if image.topics.contains_key(OFFSETS_TOPIC) {
        return Ok(image);
    }
    let configs: BTreeMap<String, String> = [
        ("cleanup.policy", "compact".to_owned()),
        (
            "segment.bytes",
            shard.config.offsets_topic_segment_bytes.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // offsets.topic.replication.factor, or what the cluster has: its registered brokers
    // (all of them unfenced first, so that a starting cluster does not settle for fewer).
    let wanted = shard.config.offsets_topic_replication_factor;
    let registered = image.brokers.len().max(1);
    let unfenced = image.brokers.values().filter(|b| !b.fenced).count();
    let factor = wanted
        .min(shard.config.replication_factor_max)
        .min(registered);
    if unfenced < factor {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    if factor < wanted {
        tracing::warn!(
            wanted,
            factor,
            registered,
            max = shard.config.replication_factor_max,
            "{OFFSETS_TOPIC} gets fewer replicas than offsets.topic.replication.factor"
        );
    }
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_owned(),
        num_partitions: shard.config.group.offsets_partitions,
        replication_factor: factor as i16,
        configs,
    };
    let created = ControllerClient::new(shard)
        .create_topics(vec![spec], false)
        .await;
    match created.as_ref().map(|r| r.first()) {
        Ok(Some(Ok(_))) => tracing::info!(topic = OFFSETS_TOPIC, "created"),
        Ok(Some(Err(CreateTopicError::AlreadyExists))) => {}
        Ok(Some(Err(e))) => {
            tracing::warn!(error = %e, "cannot create {OFFSETS_TOPIC}");
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        Ok(None) | Err(_) => return Err(ResponseError::CoordinatorNotAvailable),
    }
    let image = shard.metadata();
    if image.topics.contains_key(OFFSETS_TOPIC) {
        Ok(image)
    } else {
        Err(ResponseError::CoordinatorNotAvailable)
    }
}

/// The shard that holds `group`'s `__consumer_offsets` partition, and the partition.
pub async fn owner(shard: &Rc<Shard>, group: &str) -> Result<(ShardId, i32), ResponseError> {
    let image = ensure_offsets_topic(shard).await?;
    let partitions = image.topics[OFFSETS_TOPIC].partitions.len() as i32;
    let p = partition_for(group, partitions);
    // Another broker holds the group's offsets partition: NOT_COORDINATOR sends the client
    // back to FindCoordinator.
    shard
        .owner_of(OFFSETS_TOPIC, p)
        .map(|s| (s, p))
        .ok_or_else(|| match shard.not_served(OFFSETS_TOPIC, p) {
            ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
            _ => ResponseError::CoordinatorNotAvailable,
        })
}

/// Runs `f` on the shard that coordinates `group`.
pub async fn on_coordinator<T, F, Fut>(
    ctx: &RequestContext,
    group: &str,
    f: F,
) -> Result<T, ResponseError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (target, partition) = owner(&ctx.shard, group).await?;
    // That shard coordinates the group only while it leads the partition, with its groups
    // loaded (a follower's replica answers NOT_COORDINATOR).
    ctx.shard
        .invoke_on(target, move |s| async move {
            s.coordinator_ready(partition)?;
            Ok(f(s).await)
        })
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?
}

/// Waits for a coordinator answer; a dropped waiter (the coordinator stopped) gets
/// `gone()`.
pub async fn settle<T>(reply: Reply<T>, gone: impl FnOnce() -> T) -> T {
    match reply {
        Reply::Now(t) => t,
        Reply::Later(rx) => rx.await.unwrap_or_else(|_| gone()),
    }
}

/// How Kafka answers a group request whose `__consumer_offsets` write failed (its
/// GroupMetadataManager's mapping).
pub fn append_error(e: &GroupWriteError) -> ResponseError {
    match e {
        GroupWriteError::Storage(storage::StorageError::BatchTooLarge { .. }) => {
            ResponseError::InvalidCommitOffsetSize
        }
        GroupWriteError::Storage(
            storage::StorageError::Closed { .. }
            | storage::StorageError::Offline { .. }
            | storage::StorageError::Io { .. },
        )
        | GroupWriteError::NotLeader => ResponseError::NotCoordinator,
        GroupWriteError::NotEnoughReplicas(_) => ResponseError::CoordinatorNotAvailable,
        GroupWriteError::TimedOut => ResponseError::RequestTimedOut,
        GroupWriteError::Storage(_) => ResponseError::UnknownServerError,
    }
}
