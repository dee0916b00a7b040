//! ListOffsets (key 2): earliest (-2), latest (-1), the record with the largest timestamp
//! (-3, v7+), the earliest local offset (-4, v8+: the log start offset, as Kafka answers
//! without tiered storage), the latest tiered offset (-5, v9+: none, offset -1 at leader
//! epoch -1, as Kafka answers without tiered storage) and first offset at or after a
//! timestamp. v10 adds a timeout for reads from remote storage, which Sluice has none of.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use crate::api::RequestContext;
use crate::errors::storage_error;
use crate::shard::{Shard, ShardId};
use replication::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

struct Query {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    timestamp: i64,
    /// The leader epoch the client knows (v4+; -1: none).
    current_leader_epoch: i32,
}

struct Answer {
    slot: (usize, usize),
    error: Option<ResponseError>,
    timestamp: i64,
    offset: i64,
    /// The leader epoch of the batch holding `offset` (-1: none found).
    epoch: i32,
}

pub async fn handle(ctx: &RequestContext, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    let mut by_shard: BTreeMap<usize, Vec<Query>> = BTreeMap::new();
    let mut answers = Vec::new();
    for (ti, t) in req.topics.into_iter().enumerate() {
        let name = t.name.0.as_str().to_owned();
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for (pi, p) in t.partitions.into_iter().enumerate() {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            tr.partitions.push(pr);
            let slot = (ti, pi);
            match ctx.shard.owner_of(&name, p.partition_index).map(|s| s.0) {
                Some(s) => by_shard.entry(s).or_default().push(Query {
                    slot,
                    topic: name.clone(),
                    partition: p.partition_index,
                    timestamp: p.timestamp,
                    current_leader_epoch: p.current_leader_epoch,
                }),
                None => answers.push(Answer {
                    slot,
                    error: Some(ctx.shard.not_served(&name, p.partition_index)),
                    timestamp: -1,
                    offset: -1,
                    epoch: -1,
                }),
            }
        }
        topics.push(tr);
    }
    let calls = by_shard.into_iter().map(|(target, queries)| {
        let local = ctx.shard.clone();
        async move {
            let slots: Vec<_> = queries.iter().map(|q| q.slot).collect();
            match local
                .invoke_on(ShardId(target), move |s| answer_on_shard(s, queries))
                .await
            {
                Ok(v) => v,
                Err(_) => slots
                    .into_iter()
                    .map(|slot| Answer {
                        slot,
                        error: Some(ResponseError::NotLeaderOrFollower),
                        timestamp: -1,
                        offset: -1,
                        epoch: -1,
                    })
                    .collect(),
            }
        }
    });
    for a in answers
        .into_iter()
        .chain(futures::future::join_all(calls).await.into_iter().flatten())
    {
        let pr = &mut topics[a.slot.0].partitions[a.slot.1];
        pr.error_code = a.error.map(|e| e.code()).unwrap_or(0);
        pr.timestamp = a.timestamp;
        pr.offset = a.offset;
        if ctx.api_version >= 4 {
            pr.leader_epoch = a.epoch;
        }
    }
    let mut resp = ListOffsetsResponse::default();
    resp.topics = topics;
    resp
}

async fn answer_on_shard(shard: Rc<Shard>, queries: Vec<Query>) -> Vec<Answer> {
    let limit = shard.config.message_decompressed_max_bytes;
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let Some(p) = shard.leader_partition(&q.topic, q.partition) else {
            out.push(Answer {
                slot: q.slot,
                error: Some(ResponseError::NotLeaderOrFollower),
                timestamp: -1,
                offset: -1,
                epoch: -1,
            });
            continue;
        };
        if let Some(code) = super::leader_epoch_error(q.current_leader_epoch, p.leader_epoch()) {
            out.push(Answer {
                slot: q.slot,
                error: Some(code),
                timestamp: -1,
                offset: -1,
                epoch: -1,
            });
            continue;
        }
        let mut answer = match q.timestamp {
            LATEST => Answer {
                slot: q.slot,
                error: None,
                timestamp: -1,
                offset: p.high_watermark().0,
                epoch: -1,
            },
            EARLIEST | EARLIEST_LOCAL => Answer {
                slot: q.slot,
                error: None,
                timestamp: -1,
                offset: p.log_start_offset().0,
                epoch: -1,
            },
            MAX_TIMESTAMP => {
                // The first record carrying the log's largest timestamp.
                let max = p.max_timestamp();
                let found = if max < 0 {
                    Ok(None)
                } else {
                    offset_for_timestamp(&p, max, limit).await
                };
                Answer::found(q.slot, found)
            }
            LATEST_TIERED => Answer {
                slot: q.slot,
                error: None,
                timestamp: -1,
                offset: -1,
                epoch: -1,
            },
            ts if ts < 0 => Answer {
                slot: q.slot,
                error: Some(ResponseError::UnsupportedVersion),
                timestamp: -1,
                offset: -1,
                epoch: -1,
            },
            ts => Answer::found(q.slot, offset_for_timestamp(&p, ts, limit).await),
        };
        if answer.error.is_none() && answer.offset >= 0 {
            answer.epoch = p.epoch_at(storage::Offset(answer.offset)).0;
        }
        out.push(answer);
    }
    out
}

impl Answer {
    /// The answer to a query by time: the record found, none (-1), or the error.
    fn found(slot: (usize, usize), found: Result<Option<(i64, i64)>, ResponseError>) -> Answer {
        let (error, (offset, timestamp)) = match found {
            Ok(hit) => (None, hit.unwrap_or((-1, -1))),
            Err(code) => (Some(code), (-1, -1)),
        };
        Answer {
            slot,
            error,
            timestamp,
            offset,
            epoch: -1,
        }
    }
}

/// The first record at or after `ts`: the storage finds the batch, the record walk looks
/// inside it on the shard's blocking thread (decompressing within
/// `sluice.message.decompressed.max.bytes`, so a stored bomb cannot take the memory or
/// stall the shard).
async fn offset_for_timestamp(
    p: &Partition,
    ts: i64,
    decompressed_max_bytes: usize,
) -> Result<Option<(i64, i64)>, ResponseError> {
    let batch = match p.batch_for_timestamp(ts).await {
        Ok(Some(batch)) => batch,
        Ok(None) => return Ok(None),
        Err(e) => return Err(storage_error(&e)),
    };
    let plain = batch.len() <= (256 << 10)
        && protocol::record_batch::RecordBatchView::parse(&batch)
            .is_ok_and(|v| v.compression() == protocol::record_batch::Compression::None);
    let walk = {
        let batch = batch.clone();
        move || protocol::records::first_record_at_or_after(&batch, ts, decompressed_max_bytes)
    };
    let found = if plain {
        walk()
    } else {
        glommio::executor().spawn_blocking(walk).await
    };
    match found {
        Ok(Some(found)) => Ok(Some(found)),
        // The producer's max timestamp overstated its records; the batch is still the
        // first one that claims to reach `ts`, so answer with its start as Kafka's index would.
        Ok(None) | Err(_) => {
            let view = protocol::record_batch::RecordBatchView::parse(&batch)
                .map_err(|_| ResponseError::CorruptMessage)?;
            Ok(Some((view.base_offset(), view.max_timestamp())))
        }
    }
}
