//! DescribeQuorum (key 55): the metadata quorum as its active controller sees it — the
//! leader, its epoch (the Raft term), the high watermark (the commit index) and each
//! voter's log end offset (the highest index it is known to hold). Asked of any broker, it
//! is answered by the active controller (forwarded, as KRaft brokers forward it).

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::api::RequestContext;
use crate::controller_client::ControllerClient;
use crate::errors::{commit_error, controller_unavailable};
use crate::metadata::topic_name;

/// The metadata log's name in Kafka (the topic DescribeQuorum asks about).
const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(ctx: &RequestContext, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let mut resp = DescribeQuorumResponse::default();
    let asked_ok = req.topics.len() == 1
        && req.topics[0].topic_name.0.as_str() == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    if !asked_ok {
        resp.error_code = ResponseError::InvalidRequest.code();
        resp.error_message = Some(str_bytes(format!(
            "DescribeQuorum describes {METADATA_TOPIC} partition 0 only"
        )));
        return resp;
    }
    let state = match ControllerClient::new(&ctx.shard).describe_quorum().await {
        Ok(Ok(q)) => q,
        Ok(Err(e)) => {
            resp.error_code = commit_error(&e).code();
            resp.error_message = Some(str_bytes(e.to_string()));
            return resp;
        }
        Err(e) => {
            resp.error_code = controller_unavailable(&e).code();
            resp.error_message = Some(str_bytes(e.to_string()));
            return resp;
        }
    };
    let mut p = PartitionData::default();
    p.partition_index = 0;
    p.error_message = None;
    p.leader_id = BrokerId(state.leader);
    p.leader_epoch = state.term as i32;
    p.high_watermark = state.commit_index as i64;
    p.current_voters = state
        .voters
        .iter()
        .map(|(id, matched)| {
            let mut r = ReplicaState::default();
            r.replica_id = BrokerId(*id);
            r.log_end_offset = *matched as i64;
            r.last_fetch_timestamp = -1;
            r.last_caught_up_timestamp = -1;
            r
        })
        .collect();
    let mut t = TopicData::default();
    t.topic_name = topic_name(METADATA_TOPIC);
    t.partitions = vec![p];
    resp.topics = vec![t];
    resp.error_message = None;
    // v2 lists where each voter listens.
    resp.nodes = state
        .listeners
        .iter()
        .map(|(id, host, port)| {
            let mut l = Listener::default();
            l.name = str_bytes("CONTROLLER");
            l.host = str_bytes(host.clone());
            l.port = *port;
            let mut n = Node::default();
            n.node_id = BrokerId(*id);
            n.listeners = vec![l];
            n
        })
        .collect();
    resp
}
