//! OffsetCommit (key 8): checked against the group's membership and generation, appended to
//! the group's `__consumer_offsets` partition, and answered once that record is durable.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::coordinator::{append_error, on_coordinator};
use super::now_ms;
use crate::api::RequestContext;
use crate::group::records::{Key, OffsetValue, Value};
use crate::group::{CommittedOffset, Write};

struct Commit {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    offset: CommittedOffset,
}

pub async fn handle(ctx: &RequestContext, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let image = ctx.shard.metadata();
    let metadata_max = ctx.shard.config.group.offset_metadata_max_bytes;
    let mut resp = OffsetCommitResponse::default();
    let mut commits = Vec::new();
    for (ti, topic) in req.topics.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = topic.name.clone();
        for (pi, p) in topic.partitions.into_iter().enumerate() {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            // The partition must exist in the cluster; it may live on another broker.
            let exists = image.topics.get(&name).is_some_and(|t| {
                usize::try_from(p.partition_index).is_ok_and(|i| i < t.partitions.len())
            });
            if !exists {
                pr.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else if metadata.len() > metadata_max {
                pr.error_code = ResponseError::OffsetMetadataTooLarge.code();
            } else {
                commits.push(Commit {
                    slot: (ti, pi),
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                        commit_timestamp: 0,
                    },
                });
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    if commits.is_empty() {
        return resp;
    }
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id_or_member_epoch;
    let slots: Vec<(usize, usize)> = commits.iter().map(|c| c.slot).collect();
    let g = group.clone();
    let outcome = on_coordinator(ctx, &group, move |s| async move {
        let now = now_ms();
        let partition = s.groups.borrow_mut().check_commit(
            &g,
            generation,
            &member,
            instance.as_deref(),
            now,
        )?;
        let records = commits
            .iter()
            .map(|c| {
                (
                    Key::Offset {
                        group: g.clone(),
                        topic: c.topic.clone(),
                        partition: c.partition,
                    },
                    Some(Value::Offset(OffsetValue {
                        offset: c.offset.offset,
                        leader_epoch: c.offset.leader_epoch,
                        metadata: c.offset.metadata.clone(),
                        commit_timestamp: now as i64,
                    })),
                )
            })
            .collect();
        if let Err(e) = s.append_group_records(Write { partition, records }).await {
            tracing::warn!(group = ?g, error = %e, "offset commit not stored");
            return Err(append_error(&e));
        }
        let entries = commits.into_iter().map(|c| {
            let mut o = c.offset;
            o.commit_timestamp = now as i64;
            ((c.topic, c.partition), o)
        });
        s.groups.borrow_mut().apply_offsets(&g, entries, now);
        Ok(())
    })
    .await
    .and_then(|r| r);
    if let Err(code) = outcome {
        for (ti, pi) in slots {
            resp.topics[ti].partitions[pi].error_code = code.code();
        }
    }
    resp
}
