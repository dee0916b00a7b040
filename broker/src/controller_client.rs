//! The one way handlers reach the controller.
//!
//! The controller runs on shard 0 of this node, so a call is an `invoke_on` to that
//! shard; once the metadata quorum spans nodes it becomes a forward to the active
//! controller, wherever it runs, and only this module changes. Every call can fail to reach the controller (its
//! shard stopped, or this node runs none): that is a [`ControllerUnavailable`] for the
//! caller to answer with a Kafka code (see `errors.rs`), never a panic.

use std::future::Future;
use std::ops::Range;
use std::rc::Rc;

use crate::controller::{
    AlterConfigsError, ConfigOp, Controller, CreatePartitionsError, CreateTopicError,
    DeleteTopicError, Elected, IsrChangeAsk, TopicSpec,
};
use crate::metadata::TopicMeta;
use crate::shard::{Shard, ShardId};

/// The shard that runs this node's controller.
pub const CONTROLLER_SHARD: ShardId = ShardId(0);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ControllerUnavailable {
    #[error("the controller is not running (shard {0} has stopped)")]
    Stopped(usize),
    #[error("shard {0} runs no controller")]
    NotHere(usize),
}

/// A producer-id block could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProducerIdsError {
    #[error(transparent)]
    Unavailable(#[from] ControllerUnavailable),
    #[error("producer ids could not be allocated: {0}")]
    Failed(String),
}

/// Calls the controller from any shard.
pub struct ControllerClient<'a> {
    shard: &'a Shard,
}

impl<'a> ControllerClient<'a> {
    pub fn new(shard: &'a Shard) -> ControllerClient<'a> {
        ControllerClient { shard }
    }

    /// A partition leader's ISR change: the ISR committed, or why it was refused.
    pub async fn alter_partition(
        &self,
        ask: IsrChangeAsk,
    ) -> Result<Result<Vec<i32>, String>, ControllerUnavailable> {
        self.call(move |c| async move { c.alter_partition(ask).await })
            .await
    }

    /// Leader elections (ElectLeaders): one outcome per partition named (per partition
    /// that needed one when none are named), or why the controller could not decide.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Result<Vec<Elected>, crate::metadata_log::CommitError>, ControllerUnavailable> {
        self.call(move |c| async move { c.elect_leaders(unclean, partitions).await })
            .await
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, ControllerUnavailable>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Controller>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.shard
            .invoke_on(CONTROLLER_SHARD, move |s| async move {
                match s.controller.clone() {
                    Some(c) => Ok(f(c).await),
                    None => Err(ControllerUnavailable::NotHere(s.id.0)),
                }
            })
            .await
            .map_err(|gone| ControllerUnavailable::Stopped(gone.0))?
    }

    /// Creates topics (or only checks them, `validate_only`); one result per spec, in order.
    pub async fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Result<Vec<Result<TopicMeta, CreateTopicError>>, ControllerUnavailable> {
        self.call(move |c| async move { c.create_topics(specs, validate_only).await })
            .await
    }

    /// Deletes topics; one result per name, in order.
    pub async fn delete_topics(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<Result<(), DeleteTopicError>>, ControllerUnavailable> {
        self.call(move |c| async move { c.delete_topics(names).await })
            .await
    }

    /// Raises topics' partition counts; one result per (topic, new count), in order.
    pub async fn create_partitions(
        &self,
        asks: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Result<Vec<Result<(), CreatePartitionsError>>, ControllerUnavailable> {
        self.call(move |c| async move { c.create_partitions(asks, validate_only).await })
            .await
    }

    /// Changes topic configs: per topic, whether to replace all, and the operations.
    pub async fn alter_topic_configs(
        &self,
        asks: Vec<(String, bool, Vec<ConfigOp>)>,
        validate_only: bool,
    ) -> Result<Vec<Result<(), AlterConfigsError>>, ControllerUnavailable> {
        self.call(move |c| async move { c.alter_topic_configs(asks, validate_only).await })
            .await
    }

    /// The next block of producer ids, persisted and published before it is returned.
    pub async fn allocate_producer_ids(&self) -> Result<Range<i64>, ProducerIdsError> {
        self.call(|c| async move {
            c.allocate_producer_ids()
                .await
                .map_err(|e| ProducerIdsError::Failed(format!("{e:#}")))
        })
        .await?
    }

    /// The metadata quorum as the active controller sees it.
    pub async fn describe_quorum(
        &self,
    ) -> Result<
        Result<crate::controller::QuorumState, crate::metadata_log::CommitError>,
        ControllerUnavailable,
    > {
        self.call(|c| async move { c.describe_quorum().await })
            .await
    }
}
