//! ListGroups (key 16): every shard's groups, filtered by state (v4+) and type (v5+: all
//! of Sluice's groups are "classic").

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::api::RequestContext;
use crate::shard::ShardId;

pub async fn handle(ctx: &RequestContext, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut resp = ListGroupsResponse::default();
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return resp;
    }
    for shard in 0..ctx.shard.shard_count() {
        let listed = ctx
            .shard
            .invoke_on(ShardId(shard), |s| async move { s.groups.borrow().list() })
            .await;
        let Ok(groups) = listed else {
            resp.error_code = ResponseError::CoordinatorNotAvailable.code();
            continue;
        };
        for (id, protocol_type, state) in groups {
            if !states.is_empty() && !states.contains(&state.name().to_ascii_lowercase()) {
                continue;
            }
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str_bytes(id));
            g.protocol_type = str_bytes(protocol_type);
            g.group_state = str_bytes(state.name());
            g.group_type = str_bytes("classic");
            resp.groups.push(g);
        }
    }
    resp
}
