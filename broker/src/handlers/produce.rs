//! Produce (key 0): partitions are grouped by owning shard, appended there concurrently, and
//! acknowledged once their bytes are fdatasync'ed (acks=1 and acks=-1 alike on one node).
//! Once every partition's records are appended (offsets assigned, not yet durable) the
//! connection may read its next request, so pipelined produce requests share sync rounds;
//! their order on each partition is the connection's order. acks=0 sends no response; its
//! request still holds its memory until the flush, and the connection's pipeline depth
//! bounds how many such requests are in progress.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::records::Compression as Codec;
use kafka_protocol::ResponseError;
use protocol::record_batch::{BatchIter, Compression};
use replication::Append;

use super::{now_ms, str_bytes};
use crate::api::RequestContext;
use crate::errors::{batch_error, client_batch_error, storage_error};
use crate::group::OFFSETS_TOPIC;
use crate::shard::{Shard, ShardId};
use crate::topic_config;

struct Item {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    records: Option<Bytes>,
    /// The topic's `max.message.bytes`.
    max_batch_bytes: usize,
    /// acks=all: the topic's `min.insync.replicas` (None for acks=1 and acks=0).
    acks_all_min_isr: Option<usize>,
    /// The request's `timeout_ms` (acks=all waits for the replicas at most this long).
    timeout: std::time::Duration,
}

struct Outcome {
    slot: (usize, usize),
    error: Option<(ResponseError, String)>,
    base_offset: i64,
    log_start_offset: i64,
    /// Indexes (within the request's records) of the records that failed the batch.
    record_errors: Vec<i32>,
}

pub async fn handle(ctx: &RequestContext, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = req.acks;
    let req_timeout_ms = req.timeout_ms.max(0) as u64;
    let image = ctx.shard.metadata();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    // Each response topic's resolved name (a v13 request names topics by id only).
    let mut names: Vec<String> = Vec::with_capacity(req.topic_data.len());
    let mut by_shard: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
    let mut early: Vec<Outcome> = Vec::new();
    let mut checks: Vec<Check> = Vec::new();
    let now = now_ms();
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        // From v13 the topic is named by its id (KIP-516); an id that names no topic is
        // UNKNOWN_TOPIC_ID.
        let (name, unknown) = if ctx.api_version >= 13 {
            match image.topic_by_id(topic.topic_id) {
                Some((name, _)) => (name.clone(), ResponseError::UnknownTopicOrPartition),
                None => (String::new(), ResponseError::UnknownTopicId),
            }
        } else {
            (
                topic.name.0.as_str().to_owned(),
                ResponseError::UnknownTopicOrPartition,
            )
        };
        let mut tr = TopicProduceResponse::default();
        tr.name = topic.name.clone();
        tr.topic_id = topic.topic_id;
        // What every partition of the topic is checked against, worked out once per topic.
        let settings = image.topics.get(&name).map(|meta| TopicSettings {
            rules: topic_config::client_rules(
                &ctx.shard.config,
                &meta.configs,
                now as i64,
                image.next_producer_id,
            ),
            codec: topic_config::fixed_codec(&meta.configs),
            max_batch_bytes: topic_config::max_message_bytes(&ctx.shard.config, &meta.configs),
            min_isr: topic_config::effective_value(
                &ctx.shard.config,
                &meta.configs,
                "min.insync.replicas",
            )
            .parse::<usize>()
            .unwrap_or(1)
            .max(1),
        });
        for (pi, part) in topic.partition_data.into_iter().enumerate() {
            let mut pr = PartitionProduceResponse::default();
            pr.index = part.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            tr.partition_responses.push(pr);
            let slot = (ti, pi);
            if !matches!(acks, -1..=1) {
                early.push(Outcome::error(
                    slot,
                    ResponseError::InvalidRequiredAcks,
                    format!("acks={acks}"),
                ));
                continue;
            }
            if name == OFFSETS_TOPIC {
                // Only the group coordinator writes there, as in Kafka.
                early.push(Outcome::error(
                    slot,
                    ResponseError::InvalidTopicException,
                    format!("cannot append to internal topic {name}"),
                ));
                continue;
            }
            let Some(settings) = &settings else {
                let what = if name.is_empty() {
                    format!("topic id {}", topic.topic_id)
                } else {
                    format!("{name}-{}", part.index)
                };
                early.push(Outcome::error(
                    slot,
                    unknown,
                    format!("{what} does not exist"),
                ));
                continue;
            };
            let records = part.records;
            let check = records.as_ref().filter(|r| !r.is_empty()).map(|r| Check {
                slot,
                records: r.clone(),
                rules: settings.rules.clone(),
                codec: settings.codec,
            });
            match ctx.shard.owner_of(&name, part.index).map(|s| s.0) {
                Some(shard) => {
                    checks.extend(check);
                    by_shard.entry(shard).or_default().push(Item {
                        slot,
                        topic: name.clone(),
                        partition: part.index,
                        records,
                        max_batch_bytes: settings.max_batch_bytes,
                        acks_all_min_isr: (acks == -1).then_some(settings.min_isr),
                        timeout: std::time::Duration::from_millis(req_timeout_ms),
                    })
                }
                None => {
                    let code = ctx.shard.not_served(&name, part.index);
                    let why = if code == ResponseError::NotLeaderOrFollower {
                        format!("this broker does not lead {name}-{}", part.index)
                    } else {
                        format!("{name}-{} does not exist", part.index)
                    };
                    early.push(Outcome::error(slot, code, why))
                }
            }
        }
        responses.push(tr);
        names.push(name);
    }

    // Client batches are checked (and re-compressed for a fixed codec) before anything is
    // appended; a refused partition is answered without touching its log.
    for (slot, checked) in run_checks(checks).await {
        match checked {
            Ok(Some(records)) => set_records(&mut by_shard, slot, records),
            Ok(None) => {}
            Err(outcome) => {
                if let Some((code, message)) = &outcome.error {
                    crate::server::warn_connection(
                        &ctx.shard,
                        &ctx.client_host,
                        "produce rejected",
                        &format_args!("{code:?}: {message}"),
                    );
                }
                remove_item(&mut by_shard, slot);
                early.push(outcome);
            }
        }
    }
    let mut appended = Vec::with_capacity(by_shard.len());
    let calls = by_shard.into_iter().map(|(shard, items)| {
        let local = ctx.shard.clone();
        let (appended_tx, appended_rx) = futures::channel::oneshot::channel();
        appended.push(appended_rx);
        async move {
            let n = items.len();
            let slots: Vec<_> = items.iter().map(|i| i.slot).collect();
            match local
                .invoke_on(ShardId(shard), move |s| {
                    append_on_shard(s, items, appended_tx)
                })
                .await
            {
                Ok(v) => v,
                Err(e) => (0..n)
                    .map(|i| {
                        Outcome::error(slots[i], ResponseError::NotLeaderOrFollower, e.to_string())
                    })
                    .collect(),
            }
        }
    });
    let calls: Vec<_> = calls.collect();
    let release = async {
        // A shard that could not be reached drops its sender: nothing was appended there.
        futures::future::join_all(appended).await;
        ctx.release_order();
    };
    let (outcomes, ()) = futures::join!(futures::future::join_all(calls), release);

    if acks == 0 {
        return None;
    }
    for o in early.into_iter().chain(outcomes.into_iter().flatten()) {
        let pr = &mut responses[o.slot.0].partition_responses[o.slot.1];
        pr.base_offset = o.base_offset;
        pr.log_start_offset = o.log_start_offset;
        if let Some((code, msg)) = o.error {
            pr.error_code = code.code();
            pr.error_message = Some(str_bytes(msg.clone()));
            pr.record_errors = o
                .record_errors
                .iter()
                .map(|i| {
                    let mut e = BatchIndexAndErrorMessage::default();
                    e.batch_index = *i;
                    e.batch_index_error_message = Some(str_bytes(msg.clone()));
                    e
                })
                .collect();
        }
    }
    // KIP-951: a partition led elsewhere names its leader, so the producer need not wait
    // for a metadata refresh (Produce v10+; older versions leave the tagged fields out).
    let mut endpoints = BTreeMap::new();
    for (tr, name) in responses.iter_mut().zip(&names) {
        for pr in &mut tr.partition_responses {
            if pr.error_code != ResponseError::NotLeaderOrFollower.code() {
                continue;
            }
            if let Some((id, epoch, host, port, rack)) =
                super::current_leader(&ctx.shard, name, pr.index)
            {
                pr.current_leader.leader_id = BrokerId(id);
                pr.current_leader.leader_epoch = epoch;
                endpoints.entry(id).or_insert_with(|| {
                    let mut e = NodeEndpoint::default();
                    e.node_id = BrokerId(id);
                    e.host = str_bytes(host);
                    e.port = port;
                    e.rack = rack.map(str_bytes);
                    e
                });
            }
        }
    }
    let mut resp = ProduceResponse::default();
    resp.responses = responses;
    resp.node_endpoints = endpoints.into_values().collect();
    Some(resp)
}

impl Outcome {
    fn error(slot: (usize, usize), code: ResponseError, msg: String) -> Outcome {
        Outcome {
            slot,
            error: Some((code, msg)),
            base_offset: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
        }
    }
}

/// A topic's produce settings, the same for each of its partitions in a request.
struct TopicSettings {
    rules: protocol::validate::ClientRules,
    codec: Option<Codec>,
    max_batch_bytes: usize,
    /// `min.insync.replicas` (for acks=all).
    min_isr: usize,
}

/// One partition's records to check before appending.
struct Check {
    slot: (usize, usize),
    records: Bytes,
    rules: protocol::validate::ClientRules,
    /// The topic's fixed `compression.type`, if it has one.
    codec: Option<Codec>,
}

/// Uncompressed records up to this size are checked on the shard itself (walking them costs
/// well under a millisecond); anything compressed, larger or to be re-compressed is checked
/// on the shard's blocking thread, so a decompression never stalls the shard.
const INLINE_CHECK_BYTES_MAX: usize = 256 << 10;

/// `Ok(Some(records))` replaces the records (re-compressed), `Ok(None)` keeps them.
type Checked = Result<Option<Bytes>, Outcome>;

async fn run_checks(checks: Vec<Check>) -> Vec<((usize, usize), Checked)> {
    let (inline, heavy): (Vec<Check>, Vec<Check>) = checks.into_iter().partition(|c| {
        c.codec.is_none()
            && c.records.len() <= INLINE_CHECK_BYTES_MAX
            && BatchIter::new(&c.records, false).all(|v| v.compression() == Compression::None)
    });
    let mut out: Vec<_> = inline.into_iter().map(|c| (c.slot, check(c))).collect();
    if !heavy.is_empty() {
        let checked = glommio::executor()
            .spawn_blocking(move || {
                heavy
                    .into_iter()
                    .map(|c| (c.slot, check(c)))
                    .collect::<Vec<_>>()
            })
            .await;
        out.extend(checked);
    }
    out
}

/// Kafka's checks of a client's batches (`protocol::validate`), then re-compression when
/// the topic has a fixed codec. Runs on any thread.
fn check(c: Check) -> Checked {
    let mut index = 0i32;
    let mut batches = BatchIter::new(&c.records, true);
    for view in batches.by_ref() {
        if let Err(e) = protocol::validate::validate_client_batch(&view, &c.rules) {
            let mut outcome = Outcome::error(c.slot, client_batch_error(&e), e.to_string());
            if let protocol::validate::ClientBatchError::MissingKeys { indexes } = e {
                outcome.record_errors = indexes.iter().map(|i| index + i).collect();
            } else {
                outcome.record_errors = vec![index];
            }
            return Err(outcome);
        }
        index = index.saturating_add(view.records_count());
    }
    if let Some(e) = batches.error() {
        return Err(Outcome::error(
            c.slot,
            batch_error(e),
            format!("invalid record batch at byte {}: {e}", batches.consumed()),
        ));
    }
    let Some(codec) = c.codec else {
        return Ok(None);
    };
    protocol::records::recompress(&c.records, codec, c.rules.decompressed_max_bytes)
        .map_err(|e| Outcome::error(c.slot, ResponseError::CorruptMessage, e.to_string()))
}

fn set_records(by_shard: &mut BTreeMap<usize, Vec<Item>>, slot: (usize, usize), records: Bytes) {
    if let Some(item) = by_shard.values_mut().flatten().find(|i| i.slot == slot) {
        item.records = Some(records);
    }
}

fn remove_item(by_shard: &mut BTreeMap<usize, Vec<Item>>, slot: (usize, usize)) {
    for items in by_shard.values_mut() {
        items.retain(|i| i.slot != slot);
    }
    by_shard.retain(|_, items| !items.is_empty());
}

/// Runs on the owning shard: appends every item, signals `appended`, then waits until each
/// is durable.
async fn append_on_shard(
    shard: Rc<Shard>,
    items: Vec<Item>,
    appended: futures::channel::oneshot::Sender<()>,
) -> Vec<Outcome> {
    let now = now_ms();
    let appends = items.into_iter().map(|mut item| {
        let shard = shard.clone();
        async move {
            let Some(partition) = shard.leader_partition(&item.topic, item.partition) else {
                let e = Outcome::error(
                    item.slot,
                    ResponseError::NotLeaderOrFollower,
                    format!(
                        "this broker does not lead {}-{}",
                        item.topic, item.partition
                    ),
                );
                return (item, Err(e));
            };
            if let Some(min_isr) = item.acks_all_min_isr {
                if let Err(e) = partition.check_acks_all(min_isr) {
                    let e = Outcome::error(
                        item.slot,
                        acks_error_code(&e),
                        format!("{}-{}: {e:?}", item.topic, item.partition),
                    );
                    return (item, Err(e));
                }
            }
            let records = item.records.take().unwrap_or_default();
            let append = Append::Client {
                records,
                max_batch_bytes: item.max_batch_bytes,
            };
            let result = partition.append(append, now).await;
            (item, Ok((partition, result)))
        }
    });
    let appended_all = futures::future::join_all(appends).await;
    let _ = appended.send(());
    let durable = appended_all
        .into_iter()
        .map(|(item, appended)| async move {
            let result = match appended {
                Err(outcome) => return outcome,
                Ok((p, Ok(info))) => match item.acks_all_min_isr {
                    // acks=1, or a leader alone: durable here is replicated everywhere.
                    None => p.wait_committed(info.end_offset).await.map(|_| info),
                    Some(min_isr) if p.leader_replicas().len() <= 1 => {
                        match p.wait_replicated(info.end_offset, min_isr).await {
                            Ok(Ok(())) => Ok(info),
                            Ok(Err(e)) => {
                                return Outcome::error(
                                    item.slot,
                                    acks_error_code(&e),
                                    format!("{}-{}: {e:?}", item.topic, item.partition),
                                )
                            }
                            Err(e) => Err(e),
                        }
                    }
                    // acks=all: answered once the high watermark passes the batch (every
                    // ISR member has it on disk), within the request's timeout.
                    Some(min_isr) => {
                        let waited = crate::peers::within(
                            item.timeout,
                            p.wait_replicated(info.end_offset, min_isr),
                        )
                        .await;
                        match waited {
                            Some(Ok(Ok(()))) => Ok(info),
                            Some(Ok(Err(e))) => {
                                return Outcome::error(
                                    item.slot,
                                    acks_error_code(&e),
                                    format!("{}-{}: {e:?}", item.topic, item.partition),
                                )
                            }
                            Some(Err(e)) => Err(e),
                            None => {
                                return Outcome::error(
                                    item.slot,
                                    ResponseError::RequestTimedOut,
                                    format!(
                                        "{}-{}: not replicated to the ISR within {:?}",
                                        item.topic, item.partition, item.timeout
                                    ),
                                )
                            }
                        }
                    }
                },
                Ok((_, Err(e))) => Err(e),
            };
            match result {
                Ok(info) => Outcome {
                    slot: item.slot,
                    error: None,
                    base_offset: info.base_offset.0,
                    log_start_offset: info.log_start_offset.0,
                    record_errors: Vec::new(),
                },
                Err(e) => {
                    tracing::warn!(topic = %item.topic, partition = item.partition, error = %e, "produce rejected");
                    Outcome::error(item.slot, storage_error(&e), e.to_string())
                }
            }
        });
    futures::future::join_all(durable).await
}

/// The produce error for an acks=all refusal.
fn acks_error_code(e: &replication::replica::AcksError) -> ResponseError {
    use replication::replica::AcksError;
    match e {
        AcksError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        AcksError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        AcksError::NotLeader => ResponseError::NotLeaderOrFollower,
    }
}
