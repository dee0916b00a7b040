//! DeleteGroups (key 42): an Empty group and its offsets are removed (tombstones in
//! `__consumer_offsets`); a group with members gets NON_EMPTY_GROUP.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::coordinator::{append_error, on_coordinator};
use crate::api::RequestContext;

pub async fn handle(ctx: &RequestContext, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in req.groups_names {
        let name = id.0.to_string();
        let n = name.clone();
        let outcome = on_coordinator(ctx, &name, move |s| async move {
            let write = s.groups.borrow_mut().delete_group(&n)?;
            s.append_group_records(write).await.map_err(|e| {
                tracing::warn!(group = ?n, error = %e, "group tombstones not stored");
                append_error(&e)
            })
        })
        .await
        .and_then(|r| r);
        let mut r = DeletableGroupResult::default();
        r.group_id = id;
        r.error_code = match outcome {
            Ok(()) => {
                tracing::info!(group = ?name, "group deleted");
                0
            }
            Err(e) => e.code(),
        };
        resp.results.push(r);
    }
    resp
}
