//! Fetch (key 1): reads stored batches from each partition's owning shard, honouring
//! `max_bytes`, `partition_max_bytes`, `min_bytes` and `max_wait_ms` (a long-poll that wakes
//! when any requested partition's high watermark moves). Returned bytes are the stored
//! batches; nothing is decoded.
//!
//! From v13 topics are named by id (KIP-516): an id that names no topic gets
//! UNKNOWN_TOPIC_ID. The later versions add only tagged fields that a consumer's fetch does
//! not need (v15 ReplicaState, v16 NodeEndpoints, v17 ReplicaDirectoryId, v18 the
//! follower's HighWatermark) and are served the same way.
//!
//! Fetch sessions (KIP-227) are not kept: every response has session id 0, which tells the
//! client to send full fetch requests.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use replication::{Isolation, ReplicaFetch, ReplicaFetchError};
use storage::Offset;
use uuid::Uuid;

use crate::api::RequestContext;
use crate::errors::storage_error;
use crate::shard::{Shard, ShardId};

#[derive(Clone)]
struct Item {
    topic: String,
    /// The request named the topic by an id that names no topic (v13+).
    unknown_id: bool,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    isolation: Isolation,
    /// The leader epoch the consumer knows (Fetch v9+; -1: none).
    current_leader_epoch: i32,
    /// A follower's fetch (replica id >= 0): read to the log end, progress recorded.
    replica: Option<BrokerId>,
    /// The epoch of the follower's last batch (Fetch v12+; -1: none).
    last_fetched_epoch: i32,
}

#[derive(Default)]
struct Outcome {
    error: Option<ResponseError>,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    records: Bytes,
    /// A follower's log diverged here: (epoch, end offset) (Fetch v12+).
    diverging: Option<(i32, i64)>,
}

pub async fn handle(ctx: &RequestContext, req: FetchRequest) -> FetchResponse {
    let started = Instant::now();
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(Duration::from_millis(
        ctx.shard.config.fetch_max_wait_ms_max,
    ));
    let deadline = started + wait;
    // The broker's `fetch.max.bytes` caps what a client may ask for, as in Kafka.
    let fetch_max = ctx.shard.config.fetch_max_bytes;
    let max_bytes = if ctx.api_version >= 3 {
        (req.max_bytes.max(0) as usize).min(fetch_max)
    } else {
        fetch_max
    };
    // The response's bytes are reserved from the shard's budget before anything is read and
    // held until the response is written (one batch may pass `max_bytes`, KIP-74).
    match ctx
        .shard
        .response_memory
        .acquire_static_permit(max_bytes.max(1) as u64)
        .await
    {
        Ok(permit) => ctx.held.borrow_mut().push(permit),
        Err(_) => return FetchResponse::default(),
    }
    let min_bytes = req.min_bytes.max(0) as usize;

    // Fetch v4+ carries the consumer's isolation.level (1: read_committed).
    let isolation = if req.isolation_level == 1 {
        Isolation::Committed
    } else {
        Isolation::HighWatermark
    };
    // A follower names itself: ReplicaState (v15+) or replica_id (older versions).
    let replica_id = if ctx.api_version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(BrokerId(replica_id));
    let mut topics: Vec<(TopicName, Uuid, Vec<i32>)> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let image = ctx.shard.metadata();
    for t in req.topics {
        let (name, unknown_id) = if ctx.api_version >= 13 {
            match image.topic_by_id(t.topic_id) {
                Some((name, _)) => (name.clone(), false),
                None => (String::new(), true),
            }
        } else {
            (t.topic.0.as_str().to_owned(), false)
        };
        let mut parts = Vec::new();
        for p in t.partitions {
            parts.push(p.partition);
            items.push(Item {
                topic: name.clone(),
                unknown_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: (p.partition_max_bytes.max(0) as usize).min(fetch_max),
                isolation,
                current_leader_epoch: p.current_leader_epoch,
                replica,
                last_fetched_epoch: p.last_fetched_epoch,
            });
        }
        topics.push((t.topic, t.topic_id, parts));
    }
    drop(image);

    let outcomes = loop {
        let mut outcomes = read_all(&ctx.shard, &items).await;
        let total = trim_to_max_bytes(&mut outcomes, max_bytes);
        let errored = outcomes.iter().any(|o| o.error.is_some());
        if total >= min_bytes || errored || Instant::now() >= deadline || ctx.shard.is_stopping() {
            break outcomes;
        }
        wait_for_data(&ctx.shard, &items, deadline).await;
        if Instant::now() >= deadline {
            let mut outcomes = read_all(&ctx.shard, &items).await;
            trim_to_max_bytes(&mut outcomes, max_bytes);
            break outcomes;
        }
    };

    let mut outcomes = outcomes.into_iter();
    let mut items = items.iter();
    // KIP-951: partitions led elsewhere name their leader (Fetch v12+) and its endpoint
    // (v16+); older versions leave the tagged fields out.
    let mut endpoints = BTreeMap::new();
    let mut resp = FetchResponse::default();
    resp.responses = topics
        .into_iter()
        .map(|(name, id, parts)| {
            let mut tr = FetchableTopicResponse::default();
            tr.topic = name;
            tr.topic_id = id;
            tr.partitions = parts
                .into_iter()
                .map(|index| {
                    let o = outcomes.next().unwrap_or_default();
                    let item = items.next();
                    let mut pd = PartitionData::default();
                    if o.error == Some(ResponseError::NotLeaderOrFollower) {
                        if let Some((id, epoch, host, port, rack)) = item
                            .and_then(|i| super::current_leader(&ctx.shard, &i.topic, i.partition))
                        {
                            pd.current_leader.leader_id = BrokerId(id);
                            pd.current_leader.leader_epoch = epoch;
                            endpoints.entry(id).or_insert_with(|| {
                                let mut e = NodeEndpoint::default();
                                e.node_id = BrokerId(id);
                                e.host = super::str_bytes(host);
                                e.port = port;
                                e.rack = rack.map(super::str_bytes);
                                e
                            });
                        }
                    }
                    pd.partition_index = index;
                    pd.error_code = o.error.map(|e| e.code()).unwrap_or(0);
                    pd.high_watermark = o.high_watermark;
                    pd.last_stable_offset = o.last_stable_offset;
                    pd.log_start_offset = o.log_start_offset;
                    pd.preferred_read_replica = BrokerId(-1);
                    if let Some((epoch, end_offset)) = o.diverging {
                        pd.diverging_epoch.epoch = epoch;
                        pd.diverging_epoch.end_offset = end_offset;
                    }
                    pd.records = Some(o.records);
                    pd
                })
                .collect();
            tr
        })
        .collect();
    resp.node_endpoints = endpoints.into_values().collect();
    resp
}

/// Keeps whole partitions in request order while they fit in `max_bytes`; the first
/// non-empty one is always kept so that a large batch cannot stall a consumer (KIP-74).
fn trim_to_max_bytes(outcomes: &mut [Outcome], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for o in outcomes.iter_mut() {
        let len = o.records.len();
        if len == 0 {
            continue;
        }
        if total > 0 && total + len > max_bytes {
            o.records = Bytes::new();
            continue;
        }
        total += len;
    }
    total
}

/// Requested partitions per owning shard, each with its index in the request.
type ShardGroups = BTreeMap<usize, Vec<(usize, Item)>>;

/// Groups items by owning shard; also returns the indexes of unknown partitions.
fn group_by_shard(shard: &Shard, items: &[Item]) -> (ShardGroups, Vec<usize>) {
    let mut groups = ShardGroups::new();
    let mut unknown = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match shard.owner_of(&item.topic, item.partition).map(|s| s.0) {
            Some(s) => groups.entry(s).or_default().push((i, item.clone())),
            None => unknown.push(i),
        }
    }
    (groups, unknown)
}

async fn read_all(shard: &Rc<Shard>, items: &[Item]) -> Vec<Outcome> {
    let (groups, unknown) = group_by_shard(shard, items);
    let mut outcomes: Vec<Outcome> = items.iter().map(|_| Outcome::default()).collect();
    for i in unknown {
        outcomes[i].error = Some(if items[i].unknown_id {
            ResponseError::UnknownTopicId
        } else {
            shard.not_served(&items[i].topic, items[i].partition)
        });
        outcomes[i].high_watermark = -1;
        outcomes[i].last_stable_offset = -1;
        outcomes[i].log_start_offset = -1;
    }
    let calls = groups.into_iter().map(|(target, group)| {
        let local = shard.clone();
        async move {
            let slots: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
            let items: Vec<Item> = group.into_iter().map(|(_, it)| it).collect();
            let r = local
                .invoke_on(ShardId(target), move |s| read_on_shard(s, items))
                .await;
            (slots, r)
        }
    });
    for (slots, result) in futures::future::join_all(calls).await {
        match result {
            Ok(v) => {
                for (slot, o) in slots.into_iter().zip(v) {
                    outcomes[slot] = o;
                }
            }
            Err(_) => {
                for slot in slots {
                    outcomes[slot].error = Some(ResponseError::NotLeaderOrFollower);
                }
            }
        }
    }
    outcomes
}

async fn read_on_shard(shard: Rc<Shard>, items: Vec<Item>) -> Vec<Outcome> {
    let reads = items.into_iter().map(|item| {
        let shard = shard.clone();
        async move {
            if let Some(follower) = item.replica {
                return read_for_follower(&shard, &item, follower).await;
            }
            let Some(p) = shard.leader_partition(&item.topic, item.partition) else {
                return Outcome {
                    error: Some(ResponseError::NotLeaderOrFollower),
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    ..Outcome::default()
                };
            };
            if let Some(code) = super::leader_epoch_error(item.current_leader_epoch, p.leader_epoch()) {
                return Outcome {
                    error: Some(code),
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    ..Outcome::default()
                };
            }
            let offset = Offset(item.fetch_offset);
            match p.read(offset, item.partition_max_bytes, true, item.isolation).await {
                Ok(r) => Outcome {
                    error: None,
                    high_watermark: r.high_watermark.0,
                    last_stable_offset: r.last_stable_offset.0,
                    log_start_offset: r.log_start_offset.0,
                    records: r.records,
                    diverging: None,
                },
                Err(e) => {
                    let code = storage_error(&e);
                    if code != ResponseError::OffsetOutOfRange {
                        tracing::warn!(topic = %item.topic, partition = item.partition, error = %e, "fetch failed");
                    }
                    Outcome {
                        error: Some(code),
                        high_watermark: p.high_watermark().0,
                        last_stable_offset: p.last_stable_offset().0,
                        log_start_offset: p.log_start_offset().0,
                        records: Bytes::new(),
                        diverging: None,
                    }
                }
            }
        }
    });
    futures::future::join_all(reads).await
}

/// A follower's fetch of one partition on its leader: the follower's progress moves the
/// high watermark; its log is checked against this leader's epochs (a diverging one gets
/// where to truncate, no records); otherwise it reads to the log end.
async fn read_for_follower(shard: &Rc<Shard>, item: &Item, follower: BrokerId) -> Outcome {
    let failed = |code: ResponseError| Outcome {
        error: Some(code),
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        ..Outcome::default()
    };
    let Some(p) = shard.partition(&item.topic, item.partition) else {
        return failed(ResponseError::NotLeaderOrFollower);
    };
    let last =
        (item.last_fetched_epoch >= 0).then_some(replication::LeaderEpoch(item.last_fetched_epoch));
    let fetch = p.replica_fetch(
        replication::BrokerId(follower.0),
        item.current_leader_epoch,
        Offset(item.fetch_offset),
        last,
        super::now_ms(),
    );
    let done = |hw: Offset| Outcome {
        error: None,
        high_watermark: hw.0,
        last_stable_offset: hw.0,
        log_start_offset: p.log_start_offset().0,
        ..Outcome::default()
    };
    match fetch {
        Err(e) => failed(match e {
            ReplicaFetchError::NotLeader | ReplicaFetchError::NotReplica => {
                ResponseError::NotLeaderOrFollower
            }
            ReplicaFetchError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
            ReplicaFetchError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
        }),
        Ok(ReplicaFetch::Diverging {
            diverging,
            high_watermark,
        }) => Outcome {
            diverging: Some((diverging.epoch.0, diverging.end_offset.0)),
            ..done(high_watermark)
        },
        Ok(ReplicaFetch::Read { high_watermark }) => {
            match p
                .read_for_follower(Offset(item.fetch_offset), item.partition_max_bytes)
                .await
            {
                Ok(records) => Outcome {
                    records,
                    ..done(high_watermark)
                },
                Err(e) => Outcome {
                    error: Some(storage_error(&e)),
                    ..done(high_watermark)
                },
            }
        }
    }
}

/// Returns when any requested partition has data past its fetch offset, or at `deadline`.
async fn wait_for_data(shard: &Rc<Shard>, items: &[Item], deadline: Instant) {
    let (groups, _) = group_by_shard(shard, items);
    let waits: Vec<_> = groups
        .into_iter()
        .map(|(target, group)| {
            let local = shard.clone();
            let watch: Vec<Watch> = group
                .into_iter()
                .map(|(_, it)| {
                    (
                        it.topic,
                        it.partition,
                        it.fetch_offset,
                        it.replica.is_some(),
                    )
                })
                .collect();
            Box::pin(async move {
                let _ = local
                    .invoke_on(ShardId(target), move |s| wait_on_shard(s, watch, deadline))
                    .await;
            })
        })
        .collect();
    if waits.is_empty() {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        return;
    }
    futures::future::select_all(waits).await;
}

/// A partition a fetch waits on: topic, partition, fetch offset, and whether a follower
/// waits (for this node's durable offset to pass it, not the high watermark).
type Watch = (String, i32, i64, bool);

async fn wait_on_shard(shard: Rc<Shard>, watch: Vec<Watch>, deadline: Instant) {
    let mut listeners = Vec::new();
    for (topic, partition, offset, follower) in watch {
        if let Some(p) = shard.partition(&topic, partition) {
            // Registered before the check, so an advance in between is not missed.
            let listener = Box::pin(p.listen_visible());
            // A follower reads what is durable here; a consumer what is committed.
            let reached = if follower {
                p.durable_offset()
            } else {
                p.high_watermark()
            };
            if reached.0 > offset {
                return;
            }
            listeners.push(listener);
        }
    }
    let timeout = Box::pin(glommio::timer::sleep(
        deadline.saturating_duration_since(Instant::now()),
    ));
    if listeners.is_empty() {
        timeout.await;
        return;
    }
    futures::future::select(futures::future::select_all(listeners), timeout).await;
}
