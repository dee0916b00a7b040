//! OffsetFetch (key 9): committed offsets of one group (v1-7) or several (v8), all of a
//! group's partitions when no topics are named. Partitions without a commit answer -1.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::ResponseError;

use super::coordinator::on_coordinator;
use super::str_bytes;
use crate::api::RequestContext;
use crate::group::CommittedOffset;
use crate::metadata::topic_name;

/// Per topic, per requested partition, its committed offset if any.
type TopicOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;
type Answer = Result<TopicOffsets, ResponseError>;

/// Offsets of `group` for `wanted` topics and partitions (all committed ones when `None`),
/// grouped by topic in request order.
async fn fetch(
    ctx: &RequestContext,
    group: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Answer {
    let keys: Option<Vec<(String, i32)>> = wanted.as_ref().map(|w| {
        w.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    });
    let g = group.clone();
    let found = on_coordinator(ctx, &group, move |s| async move {
        s.groups.borrow().offsets(&g, keys.as_deref())
    })
    .await?;
    Ok(match wanted {
        Some(list) => list
            .into_iter()
            .map(|(t, ps)| {
                let parts = ps
                    .into_iter()
                    .map(|p| {
                        let o = found
                            .iter()
                            .find(|((ft, fp), _)| *ft == t && *fp == p)
                            .map(|(_, o)| o.clone());
                        (p, o)
                    })
                    .collect();
                (t, parts)
            })
            .collect(),
        None => {
            let mut out: TopicOffsets = Vec::new();
            for ((t, p), o) in found {
                match out.last_mut() {
                    Some((lt, parts)) if *lt == t => parts.push((p, Some(o))),
                    _ => out.push((t, vec![(p, Some(o))])),
                }
            }
            out
        }
    })
}

fn fields(o: Option<CommittedOffset>) -> (i64, i32, String) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata),
        None => (-1, -1, String::new()),
    }
}

pub async fn handle(ctx: &RequestContext, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if ctx.api_version >= 8 {
        for g in req.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default();
            out.group_id = g.group_id.clone();
            match fetch(ctx, g.group_id.0.to_string(), wanted).await {
                Err(e) => out.error_code = e.code(),
                Ok(topics) => {
                    out.topics = topics
                        .into_iter()
                        .map(|(t, parts)| {
                            let mut rt = OffsetFetchResponseTopics::default();
                            rt.name = topic_name(&t);
                            rt.partitions = parts
                                .into_iter()
                                .map(|(p, o)| {
                                    let (offset, epoch, metadata) = fields(o);
                                    let mut rp = OffsetFetchResponsePartitions::default();
                                    rp.partition_index = p;
                                    rp.committed_offset = offset;
                                    rp.committed_leader_epoch = epoch;
                                    rp.metadata = Some(str_bytes(metadata));
                                    rp
                                })
                                .collect();
                            rt
                        })
                        .collect();
                }
            }
            resp.groups.push(out);
        }
        return resp;
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let requested = wanted.clone();
    match fetch(ctx, req.group_id.0.to_string(), wanted).await {
        Ok(topics) => {
            resp.topics = topics
                .into_iter()
                .map(|(t, parts)| {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = topic_name(&t);
                    rt.partitions = parts
                        .into_iter()
                        .map(|(p, o)| {
                            let (offset, epoch, metadata) = fields(o);
                            let mut rp = OffsetFetchResponsePartition::default();
                            rp.partition_index = p;
                            rp.committed_offset = offset;
                            rp.committed_leader_epoch = epoch;
                            rp.metadata = Some(str_bytes(metadata));
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
        }
        Err(e) => {
            // v2+ carry a top-level error; v1 only has per-partition ones.
            resp.error_code = e.code();
            for (t, ps) in requested.unwrap_or_default() {
                let mut rt = OffsetFetchResponseTopic::default();
                rt.name = topic_name(&t);
                rt.partitions = ps
                    .into_iter()
                    .map(|p| {
                        let mut rp = OffsetFetchResponsePartition::default();
                        rp.partition_index = p;
                        rp.committed_offset = -1;
                        rp.committed_leader_epoch = -1;
                        rp.metadata = Some(str_bytes(""));
                        rp.error_code = e.code();
                        rp
                    })
                    .collect();
                resp.topics.push(rt);
            }
        }
    }
    resp
}
