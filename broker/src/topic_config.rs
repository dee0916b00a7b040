//! Kafka's topic-level configs: their names, types, defaults (most come from a broker
//! property, as in Kafka), value validation, and what a topic's log runs with.
//!
//! A topic stores only the values set for it (`TopicMeta::configs`); everything else is the
//! broker default, reported as such by DescribeConfigs. Honoured by the log today:
//! `segment.bytes`, `segment.ms`, `index.interval.bytes`, `retention.ms`, `retention.bytes`,
//! `cleanup.policy` (a topic that is only `compact` is not trimmed by time or size and refuses
//! records without a key; compaction itself is later work; an empty policy keeps everything,
//! as Kafka's KIP-1161), `max.message.bytes`,
//! `message.timestamp.type` and `compression.type` (a fixed codec re-compresses batches that
//! arrive with another one, as Kafka does). The others are
//! validated and stored (`min.insync.replicas` is enforced for acks=all).

use std::collections::BTreeMap;

use storage::LogConfig;

use crate::config::BrokerConfig;

/// DescribeConfigs' config types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

impl Kind {
    /// The `config_type` code of DescribeConfigs v3+.
    pub fn wire(self) -> i8 {
        match self {
            Kind::Boolean => 1,
            Kind::String => 2,
            Kind::Int => 3,
            Kind::Long => 5,
            Kind::Double => 6,
            Kind::List => 7,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Any,
    AtLeast(i64),
    OneOf(&'static [&'static str]),
    /// A comma-separated list whose items come from the set (possibly none).
    ListOf(&'static [&'static str]),
    Ratio,
}

/// Where a topic config's default comes from.
#[derive(Debug, Clone, Copy)]
enum Default {
    Fixed(&'static str),
    Broker(fn(&BrokerConfig) -> String),
}

pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    check: Check,
    default: Default,
}

const MAX: &str = "9223372036854775807";
const CODECS: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// Kafka 3.7's topic configs (TopicConfig / LogConfig).
pub const DEFS: &[Def] = &[
    Def {
        name: "cleanup.policy",
        kind: Kind::List,
        check: Check::ListOf(&["delete", "compact"]),
        default: Default::Fixed("delete"),
    },
    Def {
        name: "compression.type",
        kind: Kind::String,
        check: Check::OneOf(CODECS),
        default: Default::Fixed("producer"),
    },
    Def {
        name: "compression.gzip.level",
        kind: Kind::Int,
        check: Check::AtLeast(-1),
        default: Default::Fixed("-1"),
    },
    Def {
        name: "compression.lz4.level",
        kind: Kind::Int,
        check: Check::AtLeast(1),
        default: Default::Fixed("9"),
    },
    Def {
        name: "compression.zstd.level",
        kind: Kind::Int,
        check: Check::AtLeast(-131072),
        default: Default::Fixed("3"),
    },
    Def {
        name: "delete.retention.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Fixed("86400000"),
    },
    Def {
        name: "file.delete.delay.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Fixed("60000"),
    },
    Def {
        name: "flush.messages",
        kind: Kind::Long,
        check: Check::AtLeast(1),
        default: Default::Fixed(MAX),
    },
    Def {
        name: "flush.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Fixed(MAX),
    },
    Def {
        name: "follower.replication.throttled.replicas",
        kind: Kind::List,
        check: Check::Any,
        default: Default::Fixed(""),
    },
    Def {
        name: "index.interval.bytes",
        kind: Kind::Int,
        check: Check::AtLeast(0),
        default: Default::Broker(|b| b.log.index_interval_bytes.to_string()),
    },
    Def {
        name: "leader.replication.throttled.replicas",
        kind: Kind::List,
        check: Check::Any,
        default: Default::Fixed(""),
    },
    Def {
        name: "local.retention.bytes",
        kind: Kind::Long,
        check: Check::AtLeast(-2),
        default: Default::Fixed("-2"),
    },
    Def {
        name: "local.retention.ms",
        kind: Kind::Long,
        check: Check::AtLeast(-2),
        default: Default::Fixed("-2"),
    },
    Def {
        name: "max.compaction.lag.ms",
        kind: Kind::Long,
        check: Check::AtLeast(1),
        default: Default::Fixed(MAX),
    },
    Def {
        name: "max.message.bytes",
        kind: Kind::Int,
        check: Check::AtLeast(0),
        default: Default::Broker(|b| b.message_max_bytes.to_string()),
    },
    Def {
        name: "message.downconversion.enable",
        kind: Kind::Boolean,
        check: Check::OneOf(&["true", "false"]),
        default: Default::Fixed("true"),
    },
    Def {
        name: "message.format.version",
        kind: Kind::String,
        check: Check::Any,
        default: Default::Fixed("3.0-IV1"),
    },
    Def {
        name: "message.timestamp.after.max.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Broker(|b| b.message_timestamp_after_max_ms.to_string()),
    },
    Def {
        name: "message.timestamp.before.max.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Broker(|b| b.message_timestamp_before_max_ms.to_string()),
    },
    Def {
        name: "message.timestamp.difference.max.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Fixed(MAX),
    },
    Def {
        name: "message.timestamp.type",
        kind: Kind::String,
        check: Check::OneOf(&["CreateTime", "LogAppendTime"]),
        default: Default::Fixed("CreateTime"),
    },
    Def {
        name: "min.cleanable.dirty.ratio",
        kind: Kind::Double,
        check: Check::Ratio,
        default: Default::Fixed("0.5"),
    },
    Def {
        name: "min.compaction.lag.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Fixed("0"),
    },
    Def {
        name: "min.insync.replicas",
        kind: Kind::Int,
        check: Check::AtLeast(1),
        default: Default::Broker(|b| b.min_insync_replicas.to_string()),
    },
    Def {
        name: "preallocate",
        kind: Kind::Boolean,
        check: Check::OneOf(&["true", "false"]),
        default: Default::Fixed("false"),
    },
    Def {
        name: "remote.log.copy.disable",
        kind: Kind::Boolean,
        check: Check::OneOf(&["true", "false"]),
        default: Default::Fixed("false"),
    },
    Def {
        name: "remote.log.delete.on.disable",
        kind: Kind::Boolean,
        check: Check::OneOf(&["true", "false"]),
        default: Default::Fixed("false"),
    },
    Def {
        name: "remote.storage.enable",
        kind: Kind::Boolean,
        check: Check::OneOf(&["true", "false"]),
        default: Default::Fixed("false"),
    },
    Def {
        name: "retention.bytes",
        kind: Kind::Long,
        check: Check::AtLeast(-1),
        default: Default::Broker(|b| b.log.retention_bytes.to_string()),
    },
    Def {
        name: "retention.ms",
        kind: Kind::Long,
        check: Check::AtLeast(-1),
        default: Default::Broker(|b| b.log.retention_ms.to_string()),
    },
    Def {
        name: "segment.bytes",
        kind: Kind::Int,
        check: Check::AtLeast(14),
        default: Default::Broker(|b| b.log.segment_bytes.to_string()),
    },
    Def {
        name: "segment.index.bytes",
        kind: Kind::Int,
        check: Check::AtLeast(4),
        default: Default::Fixed("10485760"),
    },
    Def {
        name: "segment.jitter.ms",
        kind: Kind::Long,
        check: Check::AtLeast(0),
        default: Default::Fixed("0"),
    },
    Def {
        name: "segment.ms",
        kind: Kind::Long,
        check: Check::AtLeast(1),
        default: Default::Broker(|b| b.log.segment_ms.to_string()),
    },
    Def {
        name: "unclean.leader.election.enable",
        kind: Kind::Boolean,
        check: Check::OneOf(&["true", "false"]),
        default: Default::Fixed("false"),
    },
];

pub fn def(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

impl Def {
    pub fn default_value(&self, broker: &BrokerConfig) -> String {
        match self.default {
            Default::Fixed(v) => v.to_owned(),
            Default::Broker(f) => f(broker),
        }
    }

    /// Whether an APPEND or SUBTRACT (IncrementalAlterConfigs) may apply.
    pub fn is_list(&self) -> bool {
        self.kind == Kind::List
    }
}

/// Checks one `name=value`; the error is the message Kafka's INVALID_CONFIG would carry.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let d = def(name).ok_or_else(|| format!("unknown topic config name: {name}"))?;
    let bad = || format!("invalid value {value:?} for configuration {name}");
    match d.kind {
        Kind::Int => {
            value.trim().parse::<i32>().map_err(|_| bad())?;
        }
        Kind::Long => {
            value.trim().parse::<i64>().map_err(|_| bad())?;
        }
        Kind::Double => {
            value.trim().parse::<f64>().map_err(|_| bad())?;
        }
        Kind::Boolean => {
            if !value.trim().eq_ignore_ascii_case("true")
                && !value.trim().eq_ignore_ascii_case("false")
            {
                return Err(bad());
            }
        }
        Kind::String | Kind::List => {}
    }
    match d.check {
        Check::Any => Ok(()),
        Check::AtLeast(min) => {
            let v: i64 = value.trim().parse().map_err(|_| bad())?;
            if v < min {
                return Err(format!("{bad}: must be at least {min}", bad = bad()));
            }
            Ok(())
        }
        Check::OneOf(set) => {
            if d.kind == Kind::Boolean || set.contains(&value.trim()) {
                Ok(())
            } else {
                Err(format!("{}: must be one of {set:?}", bad()))
            }
        }
        // An empty list is valid, as in Kafka: a topic whose `cleanup.policy` is empty is
        // neither trimmed nor compacted (KIP-1161).
        Check::ListOf(set) => {
            if list_items(value).iter().any(|i| !set.contains(&i.as_str())) {
                return Err(format!("{}: items must be from {set:?}", bad()));
            }
            Ok(())
        }
        Check::Ratio => {
            let v: f64 = value.trim().parse().map_err(|_| bad())?;
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{}: must be between 0 and 1", bad()))
            }
        }
    }
}

/// The value a topic runs with for one config: the value set for it, else the default
/// ("" for a name that is not a topic config).
pub fn effective_value(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
    name: &str,
) -> String {
    match overrides.get(name) {
        Some(v) => v.clone(),
        None => def(name).map_or_else(String::new, |d| d.default_value(broker)),
    }
}

/// The items of a list config's value (`delete,compact`), trimmed, empty items dropped.
pub fn list_items(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every topic config with its value for a topic: `(def, value, set for the topic)`.
pub fn effective(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static Def, String, bool)> {
    DEFS.iter()
        .map(|d| match overrides.get(d.name) {
            Some(v) => (d, v.clone(), true),
            None => (d, d.default_value(broker), false),
        })
        .collect()
}

fn value<T: std::str::FromStr>(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
    name: &str,
) -> Option<T> {
    match overrides.get(name) {
        Some(v) => v.trim().parse().ok(),
        None => def(name)?.default_value(broker).parse().ok(),
    }
}

/// The log settings of a topic: broker defaults with the topic's overrides applied.
pub fn log_config(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut c = broker.log.clone();
    if let Some(v) = value::<u64>(broker, overrides, "segment.bytes") {
        c.segment_bytes = v.max(1024);
    }
    if let Some(v) = value::<u64>(broker, overrides, "segment.ms") {
        c.segment_ms = v;
    }
    if let Some(v) = value::<u64>(broker, overrides, "index.interval.bytes") {
        c.index_interval_bytes = v;
    }
    let delete = overrides
        .get("cleanup.policy")
        .is_none_or(|p| p.split(',').any(|i| i.trim() == "delete"));
    c.retention_ms = if delete {
        value(broker, overrides, "retention.ms").unwrap_or(-1)
    } else {
        -1
    };
    c.retention_bytes = if delete {
        value(broker, overrides, "retention.bytes").unwrap_or(-1)
    } else {
        -1
    };
    c.log_append_time = log_append_time(overrides);
    c
}

/// `max.message.bytes` of a topic.
pub fn max_message_bytes(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> usize {
    value(broker, overrides, "max.message.bytes").unwrap_or(broker.message_max_bytes)
}

/// What a client's batches for this topic are checked against (`protocol::validate`), at
/// broker time `now_ms`.
pub fn client_rules(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
    now_ms: i64,
    producer_ids_issued_end: i64,
) -> protocol::validate::ClientRules {
    let bounds = (!log_append_time(overrides)).then(|| protocol::validate::TimestampBounds {
        before_max_ms: value(broker, overrides, "message.timestamp.before.max.ms")
            .unwrap_or(broker.message_timestamp_before_max_ms),
        after_max_ms: value(broker, overrides, "message.timestamp.after.max.ms")
            .unwrap_or(broker.message_timestamp_after_max_ms),
    });
    protocol::validate::ClientRules {
        now_ms,
        timestamp_bounds: bounds,
        require_keys: compacted(overrides),
        decompressed_max_bytes: broker.message_decompressed_max_bytes,
        producer_ids_issued_end,
    }
}

/// Whether `cleanup.policy` includes `compact`.
pub fn compacted(overrides: &BTreeMap<String, String>) -> bool {
    overrides
        .get("cleanup.policy")
        .is_some_and(|p| p.split(',').any(|i| i.trim() == "compact"))
}

/// The codec a topic stores batches with when `compression.type` names one (`producer`, the
/// default, keeps what the producer sent).
pub fn fixed_codec(
    overrides: &BTreeMap<String, String>,
) -> Option<kafka_protocol::records::Compression> {
    use kafka_protocol::records::Compression;
    match overrides.get("compression.type")?.trim() {
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Whether the topic stamps batches with the broker's time (`LogAppendTime`).
fn log_append_time(overrides: &BTreeMap<String, String>) -> bool {
    overrides
        .get("message.timestamp.type")
        .is_some_and(|v| v.trim() == "LogAppendTime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_by_type_and_range() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("segment.bytes", "13").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(
            validate("cleanup.policy", "").is_ok(),
            "an empty list, as Kafka"
        );
        assert!(validate("cleanup.policy", "delete,shred").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "Now").is_err());
        assert!(validate("preallocate", "maybe").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("no.such.config", "1").is_err());
    }

    #[test]
    fn defaults_come_from_the_broker_and_overrides_win() {
        let mut broker = BrokerConfig::default();
        broker.log.retention_ms = 1234;
        let mut o = BTreeMap::new();
        let all = effective(&broker, &o);
        assert_eq!(all.len(), DEFS.len());
        let r = all
            .iter()
            .find(|(d, _, _)| d.name == "retention.ms")
            .unwrap();
        assert_eq!((r.1.as_str(), r.2), ("1234", false));
        assert_eq!(log_config(&broker, &o).retention_ms, 1234);
        o.insert("retention.bytes".into(), "5000".into());
        o.insert("segment.bytes".into(), "20000".into());
        let c = log_config(&broker, &o);
        assert_eq!((c.retention_bytes, c.segment_bytes), (5000, 20000));
        o.insert("cleanup.policy".into(), "compact".into());
        let c = log_config(&broker, &o);
        assert_eq!(
            (c.retention_ms, c.retention_bytes),
            (-1, -1),
            "compact only: kept"
        );
        o.insert("cleanup.policy".into(), "".into());
        let c = log_config(&broker, &o);
        assert_eq!((c.retention_ms, c.retention_bytes), (-1, -1), "empty: kept");
        assert!(!compacted(&o));
        assert_eq!(
            effective_value(&broker, &BTreeMap::new(), "cleanup.policy"),
            "delete"
        );
        assert_eq!(list_items(" delete, ,compact "), vec!["delete", "compact"]);
    }
}
