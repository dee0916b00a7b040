//! FindCoordinator (key 10). A group's coordinator is the broker that leads its
//! `__consumer_offsets` partition (there, the shard that owns it; any shard forwards to it),
//! and `__consumer_offsets` is created on first use. Transaction coordinators are not served yet:
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED with a message saying so, which clients take as
//! fatal at once (a retriable COORDINATOR_NOT_AVAILABLE had a transactional producer retry
//! until its `init_transactions` timeout). InitProducerId answers transactional ids alike.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::ensure_offsets_topic;
use super::str_bytes;
use crate::api::RequestContext;
use crate::group::{partition_for, OFFSETS_TOPIC};

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// What a transactional id gets while Sluice has no transaction coordinator: an error that
/// clients treat as fatal (not retriable), so a transactional producer fails at once.
pub const TRANSACTIONS_REFUSED: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;
const TRANSACTIONS_REFUSED_MESSAGE: &str =
    "Sluice does not support transactions: use an idempotent producer without transactional.id";

/// The most characters of a client's transactional id or client id a log line repeats.
const LOGGED_ID_CHARS_MAX: usize = 256;

/// Logs that a transactional client was refused (rate-limited with the connection warnings:
/// the ids come from the client, and only their first `LOGGED_ID_CHARS_MAX` characters are
/// written).
pub(crate) fn refuse_transactions(ctx: &RequestContext, api: &str, transactional_id: &str) {
    let bounded = |s: &str| s.chars().take(LOGGED_ID_CHARS_MAX).collect::<String>();
    let reason = format!(
        "{api} for transactional.id {} (client {}) refused with \
         TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        bounded(transactional_id),
        bounded(&ctx.client_id),
    );
    crate::server::warn_connection(
        &ctx.shard,
        &ctx.client_host,
        "transactions are not supported: a transactional producer was refused",
        &reason,
    );
}

pub async fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.api_version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let answer = match req.key_type {
        GROUP => match ensure_offsets_topic(&ctx.shard).await {
            Ok(image) => Ok(image),
            Err(e) => Err((e, "the group coordinator is not available yet")),
        },
        TRANSACTION => {
            let first = keys.first().map_or("", |k| k.as_str());
            refuse_transactions(ctx, "FindCoordinator", first);
            Err((TRANSACTIONS_REFUSED, TRANSACTIONS_REFUSED_MESSAGE))
        }
        _ => Err((
            ResponseError::InvalidRequest,
            "unknown coordinator key type",
        )),
    };
    // A group's coordinator is the broker that leads its `__consumer_offsets` partition.
    let fill = |c: &mut Coordinator, key: &str| {
        let found = answer.as_ref().map_err(|e| *e).and_then(|image| {
            let t = &image.topics[OFFSETS_TOPIC];
            let p = partition_for(key, t.partitions.len() as i32);
            let leader = match t.partitions.get(p as usize) {
                Some(m) if m.replicas.is_empty() => ctx.shard.config.node_id,
                Some(m) => m.leader,
                None => -1,
            };
            let (host, port) = super::endpoint(&ctx.shard, leader).ok_or((
                ResponseError::CoordinatorNotAvailable,
                "the group's coordinator is offline",
            ))?;
            Ok((leader, host, port))
        });
        match found {
            // The codec's default message is an empty string; Kafka answers null on success.
            Ok((leader, host, port)) => {
                c.node_id = BrokerId(leader);
                c.host = str_bytes(host);
                c.port = port;
                c.error_message = None;
            }
            Err((code, message)) => {
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_code = code.code();
                c.error_message = Some(str_bytes(message));
            }
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if ctx.api_version >= 4 {
        resp.coordinators = keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                fill(&mut c, key.as_str());
                c.key = key;
                c
            })
            .collect();
    } else {
        let mut c = Coordinator::default();
        fill(&mut c, req.key.as_str());
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    resp
}
