//! Broker configuration: defaults, then a `server.properties`-style file, then `SLUICE_*`
//! environment variables, then command-line flags. Property names are Kafka's where they
//! mean the same thing; Sluice-only settings are prefixed `sluice.`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use storage::LogConfig;

use crate::group::GroupConfig;

/// `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

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
    /// `sluice.message.decompressed.max.bytes`: a compressed batch whose records inflate
    /// past this is refused (MESSAGE_TOO_LARGE); also the bound on every decompression the
    /// broker does (re-compression, ListOffsets by time).
    pub message_decompressed_max_bytes: usize,
    /// `log.message.timestamp.before.max.ms`: how far in the past a CreateTime timestamp may
    /// be (Kafka's default: no limit).
    pub message_timestamp_before_max_ms: i64,
    /// `log.message.timestamp.after.max.ms`: how far in the future a CreateTime timestamp may
    /// be (Kafka 4's default: one hour).
    pub message_timestamp_after_max_ms: i64,
    /// `sluice.shard.inbox.capacity`: cross-shard messages queued per shard before senders wait.
    pub shard_inbox_capacity: usize,
    /// `sluice.io.memory.bytes`: registered io_uring buffer memory per shard.
    pub io_memory_bytes: usize,
    /// `max.connections`: client connections open at once, broker-wide; a connection over it
    /// is closed as soon as it is accepted.
    pub max_connections: usize,
    /// `max.connections.per.ip`: client connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// `connections.max.idle.ms`: a connection with no request for this long is closed.
    pub connections_max_idle_ms: u64,
    /// `sluice.request.read.timeout.ms`: once a frame's first byte has arrived, the whole
    /// frame must arrive within this, or the connection is closed (a client that declares
    /// 64 MiB and sends nothing holds nothing for long).
    pub request_read_timeout_ms: u64,
    /// `sluice.connection.write.timeout.ms`: a reply write that makes no progress for this
    /// long closes the connection (a client that stops reading frees its replies).
    pub connection_write_timeout_ms: u64,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries, whatever the
    /// client asks (one batch may pass it, as KIP-74 requires).
    pub fetch_max_bytes: usize,
    /// `sluice.shard.response.memory.bytes`: Fetch response bytes a shard holds at once,
    /// reserved before reading and released once the response is written.
    pub shard_response_memory_bytes: usize,
    /// `sluice.debug.panic.shard`: fault injection for tests — that shard panics once the
    /// broker is ready (which must end the process).
    pub debug_panic_shard: Option<usize>,
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
    /// `cluster.id` (default `sluice-single-node`): nodes of one cluster must agree on it
    /// (and on `controller.quorum.voters`); the data directory records it at the first
    /// start (`__cluster/meta.properties`) and refuses another later.
    pub cluster_id: String,
    /// Consumer groups: `offsets.topic.num.partitions`, `group.*.session.timeout.ms`,
    /// `group.initial.rebalance.delay.ms`, `group.max.size`, `offset.metadata.max.bytes`,
    /// `offsets.retention.minutes`, `offsets.retention.check.interval.ms`,
    /// `sluice.group.member.metadata.max.bytes`.
    pub group: GroupConfig,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets`.
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.topic.replication.factor` (3): replicas of each `__consumer_offsets`
    /// partition; a cluster with fewer brokers (or a smaller `sluice.replication.factor.max`)
    /// gets what it has, with a warning.
    pub offsets_topic_replication_factor: usize,
    /// `offsets.commit.timeout.ms` (5000): how long an offset commit or a group write waits
    /// for every in-sync replica of its `__consumer_offsets` partition.
    pub offsets_commit_timeout_ms: u64,
    /// `sluice.admin.max.connections`: admin HTTP connections served at once; one more is
    /// answered 503 and closed.
    pub admin_max_connections: usize,
    /// `sluice.admin.request.timeout.ms`: time from accept for a whole admin HTTP request
    /// head to arrive (and, again, for its response to be written).
    pub admin_request_timeout_ms: u64,
    /// `max.request.partition.size.limit`: the most partitions one DescribeTopicPartitions
    /// response describes, whatever the client asks.
    pub max_request_partition_size_limit: i32,
    /// `process.roles`: `broker`, `controller`, or both (the default, `broker,controller`).
    pub roles: Roles,
    /// `controller.quorum.voters` (`id@host:port,...`): the metadata quorum's voters. Empty
    /// (the default) is a quorum of this node alone.
    pub quorum_voters: Vec<replication::wire::Voter>,
    /// `controller.listener.names`: the listener names in `listeners` that carry inter-node
    /// traffic (default `CONTROLLER`).
    pub controller_listener_names: Vec<String>,
    /// The CONTROLLER entry of `listeners`, if any.
    pub controller_listen: Option<SocketAddr>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `replica.lag.time.max.ms` (30000): a follower not caught up for this long leaves
    /// the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `sluice.replication.factor.max` (32767, no limit beyond Kafka's): the largest
    /// replication factor a topic may have; an operator may cap it (1 keeps every partition
    /// on one broker).
    pub replication_factor_max: usize,
    /// `auto.leader.rebalance.enable` (true): the active controller moves leaderships back to
    /// their preferred replica (the first) where a broker leads more than
    /// `leader.imbalance.per.broker.percentage` (10) too few of the partitions it prefers,
    /// checked every `leader.imbalance.check.interval.seconds` (300).
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_seconds: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    /// `min.insync.replicas` (1): the topic config's broker default (acks=all needs an ISR
    /// this large).
    pub min_insync_replicas: u32,
    /// `default.replication.factor` (1): the replication factor of topics created without
    /// one (CreateTopics with -1, auto-created topics).
    pub default_replication_factor: i16,
    /// `replica.fetch.max.bytes` (1 MiB): what a follower asks per partition.
    pub replica_fetch_max_bytes: usize,
    /// `replica.fetch.response.max.bytes` (10 MiB): what a follower asks per fetch.
    pub replica_fetch_response_max_bytes: usize,
    /// `replica.fetch.wait.max.ms` (500): how long a leader holds a follower's fetch.
    pub replica_fetch_wait_max_ms: u64,
    /// `unclean.leader.election.enable` (false): the controller may elect a replica outside
    /// the ISR when no ISR member is alive (topics may override it).
    pub unclean_leader_election: bool,
    /// `broker.heartbeat.interval.ms` (2000).
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms` (9000): a broker not heard from for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `controller.quorum.election.timeout.ms` (1000): a voter that hears no leader for
    /// this long (drawn between it and twice it) campaigns.
    pub quorum_election_timeout_ms: u64,
    /// `controller.quorum.fetch.timeout.ms` (2000).
    pub quorum_fetch_timeout_ms: u64,
    /// `metadata.log.max.record.bytes.between.snapshots` (20 MiB): log bytes applied after
    /// which the metadata image is snapshotted and older log files deleted.
    pub metadata_snapshot_after_bytes: u64,
    /// `controller.quorum.request.timeout.ms` (2000): connect, Hello and call timeout
    /// between nodes.
    pub quorum_request_timeout_ms: u64,
    /// `sluice.controller.frame.max.bytes` (16 MiB): largest inter-node frame accepted.
    pub controller_frame_max_bytes: usize,
    /// `sluice.metadata.commit.timeout.ms` (30000): how long a metadata change waits to be
    /// committed before its request fails.
    pub metadata_commit_timeout_ms: u64,
    /// The known properties the file, the environment or the flags set (DescribeConfigs
    /// reports these as STATIC_BROKER_CONFIG, the rest as DEFAULT_CONFIG).
    pub set_properties: BTreeSet<String>,
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
            message_decompressed_max_bytes: 64 << 20,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 3_600_000,
            shard_inbox_capacity: 1024,
            io_memory_bytes: 1 << 20,
            max_connections: 65_536,
            max_connections_per_ip: i32::MAX as usize,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 60_000,
            connection_write_timeout_ms: 60_000,
            fetch_max_bytes: 57_671_680,
            shard_response_memory_bytes: 512 << 20,
            debug_panic_shard: None,
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
            offsets_topic_replication_factor: 3,
            offsets_commit_timeout_ms: 5000,
            admin_max_connections: 64,
            admin_request_timeout_ms: 5_000,
            max_request_partition_size_limit: 2000,
            roles: Roles {
                broker: true,
                controller: true,
            },
            quorum_voters: Vec::new(),
            controller_listener_names: vec!["CONTROLLER".into()],
            controller_listen: None,
            unclean_leader_election: false,
            replica_lag_time_max_ms: 30_000,
            replication_factor_max: i16::MAX as usize,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            leader_imbalance_per_broker_percentage: 10,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_wait_max_ms: 500,
            rack: None,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            quorum_election_timeout_ms: 1_000,
            quorum_fetch_timeout_ms: 2_000,
            metadata_snapshot_after_bytes: 20 << 20,
            metadata_commit_timeout_ms: 30_000,
            quorum_request_timeout_ms: 2_000,
            controller_frame_max_bytes: 16 << 20,
            set_properties: BTreeSet::new(),
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

/// `process.roles`: a comma-separated subset of `broker` and `controller`.
fn parse_roles(value: &str) -> Result<Roles> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for r in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match r {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => bail!("process.roles: unknown role {other:?} (broker, controller)"),
        }
    }
    if !roles.broker && !roles.controller {
        bail!("process.roles names no role (broker, controller)");
    }
    Ok(roles)
}

/// Splits `listeners` into the client listener (the first entry whose name is not a
/// controller listener) and the controller listener.
fn split_listeners(
    value: &str,
    controller_names: &[String],
) -> Result<(Option<SocketAddr>, Option<SocketAddr>)> {
    let (mut client, mut controller) = (None, None);
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = entry
            .split_once("://")
            .map(|(n, _)| n)
            .unwrap_or("PLAINTEXT");
        let addr = listener_addr(entry)?;
        if controller_names.iter().any(|c| c == name) {
            controller.get_or_insert(addr);
        } else {
            client.get_or_insert(addr);
        }
    }
    Ok((client, controller))
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
        let mut listeners: Option<String> = None;
        for (key, value) in props {
            self.set_properties.insert(key.clone());
            match key.as_str() {
                "listeners" => listeners = Some(value.clone()),
                "process.roles" => self.roles = parse_roles(value)?,
                "replica.lag.time.max.ms" => {
                    self.replica_lag_time_max_ms = parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "auto.leader.rebalance.enable" => {
                    self.auto_leader_rebalance_enable = parse(key, value)?
                }
                "leader.imbalance.check.interval.seconds" => {
                    self.leader_imbalance_check_interval_seconds =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "leader.imbalance.per.broker.percentage" => {
                    let v: u32 = parse(key, value)?;
                    if v > 100 {
                        bail!("leader.imbalance.per.broker.percentage must be between 0 and 100");
                    }
                    self.leader_imbalance_per_broker_percentage = v
                }
                "min.insync.replicas" => {
                    self.min_insync_replicas = parse::<std::num::NonZeroU32>(key, value)?.get()
                }
                "default.replication.factor" => {
                    self.default_replication_factor = parse::<std::num::NonZeroU16>(key, value)?
                        .get()
                        .min(i16::MAX as u16)
                        as i16
                }
                "sluice.replication.factor.max" => {
                    self.replication_factor_max = parse::<std::num::NonZeroUsize>(key, value)?
                        .get()
                        .min(i16::MAX as usize)
                }
                "replica.fetch.max.bytes" => {
                    self.replica_fetch_max_bytes = parse::<std::num::NonZeroUsize>(key, value)?
                        .get()
                        .min(i32::MAX as usize)
                }
                "replica.fetch.response.max.bytes" => {
                    self.replica_fetch_response_max_bytes =
                        parse::<std::num::NonZeroUsize>(key, value)?
                            .get()
                            .min(i32::MAX as usize)
                }
                "replica.fetch.wait.max.ms" => {
                    self.replica_fetch_wait_max_ms =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "unclean.leader.election.enable" => {
                    self.unclean_leader_election = parse(key, value)?
                }
                "controller.quorum.voters" => {
                    self.quorum_voters = replication::quorum::voters::parse_voters(value)
                        .map_err(|e| anyhow::anyhow!("controller.quorum.voters: {e}"))?
                }
                "controller.listener.names" => {
                    self.controller_listener_names = value
                        .split(',')
                        .map(|n| n.trim().to_owned())
                        .filter(|n| !n.is_empty())
                        .collect()
                }
                "broker.rack" => {
                    self.rack = Some(value.trim().to_owned()).filter(|r| !r.is_empty())
                }
                "broker.heartbeat.interval.ms" => {
                    self.broker_heartbeat_interval_ms =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "broker.session.timeout.ms" => {
                    self.broker_session_timeout_ms =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "controller.quorum.election.timeout.ms" => {
                    self.quorum_election_timeout_ms =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "controller.quorum.fetch.timeout.ms" => {
                    self.quorum_fetch_timeout_ms = parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "metadata.log.max.record.bytes.between.snapshots" => {
                    self.metadata_snapshot_after_bytes =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "controller.quorum.request.timeout.ms" => {
                    self.quorum_request_timeout_ms =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                "sluice.controller.frame.max.bytes" => {
                    self.controller_frame_max_bytes = parse::<usize>(key, value)?.max(1 << 16)
                }
                "sluice.metadata.commit.timeout.ms" => {
                    self.metadata_commit_timeout_ms =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
                }
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
                "sluice.message.decompressed.max.bytes" => {
                    self.message_decompressed_max_bytes = parse(key, value)?
                }
                "log.message.timestamp.before.max.ms" => {
                    self.message_timestamp_before_max_ms = parse(key, value)?
                }
                "log.message.timestamp.after.max.ms" => {
                    self.message_timestamp_after_max_ms = parse(key, value)?
                }
                "sluice.shard.inbox.capacity" => self.shard_inbox_capacity = parse(key, value)?,
                "sluice.io.memory.bytes" => self.io_memory_bytes = parse(key, value)?,
                "queued.max.request.bytes" => self.queued_max_request_bytes = parse(key, value)?,
                "max.connections" => self.max_connections = parse(key, value)?,
                "max.connections.per.ip" => self.max_connections_per_ip = parse(key, value)?,
                "connections.max.idle.ms" => self.connections_max_idle_ms = parse(key, value)?,
                "sluice.request.read.timeout.ms" => {
                    self.request_read_timeout_ms = parse(key, value)?
                }
                "sluice.connection.write.timeout.ms" => {
                    self.connection_write_timeout_ms = parse(key, value)?
                }
                "fetch.max.bytes" => self.fetch_max_bytes = parse(key, value)?,
                "max.request.partition.size.limit" => {
                    self.max_request_partition_size_limit = parse(key, value)?
                }
                "sluice.debug.panic.shard" => self.debug_panic_shard = Some(parse(key, value)?),
                "sluice.shard.response.memory.bytes" => {
                    self.shard_response_memory_bytes = parse(key, value)?
                }
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
                "sluice.log.segment.offsets.max" => {
                    self.log.segment_offsets_max = parse(key, value)?
                }
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
                "offsets.topic.replication.factor" => {
                    self.offsets_topic_replication_factor =
                        parse::<std::num::NonZeroU16>(key, value)?.get() as usize
                }
                "offsets.commit.timeout.ms" => {
                    self.offsets_commit_timeout_ms =
                        parse::<std::num::NonZeroU64>(key, value)?.get()
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
                "sluice.admin.max.connections" => {
                    self.admin_max_connections = parse::<std::num::NonZeroUsize>(key, value)?.get()
                }
                "sluice.admin.request.timeout.ms" => {
                    self.admin_request_timeout_ms = parse::<std::num::NonZeroU64>(key, value)?.get()
                }
                _ => {
                    self.set_properties.remove(key);
                    tracing::warn!(property = %key, "unknown or not yet supported property ignored")
                }
            }
        }
        if let Some(l) = listeners {
            let (client, controller) = split_listeners(&l, &self.controller_listener_names)?;
            if let Some(c) = client {
                self.listen = c;
            }
            self.controller_listen = controller;
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

    /// Where this node listens for inter-node traffic: the CONTROLLER entry of `listeners`,
    /// else its own `controller.quorum.voters` address; `None` for a quorum of this node alone
    /// (`controller.quorum.voters` unset: it has no peers to listen for).
    pub fn controller_listen_addr(&self) -> Result<Option<SocketAddr>> {
        if self.quorum_voters.is_empty() || !self.roles.controller {
            return Ok(None);
        }
        if let Some(a) = self.controller_listen {
            return Ok(Some(a));
        }
        let Some(me) = self
            .quorum_voters
            .iter()
            .find(|v| v.node_id == self.node_id)
        else {
            return Ok(None);
        };
        use std::net::ToSocketAddrs;
        let addr = (me.host.as_str(), me.port)
            .to_socket_addrs()
            .with_context(|| format!("voter address {}:{}", me.host, me.port))?
            .next()
            .with_context(|| {
                format!("voter address {}:{} resolves to nothing", me.host, me.port)
            })?;
        Ok(Some(addr))
    }

    fn validate(&self) -> Result<()> {
        if self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms {
            bail!("broker.session.timeout.ms must be larger than broker.heartbeat.interval.ms");
        }
        if !self.quorum_voters.is_empty()
            && !self.quorum_voters.iter().any(|v| v.node_id == self.node_id)
            && self.roles.controller
        {
            bail!(
                "node.id {} has the controller role but is not in controller.quorum.voters",
                self.node_id
            );
        }
        if !self.roles.controller {
            // A broker-only node observes the voters' log: it needs them, and is not one.
            if self.quorum_voters.is_empty() {
                bail!("process.roles=broker needs controller.quorum.voters (the controllers)");
            }
            if self.quorum_voters.iter().any(|v| v.node_id == self.node_id) {
                bail!(
                    "node.id {} is in controller.quorum.voters but process.roles has no \
                     controller: a voter must have the controller role",
                    self.node_id
                );
            }
        }
        if !self.roles.broker && self.quorum_voters.is_empty() {
            bail!("process.roles=controller needs controller.quorum.voters");
        }
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
        if self.connections_max_idle_ms == 0
            || self.request_read_timeout_ms == 0
            || self.connection_write_timeout_ms == 0
        {
            bail!("connection timeouts must be positive");
        }
        if self.fetch_max_bytes == 0 || self.shard_response_memory_bytes < self.fetch_max_bytes {
            bail!("sluice.shard.response.memory.bytes must be at least fetch.max.bytes (> 0)");
        }
        if self.max_request_partition_size_limit < 1 {
            bail!("max.request.partition.size.limit must be at least 1");
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

    fn with(props: &[(&str, &str)]) -> Result<BrokerConfig> {
        let mut c = BrokerConfig::default();
        let props: BTreeMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.apply(&props)?;
        Ok(c)
    }

    #[test]
    fn roles_are_checked_against_the_voters() {
        let voters = (
            "controller.quorum.voters",
            "1@127.0.0.1:9093,2@127.0.0.1:9094",
        );
        let broker = ("process.roles", "broker");
        let controller = ("process.roles", "controller");
        // A broker-only node observes the voters: it needs them and is not one of them.
        let ok = with(&[broker, voters, ("node.id", "3")]).unwrap();
        assert!(ok.roles.broker && !ok.roles.controller);
        assert_eq!(ok.controller_listen_addr().unwrap(), None);
        let e = with(&[broker, voters, ("node.id", "2")]).unwrap_err();
        assert!(e.to_string().contains("controller role"), "{e}");
        let e = with(&[broker, ("node.id", "3")]).unwrap_err();
        assert!(e.to_string().contains("controller.quorum.voters"), "{e}");
        // A controller-only node is a voter.
        let ok = with(&[controller, voters, ("node.id", "2")]).unwrap();
        assert!(!ok.roles.broker && ok.roles.controller);
        assert_eq!(
            ok.controller_listen_addr().unwrap(),
            Some("127.0.0.1:9094".parse().unwrap())
        );
        assert!(with(&[controller, voters, ("node.id", "3")]).is_err());
        assert!(with(&[controller, ("node.id", "1")]).is_err());
        assert!(with(&[("process.roles", "observer")]).is_err());
    }
}
