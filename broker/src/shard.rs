//! The shard runtime: one pinned glommio executor per core, each owning a disjoint set of
//! partitions, its own group-commit task and its own listener on the shared port.
//!
//! Shards share nothing behind locks. Work for a partition another shard owns is sent there
//! with [`Shard::invoke_on`]: a closure crosses cores over a bounded flume channel (the
//! target's inbox, `sluice.shard.inbox.capacity`), runs as a task on the owner, and its
//! result comes back over a one-shot channel. The metadata image is replaced on every shard
//! by the controller in version order (see `controller.rs`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Result;
use replication::{Append, BrokerId, LeaderEpoch, Partition};
use storage::GroupCommit;

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::group::records::{decode_batches, encode_batch};
use crate::group::{Coordinator, Write, OFFSETS_TOPIC};
use crate::metadata::{partition_dir, MetadataImage};
use crate::metrics::{Metrics, PartitionStats, ShardSnapshot};
use crate::shard_table::ShardTable;

/// Index of a shard, 0-based (glommio executor ids start at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
/// A unit of work sent to another shard.
pub type ShardJob = Box<dyn FnOnce(Rc<Shard>) -> LocalFuture + Send>;

/// How often a shard advances its group coordinator's timers.
const GROUP_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// Read size when replaying `__consumer_offsets` at start-up.
const GROUP_LOAD_READ_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

pub struct Shard {
    pub id: ShardId,
    pub config: Arc<BrokerConfig>,
    peers: Vec<flume::Sender<ShardJob>>,
    metadata: RefCell<Arc<MetadataImage>>,
    /// Which local shard serves each partition of `metadata` (node-local placement).
    shard_table: RefCell<Arc<ShardTable>>,
    partitions: RefCell<HashMap<(String, i32), Rc<Partition>>>,
    pub commit: Rc<GroupCommit>,
    /// Present on the controller shard only.
    pub controller: Option<Rc<Controller>>,
    self_ref: RefCell<std::rc::Weak<Shard>>,
    stopping: Cell<bool>,
    /// Fires when listeners must stop accepting.
    pub stop_listening: event_listener::Event,
    /// Fires when the shard's main task may return.
    pub exit: event_listener::Event,
    inflight: Rc<Cell<usize>>,
    idle: Rc<event_listener::Event>,
    /// Budget of request bytes held in memory (`queued.max.request.bytes`).
    pub request_memory: Rc<glommio::sync::Semaphore>,
    /// Budget of Fetch response bytes held in memory (`sluice.shard.response.memory.bytes`).
    pub response_memory: Rc<glommio::sync::Semaphore>,
    /// Rate limit of this shard's connection-level warnings.
    pub warn_limiter: crate::server::WarnLimiter,
    /// The port this shard's listener bound (differs from the configured one only when that
    /// was 0); Metadata advertises it when no `advertised.listeners` port is set.
    pub listen_port: Cell<u16>,
    /// This shard's unused producer ids, a block from the controller.
    pub producer_ids: RefCell<std::ops::Range<i64>>,
    /// The consumer groups whose `__consumer_offsets` partitions this shard leads.
    pub groups: RefCell<Coordinator>,
    /// Where each of this shard's `__consumer_offsets` partitions stands as a coordinator.
    coordinating: RefCell<BTreeMap<i32, Coordinating>>,
    pub metrics: Metrics,
    /// One replica fetcher per broker this shard follows partitions from.
    pub fetchers: crate::replica_fetcher::Fetchers,
}

/// A `__consumer_offsets` partition's groups on the shard that holds it: being read in
/// after this broker became its leader, or loaded and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coordinating {
    Loading,
    Loaded,
}

/// Why a `__consumer_offsets` write was not committed.
#[derive(Debug, thiserror::Error)]
pub enum GroupWriteError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("this broker does not lead the offsets partition")]
    NotLeader,
    #[error("too few in-sync replicas: {0:?}")]
    NotEnoughReplicas(replication::replica::AcksError),
    #[error("not on every in-sync replica within offsets.commit.timeout.ms")]
    TimedOut,
}

/// How often a leader checks whether its ISR should shrink or grow.
pub const ISR_CHECK_INTERVAL_MS: u64 = 250;

/// Counts a request as in flight until dropped (see [`Shard::drain`]).
pub struct InflightGuard {
    inflight: Rc<Cell<usize>>,
    idle: Rc<event_listener::Event>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inflight.set(self.inflight.get() - 1);
        if self.inflight.get() == 0 {
            self.idle.notify(usize::MAX);
        }
    }
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Arc<BrokerConfig>,
        peers: Vec<flume::Sender<ShardJob>>,
    ) -> Rc<Shard> {
        let controller = (id.0 == 0).then(|| Rc::new(Controller::new(config.clone())));
        let request_memory_bytes = config.queued_max_request_bytes as u64;
        let response_memory_bytes = config.shard_response_memory_bytes as u64;
        let groups = RefCell::new(Coordinator::new(config.group.clone()));
        let shard = Rc::new(Shard {
            id,
            config,
            peers,
            metadata: RefCell::new(Arc::new(MetadataImage::default())),
            shard_table: RefCell::new(Arc::new(ShardTable::default())),
            partitions: RefCell::new(HashMap::new()),
            commit: GroupCommit::new(),
            controller,
            self_ref: RefCell::new(std::rc::Weak::new()),
            stopping: Cell::new(false),
            stop_listening: event_listener::Event::new(),
            exit: event_listener::Event::new(),
            inflight: Rc::new(Cell::new(0)),
            idle: Rc::new(event_listener::Event::new()),
            request_memory: Rc::new(glommio::sync::Semaphore::new(request_memory_bytes)),
            response_memory: Rc::new(glommio::sync::Semaphore::new(response_memory_bytes)),
            warn_limiter: Default::default(),
            listen_port: Cell::new(0),
            producer_ids: RefCell::new(0..0),
            groups,
            metrics: Metrics::default(),
            fetchers: Default::default(),
            coordinating: Default::default(),
        });
        *shard.self_ref.borrow_mut() = Rc::downgrade(&shard);
        shard
    }

    fn rc(&self) -> Rc<Shard> {
        self.self_ref
            .borrow()
            .upgrade()
            .expect("shard alive while running")
    }

    pub fn shard_count(&self) -> usize {
        self.peers.len()
    }

    pub fn metadata(&self) -> Arc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    /// The local shard serving `partition` of `topic`, if the partition exists.
    pub fn owner_of(&self, topic: &str, partition: i32) -> Option<ShardId> {
        self.shard_table.borrow().owner(topic, partition)
    }

    /// The error for a partition this node does not serve: NOT_LEADER_OR_FOLLOWER when it
    /// exists on other brokers (the client refreshes metadata and finds the leader),
    /// UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
    pub fn not_served(&self, topic: &str, partition: i32) -> kafka_protocol::ResponseError {
        let image = self.metadata.borrow();
        let exists = image
            .topics
            .get(topic)
            .is_some_and(|t| usize::try_from(partition).is_ok_and(|p| p < t.partitions.len()));
        if exists {
            kafka_protocol::ResponseError::NotLeaderOrFollower
        } else {
            kafka_protocol::ResponseError::UnknownTopicOrPartition
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Runs `f` on shard `target` and returns its result. Local calls run inline.
    pub async fn invoke_on<T, F, Fut>(&self, target: ShardId, f: F) -> Result<T, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == self.id {
            return Ok(f(self.rc()).await);
        }
        self.metrics
            .cross_core_sent
            .set(self.metrics.cross_core_sent.get() + 1);
        let (tx, rx) = flume::bounded(1);
        let job: ShardJob = Box::new(move |shard| {
            Box::pin(async move {
                let _ = tx.send(f(shard).await);
            })
        });
        self.peers[target.0]
            .send_async(job)
            .await
            .map_err(|_| ShardGone(target.0))?;
        rx.recv_async().await.map_err(|_| ShardGone(target.0))
    }

    /// Runs jobs sent by other shards until every sender is gone.
    pub async fn serve_inbox(self: Rc<Self>, inbox: flume::Receiver<ShardJob>) {
        while let Ok(job) = inbox.recv_async().await {
            glommio::spawn_local(job(self.clone())).detach();
        }
    }

    /// Every `producer.id.expiration.check.interval.ms`, forgets idle idempotent producers
    /// of this shard's partitions (rolls do it too). Runs until the shard stops.
    pub async fn expire_producers_loop(self: Rc<Self>) {
        let interval =
            std::time::Duration::from_millis(self.config.producer_id_expiration_check_interval_ms);
        while !self.is_stopping() {
            glommio::timer::sleep(interval).await;
            let now = crate::handlers::now_ms();
            let expired: usize = self
                .partitions
                .borrow()
                .values()
                .map(|p| p.expire_producers(now))
                .sum();
            if expired > 0 {
                tracing::debug!(shard = self.id.0, expired, "idle producers forgotten");
            }
        }
    }

    /// Advances the group coordinator's timers every [`GROUP_TICK`] and appends the group
    /// records it queued. Runs until the shard stops.
    pub async fn groups_loop(self: Rc<Self>) {
        while !self.is_stopping() {
            glommio::timer::sleep(GROUP_TICK).await;
            self.groups.borrow_mut().tick(crate::handlers::now_ms());
            self.flush_group_writes().await;
        }
    }

    /// Appends the group metadata records the coordinator queued (a group became Stable or
    /// Empty, a static member was replaced) and waits until they are durable. Handlers call
    /// it before answering, as Kafka stores the group before answering SyncGroup.
    pub async fn flush_group_writes(&self) {
        let writes = self.groups.borrow_mut().take_writes();
        for w in writes {
            if let Err(e) = self.append_group_records(w).await {
                tracing::warn!(error = %e, "cannot store group metadata");
            }
        }
    }

    /// Appends group records to this shard's `__consumer_offsets` partition and waits until
    /// they are committed: on every in-sync replica's disk, as Kafka writes them with
    /// acks=all, within `offsets.commit.timeout.ms`.
    pub async fn append_group_records(&self, write: Write) -> Result<(), GroupWriteError> {
        let partition = self
            .leader_partition(OFFSETS_TOPIC, write.partition)
            .ok_or(GroupWriteError::NotLeader)?;
        let min_isr = self.offsets_min_isr();
        partition
            .check_acks_all(min_isr)
            .map_err(GroupWriteError::NotEnoughReplicas)?;
        let now = crate::handlers::now_ms();
        let batch = encode_batch(&write.records, now as i64);
        let info = partition
            .append(Append::Coordinator { records: batch }, now)
            .await?;
        let timeout = std::time::Duration::from_millis(self.config.offsets_commit_timeout_ms);
        match crate::peers::within(timeout, partition.wait_replicated(info.end_offset, min_isr))
            .await
        {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(replication::replica::AcksError::NotLeader))) => {
                Err(GroupWriteError::NotLeader)
            }
            Some(Ok(Err(e))) => Err(GroupWriteError::NotEnoughReplicas(e)),
            Some(Err(e)) => Err(e.into()),
            None => Err(GroupWriteError::TimedOut),
        }
    }

    /// `min.insync.replicas` of `__consumer_offsets` (its topic config, else the broker's).
    fn offsets_min_isr(&self) -> usize {
        let image = self.metadata.borrow();
        let configs = image.topics.get(OFFSETS_TOPIC).map(|t| &t.configs);
        let empty = BTreeMap::new();
        crate::topic_config::effective_value(
            &self.config,
            configs.unwrap_or(&empty),
            "min.insync.replicas",
        )
        .parse::<usize>()
        .unwrap_or(1)
        .max(1)
    }

    /// Whether this shard serves the groups of `__consumer_offsets` partition `partition`
    /// now: NOT_COORDINATOR when it does not lead it, COORDINATOR_LOAD_IN_PROGRESS while it
    /// reads the groups in after becoming its leader.
    pub fn coordinator_ready(&self, partition: i32) -> Result<(), kafka_protocol::ResponseError> {
        if self.leader_partition(OFFSETS_TOPIC, partition).is_none() {
            return Err(kafka_protocol::ResponseError::NotCoordinator);
        }
        match self.coordinating.borrow().get(&partition) {
            Some(Coordinating::Loaded) => Ok(()),
            Some(Coordinating::Loading) => {
                Err(kafka_protocol::ResponseError::CoordinatorLoadInProgress)
            }
            None => Err(kafka_protocol::ResponseError::NotCoordinator),
        }
    }

    /// Group coordination follows the leadership of `__consumer_offsets` partitions: a
    /// partition this shard now leads has its groups read in (its whole log: everything a
    /// leader holds is the partition's truth), one it stopped leading has them unloaded.
    async fn follow_coordination(&self) {
        let offsets: Vec<(i32, Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|((t, _), _)| t == OFFSETS_TOPIC)
            .map(|((_, i), p)| (*i, p.clone()))
            .collect();
        let held: Vec<i32> = self.coordinating.borrow().keys().copied().collect();
        for i in held {
            let leads = offsets.iter().any(|(j, p)| *j == i && p.is_leader());
            if !leads && self.coordinating.borrow().get(&i) == Some(&Coordinating::Loaded) {
                self.coordinating.borrow_mut().remove(&i);
                let groups = self.groups.borrow_mut().unload_partition(i);
                tracing::info!(
                    partition = i,
                    groups,
                    "group coordinator unloaded (no longer the leader)"
                );
            }
        }
        for (i, p) in offsets {
            if !p.is_leader() || self.coordinating.borrow().contains_key(&i) {
                continue;
            }
            self.coordinating
                .borrow_mut()
                .insert(i, Coordinating::Loading);
            let loaded = self.load_groups(&p, i).await;
            let mut coordinating = self.coordinating.borrow_mut();
            match loaded {
                // Still the leader: serve. Lost it while loading: forget what was read.
                Ok(()) if p.is_leader() => {
                    coordinating.insert(i, Coordinating::Loaded);
                }
                Ok(()) => {
                    coordinating.remove(&i);
                    self.groups.borrow_mut().unload_partition(i);
                }
                Err(e) => {
                    coordinating.remove(&i);
                    self.groups.borrow_mut().unload_partition(i);
                    tracing::warn!(partition = i, error = %e, "cannot load groups; not coordinating them");
                }
            }
        }
    }

    /// Replays one `__consumer_offsets` partition into the coordinator, one read window at a
    /// time (memory stays bounded by the window, not the log).
    async fn load_groups(&self, log: &Partition, partition: i32) -> Result<()> {
        // A new leader's high watermark may trail what it holds; it serves all of it.
        log.wait_durable(log.log_end_offset()).await?;
        let mut offset = log.log_start_offset();
        let end = log.durable_offset();
        let mut loaded = 0usize;
        while offset < end {
            let records = log.read_for_follower(offset, GROUP_LOAD_READ_BYTES).await?;
            let mut next = offset;
            for view in protocol::record_batch::BatchIter::new(&records, false) {
                next = storage::Offset(view.last_offset().saturating_add(1));
            }
            match decode_batches(records) {
                Ok(records) => {
                    loaded += records.len();
                    self.groups
                        .borrow_mut()
                        .load(records, crate::handlers::now_ms());
                }
                Err(e) => {
                    tracing::warn!(partition, %offset, error = %e, "undecodable group records skipped")
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        if loaded > 0 {
            tracing::info!(partition, records = loaded, "group records loaded");
        }
        Ok(())
    }

    /// Partitions this shard holds a replica of that have no leader (offline to clients).
    fn offline_here(&self) -> u64 {
        let image = self.metadata.borrow();
        self.partitions
            .borrow()
            .keys()
            .filter(|(t, i)| {
                image
                    .topics
                    .get(t)
                    .and_then(|m| m.partitions.get(usize::try_from(*i).ok()?))
                    .is_some_and(|p| p.leader < 0)
            })
            .count() as u64
    }

    /// This shard's counters, partitions and groups, for the admin server.
    pub fn snapshot(&self) -> ShardSnapshot {
        let m = &self.metrics;
        let groups = self.groups.borrow();
        ShardSnapshot {
            shard: self.id.0,
            requests: m
                .requests
                .borrow()
                .iter()
                .map(|(k, h)| (*k, h.clone()))
                .collect(),
            bytes_in: m.bytes_in.get(),
            bytes_out: m.bytes_out.get(),
            connections: m.connections.get(),
            connections_total: m.connections_total.get(),
            requests_pipelined: m.requests_pipelined.get(),
            connections_refused: m.connections_refused.get(),
            accept_failures: m.accept_failures.get(),
            connections_timed_out: m.connections_timed_out.get(),
            log_lines_suppressed: m.log_lines_suppressed.get(),
            isr_shrinks: m.isr_shrinks.get(),
            isr_expands: m.isr_expands.get(),
            under_replicated: self
                .partitions
                .borrow()
                .values()
                .filter(|p| p.is_leader() && p.committed_isr().len() < p.leader_replicas().len())
                .count() as u64,
            offline_partitions: self.offline_here(),
            replica_fetch_bytes: m.replica_fetch_bytes.get(),
            cross_core_sent: m.cross_core_sent.get(),
            sync_latency: self.commit.sync_latency(),
            partitions: self
                .partitions
                .borrow()
                .values()
                .map(|p| PartitionStats {
                    topic: p.topic().to_owned(),
                    partition: p.index(),
                    log_start: p.log_start_offset().0,
                    log_end: p.log_end_offset().0,
                    size_bytes: p.size_bytes(),
                    high_watermark: p.high_watermark().0,
                    follower_lag: p
                        .follower_lag(crate::handlers::now_ms())
                        .into_iter()
                        .map(|(id, lag, ms)| (id.0, lag, ms))
                        .collect(),
                })
                .collect(),
            committed: groups.all_committed(),
            groups: groups
                .list_with_members()
                .into_iter()
                .map(|(g, t, st, n)| (g, st.name().to_owned(), t, n))
                .collect(),
        }
    }

    /// The partition leader on this shard, if it owns one.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// The partition if this node leads it: clients produce to, consume from and list the
    /// offsets of leaders only (a follower's replica answers NOT_LEADER_OR_FOLLOWER).
    pub fn leader_partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partition(topic, partition).filter(|p| p.is_leader())
    }

    /// Installs a newer metadata image: opens logs of partitions this shard now owns, closes
    /// and deletes logs of topics that are gone.
    pub async fn apply_metadata(&self, image: Arc<MetadataImage>) -> Result<()> {
        if image.version < self.metadata.borrow().version {
            return Ok(());
        }
        let table = Arc::new(ShardTable::build(
            &image,
            self.shard_count(),
            self.config.node_id,
        ));
        let to_open: Vec<(String, i32)> = table
            .served_by(self.id)
            .filter(|(t, p)| !self.partitions.borrow().contains_key(&(t.to_string(), *p)))
            .map(|(t, p)| (t.to_owned(), p))
            .collect();
        let gone: Vec<(String, i32)> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| {
                image
                    .topics
                    .get(t)
                    .is_none_or(|meta| *p as usize >= meta.partitions.len())
            })
            .cloned()
            .collect();
        for key in gone {
            let removed = self.partitions.borrow_mut().remove(&key);
            if let Some(p) = removed {
                tracing::info!(topic = %key.0, partition = key.1, "deleting partition log");
                if let Err(e) = p.delete().await {
                    tracing::warn!(error = %e, "cannot delete partition log");
                }
            }
        }
        if let Some(t) = image.topics.get(OFFSETS_TOPIC) {
            self.groups.borrow_mut().config.offsets_partitions = t.partitions.len() as i32;
        }
        // Topic configs that changed apply to the open logs at once.
        let old = self.metadata.borrow().clone();
        for ((topic, _), p) in self.partitions.borrow().iter() {
            let (Some(now), Some(before)) = (image.topics.get(topic), old.topics.get(topic)) else {
                continue;
            };
            if now.configs != before.configs {
                p.set_config(self.log_config(topic, &now.configs));
            }
        }
        for (topic, index) in to_open {
            let dir = partition_dir(&self.config.data_dir, &topic, index);
            let config = match image.topics.get(&topic) {
                Some(t) => self.log_config(&topic, &t.configs),
                None => self.config.log.clone(),
            };
            let partition = Partition::open(
                &topic,
                index,
                &dir,
                config,
                self.commit.clone(),
                BrokerId(self.config.node_id),
                LeaderEpoch(0),
            )
            .await?;
            let partition = Rc::new(partition);
            self.partitions
                .borrow_mut()
                .insert((topic, index), partition);
        }
        self.apply_roles(&image);
        *self.metadata.borrow_mut() = image;
        *self.shard_table.borrow_mut() = table;
        self.follow_coordination().await;
        Ok(())
    }

    /// Each open partition takes the role the image gives it: the leader (at the image's
    /// leader epoch, which it stamps on what it appends) or a follower of another broker.
    /// A leader whose epoch did not change learns the ISR the controller committed.
    fn apply_roles(&self, image: &MetadataImage) {
        let me = self.config.node_id;
        let now = crate::handlers::now_ms();
        let mut followed: BTreeMap<i32, BTreeMap<(String, i32), crate::replica_fetcher::Followed>> =
            BTreeMap::new();
        for ((topic, index), p) in self.partitions.borrow().iter() {
            let Some(meta) = image
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(usize::try_from(*index).ok()?))
            else {
                continue;
            };
            let epoch = LeaderEpoch(meta.leader_epoch);
            if meta.is_led_by(me) {
                let replicas: Vec<BrokerId> = if meta.replicas.is_empty() {
                    vec![BrokerId(me)]
                } else {
                    meta.replicas.iter().map(|b| BrokerId(*b)).collect()
                };
                let isr: Vec<BrokerId> = if meta.isr.is_empty() {
                    vec![BrokerId(me)]
                } else {
                    meta.isr.iter().map(|b| BrokerId(*b)).collect()
                };
                let mut have = p.leader_replicas();
                have.sort();
                let mut want = replicas.clone();
                want.sort();
                if !p.is_leader() || p.leader_epoch() != epoch || have != want {
                    tracing::debug!(%topic, partition = index, epoch = epoch.0, "leading");
                    p.become_leader(
                        replication::replica::Leadership {
                            me: BrokerId(me),
                            epoch,
                            replicas: &replicas,
                            isr: &isr,
                        },
                        self.config.replica_lag_time_max_ms,
                        now,
                    );
                } else if p.committed_isr() != isr {
                    p.isr_committed(Some(&isr));
                }
            } else {
                if p.is_leader() || p.leader() != BrokerId(meta.leader) || p.leader_epoch() != epoch
                {
                    tracing::debug!(%topic, partition = index, leader = meta.leader, epoch = epoch.0, "following");
                    p.become_follower(BrokerId(meta.leader), epoch);
                }
                if meta.leader >= 0 {
                    if let Some(t) = image.topics.get(topic) {
                        followed.entry(meta.leader).or_default().insert(
                            (topic.clone(), *index),
                            crate::replica_fetcher::Followed {
                                topic_id: t.uuid(),
                                leader_epoch: meta.leader_epoch,
                            },
                        );
                    }
                }
            }
        }
        self.fetchers.update(&self.rc(), followed);
    }

    /// The settings a topic's logs run with: broker defaults and the topic's configs.
    /// `__consumer_offsets` holds small records, so it gets smaller segments, buffers and
    /// preallocation, and it is compacted (never trimmed by time or size).
    fn log_config(
        &self,
        topic: &str,
        configs: &std::collections::BTreeMap<String, String>,
    ) -> storage::LogConfig {
        let mut c = crate::topic_config::log_config(&self.config, configs);
        if topic == OFFSETS_TOPIC {
            c.segment_bytes = self.config.offsets_topic_segment_bytes;
            c.preallocate_bytes = c.preallocate_bytes.min(1 << 20);
            c.write_buffer_bytes = c.write_buffer_bytes.min(64 << 10);
            c.retention_ms = -1;
            c.retention_bytes = -1;
        }
        c
    }

    /// Every `log.retention.check.interval.ms`, deletes the segments each log's retention no
    /// longer keeps. Runs until the shard stops.
    pub async fn retention_loop(self: Rc<Self>) {
        let interval =
            std::time::Duration::from_millis(self.config.log_retention_check_interval_ms);
        while !self.is_stopping() {
            glommio::timer::sleep(interval).await;
            let parts: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
            let now = crate::handlers::now_ms();
            for p in parts {
                match p.enforce_retention(now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %p.topic(), partition = p.index(), segments = n, start = %p.log_start_offset(), "retention applied")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %p.topic(), partition = p.index(), error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// Each partition this shard leads proposes the ISR change its followers' progress
    /// calls for (a lagging member out, a caught-up replica in) to the controller, one at a
    /// time per partition; the committed ISR comes back in the answer (and the image).
    pub async fn isr_loop(self: Rc<Self>) {
        let interval = std::time::Duration::from_millis(ISR_CHECK_INTERVAL_MS);
        while !self.is_stopping() {
            glommio::timer::sleep(interval).await;
            let now = crate::handlers::now_ms();
            let parts: Vec<((String, i32), Rc<Partition>)> = self
                .partitions
                .borrow()
                .iter()
                .filter(|(_, p)| p.is_leader())
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect();
            for ((topic, index), p) in parts {
                let Some(change) = p.isr_change(now) else {
                    continue;
                };
                let Some(meta) = self
                    .metadata()
                    .topics
                    .get(&topic)
                    .and_then(|t| t.partitions.get(usize::try_from(index).ok()?).cloned())
                else {
                    continue;
                };
                let isr: Vec<i32> = match &change {
                    replication::replica::IsrChange::Shrink(s)
                    | replication::replica::IsrChange::Expand(s) => s.iter().map(|b| b.0).collect(),
                };
                tracing::info!(%topic, partition = index, ?change, "proposing an ISR change");
                p.isr_proposed(&change);
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let ask = crate::controller::IsrChangeAsk {
                        topic: topic.clone(),
                        partition: index,
                        leader: shard.config.node_id,
                        leader_epoch: meta.leader_epoch,
                        partition_epoch: meta.partition_epoch,
                        isr,
                    };
                    let answer = crate::controller_client::ControllerClient::new(&shard)
                        .alter_partition(ask)
                        .await;
                    match answer {
                        Ok(Ok(isr)) => {
                            let m = &shard.metrics;
                            match change {
                                replication::replica::IsrChange::Shrink(_) => {
                                    m.isr_shrinks.set(m.isr_shrinks.get() + 1)
                                }
                                replication::replica::IsrChange::Expand(_) => {
                                    m.isr_expands.set(m.isr_expands.get() + 1)
                                }
                            }
                            let isr: Vec<BrokerId> = isr.into_iter().map(BrokerId).collect();
                            p.isr_committed(Some(&isr));
                        }
                        Ok(Err(why)) => {
                            tracing::warn!(%topic, partition = index, reason = %why, "ISR change refused");
                            p.isr_committed(None);
                        }
                        Err(e) => {
                            tracing::warn!(%topic, partition = index, error = %e, "ISR change not sent");
                            p.isr_committed(None);
                        }
                    }
                })
                .detach();
            }
        }
    }

    pub fn begin_request(&self) -> InflightGuard {
        self.inflight.set(self.inflight.get() + 1);
        InflightGuard {
            inflight: self.inflight.clone(),
            idle: self.idle.clone(),
        }
    }

    /// Stops accepting connections and requests, then waits (at most `timeout`) for the
    /// requests in flight to be answered.
    pub async fn drain(&self, timeout: std::time::Duration) {
        self.stopping.set(true);
        self.groups.borrow_mut().shutdown();
        self.stop_listening.notify(usize::MAX);
        let deadline = std::time::Instant::now() + timeout;
        while self.inflight.get() > 0 {
            let idle = self.idle.listen();
            if self.inflight.get() == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    shard = self.id.0,
                    inflight = self.inflight.get(),
                    "requests still in flight at shutdown"
                );
                break;
            }
            futures::future::select(idle, Box::pin(glommio::timer::sleep(left))).await;
        }
    }

    /// Flushes and closes every log of this shard.
    pub async fn close_logs(&self) {
        self.stopping.set(true);
        // Followers append nothing more once their logs close.
        self.fetchers.stop_all();
        let parts: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for p in parts {
            if let Err(e) = p.close().await {
                tracing::warn!(topic = %p.topic(), partition = p.index(), error = %e, "close failed");
            }
        }
        self.commit.stop();
    }
}
