//! A deterministic simulation of partition replication: three replicas of one partition
//! driven by the real rules (`replica::LeaderState`, `check_divergence`, `truncation`) and
//! the real controller decisions (registration, heartbeats, session expiry moving
//! leaderships, AlterPartition), over a network that drops, delays and reorders messages
//! and cuts links, with crash-restarts that lose what was not durable. Clients produce with
//! acks=all and `min.insync.replicas` 2. Everything random comes from one seed, printed when
//! a check fails: `SLUICE_SIM_SEED=<seed> cargo test -p replication replica_sim`.
//!
//! The controller stands for the metadata quorum (simulated on its own in
//! `quorum/sim.rs`): its image changes at once, and brokers learn it after a delay.
//!
//! Checked on every step: at most one broker leads per leader epoch, and it is the one the
//! controller chose; when a write is acknowledged, every replica in the controller's ISR has
//! it on disk at its offset (the promise that survives a kill -9 of every broker); a broker
//! that becomes leader holds every acknowledged record at its offset; two replicas agree
//! below both of their high watermarks. Checked at the end, once faults stop: the replicas
//! in the ISR hold the same log, with every acknowledged record.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use storage::Offset;

use crate::metadata::controller::{
    AlterPartition, Controller as Decisions, ControllerConfig, NewTopic, Registration,
};
use crate::metadata::{ClusterImage, MetadataRecord, TopicId};
use crate::quorum::sim::{seeds, Rng};
use crate::replica::{self, IsrChange, LeaderState, Leadership};
use crate::{BrokerId, LeaderEpoch};

const NODES: i32 = 3;
const MIN_ISR: usize = 2;
const TOPIC: TopicId = TopicId([7; 16]);
const TICK_MS: u64 = 10;
const SESSION_MS: u64 = 600;
const HEARTBEAT_MS: u64 = 100;
const LAG_MAX_MS: u64 = 400;

const CONFIG: ControllerConfig = ControllerConfig {
    session_timeout_ms: SESSION_MS,
    max_replication_factor: 3,
    unclean_leader_election: false,
};

/// One record of the log: (leader epoch, value).
type Entry = (i32, u64);

#[derive(Debug, Clone)]
enum Msg {
    Fetch {
        from: i32,
        epoch: i32,
        offset: i64,
        last_epoch: Option<i32>,
    },
    FetchReply {
        epoch: i32,
        offset: i64,
        entries: Vec<Entry>,
        high_watermark: i64,
        diverging: Option<replica::DivergingEpoch>,
    },
}

#[derive(Debug)]
enum Role {
    Leader(Box<LeaderState>),
    Follower { leader: i32 },
}

struct Node {
    id: i32,
    up: bool,
    log: Vec<Entry>,
    durable: usize,
    high_watermark: i64,
    /// The leader epoch of the metadata this node applied, and its role there.
    epoch: i32,
    role: Role,
    broker_epoch: Option<i64>,
    next_heartbeat: u64,
    fetch_in_flight_until: u64,
    /// acks=all writes waiting: (end offset, value).
    waiting: Vec<(i64, u64)>,
    isr_pending_until: u64,
}

impl Node {
    /// Kafka's OffsetsForLeaderEpoch over this log: the largest epoch at or below `e` and
    /// where the next epoch starts (the log end for the latest); a leader's current epoch
    /// with nothing written yet starts at its log end.
    fn end_offset_for(&self, e: i32) -> Option<(i32, Offset)> {
        let mut found: Option<i32> = None;
        for (i, (epoch, _)) in self.log.iter().enumerate() {
            if *epoch <= e {
                found = Some(*epoch);
            } else {
                return found.map(|f| (f, Offset(i as i64)));
            }
        }
        if matches!(self.role, Role::Leader(_))
            && self.epoch <= e
            && found.is_none_or(|f| f < self.epoch)
        {
            return Some((self.epoch, Offset(self.log.len() as i64)));
        }
        found.map(|f| (f, Offset(self.log.len() as i64)))
    }

    fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }
}

#[derive(Debug, Default)]
struct Stats {
    acked: u64,
    crashes: u64,
    leader_changes: u64,
    truncations: u64,
    isr_shrinks: u64,
    isr_expands: u64,
    dropped: u64,
}

impl Stats {
    fn add(&mut self, s: &Stats) {
        self.acked += s.acked;
        self.crashes += s.crashes;
        self.leader_changes += s.leader_changes;
        self.truncations += s.truncations;
        self.isr_shrinks += s.isr_shrinks;
        self.isr_expands += s.isr_expands;
        self.dropped += s.dropped;
    }
}

struct Sim {
    rng: Rng,
    seed: u64,
    now: u64,
    image: ClusterImage,
    decisions: Decisions,
    nodes: Vec<Node>,
    /// (deliver at, to, message).
    net: Vec<(u64, i32, Msg)>,
    /// Images on their way to each node, in order.
    metadata: BTreeMap<i32, VecDeque<(u64, ClusterImage)>>,
    cut: BTreeSet<(i32, i32)>,
    acked: BTreeMap<i64, u64>,
    leaders: BTreeMap<i32, i32>,
    next_value: u64,
    faults: bool,
    producing: bool,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut sim = Sim {
            rng: Rng(seed),
            seed,
            now: 0,
            image: ClusterImage::default(),
            decisions: Decisions::default(),
            nodes: (1..=NODES)
                .map(|id| Node {
                    id,
                    up: true,
                    log: Vec::new(),
                    durable: 0,
                    high_watermark: 0,
                    epoch: -1,
                    role: Role::Follower { leader: -1 },
                    broker_epoch: None,
                    next_heartbeat: 0,
                    fetch_in_flight_until: 0,
                    waiting: Vec::new(),
                    isr_pending_until: 0,
                })
                .collect(),
            net: Vec::new(),
            metadata: BTreeMap::new(),
            cut: BTreeSet::new(),
            acked: BTreeMap::new(),
            leaders: BTreeMap::new(),
            next_value: 1,
            faults: true,
            producing: true,
            stats: Stats::default(),
        };
        for id in 1..=NODES {
            sim.register(id);
            let epoch = sim.nodes[id as usize - 1].broker_epoch.unwrap();
            let (r, _) = sim
                .decisions
                .heartbeat(&CONFIG, &sim.image, id, epoch, true, 0)
                .unwrap();
            sim.commit(r);
        }
        let topic = NewTopic {
            name: "t".into(),
            topic_id: TOPIC,
            partitions: 1,
            replication_factor: 3,
            configs: BTreeMap::new(),
        };
        let r = sim
            .decisions
            .create_topic(&CONFIG, &sim.image, &topic)
            .unwrap();
        sim.commit(r);
        sim
    }

    fn fail(&self, what: String) -> ! {
        panic!("replica simulation seed {}: {what}", self.seed);
    }

    fn partition(&self) -> &crate::metadata::PartitionInfo {
        &self.image.topics[&TOPIC].partitions[0]
    }

    /// Applies controller records and sends the new image to every broker.
    fn commit(&mut self, records: Vec<MetadataRecord>) {
        if records.is_empty() {
            return;
        }
        for r in records {
            let at = self.image.offset + 1;
            self.image.apply(at, &r).unwrap();
        }
        for id in 1..=NODES {
            let delay = 1 + self.rng.below(3);
            self.metadata
                .entry(id)
                .or_default()
                .push_back((self.now + delay * TICK_MS, self.image.clone()));
        }
    }

    fn register(&mut self, id: i32) {
        let reg = Registration {
            broker_id: id,
            incarnation: {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&self.rng.next().to_be_bytes());
                b
            },
            endpoints: vec![],
            rack: None,
            shards: 1,
        };
        if let Ok(r) = self.decisions.register(&CONFIG, &self.image, reg, self.now) {
            self.commit(r);
            self.nodes[id as usize - 1].broker_epoch = Some(self.image.brokers[&id].epoch);
        }
    }

    fn send(&mut self, from: i32, to: i32, msg: Msg) {
        if self.faults && (self.cut.contains(&(from, to)) || self.rng.chance(30)) {
            self.stats.dropped += 1;
            return;
        }
        let delay = 1 + self.rng.below(if self.faults { 6 } else { 2 });
        self.net.push((self.now + delay * TICK_MS, to, msg));
    }

    /// A node applies the newest image that has reached it: its role and epoch there.
    fn apply_metadata(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let mut newest = None;
        if let Some(q) = self.metadata.get_mut(&id) {
            while q.front().is_some_and(|(at, _)| *at <= self.now) {
                newest = q.pop_front().map(|(_, img)| img);
            }
        }
        let Some(img) = newest else { return };
        if !self.nodes[i].up {
            return;
        }
        let Some(t) = img.topics.get(&TOPIC) else {
            return;
        };
        let p = t.partitions[0].clone();
        let node = &mut self.nodes[i];
        if p.leader == id {
            let me = BrokerId(id);
            let replicas: Vec<BrokerId> = p.replicas.iter().map(|b| BrokerId(*b)).collect();
            let isr: Vec<BrokerId> = p.isr.iter().map(|b| BrokerId(*b)).collect();
            match &mut node.role {
                Role::Leader(l) if node.epoch == p.leader_epoch => {
                    // As `Shard::apply_roles`: only an ISR that differs answers the leader.
                    let mine: Vec<BrokerId> = l.isr().iter().copied().collect();
                    let mut theirs = isr.clone();
                    theirs.sort();
                    if mine != theirs {
                        l.isr_committed(Some(&isr));
                    }
                }
                _ => {
                    node.epoch = p.leader_epoch;
                    node.role = Role::Leader(Box::new(LeaderState::new(
                        Leadership {
                            me,
                            epoch: LeaderEpoch(p.leader_epoch),
                            replicas: &replicas,
                            isr: &isr,
                        },
                        Offset(node.log.len() as i64),
                        Offset(node.high_watermark),
                        LAG_MAX_MS,
                        self.now,
                    )));
                    node.waiting.clear();
                    node.isr_pending_until = 0;
                    self.stats.leader_changes += 1;
                    if let Some(prev) = self.leaders.insert(p.leader_epoch, id) {
                        if prev != id {
                            self.fail(format!("epoch {} led by {prev} and {id}", p.leader_epoch));
                        }
                    }
                    // Every acknowledged record is in the new leader's log.
                    let node = &self.nodes[i];
                    for (o, v) in &self.acked {
                        if node.log.get(*o as usize).map(|e| e.1) != Some(*v) {
                            self.fail(format!(
                                "new leader {id} (epoch {}) lacks acknowledged {v} at {o} (log \
                                 end {}, at {o}: {:?})",
                                p.leader_epoch,
                                node.log.len(),
                                node.log.get(*o as usize)
                            ));
                        }
                    }
                }
            }
        } else {
            if node.is_leader() || node.epoch != p.leader_epoch {
                node.waiting.clear();
            }
            node.epoch = p.leader_epoch;
            node.role = Role::Follower { leader: p.leader };
        }
    }

    fn deliver(&mut self, to: i32, msg: Msg) {
        let i = to as usize - 1;
        if !self.nodes[i].up {
            return;
        }
        match msg {
            Msg::Fetch {
                from,
                epoch,
                offset,
                last_epoch,
            } => {
                let now = self.now;
                let node = &mut self.nodes[i];
                if !node.is_leader() || epoch != node.epoch {
                    return;
                }
                let diverging = replica::check_divergence(
                    |e| node.end_offset_for(e),
                    Offset(offset),
                    last_epoch.map(LeaderEpoch),
                );
                let durable = Offset(node.durable as i64);
                let leader_end = Offset(node.log.len() as i64);
                let Role::Leader(l) = &mut node.role else {
                    unreachable!()
                };
                let reply = if let Some(d) = diverging {
                    Msg::FetchReply {
                        epoch,
                        offset,
                        entries: vec![],
                        high_watermark: l.high_watermark().0,
                        diverging: Some(d),
                    }
                } else {
                    l.on_fetch(BrokerId(from), Offset(offset), leader_end, now);
                    let hw = l.update_high_watermark(durable);
                    node.high_watermark = hw.0;
                    // Reads serve durable records only.
                    let entries = node
                        .log
                        .get(offset.max(0) as usize..node.durable)
                        .map(|s| s.to_vec())
                        .unwrap_or_default();
                    Msg::FetchReply {
                        epoch,
                        offset,
                        entries,
                        high_watermark: hw.0,
                        diverging: None,
                    }
                };
                self.send(to, from, reply);
            }
            Msg::FetchReply {
                epoch,
                offset,
                entries,
                high_watermark,
                diverging,
            } => {
                let node = &mut self.nodes[i];
                node.fetch_in_flight_until = 0;
                if node.is_leader() || epoch != node.epoch || offset != node.log.len() as i64 {
                    return;
                }
                if let Some(d) = diverging {
                    let t = replica::truncation(
                        |e| node.end_offset_for(e),
                        Offset(node.log.len() as i64),
                        Offset(node.high_watermark),
                        d,
                    );
                    let to_len = (t.offset.0.max(0) as usize).min(node.log.len());
                    if to_len < node.log.len() {
                        node.log.truncate(to_len);
                        node.durable = node.durable.min(to_len);
                        self.stats.truncations += 1;
                    }
                    return;
                }
                node.log.extend(entries);
                node.high_watermark = node.high_watermark.max(high_watermark);
            }
        }
    }

    fn step(&mut self) {
        self.now += TICK_MS;
        // Messages due.
        let now = self.now;
        let mut due: Vec<(u64, i32, Msg)> = Vec::new();
        self.net.retain(|m| {
            if m.0 <= now {
                due.push(m.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|m| m.0);
        for (_, to, msg) in due {
            self.deliver(to, msg);
        }
        for i in 0..self.nodes.len() {
            self.apply_metadata(i);
        }
        if self.faults {
            self.inject_faults();
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                self.run_node(i);
            }
        }
        // The controller's session check.
        let r = self
            .decisions
            .expire_sessions(&CONFIG, &self.image, self.now);
        self.commit(r);
        self.check();
    }

    /// A crashed node starts again and learns the current image as it rejoins.
    fn restart(&mut self, i: usize) {
        self.nodes[i].up = true;
        self.nodes[i].fetch_in_flight_until = 0;
        let img = self.image.clone();
        let id = self.nodes[i].id;
        self.metadata
            .entry(id)
            .or_default()
            .push_back((self.now + TICK_MS, img));
    }

    fn inject_faults(&mut self) {
        // Crash one node (what was not durable is lost), restart one.
        if self.rng.chance(8) {
            let i = self.rng.below(NODES as u64) as usize;
            if self.nodes[i].up {
                let n = &mut self.nodes[i];
                n.up = false;
                n.log.truncate(n.durable);
                n.role = Role::Follower { leader: -1 };
                n.epoch = -1;
                n.waiting.clear();
                n.broker_epoch = None;
                self.stats.crashes += 1;
            }
        }
        if self.rng.chance(20) {
            let i = self.rng.below(NODES as u64) as usize;
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        // Cut or heal a link.
        if self.rng.chance(10) {
            let a = 1 + self.rng.below(NODES as u64) as i32;
            let b = 1 + self.rng.below(NODES as u64) as i32;
            if a != b && !self.cut.remove(&(a, b)) {
                self.cut.insert((a, b));
            }
        }
    }

    fn run_node(&mut self, i: usize) {
        let id = self.nodes[i].id;
        // Registration (after a restart) and heartbeats.
        if self.nodes[i].next_heartbeat <= self.now {
            self.nodes[i].next_heartbeat = self.now + HEARTBEAT_MS;
            match self.nodes[i].broker_epoch {
                None => self.register(id),
                Some(epoch) => {
                    if !self.faults || !self.rng.chance(50) {
                        if let Ok((r, _)) = self.decisions.heartbeat(
                            &CONFIG,
                            &self.image,
                            id,
                            epoch,
                            true,
                            self.now,
                        ) {
                            self.commit(r);
                        }
                    }
                }
            }
        }
        // fdatasync completes now and then.
        if self.rng.chance(400) {
            let n = &mut self.nodes[i];
            n.durable = n.log.len();
        }
        let now = self.now;
        let n = &mut self.nodes[i];
        match &mut n.role {
            Role::Follower { leader } => {
                let leader = *leader;
                // A follower fetches from its durable log end, once everything is durable.
                if leader > 0 && n.durable == n.log.len() && n.fetch_in_flight_until <= now {
                    n.fetch_in_flight_until = now + 20 * TICK_MS;
                    let msg = Msg::Fetch {
                        from: id,
                        epoch: n.epoch,
                        offset: n.durable as i64,
                        last_epoch: n.log.last().map(|e| e.0),
                    };
                    self.send(id, leader, msg);
                }
            }
            Role::Leader(l) => {
                // The leader's own progress moves the high watermark too.
                let hw = l.update_high_watermark(Offset(n.durable as i64));
                n.high_watermark = hw.0;
                // A client's acks=all write.
                if self.producing && self.rng.chance(300) && l.check_before_append(MIN_ISR).is_ok()
                {
                    let v = self.next_value;
                    self.next_value += 1;
                    n.log.push((n.epoch, v));
                    n.waiting.push((n.log.len() as i64, v));
                }
                let mut acked = Vec::new();
                n.waiting
                    .retain(|(end, v)| match l.acks_all_done(Offset(*end), MIN_ISR) {
                        None => true,
                        Some(Ok(())) => {
                            acked.push((*end - 1, *v));
                            false
                        }
                        Some(Err(_)) => false,
                    });
                // ISR changes go to the controller (the answer arrives with the image).
                let change = (n.isr_pending_until <= now)
                    .then(|| l.isr_change(now))
                    .flatten();
                let epoch = n.epoch;
                for (o, v) in acked {
                    self.acknowledge(id, o, v);
                }
                if let Some(change) = change {
                    self.alter_partition(i, epoch, change);
                }
            }
        }
    }

    fn alter_partition(&mut self, i: usize, epoch: i32, change: IsrChange) {
        let set = match &change {
            IsrChange::Shrink(s) | IsrChange::Expand(s) => s.clone(),
        };
        let p = self.partition().clone();
        let id = self.nodes[i].id;
        if let Role::Leader(l) = &mut self.nodes[i].role {
            l.propose(&change);
        }
        self.nodes[i].isr_pending_until = self.now + 30 * TICK_MS;
        let req = AlterPartition {
            topic_id: TOPIC,
            partition: 0,
            leader: id,
            leader_epoch: epoch,
            partition_epoch: p.partition_epoch,
            isr: set.iter().map(|b| b.0).collect(),
        };
        let result = self.decisions.alter_partition(&self.image, &req);
        match result {
            Ok(r) => {
                match change {
                    IsrChange::Shrink(_) => self.stats.isr_shrinks += 1,
                    IsrChange::Expand(_) => self.stats.isr_expands += 1,
                }
                self.commit(r);
            }
            Err(_) => {
                if let Role::Leader(l) = &mut self.nodes[i].role {
                    l.isr_committed(None);
                }
            }
        }
        // A committed change reaches the leader with the image that carries it (see
        // `apply_metadata`); until then its proposal stays pending.
    }

    /// An acks=all acknowledgement: every replica in the controller's ISR has the record
    /// on disk at its offset.
    fn acknowledge(&mut self, leader: i32, offset: i64, value: u64) {
        let p = self.partition().clone();
        for b in &p.isr {
            let n = &self.nodes[*b as usize - 1];
            let on_disk = (offset as usize) < n.durable && n.log[offset as usize].1 == value;
            if !on_disk {
                self.fail(format!(
                    "leader {leader} acknowledged {value} at {offset}, but ISR member {b} does \
                     not have it on disk (durable {}, log end {})",
                    n.durable,
                    n.log.len()
                ));
            }
        }
        if let Some(prev) = self.acked.insert(offset, value) {
            self.fail(format!(
                "offset {offset} acknowledged twice: {prev} then {value}"
            ));
        }
        self.stats.acked += 1;
    }

    fn check(&self) {
        for a in &self.nodes {
            for b in &self.nodes {
                if a.id >= b.id {
                    continue;
                }
                let below = a
                    .high_watermark
                    .min(b.high_watermark)
                    .min(a.log.len() as i64)
                    .min(b.log.len() as i64)
                    .max(0) as usize;
                if a.log[..below] != b.log[..below] {
                    self.fail(format!(
                        "replicas {} and {} disagree below their high watermarks ({below}): {}",
                        a.id,
                        b.id,
                        diff(&a.log, &b.log)
                    ));
                }
            }
        }
    }

    /// Faults stop; everything comes back and catches up.
    fn settle(&mut self) {
        self.faults = false;
        self.cut.clear();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        for _ in 0..2000 {
            self.step();
        }
        // The last writes settle too.
        self.producing = false;
        for _ in 0..1000 {
            self.step();
        }
        let p = self.partition().clone();
        if p.leader < 0 {
            self.fail(format!("no leader after the faults stopped: {p:?}"));
        }
        let leader = &self.nodes[p.leader as usize - 1];
        for (o, v) in &self.acked {
            if leader.log.get(*o as usize).map(|e| e.1) != Some(*v) {
                self.fail(format!("the final leader lacks acknowledged {v} at {o}"));
            }
        }
        for b in &p.isr {
            let n = &self.nodes[*b as usize - 1];
            if n.log != leader.log {
                self.fail(format!(
                    "ISR member {b} and leader {} differ at the end: {}",
                    p.leader,
                    diff(&n.log, &leader.log)
                ));
            }
        }
    }
}

/// Where two logs first differ, and their lengths.
fn diff(a: &[Entry], b: &[Entry]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    format!(
        "lengths {} and {}, first difference at {:?}: {:?} / {:?}",
        a.len(),
        b.len(),
        at,
        at.and_then(|i| a.get(i)),
        at.and_then(|i| b.get(i))
    )
}

fn run_seed(seed: u64) -> Stats {
    let mut sim = Sim::new(seed);
    for _ in 0..2000 {
        sim.step();
    }
    sim.settle();
    sim.stats
}

#[test]
fn replication_keeps_every_acknowledged_record_under_faults() {
    let mut total = Stats::default();
    for seed in seeds() {
        let s = run_seed(seed);
        total.add(&s);
    }
    eprintln!("replica simulation: {total:?}");
}

/// The faults the checks rely on do happen: crashes, leader changes, truncations of
/// diverged followers, ISR shrinks and expansions, lost messages, and acknowledgements.
#[test]
fn the_replica_simulation_exercises_every_fault() {
    let mut t = Stats::default();
    for seed in 1..=30 {
        let s = run_seed(seed);
        t.add(&s);
    }
    assert!(t.acked > 1000, "{t:?}");
    assert!(t.crashes > 30 && t.leader_changes > 60, "{t:?}");
    assert!(t.truncations > 0, "{t:?}");
    assert!(t.isr_shrinks > 30 && t.isr_expands > 30, "{t:?}");
    assert!(t.dropped > 0, "{t:?}");
}
