//! DeleteTopics (key 20): by name (all versions) or by topic id (v6+).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::str_bytes;
use crate::api::RequestContext;
use crate::controller_client::ControllerClient;
use crate::errors::{controller_unavailable, delete_topic_error};
use crate::metadata::topic_name;
use crate::shard::ShardId;

pub async fn handle(ctx: &RequestContext, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let image = ctx.shard.metadata();
    // (name if known, id as asked)
    let asked: Vec<(Option<String>, Uuid)> = if ctx.api_version >= 6 {
        req.topics
            .into_iter()
            .map(|t| match t.name {
                Some(n) => (Some(n.0.as_str().to_owned()), t.topic_id),
                None => (
                    image.topic_by_id(t.topic_id).map(|(n, _)| n.clone()),
                    t.topic_id,
                ),
            })
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n.0.as_str().to_owned()), Uuid::nil()))
            .collect()
    };
    let names: Vec<String> = asked.iter().filter_map(|(n, _)| n.clone()).collect();
    let deleting = names.clone();
    let outcome = ControllerClient::new(&ctx.shard).delete_topics(names).await;
    // Committed offsets of deleted topics go too (Kafka removes them as well), so a topic
    // created again under the same name does not resume from stale positions.
    if let Ok(results) = &outcome {
        let deleted: Vec<String> = deleting
            .iter()
            .zip(results)
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| n.clone())
            .collect();
        if !deleted.is_empty() {
            forget_offsets(ctx, deleted).await;
        }
    }
    let mut outcomes = match outcome {
        Ok(v) => v
            .into_iter()
            .map(|r| r.map_err(|e| (delete_topic_error(&e), e.to_string())))
            .collect(),
        Err(e) => vec![Err((controller_unavailable(&e), e.to_string())); asked.len()],
    }
    .into_iter();
    let responses = asked
        .into_iter()
        .map(|(name, id)| {
            let mut r = DeletableTopicResult::default();
            r.topic_id = id;
            match &name {
                Some(n) => {
                    r.topic_id = image.topics.get(n).map(|m| m.uuid()).unwrap_or(id);
                    r.name = Some(topic_name(n));
                    if let Some(Err((code, msg))) = outcomes.next() {
                        r.error_code = code.code();
                        r.error_message = Some(str_bytes(msg));
                    }
                }
                None => r.error_code = ResponseError::UnknownTopicId.code(),
            }
            r
        })
        .collect();
    let mut resp = DeleteTopicsResponse::default();
    resp.responses = responses;
    resp
}

/// Removes every group's committed offsets of `topics`, on every shard.
async fn forget_offsets(ctx: &RequestContext, topics: Vec<String>) {
    for shard in 0..ctx.shard.shard_count() {
        let topics = topics.clone();
        let _ = ctx
            .shard
            .invoke_on(ShardId(shard), move |s| async move {
                s.groups.borrow_mut().forget_topics(&topics);
                s.flush_group_writes().await;
            })
            .await;
    }
}
