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
use crate::shard::{Shard, ShardId};

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
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_owned(),
        num_partitions: shard.config.group.offsets_partitions,
        // One replica until group coordinators follow the leadership of their partition
        // (offsets.topic.replication.factor), whatever default.replication.factor says.
        replication_factor: 1,
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

/// The shard that coordinates `group`.
pub async fn owner(shard: &Rc<Shard>, group: &str) -> Result<ShardId, ResponseError> {
    let image = ensure_offsets_topic(shard).await?;
    let partitions = image.topics[OFFSETS_TOPIC].partitions.len() as i32;
    let p = partition_for(group, partitions);
    // Another broker leads the group's offsets partition: NOT_COORDINATOR sends the client
    // back to FindCoordinator.
    shard
        .owner_of(OFFSETS_TOPIC, p)
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
    let target = owner(&ctx.shard, group).await?;
    ctx.shard
        .invoke_on(target, f)
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)
}

/// Waits for a coordinator answer; a dropped waiter (the coordinator stopped) gets
/// `gone()`.
pub async fn settle<T>(reply: Reply<T>, gone: impl FnOnce() -> T) -> T {
    match reply {
        Reply::Now(t) => t,
        Reply::Later(rx) => rx.await.unwrap_or_else(|_| gone()),
    }
}

/// How Kafka answers a group request whose `__consumer_offsets` append failed.
pub fn append_error(e: &storage::StorageError) -> ResponseError {
    match e {
        storage::StorageError::BatchTooLarge { .. } => ResponseError::InvalidCommitOffsetSize,
        storage::StorageError::Closed { .. }
        | storage::StorageError::Offline { .. }
        | storage::StorageError::Io { .. } => ResponseError::NotCoordinator,
        _ => ResponseError::UnknownServerError,
    }
}
