//! AlterConfigs (key 33) and IncrementalAlterConfigs (key 44) for topics: the controller
//! checks every change (Kafka's names, types and ranges; INVALID_CONFIG otherwise), stores
//! them and publishes them, and the topic's logs follow the new settings. AlterConfigs
//! replaces a topic's whole set; the incremental form SETs, DELETEs, APPENDs to and
//! SUBTRACTs from lists, starting from a list's effective value (its default when the topic
//! sets none, as Kafka). Dynamic broker configs are not supported (INVALID_REQUEST).

use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::str_bytes;
use crate::api::RequestContext;
use crate::controller::ConfigOp;
use crate::controller_client::ControllerClient;
use crate::errors::{alter_configs_error, controller_unavailable};

/// One resource's outcome: (type, name, error code, message).
type Outcome = (i8, StrBytes, i16, Option<StrBytes>);

/// One resource asked for: (type, name, (replace the whole set?, operations) or why not).
type Asked = (i8, StrBytes, Result<(bool, Vec<ConfigOp>), String>);

/// Runs the topic changes through the controller and answers every resource in order.
async fn alter(ctx: &RequestContext, resources: Vec<Asked>, validate_only: bool) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = Vec::with_capacity(resources.len());
    let mut asks = Vec::new();
    let mut slots = Vec::new();
    for (kind, name, ops) in resources {
        let refuse = |code: ResponseError, msg: String| {
            (kind, name.clone(), code.code(), Some(str_bytes(msg)))
        };
        match (kind, ops) {
            (RESOURCE_TOPIC, Ok((replace, ops))) => {
                slots.push(out.len());
                asks.push((name.to_string(), replace, ops));
                out.push((kind, name, 0, None));
            }
            (RESOURCE_TOPIC, Err(msg)) => out.push(refuse(ResponseError::InvalidConfig, msg)),
            (RESOURCE_BROKER, _) => out.push(refuse(
                ResponseError::InvalidRequest,
                "dynamic broker configs are not supported: use the properties file".into(),
            )),
            (other, _) => out.push(refuse(
                ResponseError::InvalidRequest,
                format!("unsupported resource type {other}"),
            )),
        }
    }
    if asks.is_empty() {
        return out;
    }
    let done = ControllerClient::new(&ctx.shard)
        .alter_topic_configs(asks, validate_only)
        .await;
    match done {
        Ok(results) => {
            for (slot, r) in slots.into_iter().zip(results) {
                if let Err(e) = r {
                    out[slot].2 = alter_configs_error(&e).code();
                    out[slot].3 = Some(str_bytes(e.to_string()));
                }
            }
        }
        Err(e) => {
            for slot in slots {
                out[slot].2 = controller_unavailable(&e).code();
                out[slot].3 = Some(str_bytes(e.to_string()));
            }
        }
    }
    out
}

pub async fn handle(ctx: &RequestContext, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            let ops: Result<Vec<ConfigOp>, String> = r
                .configs
                .into_iter()
                .map(|c| match c.value {
                    Some(v) => Ok(ConfigOp::Set(c.name.to_string(), v.to_string())),
                    None => Err(format!("null value for {}", c.name.as_str())),
                })
                .collect();
            (r.resource_type, r.resource_name, ops.map(|ops| (true, ops)))
        })
        .collect();
    let mut resp = AlterConfigsResponse::default();
    resp.responses = alter(ctx, resources, req.validate_only)
        .await
        .into_iter()
        .map(|(kind, name, code, msg)| {
            let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = kind;
            r.resource_name = name;
            r.error_code = code;
            r.error_message = msg;
            r
        })
        .collect();
    resp
}

pub async fn handle_incremental(
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            let ops: Result<Vec<ConfigOp>, String> = r
                .configs
                .into_iter()
                .map(|c| {
                    let name = c.name.to_string();
                    let value = c.value.map(|v| v.to_string());
                    match (c.config_operation, value) {
                        (0, Some(v)) => Ok(ConfigOp::Set(name, v)),
                        (1, _) => Ok(ConfigOp::Delete(name)),
                        (2, Some(v)) => Ok(ConfigOp::Append(name, v)),
                        (3, Some(v)) => Ok(ConfigOp::Subtract(name, v)),
                        (op, None) if op != 1 => Err(format!("null value for {name}")),
                        (op, _) => Err(format!("unknown config operation {op} for {name}")),
                    }
                })
                .collect();
            (
                r.resource_type,
                r.resource_name,
                ops.map(|ops| (false, ops)),
            )
        })
        .collect();
    let mut resp = IncrementalAlterConfigsResponse::default();
    resp.responses = alter(ctx, resources, req.validate_only)
        .await
        .into_iter()
        .map(|(kind, name, code, msg)| {
            let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
            r.resource_type = kind;
            r.resource_name = name;
            r.error_code = code;
            r.error_message = msg;
            r
        })
        .collect();
    resp
}
