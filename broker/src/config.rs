//! Broker configuration: defaults, then a `server.properties`-style file, then `SLUICE_*`
//! environment variables, then command-line flags. Property names are Kafka's where they
//! mean the same thing; Sluice-only settings are prefixed `sluice.`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use storage::LogConfig;

use crate::group::GroupConfig;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `listeners` (PLAINTEXT://host:port) or `--listen`.
    pub listen: SocketAddr,
    /// `advertised.listeners`: what Metadata tells clients; defaults to `listen`.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// `log.dirs` / `log.dir` (first entry) or `--data-dir`.
    pub data_dir: PathBuf,
    /// `node.id` / `broker.id`.
    pub node_id: i32,
    /// `sluice.smp` or `--smp`: number of shards (one per core by default).
    pub smp: usize,
    /// `num.partitions`: partitions of auto-created topics.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `delete.topic.enable`.
    pub delete_topic_enable: bool,
    /// `socket.request.max.bytes`: largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `message.max.bytes`: largest record batch accepted.
    pub message_max_bytes: usize,
    /// `sluice.shard.inbox.capacity`: cross-shard messages queued per shard before senders wait.
    pub shard_inbox_capacity: usize,
    /// `sluice.io.memory.bytes`: registered io_uring buffer memory per shard.
    pub io_memory_bytes: usize,
    /// `max.connections`: per shard; further connections wait in the kernel backlog.
    pub max_connections_per_shard: usize,
    /// `sluice.connection.pipeline.depth`: requests of one connection in progress at once.
    /// A Produce lets the connection read the next request once its records are appended
    /// (their durability wait overlaps the next requests); other requests complete first.
    pub connection_pipeline_depth: usize,
    /// `queued.max.request.bytes`: request bytes a shard holds in memory at once; a
    /// connection whose next frame does not fit waits before reading it.
    pub queued_max_request_bytes: usize,
    /// `sluice.fetch.max.wait.ms.max`: ceiling on a fetch long-poll.
    pub fetch_max_wait_ms_max: u64,
    /// `producer.id.expiration.check.interval.ms`: how often each shard looks for idle
    /// idempotent producers to forget.
    pub producer_id_expiration_check_interval_ms: u64,
    /// `log.retention.check.interval.ms`: how often each shard applies retention.
    pub log_retention_check_interval_ms: u64,
    /// `log.segment.bytes`, `log.roll.ms` / `log.roll.hours`, `log.index.interval.bytes`,
    /// `log.retention.ms` / `.minutes` / `.hours`, `log.retention.bytes`,
    /// `sluice.log.preallocate.bytes`, `sluice.log.write.buffer.bytes`.
    pub log: LogConfig,
    /// `sluice.admin.listen`: the admin HTTP server (metrics, JSON API, health); empty
    /// disables it. A port taken by something else is logged and the broker runs without it.
    pub admin_listen: String,
    /// `cluster.id` (defaults to a fixed value for a single node).
    pub cluster_id: String,
    /// Consumer groups: `offsets.topic.num.partitions`, `group.*.session.timeout.ms`,
    /// `group.initial.rebalance.delay.ms`, `group.max.size`, `offset.metadata.max.bytes`,
    /// `offsets.retention.minutes`, `offsets.retention.check.interval.ms`,
    /// `sluice.group.member.metadata.max.bytes`.
    pub group: GroupConfig,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets`.
    pub offsets_topic_segment_bytes: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".parse().expect("literal address"),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            data_dir: PathBuf::from("./sluice-data"),
            node_id: 0,
            smp: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            num_partitions: 1,
            auto_create_topics: true,
            delete_topic_enable: true,
            socket_request_max_bytes: 104_857_600,
            message_max_bytes: 1_048_588,
            shard_inbox_capacity: 1024,
            io_memory_bytes: 1 << 20,
            max_connections_per_shard: 4096,
            connection_pipeline_depth: 16,
            queued_max_request_bytes: 256 << 20,
            fetch_max_wait_ms_max: 30_000,
            producer_id_expiration_check_interval_ms: 600_000,
            log_retention_check_interval_ms: 300_000,
            log: LogConfig::default(),
            admin_listen: "127.0.0.1:9644".into(),
            cluster_id: "sluice-single-node".into(),
            group: GroupConfig::default(),
            offsets_topic_segment_bytes: 100 << 20,
        }
    }
}

/// Reads a `key=value` properties file (`#` and `!` comments, blank lines ignored).
pub fn read_properties(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((k, v)) = line.split_once(['=', ':']) else {
            bail!("{}:{}: expected key=value", path.display(), n + 1);
        };
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// `SLUICE_LOG_SEGMENT_BYTES=…` becomes `log.segment.bytes=…`. The variables that the
/// command line reads itself (listen, data dir, smp, config) are skipped here.
pub fn env_properties() -> BTreeMap<String, String> {
    const CLI_VARS: [&str; 4] = [
        "SLUICE_LISTEN",
        "SLUICE_DATA_DIR",
        "SLUICE_SMP",
        "SLUICE_CONFIG",
    ];
    std::env::vars()
        .filter(|(k, _)| k.starts_with("SLUICE_") && !CLI_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k["SLUICE_".len()..].to_lowercase().replace('_', "."), v))
        .collect()
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| anyhow::anyhow!("property {key}={value}: {e}"))
}

fn listener_addr(value: &str) -> Result<SocketAddr> {
    // Accept `PLAINTEXT://host:port` (first listener) or plain `host:port`.
    let first = value.split(',').next().unwrap_or("").trim();
    let hostport = first.split_once("://").map(|(_, r)| r).unwrap_or(first);
    let hostport = if let Some(port) = hostport.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        hostport.to_owned()
    };
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .with_context(|| format!("listener address {value}"))?
        .next()
        .with_context(|| format!("listener address {value} resolves to nothing"))
}

impl BrokerConfig {
    /// Applies properties in order; unknown keys are logged and ignored, as Kafka does.
    pub fn apply(&mut self, props: &BTreeMap<String, String>) -> Result<()> {
        let mut advertised: Option<String> = None;
        for (key, value) in props {
            match key.as_str() {
                "listeners" => self.listen = listener_addr(value)?,
                "advertised.listeners" => advertised = Some(value.clone()),
                "log.dirs" | "log.dir" => {
                    self.data_dir = PathBuf::from(value.split(',').next().unwrap_or(value).trim())
                }
                "node.id" | "broker.id" => self.node_id = parse(key, value)?,
                "sluice.smp" => self.smp = parse(key, value)?,
                "num.partitions" => self.num_partitions = parse(key, value)?,
                "auto.create.topics.enable" => self.auto_create_topics = parse(key, value)?,
                "delete.topic.enable" => self.delete_topic_enable = parse(key, value)?,
                "socket.request.max.bytes" => self.socket_request_max_bytes = parse(key, value)?,
                "message.max.bytes" => self.message_max_bytes = parse(key, value)?,
                "sluice.shard.inbox.capacity" => self.shard_inbox_capacity = parse(key, value)?,
                "sluice.io.memory.bytes" => self.io_memory_bytes = parse(key, value)?,
                "queued.max.request.bytes" => self.queued_max_request_bytes = parse(key, value)?,
                "max.connections" => self.max_connections_per_shard = parse(key, value)?,
                "sluice.connection.pipeline.depth" => {
                    self.connection_pipeline_depth = parse(key, value)?
                }
                "sluice.fetch.max.wait.ms.max" => self.fetch_max_wait_ms_max = parse(key, value)?,
                "log.segment.bytes" => self.log.segment_bytes = parse(key, value)?,
                "log.roll.ms" => self.log.segment_ms = parse(key, value)?,
                "log.roll.hours" => self.log.segment_ms = parse::<u64>(key, value)? * 3_600_000,
                "log.index.interval.bytes" => self.log.index_interval_bytes = parse(key, value)?,
                "sluice.log.preallocate.bytes" => self.log.preallocate_bytes = parse(key, value)?,
                "sluice.log.write.buffer.bytes" => self.log.write_buffer_bytes = parse(key, value)?,
                "producer.id.expiration.check.interval.ms" => {
                    self.producer_id_expiration_check_interval_ms = parse(key, value)?
                }
                "log.retention.ms" => self.log.retention_ms = parse(key, value)?,
                "log.retention.minutes" => {
                    self.log.retention_ms = parse::<i64>(key, value)?.saturating_mul(60_000)
                }
                "log.retention.hours" => {
                    self.log.retention_ms = parse::<i64>(key, value)?.saturating_mul(3_600_000)
                }
                "log.retention.bytes" => self.log.retention_bytes = parse(key, value)?,
                "log.retention.check.interval.ms" => {
                    self.log_retention_check_interval_ms = parse(key, value)?
                }
                "producer.id.expiration.ms" => {
                    self.log.producer_id_expiration_ms = parse(key, value)?
                }
                "cluster.id" => self.cluster_id = value.clone(),
                "sluice.admin.listen" => self.admin_listen = value.trim().to_owned(),
                "offsets.topic.num.partitions" => {
                    self.group.offsets_partitions = parse(key, value)?
                }
                "offsets.topic.segment.bytes" => {
                    self.offsets_topic_segment_bytes = parse(key, value)?
                }
                "group.min.session.timeout.ms" => {
                    self.group.min_session_timeout_ms = parse(key, value)?
                }
                "group.max.session.timeout.ms" => {
                    self.group.max_session_timeout_ms = parse(key, value)?
                }
                "group.initial.rebalance.delay.ms" => {
                    self.group.initial_rebalance_delay_ms = parse(key, value)?
                }
                "group.max.size" => self.group.max_size = parse(key, value)?,
                "offset.metadata.max.bytes" => {
                    self.group.offset_metadata_max_bytes = parse(key, value)?
                }
                "offsets.retention.minutes" => {
                    self.group.offsets_retention_ms = parse::<u64>(key, value)? * 60_000
                }
                "offsets.retention.check.interval.ms" => {
                    self.group.offsets_retention_check_interval_ms = parse(key, value)?
                }
                "sluice.group.member.metadata.max.bytes" => {
                    self.group.member_metadata_max_bytes = parse(key, value)?
                }
                _ => {
                    tracing::warn!(property = %key, "unknown or not yet supported property ignored")
                }
            }
        }
        match advertised {
            Some(a) => {
                let addr = listener_addr(&a)?;
                self.advertised_host = addr.ip().to_string();
                self.advertised_port = addr.port();
            }
            None => {
                self.advertised_host = if self.listen.ip().is_unspecified() {
                    "127.0.0.1".into()
                } else {
                    self.listen.ip().to_string()
                };
                self.advertised_port = self.listen.port();
            }
        }
        self.validate()
    }

    fn validate(&self) -> Result<()> {
        if self.smp == 0 {
            bail!("sluice.smp must be at least 1");
        }
        if self.num_partitions < 1 {
            bail!("num.partitions must be at least 1");
        }
        if self.socket_request_max_bytes < 1024 {
            bail!("socket.request.max.bytes must be at least 1024");
        }
        if self.queued_max_request_bytes < self.socket_request_max_bytes {
            bail!("queued.max.request.bytes must be at least socket.request.max.bytes");
        }
        if self.connection_pipeline_depth == 0 {
            bail!("sluice.connection.pipeline.depth must be at least 1");
        }
        if self.log_retention_check_interval_ms == 0 {
            bail!("log.retention.check.interval.ms must be positive");
        }
        if self.producer_id_expiration_check_interval_ms == 0 {
            bail!("producer.id.expiration.check.interval.ms must be positive");
        }
        if !(1..=1000).contains(&self.group.offsets_partitions) {
            bail!("offsets.topic.num.partitions must be between 1 and 1000");
        }
        if self.group.min_session_timeout_ms > self.group.max_session_timeout_ms {
            bail!("group.min.session.timeout.ms exceeds group.max.session.timeout.ms");
        }
        if self.group.max_size == 0 {
            bail!("group.max.size must be at least 1");
        }
        if self.group.offsets_retention_check_interval_ms == 0 {
            bail!("offsets.retention.check.interval.ms must be positive");
        }
        if self.offsets_topic_segment_bytes < 1024 {
            bail!("offsets.topic.segment.bytes must be at least 1024");
        }
        if self.log.segment_bytes < 1024 {
            bail!("log.segment.bytes must be at least 1024");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_property_names_apply() {
        let mut c = BrokerConfig::default();
        let props: BTreeMap<String, String> = [
            ("listeners", "PLAINTEXT://127.0.0.1:19092"),
            ("log.dirs", "/var/lib/sluice,/other"),
            ("num.partitions", "8"),
            ("log.segment.bytes", "1048576"),
            ("log.roll.hours", "2"),
            ("auto.create.topics.enable", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        c.apply(&props).unwrap();
        assert_eq!(c.listen.port(), 19092);
        assert_eq!(c.advertised_port, 19092);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/sluice"));
        assert_eq!(c.num_partitions, 8);
        assert_eq!(c.log.segment_bytes, 1 << 20);
        assert_eq!(c.log.segment_ms, 7_200_000);
        assert!(!c.auto_create_topics);
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut c = BrokerConfig::default();
        let props = [("num.partitions".to_owned(), "zero".to_owned())]
            .into_iter()
            .collect();
        assert!(c.apply(&props).is_err());
        let props = [("num.partitions".to_owned(), "0".to_owned())]
            .into_iter()
            .collect();
        assert!(c.apply(&props).is_err());
    }
}
