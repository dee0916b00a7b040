//! ElectLeaders (key 43): preferred-leader elections (v0 only those) and, from v1,
//! unclean ones, decided by the active controller. A null partition list means every
//! partition; then only those that needed an election are answered, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::api::RequestContext;
use crate::controller_client::ControllerClient;
use crate::errors::{commit_error, controller_unavailable, elect_error};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(ctx: &RequestContext, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    let election = if ctx.api_version == 0 {
        PREFERRED
    } else {
        req.election_type
    };
    if election != PREFERRED && election != UNCLEAN {
        resp.error_code = ResponseError::InvalidRequest.code();
        return resp;
    }
    let partitions = req.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect::<Vec<_>>()
    });
    let outcome = ControllerClient::new(&ctx.shard)
        .elect_leaders(election == UNCLEAN, partitions.clone())
        .await;
    // Nothing decided: every partition asked for gets the reason (v0 has no top-level
    // error code).
    let failed = match outcome {
        Ok(Ok(results)) => Ok(results),
        Ok(Err(e)) => Err(commit_error(&e)),
        Err(e) => Err(controller_unavailable(&e)),
    };
    let results = match failed {
        Ok(results) => results,
        Err(code) => {
            partition_errors(
                &mut resp,
                partitions.unwrap_or_default(),
                code,
                ctx.api_version,
            );
            return resp;
        }
    };
    resp.replica_election_results = by_topic(results.into_iter().map(|(topic, partition, r)| {
        let mut pr = PartitionResult::default();
        pr.partition_id = partition;
        if let Err(e) = r {
            pr.error_code = elect_error(&e).code();
            pr.error_message = Some(str_bytes(e.to_string()));
        }
        (topic, pr)
    }));
    resp
}

fn partition_errors(
    resp: &mut ElectLeadersResponse,
    partitions: Vec<(String, i32)>,
    code: ResponseError,
    version: i16,
) {
    if version >= 1 && partitions.is_empty() {
        resp.error_code = code.code();
        return;
    }
    resp.replica_election_results = by_topic(partitions.into_iter().map(|(topic, partition)| {
        let mut pr = PartitionResult::default();
        pr.partition_id = partition;
        pr.error_code = code.code();
        (topic, pr)
    }));
}

/// Partition results grouped by topic, as the response carries them.
fn by_topic(
    results: impl Iterator<Item = (String, PartitionResult)>,
) -> Vec<ReplicaElectionResult> {
    let mut topics: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, pr) in results {
        topics.entry(topic).or_default().push(pr);
    }
    topics
        .into_iter()
        .map(|(topic, partition_result)| {
            let mut r = ReplicaElectionResult::default();
            r.topic = TopicName(str_bytes(topic));
            r.partition_result = partition_result;
            r
        })
        .collect()
}
