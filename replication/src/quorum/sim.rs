//! A deterministic simulation of the quorum: voters driven as the broker drives them, over a
//! network that drops, delays, duplicates and reorders messages and partitions links, with
//! crash-restarts that lose whatever was not yet durable (including a write torn by the
//! crash). Everything random comes from one seed, printed when a check fails, so a failure
//! reproduces with `SLUICE_SIM_SEED=<seed> cargo test -p replication quorum`.
//!
//! Checked on every step: at most one leader per term; every node applies records in index
//! order, and the record at an index is the same on every node (nothing committed is lost
//! or reordered, across crashes, snapshots and restores). Checked at the end, after the
//! faults stop: every node has applied the same records, and every proposal a leader
//! reported committed is among them.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{Message, MessageType};

use super::*;
use crate::metadata::controller::{
    Controller as Decisions, ControllerConfig, NewTopic, Registration,
};
use crate::metadata::{ClusterImage, Endpoint, MetadataRecord, TopicId};

/// Brokers the simulated clusters register (ids 1..=BROKERS).
const BROKERS: u64 = 4;

/// splitmix64: small, seedable, good enough to pick faults.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille` / 1000.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The state machine: every applied record by index (what the checks compare), and the
/// cluster image the metadata records among them build (what brokers serve from).
#[derive(Debug, Clone, Default, PartialEq)]
struct Machine {
    records: BTreeMap<u64, Vec<u8>>,
    image: ClusterImage,
}

impl Machine {
    fn apply(&mut self, index: u64, data: &[u8]) {
        self.records.insert(index, data.to_vec());
        // Entries are record batches, as the broker proposes them; a batch that does not
        // decode or does not fit is refused as a whole, alike on every node.
        if let Ok(records) = crate::metadata::decode_batch(data) {
            let _ = self.image.apply_batch(index, &records);
        }
    }

    /// Snapshot data: the records part, then the image's own snapshot encoding.
    fn encode(&self) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, d) in &self.records {
            records.extend_from_slice(&i.to_be_bytes());
            records.extend_from_slice(&(d.len() as u32).to_be_bytes());
            records.extend_from_slice(d);
        }
        let mut out = (records.len() as u64).to_be_bytes().to_vec();
        out.extend(records);
        out.extend(self.image.encode_snapshot());
        out
    }

    fn decode(b: &[u8]) -> Machine {
        let mut m = Machine::default();
        if b.is_empty() {
            // The bootstrap snapshot: nothing applied yet.
            return m;
        }
        let n = u64::from_be_bytes(b[..8].try_into().unwrap()) as usize;
        let (mut records, image) = b[8..].split_at(n);
        while records.len() >= 12 {
            let i = u64::from_be_bytes(records[..8].try_into().unwrap());
            let n = u32::from_be_bytes(records[8..12].try_into().unwrap()) as usize;
            m.records.insert(i, records[12..12 + n].to_vec());
            records = &records[12 + n..];
        }
        m.image = ClusterImage::decode_snapshot(image).expect("image snapshot decodes");
        m
    }
}

struct Voter {
    node: Option<QuorumNode>,
    disk: SimDisk,
    machine: Machine,
    /// Highest index applied in this process lifetime (applying must only move forward).
    applied: u64,
    down_until: u64,
}

/// A voter's files, as bytes in the format of `disk.rs`: what survives a crash.
#[derive(Clone)]
struct SimDisk {
    log: Vec<u8>,
    snapshot: Vec<u8>,
}

impl SimDisk {
    /// What a restart reads back (the log file cut at its last whole frame).
    fn recover(&mut self) -> DiskState {
        let snapshot = super::disk::decode_snapshot(&self.snapshot).expect("snapshot file intact");
        let replayed = super::disk::replay(&self.log);
        self.log.truncate(replayed.valid_bytes);
        super::disk::recover(snapshot, &[replayed])
    }

    /// Rewrites the log without the entries a snapshot at `index` covers.
    fn compact_log(&mut self, index: u64) {
        let replayed = super::disk::replay(&self.log);
        let keep: Vec<_> = replayed
            .entries
            .into_iter()
            .filter(|e| e.index > index)
            .collect();
        self.log = super::disk::encode_writes(&keep, replayed.hard_state.as_ref());
    }
}

struct InFlight {
    at: u64,
    seq: u64,
    msg: Message,
}

struct Sim {
    rng: Rng,
    seed: u64,
    config: Vec<QuorumConfig>,
    voters: Vec<Voter>,
    net: Vec<InFlight>,
    seq: u64,
    now: u64,
    /// Links cut by a partition: (from, to) ids.
    cut: BTreeSet<(u64, u64)>,
    /// The leader seen in each term.
    leaders: BTreeMap<u64, u64>,
    /// The record at each committed index, as first applied anywhere.
    committed: BTreeMap<u64, Vec<u8>>,
    /// Proposals some leader applied (so a client would have been answered).
    acknowledged: BTreeSet<Vec<u8>>,
    next_value: u64,
    faults: bool,
    stats: Stats,
    /// The active controller's state for the current leader's term (term, voter index).
    active: Option<(u64, usize, Decisions)>,
}

/// What a run exercised (a simulation that never crashes anything checks nothing).
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    crashes: u64,
    torn_writes: u64,
    snapshots_taken: u64,
    snapshots_restored: u64,
    dropped: u64,
    duplicated: u64,
    terms: u64,
    /// Topics and brokers in the final (converged) image.
    topics: u64,
    brokers: u64,
    /// Topics the simulated active controller placed, and brokers it left unfenced.
    placed_topics: u64,
    unfenced_brokers: u64,
}

impl Stats {
    fn add(&mut self, s: Stats) {
        self.crashes += s.crashes;
        self.torn_writes += s.torn_writes;
        self.snapshots_taken += s.snapshots_taken;
        self.snapshots_restored += s.snapshots_restored;
        self.dropped += s.dropped;
        self.duplicated += s.duplicated;
        self.terms += s.terms;
        self.topics += s.topics;
        self.brokers += s.brokers;
        self.placed_topics += s.placed_topics;
        self.unfenced_brokers += s.unfenced_brokers;
    }
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let mut rng = Rng(seed);
        let ids: Vec<u64> = (1..=n as u64).collect();
        let config: Vec<QuorumConfig> = ids
            .iter()
            .map(|&id| {
                // Pinned per node (max = min + 1): the seed decides every timeout.
                let min = 10 + rng.below(15) as usize;
                QuorumConfig {
                    id,
                    voters: ids.clone(),
                    election_ticks_min: min,
                    election_ticks_max: min + 1,
                    heartbeat_ticks: 2,
                    max_message_bytes: 1 + rng.below(4096),
                    max_inflight_messages: 1 + rng.below(64) as usize,
                }
            })
            .collect();
        let voters = config
            .iter()
            .map(|c| Voter {
                node: Some(QuorumNode::bootstrap(c).unwrap()),
                disk: SimDisk {
                    log: Vec::new(),
                    snapshot: super::disk::encode_snapshot(
                        QuorumStore::bootstrap(&c.voters).snapshot_ref(),
                    ),
                },
                machine: Machine::default(),
                applied: 0,
                down_until: 0,
            })
            .collect();
        Sim {
            rng,
            seed,
            config,
            voters,
            net: Vec::new(),
            seq: 0,
            now: 0,
            cut: BTreeSet::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
            next_value: 0,
            faults: true,
            stats: Stats::default(),
            active: None,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {} at tick {}: {what} (rerun: SLUICE_SIM_SEED={} cargo test -p replication quorum)",
            self.seed, self.now, self.seed
        );
    }

    fn step_time(&mut self) {
        self.now += 1;
        let n = self.voters.len();
        // Restarts of crashed voters, from exactly what their disks hold.
        for i in 0..n {
            if self.voters[i].node.is_none() && self.voters[i].down_until <= self.now {
                let disk = self.voters[i].disk.recover();
                let node = QuorumNode::restart(&self.config[i], disk.clone())
                    .unwrap_or_else(|e| self.fail(format!("restart of {} failed: {e}", i + 1)));
                let v = &mut self.voters[i];
                v.machine = Machine::decode(disk.snapshot.get_data());
                v.applied = disk.snapshot.get_metadata().index;
                v.node = Some(node);
            }
        }
        if self.faults {
            self.inject_faults();
        }
        for i in 0..n {
            if let Some(node) = self.voters[i].node.as_mut() {
                node.tick();
            }
        }
        self.deliver();
        // Clients propose while faults run; once they stop, only the final proposal goes,
        // so that the voters can be seen to converge.
        if self.faults && self.rng.chance(300) {
            self.propose();
        }
        for i in 0..n {
            self.drive(i);
        }
        self.check_leaders();
    }

    fn inject_faults(&mut self) {
        let n = self.voters.len();
        // Crash: memory is gone; the disk keeps what was made durable.
        if self.rng.chance(8) {
            let i = self.rng.below(n as u64) as usize;
            if self.voters[i].node.is_some() {
                self.stats.crashes += 1;
                self.voters[i].node = None;
                self.voters[i].down_until = self.now + 1 + self.rng.below(60);
            }
        }
        // Partitions come and go.
        if self.rng.chance(10) {
            let a = 1 + self.rng.below(n as u64);
            let b = 1 + self.rng.below(n as u64);
            if a != b {
                self.cut.insert((a, b));
                if self.rng.chance(500) {
                    self.cut.insert((b, a));
                }
            }
        }
        if self.rng.chance(20) {
            self.cut.clear();
        }
        // Snapshots: a voter compacts its log at what it has applied.
        if self.rng.chance(30) {
            let i = self.rng.below(n as u64) as usize;
            let v = &mut self.voters[i];
            if let Some(node) = v.node.as_mut() {
                if v.applied > node.snapshot_index() {
                    let data = v.machine.encode();
                    let snap = node.compact(v.applied, data).unwrap();
                    self.stats.snapshots_taken += 1;
                    let idx = snap.get_metadata().index;
                    // The snapshot file is replaced first, then the log rewritten: a
                    // crash between leaves entries the snapshot covers, which recovery drops.
                    v.disk.snapshot = super::disk::encode_snapshot(&snap);
                    v.disk.compact_log(idx);
                }
            }
        }
    }

    fn send(&mut self, msg: Message) {
        if self.faults && self.rng.chance(50) {
            self.stats.dropped += 1;
            self.report_lost(&msg);
            return;
        }
        let copies = if self.faults && self.rng.chance(20) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.faults && self.rng.chance(50) {
                self.rng.below(40)
            } else {
                self.rng.below(3)
            };
            self.seq += 1;
            self.net.push(InFlight {
                at: self.now + delay,
                seq: self.rng.next() ^ self.seq,
                msg: msg.clone(),
            });
        }
    }

    /// The sender learns that a snapshot did not arrive (as a failed connection tells it).
    fn report_lost(&mut self, msg: &Message) {
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            if let Some(node) = self.voters[msg.from as usize - 1].node.as_mut() {
                node.report_snapshot(msg.to, false);
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Messages due at once arrive in a seeded order (reordering).
        due.sort_by_key(|m| (m.at, m.seq));
        for m in due {
            let (from, to) = (m.msg.from, m.msg.to);
            let is_snapshot = m.msg.get_msg_type() == MessageType::MsgSnapshot;
            let reachable =
                !self.cut.contains(&(from, to)) && self.voters[to as usize - 1].node.is_some();
            if !reachable {
                self.report_lost(&m.msg);
                continue;
            }
            let node = self.voters[to as usize - 1].node.as_mut().unwrap();
            // Stale or duplicated messages are raft's to ignore; an error is not a failure.
            let _ = node.step(m.msg);
            if is_snapshot {
                if let Some(sender) = self.voters[from as usize - 1].node.as_mut() {
                    sender.report_snapshot(to, true);
                }
            }
        }
    }

    fn propose(&mut self) {
        let leader = self
            .voters
            .iter()
            .position(|v| v.node.as_ref().is_some_and(|n| n.is_leader()));
        if let Some(i) = leader {
            self.next_value += 1;
            // Half the entries are the active controller's decisions on the leader's image
            // (brokers registering, heartbeating, timing out, shutting down; topics placed
            // over them), the others arbitrary records, some of which do not fit.
            let records = if self.rng.chance(500) {
                self.decide(i)
            } else {
                // One to three records per entry, applied together.
                let n = 1 + self.rng.below(3) as usize;
                (0..n).map(|_| self.next_record()).collect()
            };
            if records.is_empty() {
                return;
            }
            let value = crate::metadata::encode_batch(&records);
            let _ = self.voters[i].node.as_mut().unwrap().propose(value);
        }
    }

    /// What the active controller on voter `i` proposes for a simulated broker event (the
    /// time is the tick; a session is 50 ticks).
    fn decide(&mut self, i: usize) -> Vec<MetadataRecord> {
        let config = ControllerConfig {
            session_timeout_ms: 50,
            max_replication_factor: 3,
            unclean_leader_election: false,
        };
        let term = self.voters[i].node.as_ref().unwrap().term();
        let image = self.voters[i].machine.image.clone();
        let now = self.now;
        if self
            .active
            .as_ref()
            .is_none_or(|(t, v, _)| *t != term || *v != i)
        {
            self.active = Some((term, i, Decisions::activate(&image, now)));
        }
        let broker = 1 + self.rng.below(BROKERS) as i32;
        let event = self.rng.below(6);
        let n = self.next_value;
        let epoch = image.brokers.get(&broker).map_or(-1, |b| b.epoch);
        let caught_up = self.rng.chance(800);
        let factor = 1 + self.rng.below(3) as i16;
        let d = &mut self.active.as_mut().expect("just set").2;
        let r = match event {
            0 => {
                let mut incarnation = [0u8; 16];
                incarnation[..8].copy_from_slice(&n.to_be_bytes());
                d.register(
                    &config,
                    &image,
                    Registration {
                        broker_id: broker,
                        incarnation,
                        endpoints: vec![Endpoint {
                            name: "PLAINTEXT".into(),
                            host: "127.0.0.1".into(),
                            port: 9000 + broker as u16,
                            security_protocol: 0,
                        }],
                        rack: Some(format!("r{}", broker % 2)),
                        shards: 1 + broker as u32 % 3,
                    },
                    now,
                )
            }
            1 | 2 => d
                .heartbeat(&config, &image, broker, epoch, caught_up, now)
                .map(|(records, _)| records),
            3 => Ok(d.expire_sessions(&config, &image, now)),
            4 => {
                let mut id = [0xaa; 16];
                id[..8].copy_from_slice(&n.to_be_bytes());
                d.create_topic(
                    &config,
                    &image,
                    &NewTopic {
                        name: format!("c{n}"),
                        topic_id: TopicId(id),
                        partitions: 1 + (n % 4) as i32,
                        replication_factor: factor,
                        configs: Default::default(),
                    },
                )
            }
            _ => d.controlled_shutdown(&config, &image, broker, epoch),
        };
        r.unwrap_or_default()
    }

    /// A metadata record, unique (so that a lost one can be told apart): brokers
    /// registering, fenced and unfenced, topics with partitions, leader and ISR changes,
    /// configs, removals, producer-id blocks. Some do not fit the image (a stale epoch, a
    /// removed topic); every voter must refuse those alike.
    fn next_record(&mut self) -> MetadataRecord {
        let n = self.next_value;
        let topic_id = |k: u64| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&k.to_be_bytes());
            TopicId(id)
        };
        let known = n.saturating_sub(1 + self.rng.below(8)).max(1);
        match self.rng.below(8) {
            0 => {
                let mut incarnation = [0u8; 16];
                incarnation[..8].copy_from_slice(&n.to_be_bytes());
                MetadataRecord::RegisterBroker {
                    broker_id: (n % 5) as i32,
                    incarnation,
                    broker_epoch: super::super::metadata::records::EPOCH_FROM_OFFSET,
                    endpoints: vec![],
                    rack: None,
                    shards: 1 + (n % 4) as u32,
                    fenced: true,
                }
            }
            1 => MetadataRecord::UnfenceBroker {
                broker_id: (n % 5) as i32,
                broker_epoch: n as i64 % 7,
            },
            2 | 3 => MetadataRecord::Topic {
                name: format!("t{n}"),
                topic_id: topic_id(n),
            },
            4 => MetadataRecord::Partition {
                topic_id: topic_id(known),
                partition: self.rng.below(2) as i32,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: n as i32,
                shard_index: 0,
            },
            5 => MetadataRecord::PartitionChange {
                topic_id: topic_id(known),
                partition: 0,
                leader: (n % 3) as i32,
                isr: Some(vec![(n % 3) as i32]),
                replicas: None,
            },
            6 => MetadataRecord::Config {
                resource: super::super::metadata::records::ConfigResource::Topic,
                resource_name: format!("t{known}"),
                name: "retention.ms".into(),
                value: Some(n.to_string()),
            },
            _ => MetadataRecord::ProducerIds {
                broker_id: 1,
                broker_epoch: 1,
                next_producer_id: n as i64 * 1000,
            },
        }
    }

    /// Runs voter `i`'s ready loop as the broker's driver does: writes made durable, then
    /// messages sent, then committed records applied. A crash may strike mid-write.
    fn drive(&mut self, i: usize) {
        loop {
            let Some(node) = self.voters[i].node.as_mut() else {
                return;
            };
            let Some(out) = node.handle_ready() else {
                return;
            };
            if self.faults && self.rng.chance(5) {
                // Crash before the fsync finished: any byte prefix of this write reached
                // the log file (a torn tail), nothing was sent or applied. A snapshot from
                // the leader is renamed into place whole or not at all: here, not.
                let bytes =
                    super::disk::encode_writes(&out.writes.entries, out.writes.hard_state.as_ref());
                let keep = self.rng.below(bytes.len() as u64 + 1) as usize;
                self.stats.crashes += 1;
                if keep < bytes.len() {
                    self.stats.torn_writes += 1;
                }
                let v = &mut self.voters[i];
                if out.writes.snapshot.is_none() {
                    v.disk.log.extend_from_slice(&bytes[..keep]);
                }
                v.node = None;
                v.down_until = self.now + 1 + self.rng.below(30);
                return;
            }
            self.persist(i, &out.writes);
            for m in out.messages {
                self.send(m);
            }
            self.apply(i, out.restore, out.committed);
        }
    }

    fn persist(&mut self, i: usize, w: &Writes) {
        let disk = &mut self.voters[i].disk;
        if let Some(snap) = &w.snapshot {
            // A snapshot from the leader replaces the whole log: a new, empty log file.
            disk.snapshot = super::disk::encode_snapshot(snap);
            disk.log.clear();
        }
        disk.log.extend(super::disk::encode_writes(
            &w.entries,
            w.hard_state.as_ref(),
        ));
    }

    fn apply(&mut self, i: usize, restore: Option<Snapshot>, committed: Vec<Committed>) {
        let id = i + 1;
        if let Some(snap) = restore {
            self.stats.snapshots_restored += 1;
            let m = Machine::decode(snap.get_data());
            for (idx, d) in &m.records {
                self.check_committed(id, *idx, d);
            }
            let v = &mut self.voters[i];
            v.machine = m;
            v.applied = v.applied.max(snap.get_metadata().index);
        }
        let is_leader = self.voters[i].node.as_ref().is_some_and(|n| n.is_leader());
        for c in committed {
            if c.index <= self.voters[i].applied {
                self.fail(format!(
                    "node {id} applied index {} after {}",
                    c.index, self.voters[i].applied
                ));
            }
            self.check_committed(id, c.index, &c.data);
            let v = &mut self.voters[i];
            v.applied = c.index;
            v.machine.apply(c.index, &c.data);
            if is_leader {
                self.acknowledged.insert(c.data);
            }
        }
    }

    fn check_committed(&mut self, id: usize, index: u64, data: &[u8]) {
        match self.committed.get(&index) {
            Some(d) if d != data => self.fail(format!(
                "node {id} applied {:?} at {index}, committed there was {:?}",
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(d)
            )),
            Some(_) => {}
            None => {
                self.committed.insert(index, data.to_vec());
            }
        }
    }

    fn check_leaders(&mut self) {
        let seen: Vec<(u64, u64)> = self
            .voters
            .iter()
            .filter_map(|v| v.node.as_ref())
            .filter(|n| n.is_leader())
            .map(|n| (n.term(), n.id()))
            .collect();
        for (term, id) in seen {
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    self.fail(format!("two leaders in term {term}: {other} and {id}"))
                }
                _ => {
                    self.leaders.insert(term, id);
                }
            }
        }
    }

    /// Faults stop, partitions heal and crashed voters come back; the quorum must then
    /// elect a leader, commit a last proposal, and every voter must converge.
    fn settle(&mut self) {
        self.faults = false;
        self.cut.clear();
        for v in &mut self.voters {
            v.down_until = v.down_until.min(self.now + 1);
        }
        let deadline = self.now + 3000;
        let value = b"final".to_vec();
        // (term, tick) of the last proposal of the final value: a proposal is lost when
        // leadership changes before it commits, as a client's would be, so it is retried.
        let mut proposed: Option<(u64, u64)> = None;
        while self.now < deadline {
            self.step_time();
            let leader = self
                .voters
                .iter()
                .position(|v| v.node.as_ref().is_some_and(|n| n.is_leader()));
            let applied = self
                .voters
                .iter()
                .any(|x| x.machine.records.values().any(|d| *d == value));
            if let (false, Some(i)) = (applied, leader) {
                let term = self.voters[i].node.as_ref().unwrap().term();
                let stale = proposed.is_none_or(|(t, at)| t != term || self.now > at + 200);
                if stale
                    && self.voters[i]
                        .node
                        .as_mut()
                        .unwrap()
                        .propose(value.clone())
                        .is_ok()
                {
                    proposed = Some((term, self.now));
                }
            }
            if applied {
                let v = &value;
                let first = &self.voters[0].machine;
                let converged = self.voters.iter().all(|x| {
                    x.node.is_some()
                        && x.machine == *first
                        && x.machine.records.values().any(|d| d == v)
                });
                if converged {
                    return self.check_final();
                }
            }
        }
        let state: Vec<String> = self
            .voters
            .iter()
            .map(|v| match &v.node {
                Some(n) => format!(
                    "{}: term {} leader {:?} commit {} applied {} records {} {}",
                    n.id(),
                    n.term(),
                    n.leader(),
                    n.commit_index(),
                    v.applied,
                    v.machine.records.len(),
                    n.debug_progress()
                ),
                None => "down".into(),
            })
            .collect();
        self.fail(format!(
            "the quorum did not converge within 3000 ticks after the faults stopped: {state:?}"
        ));
    }

    fn check_final(&self) {
        // The converged image is one a controller could stand behind: every leader is a
        // registered broker in its partition's ISR, every replica a registered broker, and
        // the replicas of a partition distinct.
        let image = &self.voters[0].machine.image;
        for t in image.topics.values() {
            for (p, part) in t.partitions.iter().enumerate() {
                let at = format!("{}-{p} {part:?}", t.name);
                if part.leader >= 0
                    && !(part.isr.contains(&part.leader)
                        && image.brokers.contains_key(&part.leader))
                    && t.name.starts_with('c')
                {
                    self.fail(format!("leader outside the ISR or unregistered: {at}"));
                }
                let distinct: BTreeSet<_> = part.replicas.iter().collect();
                if distinct.len() != part.replicas.len() {
                    self.fail(format!("a replica placed twice: {at}"));
                }
            }
        }
        let applied: BTreeSet<&Vec<u8>> = self.voters[0].machine.records.values().collect();
        for a in &self.acknowledged {
            if !applied.contains(a) {
                self.fail(format!(
                    "acknowledged {:?} lost",
                    String::from_utf8_lossy(a)
                ));
            }
        }
        // Every index committed anywhere is held, with the same record, by every voter.
        for (idx, d) in &self.committed {
            for (i, v) in self.voters.iter().enumerate() {
                if v.machine.records.get(idx) != Some(d) {
                    self.fail(format!("node {} lacks committed index {idx}", i + 1));
                }
            }
        }
    }
}

fn run_seed(seed: u64) -> Stats {
    let n = if seed.is_multiple_of(4) { 5 } else { 3 };
    let mut sim = Sim::new(seed, n);
    let ticks = 400 + seed % 200;
    for _ in 0..ticks {
        sim.step_time();
    }
    sim.settle();
    sim.stats.terms = sim.leaders.len() as u64;
    sim.stats.topics = sim.voters[0].machine.image.topics.len() as u64;
    sim.stats.brokers = sim.voters[0].machine.image.brokers.len() as u64;
    let image = &sim.voters[0].machine.image;
    sim.stats.placed_topics = image
        .topic_ids
        .keys()
        .filter(|n| n.starts_with('c'))
        .count() as u64;
    sim.stats.unfenced_brokers = image.brokers.values().filter(|b| !b.fenced).count() as u64;
    sim.stats
}

/// Seeds to run: `SLUICE_SIM_SEED` for one, else `SLUICE_SIM_SEEDS` (default 1000) from 1.
pub(crate) fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("SLUICE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("SLUICE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    (1..=n).collect()
}

#[test]
fn quorum_keeps_one_leader_per_term_and_every_committed_record_under_faults() {
    let mut total = Stats::default();
    for seed in seeds() {
        total.add(run_seed(seed));
    }
    eprintln!("quorum simulation: {total:?}");
}

/// The faults the checks rely on do happen: over a few seeds, voters crash (some mid-write),
/// snapshots are taken and sent to lagging voters, messages are lost and duplicated, and
/// leadership changes.
#[test]
fn the_simulation_exercises_every_fault() {
    let mut total = Stats::default();
    for seed in 1..=40 {
        total.add(run_seed(seed));
    }
    assert!(total.crashes > 40, "{total:?}");
    assert!(total.torn_writes > 0, "{total:?}");
    assert!(total.snapshots_restored > 0, "{total:?}");
    assert!(total.dropped > 0 && total.duplicated > 0, "{total:?}");
    assert!(total.terms > 80, "{total:?}");
    assert!(total.topics > 40 && total.brokers > 40, "{total:?}");
    assert!(
        total.placed_topics > 20 && total.unfenced_brokers > 20,
        "{total:?}"
    );
}

#[test]
fn a_three_voter_quorum_elects_a_leader_and_commits_without_faults() {
    let mut sim = Sim::new(42, 3);
    sim.faults = false;
    for t in 0..200 {
        sim.step_time();
        if t % 3 == 0 {
            sim.propose();
        }
    }
    assert!(
        sim.voters
            .iter()
            .filter(|v| v.node.as_ref().is_some_and(|n| n.is_leader()))
            .count()
            == 1,
        "one leader after 200 quiet ticks"
    );
    assert!(!sim.committed.is_empty(), "proposals committed");
    assert_eq!(
        sim.committed.len(),
        sim.acknowledged.len(),
        "without faults every committed record was proposed by the leader that applied it"
    );
}

/// The checks themselves must catch what they claim to: a simulation whose network forges
/// a leader's append (a record nobody proposed) is caught as a divergence.
#[test]
#[should_panic(expected = "applied")]
fn a_forged_record_is_caught() {
    let mut sim = Sim::new(7, 3);
    sim.faults = false;
    for _ in 0..100 {
        sim.step_time();
        sim.propose();
    }
    let (&idx, _) = sim.committed.iter().next().expect("something committed");
    sim.check_committed(1, idx, b"forged");
}
