//! Request routing: the table of supported API versions and the dispatcher that hands each
//! decoded request to its handler module. No API logic lives here.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use protocol::frame::{encode_response, RequestEnvelope};

use crate::handlers;
use crate::shard::Shard;

/// One advertised API and its version range.
#[derive(Debug, Clone, Copy)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// What Sluice advertises in ApiVersions. Produce, Fetch and Metadata advertise from v0
/// because librdkafka derives features (compression among them) from those minimums;
/// versions older than the codec can decode (Produce < 3, Fetch < 4) close the connection.
///
/// The maximums are Kafka 4.1's for every API Sluice serves (clients that infer the broker
/// release from them, kafka-python and aiokafka among them, see 4.1), each checked against
/// what its handler does with the fields that version adds: Produce v12 (no new field) and
/// v13 (topics by id), Fetch v13 (topics by id) to v18 (tagged fields for followers),
/// ListOffsets v8-v10 (tiered-storage timestamps and timeout), Metadata v13 (a top-level
/// error code), FindCoordinator v5-v6 (no new field), OffsetCommit/OffsetFetch v9 (member
/// epochs, unused by classic groups), DescribeGroups v6 (GROUP_ID_NOT_FOUND),
/// InitProducerId v5 (no new field), DescribeCluster v2 (fenced brokers: none here).
/// The minimums stay what Sluice accepted before, although Kafka 4.0 dropped some of them
/// (KIP-896), so that older clients keep working.
pub const SUPPORTED_APIS: &[ApiRange] = &[
    ApiRange {
        key: ApiKey::Produce,
        min: 0,
        max: 13,
    },
    ApiRange {
        key: ApiKey::Fetch,
        min: 0,
        max: 18,
    },
    ApiRange {
        key: ApiKey::ListOffsets,
        min: 1,
        max: 10,
    },
    ApiRange {
        key: ApiKey::Metadata,
        min: 0,
        max: 13,
    },
    ApiRange {
        key: ApiKey::FindCoordinator,
        min: 0,
        max: 6,
    },
    ApiRange {
        key: ApiKey::ApiVersions,
        min: 0,
        max: 4,
    },
    ApiRange {
        key: ApiKey::CreateTopics,
        min: 2,
        max: 7,
    },
    ApiRange {
        key: ApiKey::DeleteTopics,
        min: 1,
        max: 6,
    },
    ApiRange {
        key: ApiKey::InitProducerId,
        min: 0,
        max: 5,
    },
    ApiRange {
        key: ApiKey::JoinGroup,
        min: 0,
        max: 9,
    },
    ApiRange {
        key: ApiKey::SyncGroup,
        min: 0,
        max: 5,
    },
    ApiRange {
        key: ApiKey::Heartbeat,
        min: 0,
        max: 4,
    },
    ApiRange {
        key: ApiKey::LeaveGroup,
        min: 0,
        max: 5,
    },
    // v9 changes no field: it lets a KIP-848 group check member epochs; a classic group
    // takes it as v8, as Kafka 4.x does. v10 (topic ids) is Kafka 4.2's.
    ApiRange {
        key: ApiKey::OffsetCommit,
        min: 2,
        max: 9,
    },
    ApiRange {
        key: ApiKey::OffsetFetch,
        min: 1,
        max: 9,
    },
    ApiRange {
        key: ApiKey::DescribeGroups,
        min: 0,
        max: 6,
    },
    ApiRange {
        key: ApiKey::ListGroups,
        min: 0,
        max: 5,
    },
    ApiRange {
        key: ApiKey::DeleteGroups,
        min: 0,
        max: 2,
    },
    ApiRange {
        key: ApiKey::OffsetDelete,
        min: 0,
        max: 0,
    },
    ApiRange {
        key: ApiKey::CreatePartitions,
        min: 0,
        max: 3,
    },
    ApiRange {
        key: ApiKey::DescribeConfigs,
        min: 1,
        max: 4,
    },
    ApiRange {
        key: ApiKey::AlterConfigs,
        min: 0,
        max: 2,
    },
    ApiRange {
        key: ApiKey::IncrementalAlterConfigs,
        min: 0,
        max: 1,
    },
    ApiRange {
        key: ApiKey::DeleteRecords,
        min: 0,
        max: 2,
    },
    ApiRange {
        key: ApiKey::OffsetForLeaderEpoch,
        min: 2,
        max: 4,
    },
    ApiRange {
        key: ApiKey::DescribeCluster,
        min: 0,
        max: 2,
    },
    ApiRange {
        key: ApiKey::DescribeLogDirs,
        min: 1,
        max: 4,
    },
    ApiRange {
        key: ApiKey::DescribeQuorum,
        min: 0,
        max: 2,
    },
    ApiRange {
        key: ApiKey::ElectLeaders,
        min: 0,
        max: 2,
    },
    ApiRange {
        key: ApiKey::DescribeTopicPartitions,
        min: 0,
        max: 0,
    },
];

pub fn supported_range(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED_APIS.iter().copied().find(|r| r.key == key)
}

/// Whether the codec can decode this version (the advertised range may start lower).
fn decodable(key: ApiKey, version: i16) -> bool {
    let codec = key.valid_versions();
    version >= codec.min && version <= codec.max
}

/// What to do after a request.
pub enum Reply {
    Response(Bytes),
    /// acks=0 produce: nothing is sent back.
    Nothing,
    /// Kafka closes the connection on requests it cannot parse or does not support.
    Close(String),
}

/// Per-request context handed to handlers.
/// Tells the connection when it may read its next request: `true` once this request's
/// effects are ordered (a Produce's records appended, durability still pending), `false`
/// when the connection must close. The connection sends it itself when the request
/// completes if the handler did not.
pub type Ordered = Rc<std::cell::Cell<Option<futures::channel::oneshot::Sender<bool>>>>;

/// Reservations a handler makes for its reply (a Fetch's share of
/// `sluice.shard.response.memory.bytes`); the connection keeps them until the reply is
/// written.
pub type Held = Rc<std::cell::RefCell<Vec<glommio::sync::StaticPermit>>>;

pub struct RequestContext {
    pub shard: Rc<Shard>,
    pub ordered: Ordered,
    /// Memory a handler reserved for its reply, held until the reply is written.
    pub held: Held,
    pub api_version: i16,
    /// The request header's client id ("" when null).
    pub client_id: String,
    /// The peer address as Kafka reports it in DescribeGroups: `/<ip>`.
    pub client_host: String,
}

impl RequestContext {
    /// Lets the connection read its next request while this one finishes.
    pub fn release_order(&self) {
        if let Some(tx) = self.ordered.take() {
            let _ = tx.send(true);
        }
    }
}

pub async fn dispatch(
    shard: &Rc<Shard>,
    env: RequestEnvelope,
    peer: &str,
    ordered: Ordered,
    held: Held,
) -> Reply {
    let supported = supported_range(env.api_key)
        .is_some_and(|r| env.api_version >= r.min && env.api_version <= r.max);
    if !supported {
        if env.api_key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with the error and our ranges, so the client can retry.
            let body = ResponseKind::ApiVersions(handlers::api_versions::unsupported());
            return encode(ApiKey::ApiVersions, 0, env.correlation_id, &body);
        }
        return Reply::Close(format!(
            "unsupported version {} of {:?}",
            env.api_version, env.api_key
        ));
    }
    if !decodable(env.api_key, env.api_version) {
        return Reply::Close(format!(
            "{:?} v{} is advertised for feature detection but not served",
            env.api_key, env.api_version
        ));
    }
    let request = match env.decode_body() {
        Ok(r) => r,
        Err(e) => return Reply::Close(e.to_string()),
    };
    let ip = peer.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(peer);
    let ctx = RequestContext {
        shard: shard.clone(),
        ordered,
        held,
        api_version: env.api_version,
        client_id: env.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", ip.trim_start_matches('[').trim_end_matches(']')),
    };
    let response = match request {
        RequestKind::ApiVersions(r) => {
            ResponseKind::ApiVersions(handlers::api_versions::handle(&ctx, r))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(handlers::metadata::handle(&ctx, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(handlers::create_topics::handle(&ctx, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(handlers::delete_topics::handle(&ctx, r).await)
        }
        RequestKind::Produce(r) => match handlers::produce::handle(&ctx, r).await {
            Some(resp) => ResponseKind::Produce(resp),
            None => return Reply::Nothing,
        },
        RequestKind::Fetch(r) => ResponseKind::Fetch(handlers::fetch::handle(&ctx, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(handlers::list_offsets::handle(&ctx, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(handlers::init_producer_id::handle(&ctx, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(handlers::find_coordinator::handle(&ctx, r).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(handlers::join_group::handle(&ctx, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(handlers::sync_group::handle(&ctx, r).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(handlers::heartbeat::handle(&ctx, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(handlers::leave_group::handle(&ctx, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(handlers::offset_commit::handle(&ctx, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(handlers::offset_fetch::handle(&ctx, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(handlers::describe_groups::handle(&ctx, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(handlers::list_groups::handle(&ctx, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(handlers::delete_groups::handle(&ctx, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(handlers::delete_records::handle(&ctx, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            handlers::offset_for_leader_epoch::handle(&ctx, r).await,
        ),
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(handlers::describe_cluster::handle(&ctx, r))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(handlers::elect_leaders::handle(&ctx, r).await)
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(handlers::describe_quorum::handle(&ctx, r).await)
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(handlers::describe_log_dirs::handle(&ctx, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(handlers::describe_configs::handle(&ctx, r).await)
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(handlers::alter_configs::handle(&ctx, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            handlers::alter_configs::handle_incremental(&ctx, r).await,
        ),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(handlers::create_partitions::handle(&ctx, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(handlers::offset_delete::handle(&ctx, r).await)
        }
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            handlers::describe_topic_partitions::handle(&ctx, r),
        ),
        other => {
            return Reply::Close(format!(
                "no handler for {:?}",
                std::mem::discriminant(&other)
            ));
        }
    };
    encode(env.api_key, env.api_version, env.correlation_id, &response)
}

fn encode(key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind) -> Reply {
    match encode_response(key, version, correlation_id, body) {
        Ok(bytes) => Reply::Response(bytes),
        Err(e) => Reply::Close(e.to_string()),
    }
}
