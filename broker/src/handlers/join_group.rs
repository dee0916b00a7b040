//! JoinGroup (key 11): forwarded to the group's coordinator shard, where it waits until the
//! rebalance completes (see `crate::group`).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::ResponseError;

use super::coordinator::{on_coordinator, settle};
use super::{now_ms, str_bytes};
use crate::api::RequestContext;
use crate::group::{JoinArgs, JoinResult};

pub async fn handle(ctx: &RequestContext, req: JoinGroupRequest) -> JoinGroupResponse {
    let v = ctx.api_version;
    let group = req.group_id.0.to_string();
    let args = JoinArgs {
        group_id: group.clone(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let member_id = args.member_id.clone();
    let failed = |e: ResponseError| JoinResult {
        error: e.code(),
        generation: -1,
        member_id: member_id.clone(),
        ..JoinResult::default()
    };
    let result = match on_coordinator(ctx, &group, move |s| async move {
        let reply = s.groups.borrow_mut().join(args, now_ms());
        s.flush_group_writes().await;
        settle(reply, || JoinResult {
            error: ResponseError::NotCoordinator.code(),
            generation: -1,
            ..JoinResult::default()
        })
        .await
    })
    .await
    {
        Ok(r) => r,
        Err(e) => failed(e),
    };
    let mut resp = JoinGroupResponse::default();
    resp.error_code = result.error;
    resp.generation_id = result.generation;
    if v >= 7 {
        resp.protocol_type = result.protocol_type.map(str_bytes);
        resp.protocol_name = result.protocol.map(str_bytes);
    } else {
        resp.protocol_name = Some(str_bytes(result.protocol.unwrap_or_default()));
    }
    resp.leader = str_bytes(result.leader);
    resp.member_id = str_bytes(result.member_id);
    resp.members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(id);
            m.group_instance_id = instance.map(str_bytes);
            m.metadata = metadata;
            m
        })
        .collect();
    resp
}
