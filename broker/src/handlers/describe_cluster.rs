//! DescribeCluster (key 60): the live brokers, the cluster id and a controller id (this
//! broker, which forwards admin changes to the active controller, as KRaft brokers do).
//! v2 with `include_fenced_brokers` adds the registered brokers that are fenced, marked so.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::api::RequestContext;

pub fn handle(ctx: &RequestContext, req: DescribeClusterRequest) -> DescribeClusterResponse {
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
        .collect::<Vec<_>>();
    if req.include_fenced_brokers && ctx.api_version >= 2 {
        let image = ctx.shard.metadata();
        for (id, b) in image.brokers.iter().filter(|(_, b)| b.fenced) {
            if let Some(listed) = resp.brokers.iter_mut().find(|x| x.broker_id.0 == *id) {
                // This broker lists itself while fenced too.
                listed.is_fenced = true;
                continue;
            }
            let mut d = DescribeClusterBroker::default();
            d.broker_id = BrokerId(*id);
            d.host = str_bytes(b.host.clone());
            d.port = i32::from(b.port);
            d.rack = b.rack.clone().map(str_bytes);
            d.is_fenced = true;
            resp.brokers.push(d);
        }
        resp.brokers.sort_by_key(|b| b.broker_id.0);
    }
    resp.endpoint_type = 1;
    resp.cluster_authorized_operations = i32::MIN;
    resp
}
