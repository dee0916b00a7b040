//! DescribeConfigs (key 32): every topic config with its value and whether the topic sets
//! it (DYNAMIC_TOPIC_CONFIG) or inherits the default (DEFAULT_CONFIG); for a BROKER
//! resource every broker setting that has a Kafka name, with the value the broker runs with,
//! STATIC_BROKER_CONFIG when the properties file, environment or flags set it and
//! DEFAULT_CONFIG otherwise, all read-only (no broker config changes at run time).

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

/// One broker config as DescribeConfigs reports it.
struct BrokerEntry {
    name: &'static str,
    value: String,
    kind: Kind,
    /// The property names that set it (its own first, then Kafka's synonyms).
    set_by: &'static [&'static str],
}

fn broker_entry(
    name: &'static str,
    set_by: &'static [&'static str],
    kind: Kind,
    value: impl ToString,
) -> BrokerEntry {
    BrokerEntry {
        name,
        value: value.to_string(),
        kind,
        set_by,
    }
}

/// `PLAINTEXT://host:port`, the host bracketed when it is an IPv6 address.
fn listener(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("PLAINTEXT://[{host}]:{port}")
    } else {
        format!("PLAINTEXT://{host}:{port}")
    }
}

/// Every broker setting Sluice has that Kafka has too, under Kafka's name, with the value the
/// broker runs with (`listen_port` is the port bound, which differs from the configured one
/// when that was 0). `sluice.*` settings have no Kafka name and are left out.
fn broker_configs(c: &BrokerConfig, listen_port: u16) -> Vec<BrokerEntry> {
    use Kind::{Boolean, Int, List, Long, String};
    let advertised_port = match c.advertised_port {
        0 => listen_port,
        p => p,
    };
    let g = &c.group;
    // Broker defaults of topic configs that Sluice fixes (not settable on the broker): the
    // value every topic that sets none runs with.
    let topic_default = |topic_name: &str| {
        topic_config::def(topic_name)
            .map_or_else(::std::string::String::new, |d| d.default_value(c))
    };
    vec![
        broker_entry(
            "compression.type",
            &[],
            String,
            topic_default("compression.type"),
        ),
        broker_entry(
            "log.cleanup.policy",
            &[],
            List,
            topic_default("cleanup.policy"),
        ),
        broker_entry(
            "log.message.timestamp.type",
            &[],
            String,
            topic_default("message.timestamp.type"),
        ),
        broker_entry(
            "unclean.leader.election.enable",
            &[],
            Boolean,
            topic_default("unclean.leader.election.enable"),
        ),
        broker_entry(
            "advertised.listeners",
            &["advertised.listeners"],
            String,
            listener(&c.advertised_host, advertised_port),
        ),
        broker_entry(
            "auto.create.topics.enable",
            &["auto.create.topics.enable"],
            Boolean,
            c.auto_create_topics,
        ),
        broker_entry("broker.id", &["broker.id", "node.id"], Int, c.node_id),
        broker_entry(
            "connections.max.idle.ms",
            &["connections.max.idle.ms"],
            Long,
            c.connections_max_idle_ms,
        ),
        // A single node: every partition has one replica.
        broker_entry("default.replication.factor", &[], Int, 1),
        broker_entry(
            "delete.topic.enable",
            &["delete.topic.enable"],
            Boolean,
            c.delete_topic_enable,
        ),
        broker_entry(
            "fetch.max.bytes",
            &["fetch.max.bytes"],
            Int,
            c.fetch_max_bytes,
        ),
        broker_entry(
            "group.initial.rebalance.delay.ms",
            &["group.initial.rebalance.delay.ms"],
            Int,
            g.initial_rebalance_delay_ms,
        ),
        broker_entry(
            "group.max.session.timeout.ms",
            &["group.max.session.timeout.ms"],
            Int,
            g.max_session_timeout_ms,
        ),
        broker_entry("group.max.size", &["group.max.size"], Int, g.max_size),
        broker_entry(
            "group.min.session.timeout.ms",
            &["group.min.session.timeout.ms"],
            Int,
            g.min_session_timeout_ms,
        ),
        broker_entry(
            "listeners",
            &["listeners"],
            String,
            listener(&c.listen.ip().to_string(), listen_port),
        ),
        broker_entry(
            "log.dirs",
            &["log.dirs", "log.dir"],
            String,
            c.data_dir.display(),
        ),
        broker_entry(
            "log.index.interval.bytes",
            &["log.index.interval.bytes"],
            Int,
            c.log.index_interval_bytes,
        ),
        broker_entry(
            "log.message.timestamp.after.max.ms",
            &["log.message.timestamp.after.max.ms"],
            Long,
            c.message_timestamp_after_max_ms,
        ),
        broker_entry(
            "log.message.timestamp.before.max.ms",
            &["log.message.timestamp.before.max.ms"],
            Long,
            c.message_timestamp_before_max_ms,
        ),
        broker_entry(
            "log.retention.bytes",
            &["log.retention.bytes"],
            Long,
            c.log.retention_bytes,
        ),
        broker_entry(
            "log.retention.check.interval.ms",
            &["log.retention.check.interval.ms"],
            Long,
            c.log_retention_check_interval_ms,
        ),
        broker_entry(
            "log.retention.ms",
            &[
                "log.retention.ms",
                "log.retention.minutes",
                "log.retention.hours",
            ],
            Long,
            c.log.retention_ms,
        ),
        broker_entry(
            "log.roll.ms",
            &["log.roll.ms", "log.roll.hours"],
            Long,
            c.log.segment_ms,
        ),
        broker_entry(
            "log.segment.bytes",
            &["log.segment.bytes"],
            Int,
            c.log.segment_bytes,
        ),
        broker_entry(
            "max.connections",
            &["max.connections"],
            Int,
            c.max_connections,
        ),
        broker_entry(
            "max.connections.per.ip",
            &["max.connections.per.ip"],
            Int,
            c.max_connections_per_ip,
        ),
        broker_entry(
            "max.request.partition.size.limit",
            &["max.request.partition.size.limit"],
            Int,
            c.max_request_partition_size_limit,
        ),
        broker_entry(
            "message.max.bytes",
            &["message.max.bytes"],
            Int,
            c.message_max_bytes,
        ),
        broker_entry("min.insync.replicas", &[], Int, 1),
        broker_entry("node.id", &["node.id", "broker.id"], Int, c.node_id),
        broker_entry("num.partitions", &["num.partitions"], Int, c.num_partitions),
        broker_entry(
            "offset.metadata.max.bytes",
            &["offset.metadata.max.bytes"],
            Int,
            g.offset_metadata_max_bytes,
        ),
        broker_entry(
            "offsets.retention.check.interval.ms",
            &["offsets.retention.check.interval.ms"],
            Long,
            g.offsets_retention_check_interval_ms,
        ),
        broker_entry(
            "offsets.retention.minutes",
            &["offsets.retention.minutes"],
            Int,
            g.offsets_retention_ms / 60_000,
        ),
        broker_entry(
            "offsets.topic.num.partitions",
            &["offsets.topic.num.partitions"],
            Int,
            g.offsets_partitions,
        ),
        broker_entry(
            "offsets.topic.segment.bytes",
            &["offsets.topic.segment.bytes"],
            Int,
            c.offsets_topic_segment_bytes,
        ),
        broker_entry(
            "producer.id.expiration.check.interval.ms",
            &["producer.id.expiration.check.interval.ms"],
            Int,
            c.producer_id_expiration_check_interval_ms,
        ),
        broker_entry(
            "producer.id.expiration.ms",
            &["producer.id.expiration.ms"],
            Int,
            c.log.producer_id_expiration_ms,
        ),
        broker_entry(
            "queued.max.request.bytes",
            &["queued.max.request.bytes"],
            Long,
            c.queued_max_request_bytes,
        ),
        broker_entry(
            "socket.request.max.bytes",
            &["socket.request.max.bytes"],
            Int,
            c.socket_request_max_bytes,
        ),
    ]
}

/// How DescribeConfigs describes one config of a resource.
struct Described<'a> {
    name: &'a str,
    value: String,
    source: i8,
    kind: Kind,
    read_only: bool,
}

fn entry(v: i16, synonyms: bool, d: Described) -> DescribeConfigsResourceResult {
    let Described {
        name,
        value,
        source,
        kind,
        read_only,
    } = d;
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = Some(str_bytes(value.clone()));
    e.config_source = source;
    e.read_only = read_only;
    // Kafka answers null documentation unless asked for it (the codec's default is "").
    e.documentation = None;
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
        // Null on success, as Kafka's ApiError.NONE (the codec's default is "").
        out.error_message = None;
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
                            let described = Described {
                                name: d.name,
                                value,
                                source,
                                kind: d.kind,
                                read_only: false,
                            };
                            entry(v, synonyms, described)
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
                    out.configs = broker_configs(config, ctx.shard.listen_port.get())
                        .into_iter()
                        .filter(|b| wanted(b.name))
                        .map(|b| {
                            let set = b.set_by.iter().any(|p| config.set_properties.contains(*p));
                            let described = Described {
                                name: b.name,
                                value: b.value,
                                source: if set {
                                    SOURCE_STATIC_BROKER
                                } else {
                                    SOURCE_DEFAULT
                                },
                                kind: b.kind,
                                // Sluice changes no broker config at run time (AlterConfigs
                                // refuses BROKER resources): all are read-only.
                                read_only: true,
                            };
                            entry(v, synonyms, described)
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
