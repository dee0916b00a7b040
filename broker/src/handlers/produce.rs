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
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{now_ms, str_bytes};
use crate::api::RequestContext;
use crate::errors::storage_error;
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
    let smp = ctx.shard.shard_count();
    let image = ctx.shard.metadata();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut by_shard: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
    let mut early: Vec<Outcome> = Vec::new();
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let name = topic.name.0.as_str().to_owned();
        let mut tr = TopicProduceResponse::default();
        tr.name = topic.name.clone();
        tr.topic_id = topic.topic_id;
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
            let compacted = image.topics.get(&name).is_some_and(|t| {
                t.configs
                    .get("cleanup.policy")
                    .is_some_and(|p| p.split(',').any(|i| i.trim() == "compact"))
            });
            if compacted {
                if let Some(outcome) = keyless_records(slot, &name, part.index, &part.records) {
                    early.push(outcome);
                    continue;
                }
            }
            let mut records = part.records;
            if let Some(codec) = image
                .topics
                .get(&name)
                .and_then(|t| topic_config::fixed_codec(&t.configs))
            {
                if let Some(r) = &records {
                    match protocol::records::recompress(r, codec) {
                        Ok(Some(re)) => records = Some(re),
                        Ok(None) => {}
                        Err(e) => {
                            early.push(Outcome::error(
                                slot,
                                ResponseError::CorruptMessage,
                                e.to_string(),
                            ));
                            continue;
                        }
                    }
                }
            }
            match image.shard_of(&name, part.index, smp) {
                Some(shard) => by_shard.entry(shard).or_default().push(Item {
                    slot,
                    topic: name.clone(),
                    partition: part.index,
                    records,
                    max_batch_bytes: image
                        .topics
                        .get(&name)
                        .map_or(ctx.shard.config.message_max_bytes, |t| {
                            topic_config::max_message_bytes(&ctx.shard.config, &t.configs)
                        }),
                }),
                None => early.push(Outcome::error(
                    slot,
                    ResponseError::UnknownTopicOrPartition,
                    format!("{name}-{} does not exist", part.index),
                )),
            }
        }
        responses.push(tr);
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
    let mut resp = ProduceResponse::default();
    resp.responses = responses;
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

/// A compacted topic keeps the latest record per key, so Kafka refuses records without one
/// (INVALID_RECORD, naming each such record). This decodes the records (decompressing):
/// only compacted topics pay for it.
fn keyless_records(
    slot: (usize, usize),
    topic: &str,
    partition: i32,
    records: &Option<Bytes>,
) -> Option<Outcome> {
    let mut buf = records.clone()?;
    let mut index = 0i32;
    let mut missing = Vec::new();
    while !buf.is_empty() {
        // A batch that does not decode is the log's to refuse, with its own error.
        let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) else {
            return None;
        };
        for r in &set.records {
            if r.key.is_none() {
                missing.push(index);
            }
            index += 1;
        }
    }
    if missing.is_empty() {
        return None;
    }
    let mut o = Outcome::error(
        slot,
        ResponseError::InvalidRecord,
        format!("compacted topic cannot accept message without key in topic partition {topic}-{partition}"),
    );
    o.record_errors = missing;
    Some(o)
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
            let Some(partition) = shard.partition(&item.topic, item.partition) else {
                let e = Outcome::error(
                    item.slot,
                    ResponseError::UnknownTopicOrPartition,
                    format!("{}-{} is not on this shard", item.topic, item.partition),
                );
                return (item, Err(e));
            };
            let records = item.records.take().unwrap_or_default();
            let result = partition
                .log
                .append(
                    &records,
                    partition.leader_epoch.0,
                    item.max_batch_bytes,
                    now,
                )
                .await;
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
                Ok((p, Ok(info))) => p.log.wait_durable(info.end_offset).await.map(|_| info),
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
