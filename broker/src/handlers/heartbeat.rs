//! Heartbeat (key 12): keeps a member's session alive and tells it when to rejoin
//! (REBALANCE_IN_PROGRESS).

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::coordinator::on_coordinator;
use super::now_ms;
use crate::api::RequestContext;

pub async fn handle(ctx: &RequestContext, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id;
    let g = group.clone();
    let code = on_coordinator(ctx, &group, move |s| async move {
        s.groups
            .borrow_mut()
            .heartbeat(&g, generation, &member, instance.as_deref(), now_ms())
    })
    .await
    .and_then(|r| r);
    let mut resp = HeartbeatResponse::default();
    resp.error_code = super::code(code);
    resp
}
