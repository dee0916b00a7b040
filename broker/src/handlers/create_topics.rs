//! CreateTopics (key 19): validated here, created by the controller on shard 0.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::api::RequestContext;
use crate::controller::TopicSpec;
use crate::controller_client::ControllerClient;
use crate::errors::{controller_unavailable, create_topic_error};

pub async fn handle(ctx: &RequestContext, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let node = ctx.shard.config.node_id;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.as_str().to_owned()).or_default() += 1;
    }
    let mut results: Vec<CreatableTopicResult> = Vec::with_capacity(req.topics.len());
    let mut specs = Vec::new();
    let mut spec_slots = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_owned();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        // The codec's default is an empty string; Kafka answers null on success.
        r.error_message = None;
        r.num_partitions = -1;
        r.replication_factor = -1;
        let invalid = if counts[&name] > 1 {
            Some((
                ResponseError::InvalidRequest,
                "topic named more than once in the request".to_owned(),
            ))
        } else if !t.assignments.is_empty()
            && (t.num_partitions != -1 || t.replication_factor != -1)
        {
            Some((
                ResponseError::InvalidRequest,
                "both assignments and partition count given".to_owned(),
            ))
        } else if t
            .assignments
            .iter()
            .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
        {
            Some((
                ResponseError::InvalidReplicaAssignment,
                format!("only broker {node} exists"),
            ))
        } else {
            None
        };
        if let Some((code, msg)) = invalid {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(msg));
            results.push(r);
            continue;
        }
        let num_partitions = if t.assignments.is_empty() {
            t.num_partitions
        } else {
            t.assignments.len() as i32
        };
        let configs: BTreeMap<String, String> = t
            .configs
            .into_iter()
            .filter_map(|c| Some((c.name.as_str().to_owned(), c.value?.as_str().to_owned())))
            .collect();
        spec_slots.push(results.len());
        results.push(r);
        specs.push(TopicSpec {
            name,
            num_partitions,
            replication_factor: t.replication_factor,
            configs,
        });
    }
    if !specs.is_empty() {
        let validate_only = req.validate_only;
        let outcome = ControllerClient::new(&ctx.shard)
            .create_topics(specs, validate_only)
            .await;
        match outcome {
            Ok(created) => {
                for (slot, result) in spec_slots.into_iter().zip(created) {
                    let r = &mut results[slot];
                    match result {
                        Ok(meta) => {
                            r.topic_id = meta.uuid();
                            r.num_partitions = meta.partitions.len() as i32;
                            r.replication_factor = meta
                                .partitions
                                .first()
                                .map_or(1, |p| p.replicas.len().max(1) as i16);
                            r.configs = Some(Vec::new());
                        }
                        Err(e) => {
                            r.error_code = create_topic_error(&e).code();
                            r.error_message = Some(str_bytes(e.to_string()));
                        }
                    }
                }
            }
            Err(e) => {
                for slot in spec_slots {
                    results[slot].error_code = controller_unavailable(&e).code();
                    results[slot].error_message = Some(str_bytes(e.to_string()));
                }
            }
        }
    }
    let mut resp = CreateTopicsResponse::default();
    resp.topics = results;
    resp
}
