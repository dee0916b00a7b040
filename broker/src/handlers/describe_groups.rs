//! DescribeGroups (key 15): state, protocol and members of each group, asked of the shard
//! that coordinates it. Unknown groups are reported Dead, with no error before v6 and with
//! GROUP_ID_NOT_FOUND from v6 (KIP-1043), as Kafka does.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::ResponseError;

use super::coordinator::on_coordinator;
use super::str_bytes;
use crate::api::RequestContext;

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(ctx: &RequestContext, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for id in req.groups {
        let name = id.0.to_string();
        let mut out = DescribedGroup::default();
        out.group_id = id;
        out.authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
        let n = name.clone();
        match on_coordinator(ctx, &name, move |s| async move {
            s.groups.borrow().describe(&n)
        })
        .await
        {
            Err(e) => out.error_code = e.code(),
            Ok(None) => {
                out.group_state = str_bytes("Dead");
                // KIP-1043: from v6 an unknown group is an error too.
                if ctx.api_version >= 6 {
                    out.error_code = ResponseError::GroupIdNotFound.code();
                    out.error_message = Some(str_bytes(format!("Group {name} not found.")));
                }
            }
            Ok(Some(g)) => {
                out.group_state = str_bytes(g.state.name());
                out.protocol_type = str_bytes(g.protocol_type);
                out.protocol_data = str_bytes(g.protocol);
                out.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = str_bytes(m.member_id);
                        dm.group_instance_id = m.instance_id.map(str_bytes);
                        dm.client_id = str_bytes(m.client_id);
                        dm.client_host = str_bytes(m.client_host);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
        }
        resp.groups.push(out);
    }
    resp
}
