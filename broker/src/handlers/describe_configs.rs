//! DescribeConfigs (key 32): every topic config with its value and whether the topic sets
//! it (DYNAMIC_TOPIC_CONFIG) or inherits the default (DEFAULT_CONFIG); the broker's own
//! settings for a BROKER resource (STATIC_BROKER_CONFIG).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::api::RequestContext;
use crate::config::BrokerConfig;
use crate::topic_config::{self, Kind};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;

const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// The broker settings DescribeConfigs reports, with their Kafka names.
fn broker_configs(c: &BrokerConfig) -> Vec<(&'static str, String, Kind)> {
    vec![
        ("broker.id", c.node_id.to_string(), Kind::Int),
        ("node.id", c.node_id.to_string(), Kind::Int),
        ("log.dirs", c.data_dir.display().to_string(), Kind::String),
        ("num.partitions", c.num_partitions.to_string(), Kind::Int),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            Kind::Boolean,
        ),
        (
            "delete.topic.enable",
            c.delete_topic_enable.to_string(),
            Kind::Boolean,
        ),
        (
            "message.max.bytes",
            c.message_max_bytes.to_string(),
            Kind::Int,
        ),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
            Kind::Int,
        ),
        (
            "log.segment.bytes",
            c.log.segment_bytes.to_string(),
            Kind::Int,
        ),
        ("log.roll.ms", c.log.segment_ms.to_string(), Kind::Long),
        (
            "log.retention.ms",
            c.log.retention_ms.to_string(),
            Kind::Long,
        ),
        (
            "log.retention.bytes",
            c.log.retention_bytes.to_string(),
            Kind::Long,
        ),
        (
            "log.retention.check.interval.ms",
            c.log_retention_check_interval_ms.to_string(),
            Kind::Long,
        ),
        (
            "log.index.interval.bytes",
            c.log.index_interval_bytes.to_string(),
            Kind::Int,
        ),
        (
            "offsets.topic.num.partitions",
            c.group.offsets_partitions.to_string(),
            Kind::Int,
        ),
        (
            "offsets.retention.minutes",
            (c.group.offsets_retention_ms / 60_000).to_string(),
            Kind::Int,
        ),
        (
            "group.initial.rebalance.delay.ms",
            c.group.initial_rebalance_delay_ms.to_string(),
            Kind::Int,
        ),
        (
            "group.min.session.timeout.ms",
            c.group.min_session_timeout_ms.to_string(),
            Kind::Int,
        ),
        (
            "group.max.session.timeout.ms",
            c.group.max_session_timeout_ms.to_string(),
            Kind::Int,
        ),
        ("default.replication.factor", "1".into(), Kind::Int),
        ("min.insync.replicas", "1".into(), Kind::Int),
    ]
}

fn entry(
    v: i16,
    synonyms: bool,
    name: &str,
    value: String,
    source: i8,
    kind: Kind,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = Some(str_bytes(value.clone()));
    e.config_source = source;
    if v >= 3 {
        e.config_type = kind.wire();
    }
    if synonyms {
        let mut syn = DescribeConfigsSynonym::default();
        syn.name = str_bytes(name);
        syn.value = Some(str_bytes(value));
        syn.source = source;
        e.synonyms = vec![syn];
    }
    e
}

pub async fn handle(ctx: &RequestContext, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let v = ctx.api_version;
    let config = &ctx.shard.config;
    let image = ctx.shard.metadata();
    let synonyms = req.include_synonyms;
    let mut resp = DescribeConfigsResponse::default();
    for r in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        let wanted = |name: &str| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        match r.resource_type {
            RESOURCE_TOPIC => match image.topics.get(r.resource_name.as_str()) {
                None => {
                    out.error_code = ResponseError::UnknownTopicOrPartition.code();
                    out.error_message = Some(str_bytes("unknown topic"));
                }
                Some(t) => {
                    out.configs = topic_config::effective(config, &t.configs)
                        .into_iter()
                        .filter(|(d, _, _)| wanted(d.name))
                        .map(|(d, value, set)| {
                            let source = if set {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            entry(v, synonyms, d.name, value, source, d.kind)
                        })
                        .collect();
                }
            },
            RESOURCE_BROKER => {
                let name = r.resource_name.as_str();
                if !name.is_empty() && name != config.node_id.to_string() {
                    out.error_code = ResponseError::InvalidRequest.code();
                    out.error_message = Some(str_bytes(format!("no broker {name} here")));
                } else {
                    out.configs = broker_configs(config)
                        .into_iter()
                        .filter(|(n, _, _)| wanted(n))
                        .map(|(n, value, kind)| {
                            entry(v, synonyms, n, value, SOURCE_STATIC_BROKER, kind)
                        })
                        .collect();
                }
            }
            RESOURCE_BROKER_LOGGER => {}
            other => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message = Some(str_bytes(format!("unsupported resource type {other}")));
            }
        }
        resp.results.push(out);
    }
    resp
}
