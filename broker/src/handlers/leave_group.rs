//! LeaveGroup (key 13): one member (v0-2) or a batch of members, static ones by instance id
//! (v3+).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::coordinator::on_coordinator;
use super::now_ms;
use crate::api::RequestContext;

pub async fn handle(ctx: &RequestContext, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if ctx.api_version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let n = members.len();
    let leaving = members.clone();
    let g = group.clone();
    let errors = on_coordinator(ctx, &group, move |s| async move {
        let errors = s.groups.borrow_mut().leave(&g, leaving, now_ms());
        s.flush_group_writes().await;
        errors
    })
    .await;
    let mut resp = LeaveGroupResponse::default();
    match errors {
        Err(e) => resp.error_code = e.code(),
        Ok(errors) if ctx.api_version < 3 => {
            resp.error_code = super::code(errors.first().copied().unwrap_or(Ok(())))
        }
        Ok(errors) => {
            resp.members = members
                .into_iter()
                .zip(errors.into_iter().chain(std::iter::repeat(Ok(()))))
                .take(n)
                .map(|((id, instance), e)| {
                    let mut m = MemberResponse::default();
                    m.member_id = super::str_bytes(id);
                    m.group_instance_id = instance.map(super::str_bytes);
                    m.error_code = super::code(e);
                    m
                })
                .collect();
        }
    }
    resp
}
