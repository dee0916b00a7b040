//! FindCoordinator (key 10). Consumer groups and transactions are not served yet, so every
//! key gets COORDINATOR_NOT_AVAILABLE (retriable), which clients treat as "try later".

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::api::RequestContext;

pub fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let code = ResponseError::CoordinatorNotAvailable.code();
    let message = Some(str_bytes(
        "group and transaction coordinators are not available yet",
    ));
    let mut resp = FindCoordinatorResponse::default();
    if ctx.api_version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_code = code;
                c.error_message = message.clone();
                c
            })
            .collect();
    } else {
        resp.error_code = code;
        resp.error_message = message;
        resp.node_id = BrokerId(-1);
        resp.port = -1;
    }
    resp
}
