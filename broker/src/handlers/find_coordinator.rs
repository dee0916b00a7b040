//! FindCoordinator (key 10). Group keys are served by this broker (the group lives on the
//! shard that owns its `__consumer_offsets` partition; any shard forwards to it), creating
//! `__consumer_offsets` on first use. Transaction coordinators are not served yet:
//! COORDINATOR_NOT_AVAILABLE (retriable).

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::ensure_offsets_topic;
use super::str_bytes;
use crate::api::RequestContext;

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

pub async fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.api_version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let config = &ctx.shard.config;
    let port = match config.advertised_port {
        0 => ctx.shard.listen_port.get() as i32,
        p => p as i32,
    };
    let answer = match req.key_type {
        GROUP => match ensure_offsets_topic(&ctx.shard).await {
            Ok(_) => Ok(()),
            Err(e) => Err((e, "the group coordinator is not available yet")),
        },
        TRANSACTION => Err((
            ResponseError::CoordinatorNotAvailable,
            "transaction coordinators are not available yet",
        )),
        _ => Err((
            ResponseError::InvalidRequest,
            "unknown coordinator key type",
        )),
    };
    let fill = |c: &mut Coordinator| match answer {
        Ok(()) => {
            c.node_id = BrokerId(config.node_id);
            c.host = str_bytes(config.advertised_host.clone());
            c.port = port;
        }
        Err((code, message)) => {
            c.node_id = BrokerId(-1);
            c.port = -1;
            c.error_code = code.code();
            c.error_message = Some(str_bytes(message));
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if ctx.api_version >= 4 {
        resp.coordinators = keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                fill(&mut c);
                c
            })
            .collect();
    } else {
        let mut c = Coordinator::default();
        fill(&mut c);
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    resp
}
