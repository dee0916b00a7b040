//! Metadata (key 3): brokers, topics, partitions and leaders; auto-creates topics when
//! `auto.create.topics.enable` and the request allow it.

use std::collections::BTreeMap;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::str_bytes;
use crate::api::RequestContext;
use crate::controller::TopicSpec;
use crate::controller_client::ControllerClient;
use crate::group::OFFSETS_TOPIC;
use crate::metadata::{topic_name, validate_topic_name, MetadataImage, TopicMeta};

/// Kafka's "authorized operations not requested" marker.
pub(super) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// One partition as Metadata and DescribeTopicPartitions describe it.
pub(super) struct PartitionView {
    pub index: i32,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// Replicas on brokers that are fenced or not registered (Kafka's offline replicas).
    pub offline: Vec<BrokerId>,
    /// LEADER_NOT_AVAILABLE when the partition has no leader (its broker fenced), as Kafka
    /// answers; 0 otherwise.
    pub error_code: i16,
}

/// The partitions `indexes` of a topic (those past its partition count are left out), with
/// the leader, replicas and ISR of the metadata image (a pre-quorum partition is this
/// node's alone), and the leader epoch the controller gave the leader (the one its batches
/// carry).
pub(super) fn partitions<'a>(
    node: BrokerId,
    image: &'a MetadataImage,
    meta: &'a TopicMeta,
    indexes: std::ops::Range<usize>,
) -> impl Iterator<Item = PartitionView> + 'a {
    let end = indexes.end.min(meta.partitions.len());
    (indexes.start.min(end)..end).map(move |i| {
        let p = &meta.partitions[i];
        let ids = |v: &[i32]| -> Vec<BrokerId> {
            if v.is_empty() {
                vec![node]
            } else {
                v.iter().map(|b| BrokerId(*b)).collect()
            }
        };
        let leader = if p.replicas.is_empty() {
            node
        } else {
            BrokerId(p.leader)
        };
        let offline = p
            .replicas
            .iter()
            .filter(|b| image.brokers.get(b).is_none_or(|b| b.fenced))
            .map(|b| BrokerId(*b))
            .collect();
        PartitionView {
            index: i as i32,
            leader,
            leader_epoch: p.leader_epoch,
            replicas: ids(&p.replicas),
            isr: ids(&p.isr),
            offline,
            error_code: if leader.0 < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            },
        }
    })
}

pub async fn handle(ctx: &RequestContext, req: MetadataRequest) -> MetadataResponse {
    let config = &ctx.shard.config;
    let node = BrokerId(config.node_id);
    let mut image = ctx.shard.metadata();

    // Which topics: None (or an empty list before v1) means all.
    let wanted: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.api_version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.as_str().to_owned()), t.topic_id))
                .collect(),
        ),
    };

    let auto_create =
        config.auto_create_topics && (ctx.api_version < 4 || req.allow_auto_topic_creation);
    if let (Some(list), true) = (&wanted, auto_create) {
        let missing: Vec<TopicSpec> = list
            .iter()
            .filter_map(|(name, _)| name.as_ref())
            .filter(|n| !image.topics.contains_key(*n) && validate_topic_name(n).is_ok())
            // Kafka never auto-creates its internal topic from Metadata: the group
            // coordinator creates it with its own partition count and configs.
            .filter(|n| n.as_str() != OFFSETS_TOPIC)
            .map(|n| TopicSpec {
                name: n.clone(),
                num_partitions: -1,
                replication_factor: -1,
                configs: BTreeMap::new(),
            })
            .collect();
        if !missing.is_empty() {
            match ControllerClient::new(&ctx.shard)
                .create_topics(missing, false)
                .await
            {
                Ok(results) => {
                    for r in results.iter().filter_map(|r| r.as_ref().err()) {
                        tracing::warn!(error = %r, "auto-creating topic failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "auto-creating topics failed"),
            }
            image = ctx.shard.metadata();
        }
    }

    let describe = |name: &str, meta: &TopicMeta| {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(topic_name(name));
        t.topic_id = meta.uuid();
        t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
        t.is_internal = name == OFFSETS_TOPIC;
        t.partitions = partitions(node, &image, meta, 0..meta.partitions.len())
            .map(|v| {
                let mut p = MetadataResponsePartition::default();
                p.error_code = v.error_code;
                p.offline_replicas = v.offline;
                p.partition_index = v.index;
                p.leader_id = v.leader;
                p.leader_epoch = v.leader_epoch;
                p.replica_nodes = v.replicas;
                p.isr_nodes = v.isr;
                p
            })
            .collect();
        t
    };
    let error_topic = |name: Option<String>, id: Uuid, code: ResponseError| {
        let mut t = MetadataResponseTopic::default();
        t.name = name.map(|n| topic_name(&n));
        t.topic_id = id;
        t.error_code = code.code();
        t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
        t
    };

    let topics = match wanted {
        None => image.topics.iter().map(|(n, m)| describe(n, m)).collect(),
        Some(list) => list
            .into_iter()
            .map(|(name, id)| match name {
                Some(name) => match image.topics.get(&name) {
                    Some(meta) => describe(&name, meta),
                    None if validate_topic_name(&name).is_err() => error_topic(
                        Some(name),
                        Uuid::nil(),
                        ResponseError::InvalidTopicException,
                    ),
                    None => error_topic(
                        Some(name),
                        Uuid::nil(),
                        ResponseError::UnknownTopicOrPartition,
                    ),
                },
                None => match image.topic_by_id(id) {
                    Some((name, meta)) => describe(name, meta),
                    None => error_topic(None, id, ResponseError::UnknownTopicId),
                },
            })
            .collect(),
    };

    let brokers = super::live_brokers(&ctx.shard)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id);
            b.host = str_bytes(host);
            b.port = port;
            b.rack = rack.map(str_bytes);
            b
        })
        .collect();

    let mut resp = MetadataResponse::default();
    resp.brokers = brokers;
    resp.cluster_id = Some(str_bytes(config.cluster_id.clone()));
    resp.controller_id = node;
    resp.topics = topics;
    resp.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    resp
}
