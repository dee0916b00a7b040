//! OffsetDelete (key 47): removes committed offsets of partitions the group does not
//! consume (GROUP_SUBSCRIBED_TO_TOPIC for topics a live member subscribes to).

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::coordinator::{append_error, on_coordinator};
use crate::api::RequestContext;

pub async fn handle(ctx: &RequestContext, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let g = group.clone();
    let wanted = partitions.clone();
    let outcome = on_coordinator(ctx, &group, move |s| async move {
        let (errors, write) = s.groups.borrow_mut().delete_offsets(&g, &wanted)?;
        if let Some(write) = write {
            s.append_group_records(write)
                .await
                .map_err(|e| append_error(&e))?;
        }
        Ok(errors)
    })
    .await
    .and_then(|r| r);
    let mut resp = OffsetDeleteResponse::default();
    let errors = match outcome {
        Ok(errors) => errors,
        Err(e) => {
            resp.error_code = e.code();
            return resp;
        }
    };
    let mut errors = errors.into_iter();
    for t in req.topics {
        let mut rt = OffsetDeleteResponseTopic::default();
        rt.name = t.name;
        for p in t.partitions {
            let mut rp = OffsetDeleteResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = super::code(errors.next().unwrap_or(Ok(())));
            rt.partitions.push(rp);
        }
        resp.topics.push(rt);
    }
    resp
}
