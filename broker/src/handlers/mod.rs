//! One module per Kafka API. Each takes the decoded request and returns the response body;
//! partition work runs on the owning shard through `Shard::invoke_on`.

pub mod alter_configs;
pub mod api_versions;
pub mod coordinator;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use kafka_protocol::protocol::StrBytes;

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Milliseconds since the Unix epoch: read once per request at the handler edge.
/// Where clients reach broker `id`: this broker's own advertised listener (its port once
/// bound, when configured as 0), another's from its registration.
pub(crate) fn endpoint(shard: &crate::shard::Shard, id: i32) -> Option<(String, i32)> {
    let c = &shard.config;
    if id == c.node_id {
        let port = match c.advertised_port {
            0 => shard.listen_port.get() as i32,
            p => p as i32,
        };
        return Some((c.advertised_host.clone(), port));
    }
    let image = shard.metadata();
    let b = image.brokers.get(&id)?;
    Some((b.host.clone(), b.port as i32))
}

/// Kafka's check of the leader epoch a client knows (`current_leader_epoch`, -1: none)
/// against the partition's: FENCED_LEADER_EPOCH when the client's is older (its metadata
/// is stale), UNKNOWN_LEADER_EPOCH when it is newer (this broker has not applied it yet).
pub(crate) fn leader_epoch_error(
    known: i32,
    current: replication::LeaderEpoch,
) -> Option<kafka_protocol::ResponseError> {
    if known < 0 || known == current.0 {
        None
    } else if known < current.0 {
        Some(kafka_protocol::ResponseError::FencedLeaderEpoch)
    } else {
        Some(kafka_protocol::ResponseError::UnknownLeaderEpoch)
    }
}

/// KIP-951: the leader to name in a NOT_LEADER_OR_FOLLOWER answer for a partition this
/// broker does not serve, with its endpoint (host, port, rack); `None` when the partition
/// has no live leader (offline, or its leader fenced). The epoch is the one Metadata
/// reports.
pub(crate) fn current_leader(
    shard: &crate::shard::Shard,
    topic: &str,
    partition: i32,
) -> Option<(i32, i32, String, i32, Option<String>)> {
    let image = shard.metadata();
    let p = image
        .topics
        .get(topic)?
        .partitions
        .get(usize::try_from(partition).ok()?)?;
    let b = image.brokers.get(&p.leader).filter(|b| !b.fenced)?;
    let (host, port) = endpoint(shard, p.leader)?;
    Some((p.leader, p.leader_epoch, host, port, b.rack.clone()))
}

/// The brokers clients are told of: the unfenced registered ones, this broker always
/// (before it is registered too), by id.
pub(crate) fn live_brokers(shard: &crate::shard::Shard) -> Vec<(i32, String, i32, Option<String>)> {
    let image = shard.metadata();
    let me = shard.config.node_id;
    let mut ids: Vec<i32> = image
        .brokers
        .iter()
        .filter(|(id, b)| !b.fenced || **id == me)
        .map(|(id, _)| *id)
        .collect();
    if !ids.contains(&me) {
        ids.push(me);
        ids.sort_unstable();
    }
    ids.into_iter()
        .filter_map(|id| {
            let (host, port) = endpoint(shard, id)?;
            let rack = if id == me {
                shard.config.rack.clone()
            } else {
                image.brokers.get(&id).and_then(|b| b.rack.clone())
            };
            Some((id, host, port, rack))
        })
        .collect()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The error code of an outcome (0 for success).
pub(crate) fn code(r: Result<(), kafka_protocol::ResponseError>) -> i16 {
    r.err().map_or(0, |e| e.code())
}
