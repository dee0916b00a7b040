//! The controller on shard 0: this node's part in the metadata quorum, and — while it is
//! the quorum's leader — the active controller, the only writer of the metadata log.
//!
//! Every change (topics, partitions, configs, producer-id blocks, broker registrations and
//! heartbeats) is serialized by one lock: its records are decided on the committed image
//! (`replication::metadata::controller`), proposed as one entry of the metadata log
//! (`metadata_log.rs`), and the caller is answered once the entry is committed and the image
//! it makes is published to every shard (each opens or deletes its logs) — so once
//! CreateTopics returns, a produce on any shard finds its partition.
//!
//! This node registers as a broker through the same path: a RegisterBroker record (fenced,
//! its epoch the record's offset), then heartbeats that unfence it once it has applied the
//! log, every `broker.heartbeat.interval.ms`. The active controller fences brokers whose
//! session (`broker.session.timeout.ms`) expired.
//!
//! Upgrade: a data directory written before the metadata log (`__cluster/metadata.json`)
//! has its topics, placements, configs and producer-id counter turned into the first
//! records; the file is then renamed `metadata.json.migrated`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use glommio::sync::Semaphore;
use replication::metadata::controller::{
    Controller as Decisions, ControllerConfig, ControllerError, ElectionError, ElectionType,
    NewTopic, Registration,
};
use replication::metadata::records::ConfigResource;
use replication::metadata::{ClusterImage, Endpoint, MetadataRecord, TopicId};

use crate::config::BrokerConfig;
use crate::metadata::{random_bytes, validate_topic_name, MetadataImage, TopicMeta};
use crate::metadata_log::{CommitError, MetadataLog, MetadataLogConfig};
use crate::metadata_observer::MetadataObserver;
use crate::peers::Identity;
use crate::shard::{Shard, ShardId};
use replication::wire::PeerMessage;

/// Producer ids a shard takes from the controller at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Largest partition count one CreateTopics may ask for (`sluice.topic.partitions.max`).
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TopicSpec {
    pub name: String,
    /// -1 means the broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1 means the broker default (1).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum CreateTopicError {
    #[error("topic already exists")]
    AlreadyExists,
    #[error("{0}")]
    InvalidName(String),
    #[error("number of partitions {0} is invalid")]
    InvalidPartitions(i32),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Commit(CommitError),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum DeleteTopicError {
    #[error("unknown topic")]
    Unknown,
    #[error("internal topics cannot be deleted")]
    Internal,
    #[error("topic deletion is disabled (delete.topic.enable=false)")]
    Disabled,
    #[error(transparent)]
    Commit(CommitError),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum CreatePartitionsError {
    #[error("unknown topic")]
    Unknown,
    #[error("topic currently has {current} partitions, which is not fewer than the requested {requested}")]
    NotMore { current: usize, requested: i32 },
    #[error("{0} partitions exceed sluice.topic.partitions.max")]
    TooMany(i32),
    #[error("the partition count of an internal topic cannot change")]
    Internal,
    #[error(transparent)]
    Commit(CommitError),
}

/// Why ElectLeaders left one partition's leader as it was.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ElectError {
    #[error("unknown topic or partition")]
    Unknown,
    #[error("the partition already has the leader this election would give it")]
    NotNeeded,
    #[error("the preferred leader is fenced or not in the ISR")]
    PreferredNotAvailable,
    #[error("no live replica can lead")]
    EligibleNotAvailable,
    #[error(transparent)]
    Commit(CommitError),
}

impl From<ElectionError> for ElectError {
    fn from(e: ElectionError) -> ElectError {
        match e {
            ElectionError::NotNeeded => ElectError::NotNeeded,
            ElectionError::PreferredNotAvailable => ElectError::PreferredNotAvailable,
            ElectionError::EligibleLeadersNotAvailable => ElectError::EligibleNotAvailable,
            ElectionError::UnknownPartition => ElectError::Unknown,
        }
    }
}

/// One partition's ElectLeaders outcome: topic, partition, result.
pub type Elected = (String, i32, Result<(), ElectError>);

/// One change to a topic's configs (IncrementalAlterConfigs' operations; AlterConfigs is
/// a `replace` with `Set`s).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum AlterConfigsError {
    #[error("unknown topic")]
    Unknown,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Commit(CommitError),
}

/// Reply codes between nodes (Kafka's numbers).
const NOT_CONTROLLER: i16 = 41;
const STALE_BROKER_EPOCH: i16 = 77;
const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_SERVER_ERROR: i16 = -1;

/// The code a peer's failed call is answered with.
fn call_error_code(e: &CommitError) -> i16 {
    match e {
        CommitError::NotLeader { .. } | CommitError::Lost => NOT_CONTROLLER,
        CommitError::StaleBroker(_) => STALE_BROKER_EPOCH,
        CommitError::Duplicate(_) => DUPLICATE_BROKER_REGISTRATION,
        _ => UNKNOWN_SERVER_ERROR,
    }
}

/// A controller change forwarded from another node to the active controller (JSON in a
/// `Forward` frame's body).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ControllerCall {
    CreateTopics {
        specs: Vec<TopicSpec>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        asks: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterConfigs {
        asks: Vec<(String, bool, Vec<ConfigOp>)>,
        validate_only: bool,
    },
    ProducerIds,
    DescribeQuorum,
    /// A partition leader's ISR change (Kafka's AlterPartition).
    AlterPartition(IsrChangeAsk),
    /// Leader elections (Kafka's ElectLeaders): preferred or unclean, for the named
    /// partitions or (none) every partition.
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    },
}

/// A partition leader's ISR change as it asks the controller for it: made against the
/// leader and partition epochs it knows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IsrChangeAsk {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// The metadata quorum as the active controller sees it (DescribeQuorum).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QuorumState {
    pub leader: i32,
    pub term: u64,
    pub commit_index: u64,
    /// Each voter's node id and the highest index the leader knows it holds.
    pub voters: Vec<(i32, u64)>,
    /// Each voter's controller listener (node id, host, port).
    pub listeners: Vec<(i32, String, u16)>,
}

/// The active controller's answer to a [`ControllerCall`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ControllerAnswer {
    CreateTopics(Vec<Result<TopicMeta, CreateTopicError>>),
    DeleteTopics(Vec<Result<(), DeleteTopicError>>),
    CreatePartitions(Vec<Result<(), CreatePartitionsError>>),
    AlterConfigs(Vec<Result<(), AlterConfigsError>>),
    ProducerIds(Result<(i64, i64), String>),
    Quorum(QuorumState),
    /// The ISR committed, or why the change was refused.
    AlterPartition(Result<Vec<i32>, String>),
    ElectLeaders(Vec<Elected>),
}

/// The active controller's state for one term: its decisions' memory (brokers' last
/// heartbeats), reset when another term begins.
struct Active {
    term: u64,
    decisions: Decisions,
}

pub struct Controller {
    config: Arc<BrokerConfig>,
    log: RefCell<Option<Meta>>,
    lock: Semaphore,
    active: RefCell<Option<Active>>,
    /// The image offset every shard has applied.
    published: Cell<u64>,
    published_event: event_listener::Event,
    /// This broker's registration epoch (-1 before it registered).
    broker_epoch: Cell<i64>,
    incarnation: [u8; 16],
    started: Instant,
    /// This node's identity toward its peers (a quorum of more than one).
    identity: RefCell<Option<Rc<Identity>>>,
    /// Set by a controlled shutdown: heartbeats stop (they would unfence the broker).
    stopping: Cell<bool>,
}

impl Controller {
    pub fn new(config: Arc<BrokerConfig>) -> Controller {
        let incarnation = random_bytes();
        Controller {
            config,
            log: RefCell::new(None),
            lock: Semaphore::new(1),
            active: RefCell::new(None),
            published: Cell::new(0),
            published_event: event_listener::Event::new(),
            broker_epoch: Cell::new(-1),
            incarnation,
            started: Instant::now(),
            identity: RefCell::new(None),
            stopping: Cell::new(false),
        }
    }

    fn decisions_config(&self) -> ControllerConfig {
        ControllerConfig {
            session_timeout_ms: self.config.broker_session_timeout_ms,
            max_replication_factor: self.config.replication_factor_max,
            unclean_leader_election: self.config.unclean_leader_election,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn log(&self) -> Result<Meta, CommitError> {
        self.log
            .borrow()
            .clone()
            .ok_or_else(|| CommitError::Refused("the metadata log is not open yet".into()))
    }

    /// Opens the metadata log (a voter) or starts observing the voters' (broker-only),
    /// starts publishing the image to every shard, registers this broker (a node with the
    /// broker role), migrates a pre-quorum data directory, and returns once every shard has
    /// the image (its logs open).
    pub async fn bootstrap(self: &Rc<Self>, shard: &Rc<Shard>) -> Result<()> {
        let c = &self.config;
        let wait = Duration::from_millis(c.metadata_commit_timeout_ms);
        let deadline = Instant::now() + wait;
        if MetadataImage::path(&c.data_dir).exists()
            && (c.quorum_voters.len() > 1 || !c.roles.controller)
        {
            anyhow::bail!(
                "{} is from a single-node version: start this node alone once (it is \
                 migrated into the metadata log), then grow the cluster",
                MetadataImage::path(&c.data_dir).display()
            );
        }
        let meta = if c.roles.controller {
            self.open_quorum().await?
        } else {
            let identity = self.peer_identity();
            let observer = MetadataObserver::new();
            glommio::spawn_local(observer.clone().run(identity.clone())).detach();
            *self.identity.borrow_mut() = Some(identity);
            Meta::Observer(observer)
        };
        *self.log.borrow_mut() = Some(meta.clone());
        glommio::spawn_local(publish_loop(self.clone(), shard.clone(), meta.clone())).detach();
        // Wait for a leader (a quorum of one elects itself at once) before registering.
        while meta.leader().is_none() && meta.failure().is_none() {
            if Instant::now() > deadline {
                anyhow::bail!("the metadata quorum elected no leader within {wait:?}");
            }
            let l = meta.applied_event().listen();
            if meta.leader().is_some() {
                break;
            }
            let _ = futures::future::select(
                l,
                Box::pin(glommio::timer::sleep(Duration::from_millis(10))),
            )
            .await;
        }
        if c.roles.broker {
            self.register_and_unfence(deadline, wait).await?;
        }
        self.migrate_json_image()
            .await
            .context("migrating __cluster/metadata.json")?;
        self.wait_published(meta.image().offset).await;
        glommio::spawn_local(heartbeat_loop(Rc::downgrade(self))).detach();
        Ok(())
    }

    /// Opens this voter's metadata log and connects it to the other voters.
    async fn open_quorum(self: &Rc<Self>) -> Result<Meta> {
        let c = &self.config;
        let voters = if c.quorum_voters.is_empty() {
            vec![c.node_id]
        } else {
            c.quorum_voters.iter().map(|v| v.node_id).collect()
        };
        // Ticks of 100 ms; the election timeout in ticks (at least 2, as raft needs more
        // than the heartbeat's one).
        let tick = Duration::from_millis(100);
        let election_ticks = (c.quorum_election_timeout_ms / 100).max(2) as usize;
        let log = MetadataLog::open(
            c.data_dir.join("__cluster").join("quorum"),
            MetadataLogConfig {
                node_id: c.node_id,
                voters,
                tick,
                election_ticks_min: election_ticks,
                heartbeat_ticks: 1,
                snapshot_after_bytes: c.metadata_snapshot_after_bytes,
            },
        )
        .await?;
        // Configured voters listen (other voters, broker-only observers); the default
        // single node has no peers.
        if !c.quorum_voters.is_empty() {
            self.start_peers(&log)?;
        }
        Ok(Meta::Voter(log))
    }

    /// Registers this broker, then heartbeats until the controller unfences it (it has,
    /// for a quorum of one; another node may take a moment to catch up).
    async fn register_and_unfence(&self, deadline: Instant, wait: Duration) -> Result<()> {
        // On a disk that refuses the metadata log's writes the broker still starts and
        // serves the image it has; metadata changes wait for a restart.
        let tolerate = |r: Result<(), CommitError>, what: &str| match r {
            Err(CommitError::Storage(why)) => {
                tracing::warn!(error = %why, "{what} failed; serving the metadata as it is");
                Ok(())
            }
            r => r.with_context(|| what.to_owned()),
        };
        tolerate(self.register().await, "registering this broker")?;
        loop {
            match self.heartbeat().await {
                Ok(false) => return Ok(()),
                Ok(true) if Instant::now() < deadline => {
                    glommio::timer::sleep(Duration::from_millis(50)).await
                }
                Ok(true) => anyhow::bail!("still fenced after {wait:?}"),
                Err(e) => return tolerate(Err(e), "unfencing this broker"),
            }
        }
    }

    /// The cluster as this node sees it, for `/v1/brokers` and `sluice cluster info`: the
    /// active controller, each registered broker and its state, and (on the active
    /// controller) each voter's replication lag in entries.
    pub fn describe(&self) -> serde_json::Value {
        let Ok(log) = self.log() else {
            return serde_json::json!({"controller": null, "brokers": [], "voters": []});
        };
        let image = log.image();
        let brokers: Vec<_> = image
            .brokers
            .iter()
            .map(|(id, b)| {
                let e = b.client_endpoint();
                serde_json::json!({
                    "node_id": id,
                    "host": e.map(|e| e.host.clone()),
                    "port": e.map(|e| e.port),
                    "rack": b.rack,
                    "shards": b.shards,
                    "broker_epoch": b.epoch,
                    "state": if b.fenced { "fenced" } else { "unfenced" },
                })
            })
            .collect();
        let commit = log.commit_index();
        let voters: Vec<_> = log
            .progress()
            .into_iter()
            .map(|(id, matched)| {
                serde_json::json!({"node_id": id, "matched_index": matched,
                    "lag": commit.saturating_sub(matched)})
            })
            .collect();
        serde_json::json!({
            "node_id": self.config.node_id,
            "controller": log.leader(),
            "term": log.term(),
            "commit_index": commit,
            "metadata_offset": image.offset,
            "brokers": brokers,
            "voters": voters,
            "metadata_log_failure": log.failure(),
        })
    }

    /// Waits until every shard has applied the image at `offset` or later.
    async fn wait_published(&self, offset: u64) {
        loop {
            let l = self.published_event.listen();
            if self.published.get() >= offset {
                return;
            }
            l.await;
        }
    }

    /// Decides records on the committed image with the active controller's state, commits
    /// them as one entry and waits until every shard has the image they make. `decide`
    /// returns the records and the caller's answer; no records means nothing to commit.
    async fn mutate<T>(
        &self,
        decide: impl FnOnce(&ClusterImage, &mut Decisions, u64) -> (Vec<MetadataRecord>, T),
    ) -> Result<(T, u64), CommitError> {
        let _permit = self
            .lock
            .acquire_permit(1)
            .await
            .map_err(|_| CommitError::Refused("controller stopped".into()))?;
        let log = self.log()?;
        if !log.is_leader() {
            return Err(CommitError::NotLeader {
                leader: log.leader(),
            });
        }
        // A new leader decides only once its image holds everything committed before its
        // term (its own first entry committed and applied): usually a few milliseconds.
        let deadline =
            Instant::now() + Duration::from_millis(self.config.metadata_commit_timeout_ms);
        while !log.ready_to_decide() {
            if let Some(why) = log.failure() {
                return Err(CommitError::Storage(why));
            }
            if !log.is_leader() {
                return Err(CommitError::NotLeader {
                    leader: log.leader(),
                });
            }
            if Instant::now() > deadline {
                return Err(CommitError::Timeout(Duration::from_millis(
                    self.config.metadata_commit_timeout_ms,
                )));
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let image = log.image();
        let term = log.term();
        let now = self.now_ms();
        let (records, answer) = {
            let mut active = self.active.borrow_mut();
            if active.as_ref().is_none_or(|a| a.term != term) {
                *active = Some(Active {
                    term,
                    decisions: Decisions::activate(&image, now),
                });
            }
            let decisions = &mut active.as_mut().expect("just set").decisions;
            decide(&image, decisions, now)
        };
        if records.is_empty() {
            return Ok((answer, image.offset));
        }
        warn_unclean(&image, &records);
        let timeout = Duration::from_millis(self.config.metadata_commit_timeout_ms);
        let index = log.commit(records, timeout).await?;
        self.wait_published(index).await;
        Ok((answer, index))
    }

    fn registration(&self) -> Registration {
        let c = &self.config;
        Registration {
            broker_id: c.node_id,
            incarnation: self.incarnation,
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: c.advertised_host.clone(),
                port: c.advertised_port,
                security_protocol: 0,
            }],
            rack: c.rack.clone(),
            shards: c.smp as u32,
        }
    }

    /// This node as its Hellos present it to the others.
    fn peer_identity(&self) -> Rc<Identity> {
        let c = &self.config;
        Rc::new(Identity {
            cluster_id: c.cluster_id.clone(),
            node_id: c.node_id,
            voters: c.quorum_voters.clone(),
            frame_max: c.controller_frame_max_bytes,
            timeout: Duration::from_millis(c.quorum_request_timeout_ms),
            incarnation: self.incarnation,
            liveness: Duration::from_millis(c.broker_session_timeout_ms),
        })
    }

    /// Connects the metadata log to the other voters: the controller listener, one Raft
    /// outbox per peer.
    fn start_peers(self: &Rc<Self>, log: &Rc<MetadataLog>) -> Result<()> {
        let identity = self.peer_identity();
        let listen = self
            .config
            .controller_listen_addr()?
            .context("a quorum of several voters needs a controller listener")?;
        crate::peers::start_listener(listen, identity.clone(), Rc::downgrade(self))?;
        let weak = Rc::downgrade(log);
        let unreachable: Rc<dyn Fn(i32)> = Rc::new(move |peer| {
            if let Some(l) = weak.upgrade() {
                l.report_unreachable(peer);
            }
        });
        log.set_outboxes(crate::peers::RaftOutboxes::start(
            identity.clone(),
            unreachable,
        ));
        *self.identity.borrow_mut() = Some(identity);
        Ok(())
    }

    /// A Raft message from a peer.
    pub async fn step_raft(&self, m: replication::quorum::eraftpb::Message) {
        if let Ok(Meta::Voter(log)) = self.log() {
            log.step(m).await;
        }
    }

    /// The active controller's answer to a peer's call (registration, heartbeat, forwarded
    /// change); NOT_CONTROLLER with the leader's id when this node is not it.
    pub async fn answer_call(&self, msg: PeerMessage) -> PeerMessage {
        let reply = error_reply;
        let offset = || self.log().map(|l| l.image().offset).unwrap_or(0);
        match msg {
            PeerMessage::Register { record } => match MetadataRecord::decode(&record) {
                Ok(MetadataRecord::RegisterBroker {
                    broker_id,
                    incarnation,
                    endpoints,
                    rack,
                    shards,
                    ..
                }) => {
                    let reg = Registration {
                        broker_id,
                        incarnation,
                        endpoints,
                        rack,
                        shards,
                    };
                    match self.register_local(reg).await {
                        Ok(epoch) => ok_reply(epoch, true, epoch as u64, bytes::Bytes::new()),
                        Err(e) => reply(call_error_code(&e), e.to_string()),
                    }
                }
                Ok(_) | Err(_) => reply(
                    INVALID_REQUEST,
                    "Register carries no RegisterBroker record".into(),
                ),
            },
            PeerMessage::Heartbeat {
                broker_id,
                broker_epoch,
                shutting_down: true,
                ..
            } => match self
                .controlled_shutdown_local(broker_id, broker_epoch)
                .await
            {
                Ok(()) => ok_reply(broker_epoch, true, offset(), bytes::Bytes::new()),
                Err(e) => reply(call_error_code(&e), e.to_string()),
            },
            PeerMessage::Heartbeat {
                broker_id,
                broker_epoch,
                applied_offset,
                ..
            } => {
                let caught_up = broker_epoch >= 0 && applied_offset >= broker_epoch as u64;
                match self
                    .heartbeat_local(broker_id, broker_epoch, caught_up)
                    .await
                {
                    Ok(fenced) => ok_reply(broker_epoch, fenced, offset(), bytes::Bytes::new()),
                    Err(e) => reply(call_error_code(&e), e.to_string()),
                }
            }
            PeerMessage::Forward { body, .. } => {
                let call: ControllerCall = match serde_json::from_slice(&body) {
                    Ok(c) => c,
                    Err(e) => {
                        return reply(INVALID_REQUEST, format!("malformed forwarded call: {e}"))
                    }
                };
                match self.log() {
                    Ok(l) if l.is_leader() => {}
                    Ok(l) => {
                        let e = CommitError::NotLeader { leader: l.leader() };
                        return reply(call_error_code(&e), e.to_string());
                    }
                    Err(e) => return reply(call_error_code(&e), e.to_string()),
                }
                let answer = self.execute(call).await;
                // The caller waits for its own image to reach what this answer saw.
                let body = serde_json::to_vec(&answer).unwrap_or_default().into();
                ok_reply(-1, false, offset(), body)
            }
            _ => reply(INVALID_REQUEST, "not a call".into()),
        }
    }

    /// A broker-only node's long poll for the committed metadata after `after`: answered
    /// once this voter has applied more, or after `max_wait` (at most the request timeout,
    /// so that the caller's call does not time out first).
    pub async fn serve_metadata_fetch(&self, after: u64, max_wait: Duration) -> PeerMessage {
        let log = match self.log() {
            Ok(Meta::Voter(log)) => log,
            _ => return error_reply(NOT_CONTROLLER, "this node is not a voter".into()),
        };
        let max_wait = max_wait.min(Duration::from_millis(self.config.quorum_request_timeout_ms));
        let deadline = Instant::now() + max_wait;
        while log.image().offset <= after && Instant::now() < deadline {
            let l = log.applied_event.listen();
            if log.image().offset > after {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = futures::future::select(l, Box::pin(glommio::timer::sleep(left))).await;
        }
        // Entries up to half a frame; the image instead when they are snapshotted away.
        let budget = self.config.controller_frame_max_bytes / 2;
        let (image, entries) = match log.applied_entries_after(after, budget) {
            Some(entries) => (bytes::Bytes::new(), entries),
            None => {
                let image = log.image();
                let after_image = log
                    .applied_entries_after(image.offset, budget)
                    .unwrap_or_default();
                (bytes::Bytes::from(image.encode_snapshot()), after_image)
            }
        };
        PeerMessage::MetadataUpdate {
            leader: log.leader().unwrap_or(-1),
            term: log.term(),
            commit: log.commit_index(),
            image,
            entries: entries
                .into_iter()
                .map(|(i, d)| (i, bytes::Bytes::from(d)))
                .collect(),
        }
    }

    /// Sends `msg` to the active controller and returns its successful reply, retrying
    /// while the leader is unknown or moves, until `metadata_commit_timeout_ms`.
    async fn call_leader(&self, msg: PeerMessage) -> Result<PeerMessage, CommitError> {
        let log = self.log()?;
        let identity = self
            .identity
            .borrow()
            .clone()
            .ok_or_else(|| CommitError::Refused("no peers configured".into()))?;
        let timeout = Duration::from_millis(self.config.metadata_commit_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no leader known");
        while Instant::now() < deadline {
            let Some(leader) = log.leader().filter(|l| *l != self.config.node_id) else {
                if log.is_leader() {
                    return Err(CommitError::NotLeader {
                        leader: Some(self.config.node_id),
                    });
                }
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let addr = identity.voter_addr(leader).expect("leaders are voters");
            match crate::peers::call(&identity, &addr, &msg).await {
                Ok(r @ PeerMessage::Reply { error_code: 0, .. }) => return Ok(r),
                Ok(PeerMessage::Reply {
                    error_code: NOT_CONTROLLER,
                    message,
                    ..
                }) => last = message,
                Ok(PeerMessage::Reply {
                    error_code: STALE_BROKER_EPOCH,
                    message,
                    ..
                }) => return Err(CommitError::StaleBroker(message)),
                Ok(PeerMessage::Reply {
                    error_code: DUPLICATE_BROKER_REGISTRATION,
                    message,
                    ..
                }) => return Err(CommitError::Duplicate(message)),
                Ok(PeerMessage::Reply { message, .. }) => {
                    return Err(CommitError::Refused(message))
                }
                Ok(_) => last = "unexpected reply".into(),
                Err(e) => last = format!("{e:#}"),
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        Err(CommitError::Unreachable(format!(
            "the active controller could not be reached within {timeout:?}: {last}"
        )))
    }

    /// Registers this broker. While another process holds the id (its session has not
    /// expired: a crashed predecessor, or a second process by mistake), the controller
    /// refuses; this waits and retries until `sluice.metadata.commit.timeout.ms`, as Kafka's
    /// brokers do, and then gives up (start-up fails with the reason).
    async fn register(&self) -> Result<(), CommitError> {
        let deadline =
            Instant::now() + Duration::from_millis(self.config.metadata_commit_timeout_ms);
        let mut logged = false;
        loop {
            match self.register_once().await {
                Err(CommitError::Duplicate(why)) if Instant::now() < deadline => {
                    if !logged {
                        tracing::warn!(
                            reason = %why,
                            "node id held by another registration; retrying until its session expires"
                        );
                        logged = true;
                    }
                    glommio::timer::sleep(Duration::from_millis(500)).await;
                }
                r => return r,
            }
        }
    }

    async fn register_once(&self) -> Result<(), CommitError> {
        let reg = self.registration();
        let epoch = if self.log()?.is_leader() {
            self.register_local(reg).await?
        } else {
            let record = MetadataRecord::RegisterBroker {
                broker_id: reg.broker_id,
                incarnation: reg.incarnation,
                broker_epoch: replication::metadata::records::EPOCH_FROM_OFFSET,
                endpoints: reg.endpoints,
                rack: reg.rack,
                shards: reg.shards,
                fenced: true,
            };
            match self
                .call_leader(PeerMessage::Register {
                    record: record.encode().into(),
                })
                .await?
            {
                PeerMessage::Reply { broker_epoch, .. } => broker_epoch,
                _ => unreachable!("call_leader returns replies"),
            }
        };
        self.broker_epoch.set(epoch);
        tracing::info!(
            node_id = self.config.node_id,
            broker_epoch = epoch,
            "broker registered"
        );
        Ok(())
    }

    /// Registers a broker at the active controller: its epoch is the offset of the entry
    /// that holds the registration.
    async fn register_local(&self, reg: Registration) -> Result<i64, CommitError> {
        let cfg = self.decisions_config();
        let (r, index) = self
            .mutate(|image, d, now| match d.register(&cfg, image, reg, now) {
                Ok(records) => (records, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            })
            .await?;
        r.map_err(|e| match e {
            ControllerError::DuplicateBrokerId { .. } => CommitError::Duplicate(e.to_string()),
            e => CommitError::Refused(e.to_string()),
        })?;
        Ok(index as i64)
    }

    /// A broker's heartbeat at the active controller: whether it is fenced.
    async fn heartbeat_local(
        &self,
        id: i32,
        epoch: i64,
        caught_up: bool,
    ) -> Result<bool, CommitError> {
        let cfg = self.decisions_config();
        let (r, _) = self
            .mutate(
                |image, d, now| match d.heartbeat(&cfg, image, id, epoch, caught_up, now) {
                    Ok((records, reply)) => (records, Ok(reply)),
                    Err(e) => (Vec::new(), Err(e)),
                },
            )
            .await?;
        match r {
            Ok(reply) => Ok(reply.fenced),
            Err(
                e @ (ControllerError::StaleBrokerEpoch { .. } | ControllerError::UnknownBroker(_)),
            ) => Err(CommitError::StaleBroker(e.to_string())),
            Err(e) => Err(CommitError::Refused(e.to_string())),
        }
    }

    /// On SIGTERM, in a cluster: asks the active controller to fence this broker and move
    /// its leaderships (Kafka's controlled shutdown), for at most the request timeout.
    pub async fn controlled_shutdown(&self) {
        if self.identity.borrow().is_none() || self.broker_epoch.get() < 0 {
            return;
        }
        self.stopping.set(true);
        let (id, epoch) = (self.config.node_id, self.broker_epoch.get());
        let work = async move {
            let log = self.log()?;
            if log.is_leader() {
                self.controlled_shutdown_local(id, epoch).await
            } else {
                let msg = PeerMessage::Heartbeat {
                    broker_id: id,
                    broker_epoch: epoch,
                    applied_offset: log.image().offset,
                    shutting_down: true,
                };
                self.call_leader(msg).await.map(|_| ())
            }
        };
        let limit = Duration::from_millis(self.config.quorum_request_timeout_ms * 2);
        match crate::peers::within(limit, work).await {
            Some(Ok(())) => tracing::info!("controlled shutdown: fenced, leaderships moved"),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "controlled shutdown failed; stopping anyway")
            }
            None => tracing::warn!("controlled shutdown timed out; stopping anyway"),
        }
    }

    async fn controlled_shutdown_local(&self, id: i32, epoch: i64) -> Result<(), CommitError> {
        let cfg = self.decisions_config();
        let (r, _) = self
            .mutate(
                |image, d, _| match d.controlled_shutdown(&cfg, image, id, epoch) {
                    Ok(records) => (records, Ok(())),
                    Err(e) => (Vec::new(), Err(e)),
                },
            )
            .await?;
        r.map_err(|e| CommitError::Refused(e.to_string()))
    }

    /// This broker's heartbeat; returns whether it is still fenced. A stale registration
    /// (fenced and re-registered, or unknown) registers again.
    async fn heartbeat(&self) -> Result<bool, CommitError> {
        let (id, epoch) = (self.config.node_id, self.broker_epoch.get());
        let log = self.log()?;
        let r = if log.is_leader() {
            let caught_up = epoch >= 0 && log.image().offset >= epoch as u64;
            self.heartbeat_local(id, epoch, caught_up).await
        } else {
            let msg = PeerMessage::Heartbeat {
                broker_id: id,
                broker_epoch: epoch,
                applied_offset: log.image().offset,
                shutting_down: false,
            };
            match self.call_leader(msg).await {
                Ok(PeerMessage::Reply { fenced, .. }) => Ok(fenced),
                Ok(_) => unreachable!("call_leader returns replies"),
                Err(e) => Err(e),
            }
        };
        match r {
            Err(CommitError::StaleBroker(_)) => {
                self.register().await?;
                Ok(true)
            }
            r => r,
        }
    }

    /// Elects leaders (preferred or unclean) for `partitions`, or every partition when none
    /// are named; then, as Kafka, partitions that needed no election are left out of the
    /// answer.
    async fn elect_leaders_local(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Vec<Elected> {
        let election = if unclean {
            ElectionType::Unclean
        } else {
            ElectionType::Preferred
        };
        let all = partitions.is_none();
        let named = partitions.clone();
        let outcome = self
            .mutate(|image, d, _| {
                let asks: std::collections::BTreeSet<(String, i32)> = match partitions {
                    Some(p) => p.into_iter().collect(),
                    None => image
                        .topics
                        .values()
                        .flat_map(|t| (0..t.partitions.len() as i32).map(|i| (t.name.clone(), i)))
                        .collect(),
                };
                let mut records = Vec::new();
                let mut results = Vec::new();
                for (name, i) in asks {
                    let r = match image.topic(&name) {
                        None => Err(ElectError::Unknown),
                        Some((id, _)) => d
                            .elect(image, election, *id, i)
                            .map(|record| records.push(record))
                            .map_err(ElectError::from),
                    };
                    if all && matches!(r, Err(ElectError::NotNeeded)) {
                        continue;
                    }
                    results.push((name, i, r));
                }
                (records, results)
            })
            .await;
        match outcome {
            Ok((results, _)) => results,
            Err(e) => {
                tracing::warn!(error = %e, "leader election failed");
                named
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, p)| (t, p, Err(ElectError::Commit(e.clone()))))
                    .collect()
            }
        }
    }

    /// The active controller's timer duty with `auto.leader.rebalance.enable`: preferred
    /// leaders back where a broker leads too few of the partitions it prefers.
    async fn rebalance_leaders(&self) -> Result<usize, CommitError> {
        let percent = self.config.leader_imbalance_per_broker_percentage;
        let (moved, _) = self
            .mutate(|image, d, _| {
                let records: Vec<MetadataRecord> = d
                    .imbalanced(image, percent)
                    .into_iter()
                    .filter_map(|(id, i)| d.elect(image, ElectionType::Preferred, id, i).ok())
                    .collect();
                let n = records.len();
                (records, n)
            })
            .await?;
        if moved > 0 {
            tracing::info!(partitions = moved, "preferred leaders restored");
        }
        Ok(moved)
    }

    /// The active controller's timer duty: fence brokers whose session expired.
    async fn expire_sessions(&self) -> Result<(), CommitError> {
        let cfg = self.decisions_config();
        self.mutate(|image, d, now| (d.expire_sessions(&cfg, image, now), ()))
            .await?;
        Ok(())
    }

    /// The active controller's timer duty for `unclean.leader.election.enable` turned on
    /// after a partition went offline.
    async fn unclean_elections(&self) -> Result<(), CommitError> {
        let cfg = self.decisions_config();
        self.mutate(|image, d, _| (d.unclean_elections(&cfg, image), ()))
            .await?;
        Ok(())
    }

    /// Turns a pre-quorum `metadata.json` into records (topics already in the log are
    /// skipped, so a crash before the rename repeats nothing), then renames the file.
    async fn migrate_json_image(&self) -> Result<()> {
        let dir = self.config.data_dir.clone();
        let path = MetadataImage::path(&dir);
        if !path.exists() {
            return Ok(());
        }
        let old = {
            let dir = dir.clone();
            glommio::executor()
                .spawn_blocking(move || MetadataImage::load(&dir))
                .await?
        };
        let node = self.config.node_id;
        let (count, _) = self
            .mutate(|image, _, _| {
                let mut records = Vec::new();
                let mut count = 0;
                for (name, t) in &old.topics {
                    if image.topic_ids.contains_key(name) {
                        continue;
                    }
                    count += 1;
                    let topic_id = TopicId(t.uuid().into_bytes());
                    records.push(MetadataRecord::Topic {
                        name: name.clone(),
                        topic_id,
                    });
                    for (i, p) in t.partitions.iter().enumerate() {
                        records.push(MetadataRecord::Partition {
                            topic_id,
                            partition: i as i32,
                            replicas: vec![node],
                            isr: vec![node],
                            leader: node,
                            leader_epoch: 0,
                            partition_epoch: 0,
                            shard_index: p.shard_index.0,
                        });
                    }
                    for (k, v) in &t.configs {
                        records.push(MetadataRecord::Config {
                            resource: ConfigResource::Topic,
                            resource_name: name.clone(),
                            name: k.clone(),
                            value: Some(v.clone()),
                        });
                    }
                }
                if old.next_producer_id > image.next_producer_id {
                    records.push(MetadataRecord::ProducerIds {
                        broker_id: node,
                        broker_epoch: self.broker_epoch.get(),
                        next_producer_id: old.next_producer_id,
                    });
                }
                (records, count)
            })
            .await?;
        let moved = path.with_extension("json.migrated");
        glommio::executor()
            .spawn_blocking(move || -> Result<()> {
                std::fs::rename(&path, &moved)?;
                storage::segment::sync_dir(moved.parent().expect("a parent"))?;
                Ok(())
            })
            .await?;
        tracing::info!(
            topics = count,
            version = old.version,
            "pre-quorum metadata.json migrated into the metadata log"
        );
        Ok(())
    }

    async fn create_topics_local(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, CreateTopicError>> {
        let n = specs.len();
        let cfg = self.decisions_config();
        let outcome = self
            .mutate(|image, d, _| {
                let mut work = image.clone();
                let mut records = Vec::new();
                let mut results = Vec::with_capacity(specs.len());
                for spec in specs {
                    match self.plan_topic(&cfg, &work, d, spec) {
                        Ok(rs) => {
                            // Later specs of the same request see this one.
                            let _ = work.apply_batch(work.offset, &rs);
                            let name = match &rs[0] {
                                MetadataRecord::Topic { name, .. } => name.clone(),
                                _ => unreachable!("plan_topic starts with the Topic record"),
                            };
                            let meta = MetadataImage::topic_meta(&work, &name)
                                .expect("the topic was just applied");
                            records.extend(rs);
                            results.push(Ok(meta));
                        }
                        Err(e) => results.push(Err(e)),
                    }
                }
                if validate_only {
                    records.clear();
                }
                (records, results)
            })
            .await;
        match outcome {
            Ok((results, _)) => results,
            Err(e) => {
                tracing::warn!(error = %e, "create topics failed");
                failed(n, CreateTopicError::Commit(e))
            }
        }
    }

    fn plan_topic(
        &self,
        cfg: &ControllerConfig,
        image: &ClusterImage,
        d: &Decisions,
        spec: TopicSpec,
    ) -> Result<Vec<MetadataRecord>, CreateTopicError> {
        validate_topic_name(&spec.name).map_err(|e| CreateTopicError::InvalidName(e.into()))?;
        if image.topic_ids.contains_key(&spec.name) {
            return Err(CreateTopicError::AlreadyExists);
        }
        for (name, value) in &spec.configs {
            crate::topic_config::validate(name, value).map_err(CreateTopicError::InvalidConfig)?;
        }
        let partitions = if spec.num_partitions == -1 {
            self.config.num_partitions
        } else {
            spec.num_partitions
        };
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            return Err(CreateTopicError::InvalidPartitions(spec.num_partitions));
        }
        let factor = if spec.replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            spec.replication_factor
        };
        let topic = NewTopic {
            name: spec.name,
            topic_id: TopicId(random_bytes()),
            partitions,
            replication_factor: factor,
            configs: spec.configs,
        };
        d.create_topic(cfg, image, &topic).map_err(|e| match e {
            ControllerError::TopicExists(_) => CreateTopicError::AlreadyExists,
            ControllerError::InvalidPartitions(n) => CreateTopicError::InvalidPartitions(n),
            e => CreateTopicError::InvalidReplicationFactor(e.to_string()),
        })
    }

    /// Adds partitions to existing topics (placed like new ones).
    async fn create_partitions_local(
        &self,
        requests: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), CreatePartitionsError>> {
        let n = requests.len();
        let cfg = self.decisions_config();
        let outcome = self
            .mutate(|image, d, _| {
                let mut work = image.clone();
                let mut records = Vec::new();
                let results = requests
                    .iter()
                    .map(|(name, count)| {
                        if name == crate::group::OFFSETS_TOPIC {
                            return Err(CreatePartitionsError::Internal);
                        }
                        let (id, topic) = work.topic(name).ok_or(CreatePartitionsError::Unknown)?;
                        let current = topic.partitions.len();
                        if *count <= current as i32 {
                            return Err(CreatePartitionsError::NotMore {
                                current,
                                requested: *count,
                            });
                        }
                        if *count > TOPIC_PARTITIONS_MAX {
                            return Err(CreatePartitionsError::TooMany(*count));
                        }
                        let id = *id;
                        let rs = d.add_partitions(&cfg, &work, id, *count).map_err(|e| {
                            CreatePartitionsError::Commit(CommitError::Refused(e.to_string()))
                        })?;
                        let _ = work.apply_batch(work.offset, &rs);
                        records.extend(rs);
                        Ok(())
                    })
                    .collect::<Vec<_>>();
                if validate_only {
                    records.clear();
                }
                (records, results)
            })
            .await;
        match outcome {
            Ok((results, _)) => results,
            Err(e) => {
                tracing::warn!(error = %e, "create partitions failed");
                failed(n, CreatePartitionsError::Commit(e))
            }
        }
    }

    /// Changes topic configs: each request is `(topic, replace all first?, operations)`,
    /// checked as a whole (one bad operation changes nothing of that topic); committed as
    /// Config records (set or deleted), which shards apply to open logs.
    async fn alter_topic_configs_local(
        &self,
        requests: Vec<(String, bool, Vec<ConfigOp>)>,
        validate_only: bool,
    ) -> Vec<Result<(), AlterConfigsError>> {
        let n = requests.len();
        let outcome = self
            .mutate(|image, _, _| {
                let mut records = Vec::new();
                let results = requests
                    .into_iter()
                    .map(|(name, replace, ops)| {
                        let (_, topic) = image.topic(&name).ok_or(AlterConfigsError::Unknown)?;
                        let before = &topic.configs;
                        let mut configs = if replace {
                            BTreeMap::new()
                        } else {
                            before.clone()
                        };
                        for op in ops {
                            apply_config_op(&self.config, &mut configs, op)
                                .map_err(AlterConfigsError::Invalid)?;
                        }
                        let config = |key: &str, value: Option<String>| MetadataRecord::Config {
                            resource: ConfigResource::Topic,
                            resource_name: name.clone(),
                            name: key.to_owned(),
                            value,
                        };
                        for (k, v) in &configs {
                            if before.get(k) != Some(v) {
                                records.push(config(k, Some(v.clone())));
                            }
                        }
                        for k in before.keys().filter(|k| !configs.contains_key(*k)) {
                            records.push(config(k, None));
                        }
                        Ok(())
                    })
                    .collect::<Vec<_>>();
                if validate_only {
                    records.clear();
                }
                (records, results)
            })
            .await;
        match outcome {
            Ok((results, _)) => results,
            Err(e) => {
                tracing::warn!(error = %e, "alter configs failed");
                failed(n, AlterConfigsError::Commit(e))
            }
        }
    }

    /// Hands out the next block of producer ids once it is committed and every shard's image
    /// includes it: a restart never hands out an id twice (ids of a block never used are
    /// skipped, as in Kafka), and every shard can tell an issued id from one nobody issued
    /// (Produce refuses the latter).
    async fn allocate_producer_ids_local(&self) -> Result<std::ops::Range<i64>> {
        let (broker_id, broker_epoch) = (self.config.node_id, self.broker_epoch.get());
        let (block, _) = self
            .mutate(|image, _, _| {
                let start = image.next_producer_id;
                match start.checked_add(PRODUCER_ID_BLOCK_SIZE) {
                    Some(end) => (
                        vec![MetadataRecord::ProducerIds {
                            broker_id,
                            broker_epoch,
                            next_producer_id: end,
                        }],
                        Some(start..end),
                    ),
                    None => (Vec::new(), None),
                }
            })
            .await?;
        block.ok_or_else(|| anyhow::anyhow!("producer ids exhausted"))
    }

    async fn delete_topics_local(&self, names: Vec<String>) -> Vec<Result<(), DeleteTopicError>> {
        if !self.config.delete_topic_enable {
            return names
                .iter()
                .map(|_| Err(DeleteTopicError::Disabled))
                .collect();
        }
        let n = names.len();
        let outcome = self
            .mutate(|image, _, _| {
                let mut records = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                let results = names
                    .iter()
                    .map(|name| {
                        if name == crate::group::OFFSETS_TOPIC {
                            return Err(DeleteTopicError::Internal);
                        }
                        let (id, _) = image.topic(name).ok_or(DeleteTopicError::Unknown)?;
                        if !seen.insert(*id) {
                            return Err(DeleteTopicError::Unknown);
                        }
                        records.push(MetadataRecord::RemoveTopic { topic_id: *id });
                        Ok(())
                    })
                    .collect::<Vec<_>>();
                (records, results)
            })
            .await;
        match outcome {
            Ok((results, _)) => results,
            Err(e) => {
                tracing::warn!(error = %e, "delete topics failed");
                failed(n, DeleteTopicError::Commit(e))
            }
        }
    }
}

impl Controller {
    /// Runs `call` here when this node is the active controller, or forwards it to the
    /// one that is.
    async fn route(&self, call: ControllerCall) -> Result<ControllerAnswer, CommitError> {
        if self.log()?.is_leader() || self.identity.borrow().is_none() {
            return Ok(self.execute(call).await);
        }
        let body = serde_json::to_vec(&call).expect("calls serialize");
        match self
            .call_leader(PeerMessage::Forward {
                api_key: 0,
                api_version: 0,
                body: body.into(),
            })
            .await?
        {
            PeerMessage::Reply {
                body,
                committed_offset,
                ..
            } => {
                let answer = serde_json::from_slice(&body).map_err(|e| {
                    CommitError::Refused(format!(
                        "malformed answer from the active controller: {e}"
                    ))
                })?;
                // Read-your-writes through this broker: its shards have the change (or the
                // commit timeout passed) before the client hears of it.
                let timeout = Duration::from_millis(self.config.metadata_commit_timeout_ms);
                let _ = glommio::timer::timeout(timeout, async {
                    self.wait_published(committed_offset).await;
                    Ok(())
                })
                .await;
                Ok(answer)
            }
            _ => unreachable!("call_leader returns replies"),
        }
    }

    async fn execute(&self, call: ControllerCall) -> ControllerAnswer {
        match call {
            ControllerCall::CreateTopics {
                specs,
                validate_only,
            } => {
                ControllerAnswer::CreateTopics(self.create_topics_local(specs, validate_only).await)
            }
            ControllerCall::DeleteTopics { names } => {
                ControllerAnswer::DeleteTopics(self.delete_topics_local(names).await)
            }
            ControllerCall::CreatePartitions {
                asks,
                validate_only,
            } => ControllerAnswer::CreatePartitions(
                self.create_partitions_local(asks, validate_only).await,
            ),
            ControllerCall::AlterConfigs {
                asks,
                validate_only,
            } => ControllerAnswer::AlterConfigs(
                self.alter_topic_configs_local(asks, validate_only).await,
            ),
            ControllerCall::DescribeQuorum => {
                let (leader, term, commit_index, voters) = match self.log() {
                    Ok(l) => (
                        l.leader().unwrap_or(-1),
                        l.term(),
                        l.commit_index(),
                        l.progress(),
                    ),
                    Err(_) => (-1, 0, 0, Vec::new()),
                };
                let listeners = self
                    .config
                    .quorum_voters
                    .iter()
                    .map(|v| (v.node_id, v.host.clone(), v.port))
                    .collect();
                ControllerAnswer::Quorum(QuorumState {
                    leader,
                    term,
                    commit_index,
                    voters,
                    listeners,
                })
            }
            ControllerCall::ProducerIds => ControllerAnswer::ProducerIds(
                self.allocate_producer_ids_local()
                    .await
                    .map(|r| (r.start, r.end))
                    .map_err(|e| format!("{e:#}")),
            ),
            ControllerCall::ElectLeaders {
                unclean,
                partitions,
            } => {
                ControllerAnswer::ElectLeaders(self.elect_leaders_local(unclean, partitions).await)
            }
            ControllerCall::AlterPartition(ask) => {
                ControllerAnswer::AlterPartition(self.alter_partition_local(ask).await)
            }
        }
    }

    /// Commits a leader's ISR change if the decisions accept it; returns the ISR then.
    async fn alter_partition_local(&self, ask: IsrChangeAsk) -> Result<Vec<i32>, String> {
        let (topic, partition) = (ask.topic.clone(), ask.partition);
        let (r, _) = self
            .mutate(|image, d, _| {
                let Some((id, _)) = image.topic(&ask.topic) else {
                    return (Vec::new(), Err(format!("unknown topic {}", ask.topic)));
                };
                let req = replication::metadata::controller::AlterPartition {
                    topic_id: *id,
                    partition: ask.partition,
                    leader: ask.leader,
                    leader_epoch: ask.leader_epoch,
                    partition_epoch: ask.partition_epoch,
                    isr: ask.isr,
                };
                match d.alter_partition(image, &req) {
                    Ok(records) => (records, Ok(*id)),
                    Err(e) => (Vec::new(), Err(e.to_string())),
                }
            })
            .await
            .map_err(|e| e.to_string())?;
        let id = r?;
        let image = self.log().map_err(|e| e.to_string())?.image();
        image
            .topics
            .get(&id)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
            .map(|p| p.isr.clone())
            .ok_or_else(|| format!("{topic}-{partition} is gone"))
    }

    /// A partition leader's ISR change, decided by the active controller (forwarded there).
    pub async fn alter_partition(&self, ask: IsrChangeAsk) -> Result<Vec<i32>, String> {
        match self.route(ControllerCall::AlterPartition(ask)).await {
            Ok(ControllerAnswer::AlterPartition(r)) => r,
            Ok(_) => Err(mismatch().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, CreateTopicError>> {
        let n = specs.len();
        match self
            .route(ControllerCall::CreateTopics {
                specs,
                validate_only,
            })
            .await
        {
            Ok(ControllerAnswer::CreateTopics(r)) if r.len() == n => r,
            Ok(_) => failed(n, CreateTopicError::Commit(mismatch())),
            Err(e) => failed(n, CreateTopicError::Commit(e)),
        }
    }

    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<Result<(), DeleteTopicError>> {
        let n = names.len();
        match self.route(ControllerCall::DeleteTopics { names }).await {
            Ok(ControllerAnswer::DeleteTopics(r)) if r.len() == n => r,
            Ok(_) => failed(n, DeleteTopicError::Commit(mismatch())),
            Err(e) => failed(n, DeleteTopicError::Commit(e)),
        }
    }

    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<Elected>, CommitError> {
        match self
            .route(ControllerCall::ElectLeaders {
                unclean,
                partitions,
            })
            .await?
        {
            ControllerAnswer::ElectLeaders(r) => Ok(r),
            _ => Err(mismatch()),
        }
    }

    pub async fn create_partitions(
        &self,
        asks: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), CreatePartitionsError>> {
        let n = asks.len();
        match self
            .route(ControllerCall::CreatePartitions {
                asks,
                validate_only,
            })
            .await
        {
            Ok(ControllerAnswer::CreatePartitions(r)) if r.len() == n => r,
            Ok(_) => failed(n, CreatePartitionsError::Commit(mismatch())),
            Err(e) => failed(n, CreatePartitionsError::Commit(e)),
        }
    }

    pub async fn alter_topic_configs(
        &self,
        asks: Vec<(String, bool, Vec<ConfigOp>)>,
        validate_only: bool,
    ) -> Vec<Result<(), AlterConfigsError>> {
        let n = asks.len();
        match self
            .route(ControllerCall::AlterConfigs {
                asks,
                validate_only,
            })
            .await
        {
            Ok(ControllerAnswer::AlterConfigs(r)) if r.len() == n => r,
            Ok(_) => failed(n, AlterConfigsError::Commit(mismatch())),
            Err(e) => failed(n, AlterConfigsError::Commit(e)),
        }
    }

    pub async fn describe_quorum(&self) -> Result<QuorumState, CommitError> {
        match self.route(ControllerCall::DescribeQuorum).await? {
            ControllerAnswer::Quorum(q) => Ok(q),
            _ => Err(mismatch()),
        }
    }

    /// The next block of producer ids (committed, and in this node's image, before it is
    /// returned).
    pub async fn allocate_producer_ids(&self) -> Result<std::ops::Range<i64>> {
        match self.route(ControllerCall::ProducerIds).await {
            Ok(ControllerAnswer::ProducerIds(Ok((start, end)))) => {
                // The block must be in this node's image before its ids are used: Produce
                // refuses ids above the image's counter.
                if let Ok(log) = self.log() {
                    let deadline = Instant::now()
                        + Duration::from_millis(self.config.metadata_commit_timeout_ms);
                    while log.image().next_producer_id < end && Instant::now() < deadline {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    self.wait_published(log.image().offset).await;
                }
                Ok(start..end)
            }
            Ok(ControllerAnswer::ProducerIds(Err(e))) => anyhow::bail!("{e}"),
            Ok(_) => anyhow::bail!("{}", mismatch()),
            Err(e) => Err(e.into()),
        }
    }
}

fn failed<T, E: Clone>(n: usize, e: E) -> Vec<Result<T, E>> {
    (0..n).map(|_| Err(e.clone())).collect()
}

fn mismatch() -> CommitError {
    CommitError::Refused("the active controller answered another call".into())
}

/// Publishes each new image to every shard, in offset order (a slow shard makes later
/// images wait; images published meanwhile coalesce into the newest).
/// A call's refusal.
fn error_reply(error_code: i16, message: String) -> PeerMessage {
    PeerMessage::Reply {
        error_code,
        message,
        broker_epoch: -1,
        fenced: true,
        committed_offset: 0,
        body: bytes::Bytes::new(),
    }
}

/// A call's success: the broker's epoch and state, the committed offset the caller's image
/// must reach to see what the answer saw, and a body.
fn ok_reply(
    broker_epoch: i64,
    fenced: bool,
    committed_offset: u64,
    body: bytes::Bytes,
) -> PeerMessage {
    PeerMessage::Reply {
        error_code: 0,
        message: String::new(),
        broker_epoch,
        fenced,
        committed_offset,
        body,
    }
}

/// Where this node's metadata comes from: its own Raft log (a voter: `process.roles`
/// with `controller`), or an observer of the voters' (a broker-only node).
#[derive(Clone)]
enum Meta {
    Voter(Rc<MetadataLog>),
    Observer(Rc<MetadataObserver>),
}

impl Meta {
    fn image(&self) -> Arc<ClusterImage> {
        match self {
            Meta::Voter(l) => l.image(),
            Meta::Observer(o) => o.image(),
        }
    }

    fn failure(&self) -> Option<String> {
        match self {
            Meta::Voter(l) => l.failure(),
            Meta::Observer(_) => None,
        }
    }

    fn is_leader(&self) -> bool {
        matches!(self, Meta::Voter(l) if l.is_leader())
    }

    fn term(&self) -> u64 {
        match self {
            Meta::Voter(l) => l.term(),
            Meta::Observer(o) => o.term(),
        }
    }

    fn leader(&self) -> Option<i32> {
        match self {
            Meta::Voter(l) => l.leader(),
            Meta::Observer(o) => o.leader(),
        }
    }

    fn ready_to_decide(&self) -> bool {
        matches!(self, Meta::Voter(l) if l.ready_to_decide())
    }

    fn commit_index(&self) -> u64 {
        match self {
            Meta::Voter(l) => l.commit_index(),
            Meta::Observer(o) => o.commit_index(),
        }
    }

    fn progress(&self) -> Vec<(i32, u64)> {
        match self {
            Meta::Voter(l) => l.progress(),
            Meta::Observer(_) => Vec::new(),
        }
    }

    async fn commit(
        &self,
        records: Vec<MetadataRecord>,
        timeout: Duration,
    ) -> Result<u64, CommitError> {
        match self {
            Meta::Voter(l) => l.commit(records, timeout).await,
            Meta::Observer(o) => Err(CommitError::NotLeader { leader: o.leader() }),
        }
    }

    fn applied_event(&self) -> &event_listener::Event {
        match self {
            Meta::Voter(l) => &l.applied_event,
            Meta::Observer(o) => &o.applied_event,
        }
    }
}

async fn publish_loop(controller: Rc<Controller>, shard: Rc<Shard>, log: Meta) {
    loop {
        let l = log.applied_event().listen();
        let image = log.image();
        if image.offset <= controller.published.get() {
            l.await;
            continue;
        }
        let view = Arc::new(MetadataImage::from_cluster(&image));
        let mut waits = Vec::new();
        for target in 0..shard.shard_count() {
            let view = view.clone();
            waits.push(shard.invoke_on(ShardId(target), move |s| async move {
                s.apply_metadata(view).await.map_err(|e| e.to_string())
            }));
        }
        for (target, r) in futures::future::join_all(waits)
            .await
            .into_iter()
            .enumerate()
        {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(shard = target, error = %e, "shard could not apply metadata")
                }
                Err(e) => tracing::error!(shard = target, error = %e, "shard gone"),
            }
        }
        controller.published.set(image.offset);
        controller.published_event.notify(usize::MAX);
    }
}

/// This broker's heartbeats, and the active controller's session checks and automatic
/// leader rebalance.
async fn heartbeat_loop(controller: std::rc::Weak<Controller>) {
    let mut last_rebalance = Instant::now();
    loop {
        let Some(c) = controller.upgrade() else {
            return;
        };
        let every = Duration::from_millis(c.config.broker_heartbeat_interval_ms);
        drop(c);
        glommio::timer::sleep(every).await;
        let Some(c) = controller.upgrade() else {
            return;
        };
        if c.stopping.get() {
            return;
        }
        if c.config.roles.broker {
            if let Err(e) = c.heartbeat().await {
                tracing::warn!(error = %e, "broker heartbeat failed");
            }
        }
        if c.log().is_ok_and(|l| l.is_leader()) {
            if let Err(e) = c.expire_sessions().await {
                tracing::warn!(error = %e, "broker session check failed");
            }
            if let Err(e) = c.unclean_elections().await {
                tracing::warn!(error = %e, "unclean leader election failed");
            }
            let every = Duration::from_secs(c.config.leader_imbalance_check_interval_seconds);
            if c.config.auto_leader_rebalance_enable && last_rebalance.elapsed() >= every {
                last_rebalance = Instant::now();
                if let Err(e) = c.rebalance_leaders().await {
                    tracing::warn!(error = %e, "automatic leader rebalance failed");
                }
            }
        }
    }
}

/// Logs every leader about to be elected from outside its partition's ISR (an unclean
/// election, whichever decision made it): what only the ISR had is lost, and the operator
/// must be told.
fn warn_unclean(image: &ClusterImage, records: &[MetadataRecord]) {
    for r in records {
        let MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            ..
        } = r
        else {
            continue;
        };
        let Some(t) = image.topics.get(topic_id) else {
            continue;
        };
        let Some(p) = usize::try_from(*partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
        else {
            continue;
        };
        if *leader >= 0 && !p.isr.contains(leader) {
            tracing::warn!(
                topic = %t.name,
                partition,
                leader,
                lost_isr = ?p.isr,
                "unclean leader election: records only the lost ISR members had are gone"
            );
        }
    }
}

/// Applies one config operation to a topic's set configs, validating the result. APPEND and
/// SUBTRACT start from the config's effective value, its default when the topic sets none
/// (as Kafka: APPEND `compact` to a default `cleanup.policy` gives `delete,compact`), and
/// keep an emptied list as a set, empty value.
fn apply_config_op(
    broker: &BrokerConfig,
    configs: &mut BTreeMap<String, String>,
    op: ConfigOp,
) -> Result<(), String> {
    use crate::topic_config::{def, effective_value, list_items, validate};
    let list_def = |name: &str| match def(name) {
        Some(d) if d.is_list() => Ok(d),
        Some(_) => Err(format!(
            "{name} is not a list: APPEND and SUBTRACT do not apply"
        )),
        None => Err(format!("unknown topic config name: {name}")),
    };
    match op {
        ConfigOp::Set(name, value) => {
            validate(&name, &value)?;
            configs.insert(name, value);
        }
        ConfigOp::Delete(name) => {
            if def(&name).is_none() {
                return Err(format!("unknown topic config name: {name}"));
            }
            configs.remove(&name);
        }
        ConfigOp::Append(name, value) => {
            list_def(&name)?;
            let mut items = list_items(&effective_value(broker, configs, &name));
            for add in value.split(',').map(str::trim) {
                if !add.is_empty() && !items.iter().any(|i| i == add) {
                    items.push(add.to_owned());
                }
            }
            let joined = items.join(",");
            validate(&name, &joined)?;
            configs.insert(name, joined);
        }
        ConfigOp::Subtract(name, value) => {
            list_def(&name)?;
            let gone: Vec<&str> = value.split(',').map(str::trim).collect();
            let mut items = list_items(&effective_value(broker, configs, &name));
            items.retain(|i| !gone.contains(&i.as_str()));
            let joined = items.join(",");
            validate(&name, &joined)?;
            configs.insert(name, joined);
        }
    }
    Ok(())
}
