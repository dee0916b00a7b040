//! DescribeCluster (key 60): the live brokers, the cluster id and a controller id (this
//! broker, which forwards admin changes to the active controller, as KRaft brokers do).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::api::RequestContext;

pub fn handle(ctx: &RequestContext, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let c = &ctx.shard.config;
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(c.cluster_id.clone());
    // Clients cannot reach the controllers themselves (KRaft): any live broker forwards.
    resp.controller_id = BrokerId(c.node_id);
    resp.brokers = super::live_brokers(&ctx.shard)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(id);
            b.host = str_bytes(host);
            b.port = port;
            b.rack = rack.map(str_bytes);
            b
        })
        .collect();
    resp.endpoint_type = 1;
    resp.cluster_authorized_operations = i32::MIN;
    resp
}
