//! SyncGroup (key 14): the leader's assignment is spread to every member on the group's
//! coordinator shard; followers wait for it there. The group (members, assignments,
//! generation) is stored in `__consumer_offsets` before the leader is answered, as Kafka does.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::ResponseError;

use super::coordinator::{on_coordinator, settle};
use super::{now_ms, str_bytes};
use crate::api::RequestContext;
use crate::group::{SyncArgs, SyncResult};

pub async fn handle(ctx: &RequestContext, req: SyncGroupRequest) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    let args = SyncArgs {
        group_id: group.clone(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let result = on_coordinator(ctx, &group, move |s| async move {
        let reply = s.groups.borrow_mut().sync(args, now_ms());
        s.flush_group_writes().await;
        settle(reply, || SyncResult {
            error: ResponseError::NotCoordinator.code(),
            ..SyncResult::default()
        })
        .await
    })
    .await
    .unwrap_or_else(|e| SyncResult {
        error: e.code(),
        ..SyncResult::default()
    });
    let mut resp = SyncGroupResponse::default();
    resp.error_code = result.error;
    if ctx.api_version >= 5 {
        resp.protocol_type = result.protocol_type.map(str_bytes);
        resp.protocol_name = result.protocol.map(str_bytes);
    }
    resp.assignment = result.assignment;
    resp
}
