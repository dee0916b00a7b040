//! DescribeCluster (key 60): this broker, the cluster id and the controller (itself).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::api::RequestContext;

pub fn handle(ctx: &RequestContext, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let c = &ctx.shard.config;
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(c.node_id);
    b.host = str_bytes(c.advertised_host.clone());
    b.port = match c.advertised_port {
        0 => ctx.shard.listen_port.get() as i32,
        p => p as i32,
    };
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(c.cluster_id.clone());
    resp.controller_id = BrokerId(c.node_id);
    resp.brokers = vec![b];
    resp.endpoint_type = 1;
    resp.cluster_authorized_operations = i32::MIN;
    resp
}
