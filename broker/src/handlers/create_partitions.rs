//! CreatePartitions (key 37): more partitions for existing topics, added by the controller.
//! Explicit assignments may only name this broker (one replica per partition); an empty
//! assignment list counts as none.

use std::collections::HashMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::api::RequestContext;
use crate::controller_client::ControllerClient;
use crate::errors::{controller_unavailable, create_partitions_error};

pub async fn handle(
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = ctx.shard.config.node_id;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let image = ctx.shard.metadata();
    let mut results = Vec::with_capacity(req.topics.len());
    let mut asks = Vec::new();
    let mut slots = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let current = image.topics.get(&name).map(|m| m.partitions.len() as i32);
        let invalid = if counts[&name] > 1 {
            Some((
                ResponseError::InvalidRequest,
                "topic named more than once".to_owned(),
            ))
        } else if let (Some(a), Some(cur)) =
            (t.assignments.as_ref().filter(|a| !a.is_empty()), current)
        {
            if a.len() as i32 != t.count - cur {
                Some((
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "{} assignments for {} new partitions",
                        a.len(),
                        t.count - cur
                    ),
                ))
            } else if a
                .iter()
                .any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != node)
            {
                Some((
                    ResponseError::InvalidReplicaAssignment,
                    format!("only broker {node} exists"),
                ))
            } else {
                None
            }
        } else {
            None
        };
        if let Some((code, msg)) = invalid {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(msg));
        } else {
            slots.push(results.len());
            asks.push((name, t.count));
        }
        results.push(r);
    }
    if !asks.is_empty() {
        let validate_only = req.validate_only;
        let outcome = ControllerClient::new(&ctx.shard)
            .create_partitions(asks, validate_only)
            .await;
        match outcome {
            Ok(done) => {
                for (slot, result) in slots.into_iter().zip(done) {
                    if let Err(e) = result {
                        results[slot].error_code = create_partitions_error(&e).code();
                        results[slot].error_message = Some(str_bytes(e.to_string()));
                    }
                }
            }
            Err(e) => {
                for slot in slots {
                    results[slot].error_code = controller_unavailable(&e).code();
                    results[slot].error_message = Some(str_bytes(e.to_string()));
                }
            }
        }
    }
    let mut resp = CreatePartitionsResponse::default();
    resp.results = results;
    resp
}
