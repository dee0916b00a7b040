//! The classic consumer-group coordinator (Kafka's `GroupCoordinator` and `GroupMetadata`).
//!
//! A group lives on the shard that owns its partition of `__consumer_offsets`
//! (`partition_for`: Kafka's hash of the group id). Each shard holds one [`Coordinator`] for
//! the groups of its partitions; requests that arrive on another shard are forwarded there by
//! the handlers. Everything here is synchronous state-machine code that takes the time as an
//! argument: JoinGroup and SyncGroup that must wait get a one-shot receiver
//! ([`Reply::Later`]), answered when the rebalance step completes, and durable effects
//! (group metadata records) are queued in [`Coordinator::take_writes`] for the shard to
//! append. Timers (session expiry, rebalance and sync timeouts, the initial rebalance delay,
//! offset retention) advance in [`Coordinator::tick`], which the shard calls periodically.
//!
//! States, as Kafka's: Empty -> PreparingRebalance (members (re)join; completes when all known
//! members joined or the rebalance timeout passed; from Empty it first waits out
//! `group.initial.rebalance.delay.ms`, extended while new members keep arriving) ->
//! CompletingRebalance (the leader's SyncGroup carries the assignment) -> Stable. Dead is a
//! deleted or expired group.

pub mod records;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;

use records::{GroupValue, Key, MemberValue, Value};

/// The internal topic that stores committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's group-to-partition map: `Utils.abs(groupId.hashCode) % partitions`, with Java's
/// `String.hashCode` over UTF-16 code units.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_partitions: i32,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`: members (and members awaiting their id) per group.
    pub max_size: usize,
    /// `offset.metadata.max.bytes`: longest metadata string of one committed offset.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: u64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `sluice.group.member.metadata.max.bytes`: the protocol metadata one member may send in
    /// JoinGroup (all protocols together); larger joins get INVALID_REQUEST.
    pub member_metadata_max_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_partitions: 50,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 10_000,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            member_metadata_max_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The result of one item of a request (0 or an error code on the wire).
pub type Outcome = Result<(), ResponseError>;

/// An answer now, or a receiver that gets it when the rebalance step completes.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

pub struct JoinArgs {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an unknown member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member's metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

pub struct SyncArgs {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

/// Records to append to one `__consumer_offsets` partition.
pub struct Write {
    pub partition: i32,
    pub records: Vec<(Key, Option<Value>)>,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    heartbeat_deadline: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn fail_waiters(&mut self, error: ResponseError) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(JoinResult {
                error: error.code(),
                member_id: self.id.clone(),
                generation: -1,
                ..JoinResult::default()
            });
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(SyncResult {
                error: error.code(),
                ..SyncResult::default()
            });
        }
    }
}

struct InitialDelay {
    deadline: u64,
    remaining_ms: u64,
}

struct Group {
    id: String,
    partition: i32,
    state: GroupState,
    state_since_ms: u64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order: the first is the leader when the old one is gone.
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until their session timeout.
    pending: HashMap<String, u64>,
    /// group.instance.id -> current member id.
    statics: HashMap<String, String>,
    join_deadline: u64,
    initial_delay: Option<InitialDelay>,
    new_member_added: bool,
    sync_deadline: u64,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
}

fn err(e: ResponseError) -> i16 {
    e.code()
}

impl Group {
    fn new(id: String, partition: i32, now: u64) -> Group {
        Group {
            id,
            partition,
            state: GroupState::Empty,
            state_since_ms: now,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            join_deadline: 0,
            initial_delay: None,
            new_member_added: false,
            sync_deadline: 0,
            offsets: BTreeMap::new(),
        }
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn set_state(&mut self, state: GroupState, now: u64) {
        self.state = state;
        self.state_since_ms = now;
    }

    fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.statics.get(i))
            .is_some_and(|current| current != member_id)
    }

    /// Protocol names every member supports.
    fn candidates(&self) -> Vec<String> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect()
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidates()
                .iter()
                .any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// Each member votes for its most preferred protocol that all support; most votes win
    /// (ties go to the protocol first in the first member's order).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in &self.members {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(c, _)| c)
    }

    fn max_rebalance_timeout(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(|m| m.join_waiter.is_some())
    }

    fn join_result(&self, member_id: &str, leader: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: leader.to_owned(),
            member_id: member_id.to_owned(),
            members: if with_members {
                self.members
                    .iter()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The group's metadata record; members are included when the group is Stable.
    fn group_record(&self) -> (Key, Option<Value>) {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if self.state == GroupState::Stable {
            self.members
                .iter()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms as i32,
                    session_timeout_ms: m.session_timeout_ms as i32,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        (
            Key::Group(self.id.clone()),
            Some(Value::Group(GroupValue {
                protocol_type: self.protocol_type.clone().unwrap_or_default(),
                generation: self.generation,
                protocol: self.protocol.clone(),
                leader: self.leader.clone(),
                state_timestamp: self.state_since_ms as i64,
                members,
            })),
        )
    }
}

/// One shard's groups.
pub struct Coordinator {
    pub config: GroupConfig,
    groups: HashMap<String, Group>,
    writes: Vec<Write>,
    next_retention_check: u64,
    member_seq: u64,
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            config,
            groups: HashMap::new(),
            writes: Vec::new(),
            next_retention_check: 0,
            member_seq: 0,
        }
    }

    /// Group metadata records waiting to be appended.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    fn queue_write(&mut self, group: &str) {
        if let Some(g) = self.groups.get(group) {
            let record = g.group_record();
            self.writes.push(Write {
                partition: g.partition,
                records: vec![record],
            });
        }
    }

    fn new_member_id(&mut self, prefix: &str) -> String {
        self.member_seq += 1;
        let prefix = if prefix.is_empty() { "member" } else { prefix };
        format!(
            "{prefix}-{}-{}",
            crate::metadata::random_id(),
            self.member_seq
        )
    }

    pub fn join(&mut self, a: JoinArgs, now: u64) -> Reply<JoinResult> {
        let fail = |e: ResponseError, member_id: &str| {
            Reply::Now(JoinResult {
                error: e.code(),
                generation: -1,
                member_id: member_id.to_owned(),
                ..JoinResult::default()
            })
        };
        if a.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId, &a.member_id);
        }
        if a.session_timeout_ms < self.config.min_session_timeout_ms
            || a.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout, &a.member_id);
        }
        if a.protocol_type.is_empty() || a.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol, &a.member_id);
        }
        let metadata_bytes: usize = a.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if metadata_bytes > self.config.member_metadata_max_bytes {
            tracing::warn!(group = ?a.group_id, metadata_bytes, "JoinGroup metadata over sluice.group.member.metadata.max.bytes");
            return fail(ResponseError::InvalidRequest, &a.member_id);
        }
        let unknown = a.member_id.is_empty();
        if !self.groups.contains_key(&a.group_id) {
            if !unknown {
                return fail(ResponseError::UnknownMemberId, &a.member_id);
            }
            let partition = partition_for(&a.group_id, self.config.offsets_partitions);
            self.groups.insert(
                a.group_id.clone(),
                Group::new(a.group_id.clone(), partition, now),
            );
        }
        let max_size = self.config.max_size;
        let g = self.groups.get(&a.group_id).expect("present");
        if g.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable, &a.member_id);
        }
        if !g.supports(&a.protocol_type, &a.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol, &a.member_id);
        }
        let is_new = unknown || g.pending.contains_key(&a.member_id);
        let replaces_static = a
            .instance_id
            .as_ref()
            .is_some_and(|i| g.statics.contains_key(i));
        if is_new && !replaces_static && g.members.len() + g.pending.len() >= max_size {
            return fail(ResponseError::GroupMaxSizeReached, &a.member_id);
        }
        if unknown {
            self.join_unknown(a, now)
        } else {
            self.join_known(a, now)
        }
    }

    fn join_unknown(&mut self, a: JoinArgs, now: u64) -> Reply<JoinResult> {
        let prefix = a.instance_id.clone().unwrap_or_else(|| a.client_id.clone());
        let new_id = self.new_member_id(&prefix);
        let g = self.groups.get_mut(&a.group_id).expect("present");
        if let Some(instance) = a.instance_id.clone() {
            if let Some(old) = g.statics.get(&instance).cloned() {
                return self.replace_static_member(a, old, new_id, now);
            }
            return self.add_member(a, new_id, now);
        }
        if a.require_known_member_id {
            g.pending
                .insert(new_id.clone(), now + a.session_timeout_ms as u64);
            return Reply::Now(JoinResult {
                error: err(ResponseError::MemberIdRequired),
                generation: -1,
                member_id: new_id,
                ..JoinResult::default()
            });
        }
        self.add_member(a, new_id, now)
    }

    fn add_member(&mut self, a: JoinArgs, id: String, now: u64) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let g = self.groups.get_mut(&a.group_id).expect("present");
        if g.members.is_empty() {
            g.protocol_type = Some(a.protocol_type.clone());
        }
        if let Some(instance) = &a.instance_id {
            g.statics.insert(instance.clone(), id.clone());
        }
        if g.leader.is_none() {
            g.leader = Some(id.clone());
        }
        g.pending.remove(&id);
        g.members.push(Member {
            id,
            instance_id: a.instance_id,
            client_id: a.client_id,
            client_host: a.client_host,
            session_timeout_ms: a.session_timeout_ms as u64,
            rebalance_timeout_ms: a.rebalance_timeout_ms.max(0) as u64,
            protocol_type: a.protocol_type,
            protocols: a.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            heartbeat_deadline: now + a.session_timeout_ms as u64,
        });
        if g.state == GroupState::PreparingRebalance && g.initial_delay.is_some() {
            g.new_member_added = true;
        }
        let group = a.group_id;
        self.maybe_prepare_rebalance(&group, now);
        self.maybe_complete_join(&group, now);
        Reply::Later(rx)
    }

    fn update_member(
        g: &mut Group,
        a: &JoinArgs,
        id: &str,
        now: u64,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let m = g.member_mut(id).expect("member present");
        if let Some(old) = m.join_waiter.take() {
            let _ = old.send(JoinResult {
                error: err(ResponseError::RebalanceInProgress),
                generation: -1,
                member_id: id.to_owned(),
                ..JoinResult::default()
            });
        }
        m.protocols = a.protocols.clone();
        m.protocol_type = a.protocol_type.clone();
        m.session_timeout_ms = a.session_timeout_ms as u64;
        m.rebalance_timeout_ms = a.rebalance_timeout_ms.max(0) as u64;
        m.client_id = a.client_id.clone();
        m.client_host = a.client_host.clone();
        m.join_waiter = Some(tx);
        m.heartbeat_deadline = now + m.session_timeout_ms;
        rx
    }

    fn join_known(&mut self, a: JoinArgs, now: u64) -> Reply<JoinResult> {
        let g = self.groups.get_mut(&a.group_id).expect("present");
        if g.pending.contains_key(&a.member_id) {
            let id = a.member_id.clone();
            return self.add_member(a, id, now);
        }
        let fail = |e: ResponseError| {
            Reply::Now(JoinResult {
                error: e.code(),
                generation: -1,
                member_id: a.member_id.clone(),
                ..JoinResult::default()
            })
        };
        if g.is_fenced(&a.member_id, a.instance_id.as_deref()) {
            return fail(ResponseError::FencedInstanceId);
        }
        let Some(m) = g.member(&a.member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let unchanged = m.protocols == a.protocols;
        let is_leader = g.leader.as_deref() == Some(a.member_id.as_str());
        let group = a.group_id.clone();
        match g.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                let rx = Self::update_member(g, &a, &a.member_id, now);
                self.maybe_complete_join(&group, now);
                Reply::Later(rx)
            }
            GroupState::CompletingRebalance if unchanged => {
                // The member missed its JoinGroup answer: send it again.
                let leader = g.leader.clone().unwrap_or_default();
                Reply::Now(g.join_result(&a.member_id, &leader, is_leader))
            }
            GroupState::Stable if unchanged && !is_leader => {
                let leader = g.leader.clone().unwrap_or_default();
                if let Some(m) = g.member_mut(&a.member_id) {
                    m.heartbeat_deadline = now + m.session_timeout_ms;
                }
                Reply::Now(g.join_result(&a.member_id, &leader, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let rx = Self::update_member(g, &a, &a.member_id, now);
                self.prepare_rebalance(&group, now, "member rejoined with new metadata");
                self.maybe_complete_join(&group, now);
                Reply::Later(rx)
            }
        }
    }

    /// A static member (known `group.instance.id`) rejoined without its member id: it takes
    /// over the old member's place and assignment under a new id (the old id is fenced).
    /// In a Stable group whose protocol choice does not change this needs no rebalance.
    fn replace_static_member(
        &mut self,
        a: JoinArgs,
        old_id: String,
        new_id: String,
        now: u64,
    ) -> Reply<JoinResult> {
        let group = a.group_id.clone();
        let g = self.groups.get_mut(&group).expect("present");
        let current_leader = g.leader.clone().unwrap_or_default();
        let Some(m) = g.member_mut(&old_id) else {
            // The mapping outlived its member: treat as a new static member.
            g.statics
                .remove(a.instance_id.as_deref().unwrap_or_default());
            return self.add_member(a, new_id, now);
        };
        m.fail_waiters(ResponseError::FencedInstanceId);
        m.id = new_id.clone();
        let instance = a.instance_id.clone().expect("static member");
        g.statics.insert(instance, new_id.clone());
        if g.leader.as_deref() == Some(old_id.as_str()) {
            g.leader = Some(new_id.clone());
        }
        tracing::info!(group = ?group, old = ?old_id, new = ?new_id, "static member replaced");
        match g.state {
            GroupState::Stable => {
                let before = g.protocol.clone();
                let saved = {
                    let m = g.member_mut(&new_id).expect("just renamed");
                    std::mem::replace(&mut m.protocols, a.protocols.clone())
                };
                if g.select_protocol() == before {
                    let m = g.member_mut(&new_id).expect("just renamed");
                    m.session_timeout_ms = a.session_timeout_ms as u64;
                    m.rebalance_timeout_ms = a.rebalance_timeout_ms.max(0) as u64;
                    m.heartbeat_deadline = now + m.session_timeout_ms;
                    m.client_id = a.client_id.clone();
                    m.client_host = a.client_host.clone();
                    // The old leader id, so this member does not take itself for the
                    // leader and redo an assignment a Stable group would not spread.
                    let result = g.join_result(&new_id, &current_leader, false);
                    self.queue_write(&group);
                    return Reply::Now(result);
                }
                g.member_mut(&new_id).expect("just renamed").protocols = saved;
                let rx = Self::update_member(g, &a, &new_id, now);
                self.prepare_rebalance(&group, now, "static member changed protocols");
                self.maybe_complete_join(&group, now);
                Reply::Later(rx)
            }
            GroupState::PreparingRebalance => {
                let rx = Self::update_member(g, &a, &new_id, now);
                self.maybe_complete_join(&group, now);
                Reply::Later(rx)
            }
            _ => {
                let rx = Self::update_member(g, &a, &new_id, now);
                self.prepare_rebalance(&group, now, "static member rejoined");
                self.maybe_complete_join(&group, now);
                Reply::Later(rx)
            }
        }
    }

    fn maybe_prepare_rebalance(&mut self, group: &str, now: u64) {
        let state = self.groups.get(group).map(|g| g.state);
        if matches!(
            state,
            Some(GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty)
        ) {
            self.prepare_rebalance(group, now, "member joined");
        }
    }

    fn prepare_rebalance(&mut self, group: &str, now: u64, reason: &str) {
        let delay_cfg = self.config.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.state == GroupState::CompletingRebalance {
            for m in &mut g.members {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult {
                        error: err(ResponseError::RebalanceInProgress),
                        ..SyncResult::default()
                    });
                }
            }
        }
        let timeout = g.max_rebalance_timeout();
        if g.state == GroupState::Empty && delay_cfg > 0 {
            let delay = delay_cfg.min(timeout);
            g.initial_delay = Some(InitialDelay {
                deadline: now + delay,
                remaining_ms: timeout - delay,
            });
            g.new_member_added = false;
        }
        g.join_deadline = now + timeout;
        tracing::debug!(
            group = ?group,
            generation = g.generation,
            reason,
            "preparing rebalance"
        );
        g.set_state(GroupState::PreparingRebalance, now);
    }

    fn maybe_complete_join(&mut self, group: &str, now: u64) {
        let delay_cfg = self.config.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(d) = &g.initial_delay {
            if now < d.deadline {
                return;
            }
            if g.new_member_added && d.remaining_ms > 0 {
                let delay = delay_cfg.min(d.remaining_ms);
                g.initial_delay = Some(InitialDelay {
                    deadline: now + delay,
                    remaining_ms: d.remaining_ms - delay,
                });
                g.new_member_added = false;
                return;
            }
            g.initial_delay = None;
        } else if !g.all_joined() && now < g.join_deadline {
            return;
        }
        self.complete_join(group, now);
    }

    fn complete_join(&mut self, group: &str, now: u64) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        // Dynamic members that did not rejoin in time are gone; static ones keep their place.
        let late: Vec<String> = g
            .members
            .iter()
            .filter(|m| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in late {
            tracing::info!(group = ?group, member = ?id, "member did not rejoin in time; removed");
            Self::remove_member_raw(g, &id);
        }
        g.generation += 1;
        if g.members.is_empty() {
            g.protocol = None;
            g.leader = None;
            g.set_state(GroupState::Empty, now);
            tracing::info!(group = ?group, generation = g.generation, "group is empty");
            self.queue_write(group);
            return;
        }
        g.protocol = g.select_protocol();
        if g.leader.as_ref().is_none_or(|l| g.member(l).is_none()) {
            g.leader = g.members.first().map(|m| m.id.clone());
        }
        g.set_state(GroupState::CompletingRebalance, now);
        g.sync_deadline = now + g.max_rebalance_timeout();
        let leader = g.leader.clone().unwrap_or_default();
        let results: Vec<(usize, JoinResult)> = g
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.join_waiter.is_some())
            .map(|(i, m)| (i, g.join_result(&m.id, &leader, m.id == leader)))
            .collect();
        for (i, result) in results {
            let m = &mut g.members[i];
            m.heartbeat_deadline = now + m.session_timeout_ms;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(result);
            }
        }
        tracing::info!(group = ?group, generation = g.generation, members = g.members.len(), protocol = ?g.protocol, "rebalance joined");
    }

    /// Removes a member without any state transition (callers decide what follows).
    fn remove_member_raw(g: &mut Group, id: &str) {
        if let Some(pos) = g.members.iter().position(|m| m.id == id) {
            let mut m = g.members.remove(pos);
            m.fail_waiters(ResponseError::UnknownMemberId);
            if let Some(i) = &m.instance_id {
                if g.statics.get(i).is_some_and(|cur| cur == id) {
                    g.statics.remove(i);
                }
            }
        }
        if g.leader.as_deref() == Some(id) {
            g.leader = None;
        }
    }

    fn remove_member_and_update(&mut self, group: &str, id: &str, now: u64) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        Self::remove_member_raw(g, id);
        match g.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group, now, "member left");
                self.maybe_complete_join(group, now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group, now),
        }
    }

    pub fn sync(&mut self, a: SyncArgs, now: u64) -> Reply<SyncResult> {
        let fail = |e: ResponseError| {
            Reply::Now(SyncResult {
                error: e.code(),
                ..SyncResult::default()
            })
        };
        let Some(g) = self.groups.get_mut(&a.group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if g.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if g.is_fenced(&a.member_id, a.instance_id.as_deref()) {
            return fail(ResponseError::FencedInstanceId);
        }
        if g.member(&a.member_id).is_none() {
            return fail(ResponseError::UnknownMemberId);
        }
        if a.generation != g.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        let type_differs = a
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != g.protocol_type.as_ref());
        let name_differs = a
            .protocol
            .as_ref()
            .is_some_and(|p| Some(p) != g.protocol.as_ref());
        if type_differs || name_differs {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            assignment,
        };
        match g.state {
            GroupState::Empty => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Dead => fail(ResponseError::CoordinatorNotAvailable),
            GroupState::Stable => {
                let m = g.member_mut(&a.member_id).expect("checked");
                m.heartbeat_deadline = now + m.session_timeout_ms;
                let assignment = m.assignment.clone();
                Reply::Now(ok(g, assignment))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let m = g.member_mut(&a.member_id).expect("checked");
                m.heartbeat_deadline = now + m.session_timeout_ms;
                if let Some(old) = m.sync_waiter.replace(tx) {
                    let _ = old.send(SyncResult {
                        error: err(ResponseError::RebalanceInProgress),
                        ..SyncResult::default()
                    });
                }
                if g.leader.as_deref() == Some(a.member_id.as_str()) {
                    let assignments: HashMap<String, Bytes> = a.assignments.into_iter().collect();
                    for m in &mut g.members {
                        m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
                    }
                    g.set_state(GroupState::Stable, now);
                    for i in 0..g.members.len() {
                        let result = ok(g, g.members[i].assignment.clone());
                        if let Some(w) = g.members[i].sync_waiter.take() {
                            let _ = w.send(result);
                        }
                    }
                    tracing::info!(group = ?a.group_id, generation = g.generation, "group stable");
                    self.queue_write(&a.group_id);
                }
                Reply::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: u64,
    ) -> Result<(), ResponseError> {
        let Some(g) = self.groups.get_mut(group) else {
            return Err(ResponseError::UnknownMemberId);
        };
        match g.state {
            GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
            GroupState::Empty => return Err(ResponseError::UnknownMemberId),
            _ => {}
        }
        if g.is_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if g.member(member_id).is_none() {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let state = g.state;
        let m = g.member_mut(member_id).expect("checked");
        m.heartbeat_deadline = now + m.session_timeout_ms;
        if state == GroupState::PreparingRebalance {
            Err(ResponseError::RebalanceInProgress)
        } else {
            Ok(())
        }
    }

    /// LeaveGroup for each `(member id, instance id)`; an empty member id with an instance
    /// id names the static member (the admin client's "remove members").
    pub fn leave(
        &mut self,
        group: &str,
        members: Vec<(String, Option<String>)>,
        now: u64,
    ) -> Vec<Result<(), ResponseError>> {
        let mut out = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            let Some(g) = self.groups.get(group) else {
                out.push(Err(ResponseError::UnknownMemberId));
                continue;
            };
            let id = match &instance_id {
                Some(i) => match g.statics.get(i) {
                    Some(cur) if member_id.is_empty() || *cur == member_id => cur.clone(),
                    Some(_) => {
                        out.push(Err(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => member_id.clone(),
                },
                None => member_id.clone(),
            };
            if g.member(&id).is_none() {
                // A member still waiting for its id may give up before it joins.
                if let Some(g) = self.groups.get_mut(group) {
                    if g.pending.remove(&id).is_some() {
                        out.push(Ok(()));
                        self.maybe_complete_join(group, now);
                        continue;
                    }
                }
                out.push(Err(ResponseError::UnknownMemberId));
                continue;
            }
            tracing::info!(group = ?group, member = ?id, "member left");
            self.remove_member_and_update(group, &id, now);
            out.push(Ok(()));
        }
        out
    }

    /// Advances every timer: pending member ids, session timeouts, the initial delay and
    /// rebalance timeout, the sync timeout and (every check interval) offset retention.
    pub fn tick(&mut self, now: u64) {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in &names {
            let Some(g) = self.groups.get_mut(name) else {
                continue;
            };
            let before = g.pending.len();
            g.pending.retain(|_, deadline| *deadline > now);
            let pending_dropped = g.pending.len() != before;
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|m| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && m.heartbeat_deadline <= now
                })
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = ?name, member = ?id, "session timed out; member removed");
                self.remove_member_and_update(name, &id, now);
            }
            if pending_dropped {
                self.maybe_complete_join(name, now);
            }
            self.maybe_complete_join(name, now);
            let Some(g) = self.groups.get_mut(name) else {
                continue;
            };
            if g.state == GroupState::CompletingRebalance && now >= g.sync_deadline {
                let late: Vec<String> = g
                    .members
                    .iter()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for id in late {
                    tracing::info!(group = ?name, member = ?id, "no SyncGroup in time; member removed");
                    Self::remove_member_raw(g, &id);
                }
                self.prepare_rebalance(name, now, "sync timeout");
                self.maybe_complete_join(name, now);
            }
        }
        if now >= self.next_retention_check {
            self.next_retention_check = now + self.config.offsets_retention_check_interval_ms;
            self.expire_offsets(now);
        }
    }

    /// Offsets of Empty groups expire `offsets.retention.minutes` after the group emptied
    /// (after their commit for groups that never had members); a group left with no members
    /// and no offsets is removed.
    fn expire_offsets(&mut self, now: u64) {
        let retention = self.config.offsets_retention_ms;
        let mut dead = Vec::new();
        for g in self.groups.values_mut() {
            if g.state != GroupState::Empty {
                continue;
            }
            let since = g.state_since_ms;
            let uses_membership = g.protocol_type.is_some();
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, o)| {
                    let base = if uses_membership {
                        since
                    } else {
                        o.commit_timestamp.max(0) as u64
                    };
                    base + retention <= now
                })
                .map(|(k, _)| k.clone())
                .collect();
            let mut records = Vec::new();
            for (topic, partition) in expired {
                g.offsets.remove(&(topic.clone(), partition));
                records.push((
                    Key::Offset {
                        group: g.id.clone(),
                        topic,
                        partition,
                    },
                    None,
                ));
            }
            if g.offsets.is_empty() && g.members.is_empty() && g.pending.is_empty() {
                records.push((Key::Group(g.id.clone()), None));
                dead.push(g.id.clone());
            }
            if !records.is_empty() {
                tracing::info!(group = ?g.id, tombstones = records.len(), "offsets expired");
                self.writes.push(Write {
                    partition: g.partition,
                    records,
                });
            }
        }
        for id in dead {
            self.groups.remove(&id);
        }
    }

    /// Fails every waiting JoinGroup/SyncGroup (shutdown): clients look for the coordinator
    /// again.
    pub fn shutdown(&mut self) {
        for g in self.groups.values_mut() {
            for m in &mut g.members {
                m.fail_waiters(ResponseError::NotCoordinator);
            }
        }
    }

    /// Forgets the groups of one `__consumer_offsets` partition (this broker stopped leading
    /// it): their waiting JoinGroup/SyncGroup calls get NOT_COORDINATOR and look for the new
    /// coordinator, which loads the groups from its replica of the partition.
    pub fn unload_partition(&mut self, partition: i32) -> usize {
        let gone: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.partition == partition)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Some(mut g) = self.groups.remove(id) {
                for m in &mut g.members {
                    m.fail_waiters(ResponseError::NotCoordinator);
                }
            }
        }
        self.writes.retain(|w| w.partition != partition);
        gone.len()
    }

    /// Checks that a member may commit offsets now. A group that does not exist is created
    /// for a commit outside group management (generation < 0), as Kafka does.
    pub fn check_commit(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: u64,
    ) -> Result<i32, ResponseError> {
        if group.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        if !self.groups.contains_key(group) {
            if generation >= 0 {
                return Err(ResponseError::IllegalGeneration);
            }
            let partition = partition_for(group, self.config.offsets_partitions);
            self.groups.insert(
                group.to_owned(),
                Group::new(group.to_owned(), partition, now),
            );
        }
        let g = self.groups.get_mut(group).expect("present");
        if g.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if g.is_fenced(member_id, instance_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation < 0 && g.state == GroupState::Empty {
            return Ok(g.partition);
        }
        let Some(m) = g.member_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        m.heartbeat_deadline = now + m.session_timeout_ms;
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if g.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(g.partition)
    }

    /// Records durable commits (or loaded ones).
    pub fn apply_offsets(
        &mut self,
        group: &str,
        offsets: impl IntoIterator<Item = ((String, i32), CommittedOffset)>,
        now: u64,
    ) {
        let partition = partition_for(group, self.config.offsets_partitions);
        let g = self
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group::new(group.to_owned(), partition, now));
        g.offsets.extend(offsets);
    }

    /// Committed offsets of `group`: all of them (`None`) or the named partitions (absent
    /// ones are left out; the handler answers them with -1).
    pub fn offsets(
        &self,
        group: &str,
        wanted: Option<&[(String, i32)]>,
    ) -> Vec<((String, i32), CommittedOffset)> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        match wanted {
            None => g
                .offsets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Some(list) => list
                .iter()
                .filter_map(|k| g.offsets.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
        }
    }

    pub fn describe(&self, group: &str) -> Option<GroupSummary> {
        let g = self.groups.get(group)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        Some(GroupSummary {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .iter()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// `(group id, protocol type, state)` of every group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// `(group id, protocol type, state, members)` of every group.
    pub fn list_with_members(&self) -> Vec<(String, String, GroupState, usize)> {
        self.groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                    g.members.len(),
                )
            })
            .collect()
    }

    /// Every committed offset of every group: (group, topic, partition, offset).
    pub fn all_committed(&self) -> Vec<(String, String, i32, i64)> {
        self.groups
            .values()
            .flat_map(|g| {
                g.offsets
                    .iter()
                    .map(move |((t, p), o)| (g.id.clone(), t.clone(), *p, o.offset))
            })
            .collect()
    }

    /// DeleteGroups for one group: the tombstones to write, or the refusal.
    pub fn delete_group(&mut self, group: &str) -> Result<Write, ResponseError> {
        let Some(g) = self.groups.get(group) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        match g.state {
            GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return Err(ResponseError::NonEmptyGroup),
        }
        let mut records: Vec<(Key, Option<Value>)> = g
            .offsets
            .keys()
            .map(|(topic, partition)| {
                (
                    Key::Offset {
                        group: group.to_owned(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    None,
                )
            })
            .collect();
        records.push((Key::Group(group.to_owned()), None));
        let write = Write {
            partition: g.partition,
            records,
        };
        self.groups.remove(group);
        Ok(write)
    }

    /// OffsetDelete: refused for partitions of topics the live group subscribes to.
    pub fn delete_offsets(
        &mut self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(Vec<Outcome>, Option<Write>), ResponseError> {
        let Some(g) = self.groups.get_mut(group) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if g.state == GroupState::Dead {
            return Err(ResponseError::GroupIdNotFound);
        }
        let subscribed = if g.state == GroupState::Empty {
            Vec::new()
        } else if g.protocol_type.as_deref() == Some("consumer") {
            let protocol = g.protocol.clone().unwrap_or_default();
            g.members
                .iter()
                .flat_map(|m| subscribed_topics(&m.metadata_for(&protocol)))
                .collect()
        } else {
            return Err(ResponseError::NonEmptyGroup);
        };
        let mut errors = Vec::with_capacity(partitions.len());
        let mut records = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(topic) {
                errors.push(Err(ResponseError::GroupSubscribedToTopic));
                continue;
            }
            if g.offsets.remove(&(topic.clone(), *partition)).is_some() {
                records.push((
                    Key::Offset {
                        group: group.to_owned(),
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    None,
                ));
            }
            errors.push(Ok(()));
        }
        let write = (!records.is_empty()).then(|| Write {
            partition: g.partition,
            records,
        });
        Ok((errors, write))
    }

    /// Drops every group's committed offsets of `topics` (they were deleted), queueing the
    /// tombstones.
    pub fn forget_topics(&mut self, topics: &[String]) {
        for g in self.groups.values_mut() {
            let gone: Vec<(String, i32)> = g
                .offsets
                .keys()
                .filter(|(t, _)| topics.contains(t))
                .cloned()
                .collect();
            if gone.is_empty() {
                continue;
            }
            let records = gone
                .into_iter()
                .map(|(topic, partition)| {
                    g.offsets.remove(&(topic.clone(), partition));
                    (
                        Key::Offset {
                            group: g.id.clone(),
                            topic,
                            partition,
                        },
                        None,
                    )
                })
                .collect();
            self.writes.push(Write {
                partition: g.partition,
                records,
            });
        }
    }

    /// Replays records read from an offsets partition at load time (last one per key wins).
    pub fn load(&mut self, records: Vec<(Key, Option<Value>)>, now: u64) {
        for (key, value) in records {
            match (key, value) {
                (
                    Key::Offset {
                        group,
                        topic,
                        partition,
                    },
                    Some(Value::Offset(v)),
                ) => {
                    let entry = CommittedOffset {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                        commit_timestamp: v.commit_timestamp,
                    };
                    self.apply_offsets(&group, [((topic, partition), entry)], now);
                }
                (
                    Key::Offset {
                        group,
                        topic,
                        partition,
                    },
                    None,
                ) => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
                (Key::Group(group), Some(Value::Group(v))) => {
                    let partition = partition_for(&group, self.config.offsets_partitions);
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group.clone(), partition, now));
                    g.generation = v.generation;
                    g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
                    g.protocol = v.protocol;
                    g.leader = v.leader;
                    g.state_since_ms = v.state_timestamp.max(0) as u64;
                    // A Stable group comes back Stable with its members, who carry on with
                    // their generation; they must heartbeat within their session timeout.
                    g.members.clear();
                    g.statics.clear();
                    let protocol = g.protocol.clone().unwrap_or_default();
                    for m in v.members {
                        if let Some(i) = &m.instance_id {
                            g.statics.insert(i.clone(), m.member_id.clone());
                        }
                        g.members.push(Member {
                            id: m.member_id,
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms.max(0) as u64,
                            rebalance_timeout_ms: m.rebalance_timeout_ms.max(0) as u64,
                            protocol_type: g.protocol_type.clone().unwrap_or_default(),
                            protocols: vec![(protocol.clone(), m.subscription)],
                            assignment: m.assignment,
                            join_waiter: None,
                            sync_waiter: None,
                            heartbeat_deadline: now + m.session_timeout_ms.max(0) as u64,
                        });
                    }
                    if g.members.is_empty() {
                        g.leader = None;
                        g.protocol = None;
                        g.state = GroupState::Empty;
                    } else {
                        g.state = GroupState::Stable;
                    }
                }
                (Key::Group(group), None) => {
                    // The group's metadata is gone; offsets have keys (and tombstones) of
                    // their own, so a group that still has some stays, as an Empty one.
                    let keep = self.groups.get_mut(&group).is_some_and(|g| {
                        g.members.clear();
                        g.statics.clear();
                        g.protocol_type = None;
                        g.protocol = None;
                        g.leader = None;
                        g.state = GroupState::Empty;
                        !g.offsets.is_empty()
                    });
                    if !keep {
                        self.groups.remove(&group);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The topics of a consumer-protocol subscription (empty if it does not parse).
fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
