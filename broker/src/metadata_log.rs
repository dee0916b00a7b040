//! The metadata log's driver: runs the sans-I/O Raft node (`replication::quorum`) on
//! shard 0 with glommio timers, keeps its durable state in files, and applies what commits
//! to the cluster image (`replication::metadata::ClusterImage`).
//!
//! Files, under `<data dir>/__cluster/quorum/` (byte formats in `replication::quorum::disk`):
//! - `quorum-<first index, 20 digits>.log`: entries and hard states, appended and
//!   fdatasync'ed before anything that depends on them is sent or applied (raft's rule: a
//!   vote or an acknowledged append survives a crash);
//! - `quorum.snapshot`: the image at some applied index, written whole (temp file, fsync,
//!   rename, directory fsync). Once it is durable, log files wholly below it are deleted.
//!
//! Start-up reads the snapshot, replays the log files in index order (a torn tail — a write
//! never fsync'ed, so never acknowledged — is cut off the last file), and restarts the node
//! from that; raft then hands back the committed entries after the snapshot to re-apply.
//! A snapshot whose voters differ from `controller.quorum.voters` stops the start: the node
//! would otherwise vote in a quorum it does not belong to.
//!
//! Raft node ids are `node.id + 1`: raft-rs reserves id 0, Kafka allows `node.id=0`.
//!
//! File I/O runs on the blocking pool, one operation at a time (the driver's ready loop is
//! serialized), so the shard thread never waits on a disk.
//!
//! A write or fsync that fails (a full or failing disk) stops the log for the rest of the
//! process: raft already counts the write as done, and retrying a failed fsync promises
//! nothing (the kernel may have dropped the dirty pages). Metadata changes then fail with
//! KAFKA_STORAGE_ERROR while produce and fetch go on; a restart recovers from what is on
//! disk (cutting a torn tail).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use glommio::sync::Semaphore;
use replication::metadata::{decode_batch, encode_batch, ClusterImage, MetadataRecord};
use replication::quorum::disk::{self, FRAME_MAX_BYTES};
use replication::quorum::eraftpb::{HardState, Snapshot};
use replication::quorum::{
    Committed, DiskState, NodeId, Output, ProposeError, QuorumConfig, QuorumNode, QuorumStore,
    Writes,
};

/// Proposals awaiting their commit at once (the controller proposes one change at a time;
/// this bounds what a bug could pile up).
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 64;

const SNAPSHOT_FILE: &str = "quorum.snapshot";

/// The raft id of a Kafka node id.
pub fn raft_id(node_id: i32) -> NodeId {
    node_id as NodeId + 1
}

#[derive(Debug, Clone)]
pub struct MetadataLogConfig {
    pub node_id: i32,
    /// Every voter's node id, this node's included.
    pub voters: Vec<i32>,
    /// One raft tick.
    pub tick: Duration,
    pub election_ticks_min: usize,
    pub heartbeat_ticks: usize,
    /// Applied log bytes after which the image is snapshotted.
    pub snapshot_after_bytes: u64,
}

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CommitError {
    #[error("this node is not the active controller (leader: {leader:?})")]
    NotLeader { leader: Option<i32> },
    #[error("the change was not committed: leadership changed before it was")]
    Lost,
    #[error("the change was not committed within {0:?}")]
    Timeout(Duration),
    #[error("the change is too large for one metadata log entry ({0} bytes)")]
    TooLarge(usize),
    #[error("{0}")]
    Refused(String),
    #[error("the metadata log cannot be written: {0}")]
    Storage(String),
    #[error("stale broker registration: {0}")]
    StaleBroker(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Duplicate(String),
}

struct Waiter {
    index: u64,
    term: u64,
    done: futures::channel::oneshot::Sender<Result<(), CommitError>>,
}

/// The log file being appended to.
struct Appending {
    path: PathBuf,
    file: std::fs::File,
}

pub struct MetadataLog {
    dir: PathBuf,
    config: MetadataLogConfig,
    node: RefCell<QuorumNode>,
    /// Taken out while a write runs on the blocking pool.
    appending: RefCell<Option<Appending>>,
    /// The committed image, applied up to `image.offset`.
    image: RefCell<Arc<ClusterImage>>,
    bytes_since_snapshot: Cell<u64>,
    waiters: RefCell<Vec<Waiter>>,
    /// Notified whenever the image moves forward.
    pub applied_event: event_listener::Event,
    /// The commit index the image reflects (raft's own empty entries included).
    applied: Cell<u64>,
    ready_lock: Semaphore,
    /// Why the log stopped, once a write failed.
    failed: RefCell<Option<String>>,
    /// Where Raft messages to other voters go (none for a quorum of one).
    outboxes: RefCell<Option<crate::peers::RaftOutboxes>>,
}

fn log_file_name(first_index: u64) -> String {
    format!("quorum-{first_index:020}.log")
}

fn log_file_first_index(name: &str) -> Option<u64> {
    name.strip_prefix("quorum-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// What start-up read from disk.
struct Recovered {
    disk: Option<DiskState>,
    image: ClusterImage,
    appending: Appending,
}

/// Reads the snapshot and log files (blocking).
fn recover_files(dir: &Path, voters: &[NodeId]) -> Result<Recovered> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let snap_path = dir.join(SNAPSHOT_FILE);
    let snapshot = match std::fs::read(&snap_path) {
        Ok(bytes) => Some(
            disk::decode_snapshot(&bytes)
                .with_context(|| format!("reading {}", snap_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", snap_path.display())),
    };
    let mut logs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((log_file_first_index(&name)?, e.path()))
        })
        .collect();
    logs.sort();
    let fresh = snapshot.is_none() && logs.is_empty();
    let snapshot = match snapshot {
        Some(s) => s,
        None if fresh => {
            // A new quorum: its voters are written down at once (a snapshot at index 0),
            // so that a later start with other voters is refused.
            let s = QuorumStore::bootstrap(voters).snapshot_ref().clone();
            storage::index::write_file_atomically(&snap_path, &disk::encode_snapshot(&s))
                .with_context(|| format!("writing {}", snap_path.display()))?;
            storage::segment::sync_dir(dir)?;
            s
        }
        None => bail!(
            "{} is missing beside metadata log files: refusing to start",
            snap_path.display()
        ),
    };
    let mut on_disk: Vec<NodeId> = snapshot.get_metadata().get_conf_state().voters.clone();
    on_disk.sort_unstable();
    let mut configured = voters.to_vec();
    configured.sort_unstable();
    if on_disk != configured {
        let show = |v: &[NodeId]| v.iter().map(|x| x - 1).collect::<Vec<_>>();
        bail!(
            "the metadata quorum on disk has voters {:?}, controller.quorum.voters lists {:?}: \
             refusing to start (a node must not vote in a quorum it does not belong to)",
            show(&on_disk),
            show(&configured)
        );
    }
    let image = if snapshot.get_metadata().index > 0 {
        ClusterImage::decode_snapshot(&snapshot.data)
            .with_context(|| format!("decoding the metadata image in {}", snap_path.display()))?
    } else {
        ClusterImage::default()
    };
    let mut replayed = Vec::with_capacity(logs.len());
    for (i, (_, path)) in logs.iter().enumerate() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let r = disk::replay(&bytes);
        if let Some(why) = r.torn {
            if i + 1 == logs.len() {
                tracing::warn!(
                    file = %path.display(),
                    kept = r.valid_bytes,
                    cut = bytes.len() - r.valid_bytes,
                    reason = why,
                    "metadata log tail torn by a crash; cutting it off"
                );
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                f.set_len(r.valid_bytes as u64)?;
                f.sync_data()?;
            } else {
                bail!(
                    "metadata log file {} is damaged before its end ({why}) and a later file \
                     exists: refusing to start",
                    path.display()
                );
            }
        }
        replayed.push(r);
    }
    let snap_index = snapshot.get_metadata().index;
    let path = match logs.last() {
        Some((_, p)) => p.clone(),
        None => dir.join(log_file_name(snap_index + 1)),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if logs.is_empty() {
        storage::segment::sync_dir(dir)?;
    }
    let disk = (!fresh).then(|| disk::recover(snapshot, &replayed));
    Ok(Recovered {
        disk,
        image,
        appending: Appending { path, file },
    })
}

impl MetadataLog {
    /// Recovers the log from `dir` (or starts a new quorum there) and starts its ticks.
    pub async fn open(dir: PathBuf, config: MetadataLogConfig) -> Result<Rc<MetadataLog>> {
        let voters: Vec<NodeId> = config.voters.iter().map(|v| raft_id(*v)).collect();
        let quorum = QuorumConfig {
            id: raft_id(config.node_id),
            voters: voters.clone(),
            election_ticks_min: config.election_ticks_min,
            election_ticks_max: config.election_ticks_min * 2,
            heartbeat_ticks: config.heartbeat_ticks,
            max_message_bytes: 1 << 20,
            max_inflight_messages: 64,
        };
        let rec = {
            let (dir, voters) = (dir.clone(), voters.clone());
            glommio::executor()
                .spawn_blocking(move || recover_files(&dir, &voters))
                .await?
        };
        let (node, entries) = match rec.disk {
            Some(disk) => {
                let n = disk.entries.len();
                (QuorumNode::restart(&quorum, disk)?, n)
            }
            None => (QuorumNode::bootstrap(&quorum)?, 0),
        };
        tracing::info!(
            dir = %dir.display(),
            snapshot_index = node.snapshot_index(),
            entries,
            commit = node.commit_index(),
            voters = ?config.voters,
            "metadata log opened"
        );
        let log = Rc::new(MetadataLog {
            dir,
            config,
            node: RefCell::new(node),
            appending: RefCell::new(Some(rec.appending)),
            image: RefCell::new(Arc::new(rec.image)),
            bytes_since_snapshot: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            applied_event: event_listener::Event::new(),
            applied: Cell::new(0),
            ready_lock: Semaphore::new(1),
            failed: RefCell::new(None),
            outboxes: RefCell::new(None),
        });
        // The entries recovered as committed apply first: the image is served even if the
        // disk refuses what comes next.
        log.drive().await?;
        if voters.len() == 1 {
            // A quorum of one has nobody to wait for. Its vote must be written; a disk that
            // refuses it leaves the log stopped (`failed`), the image served as it is.
            log.node.borrow_mut().campaign()?;
            let _ = log.drive().await;
        }
        let ticking = Rc::downgrade(&log);
        glommio::spawn_local(async move {
            loop {
                let Some(log) = ticking.upgrade() else { return };
                let tick = log.config.tick;
                drop(log);
                glommio::timer::sleep(tick).await;
                let Some(log) = ticking.upgrade() else { return };
                if log.failed.borrow().is_some() {
                    return;
                }
                log.node.borrow_mut().tick();
                if log.drive().await.is_err() {
                    return;
                }
            }
        })
        .detach();
        Ok(log)
    }

    /// The committed image.
    pub fn image(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    /// What a metadata observer asking for entries after `after` gets: the applied entries
    /// that carry data (up to about `max_bytes`), or `None` when they are snapshotted away
    /// (the observer then gets the image).
    pub fn applied_entries_after(
        &self,
        after: u64,
        max_bytes: usize,
    ) -> Option<Vec<(u64, Vec<u8>)>> {
        let upto = self.image.borrow().offset;
        self.node.borrow().data_entries(after, upto, max_bytes)
    }

    /// Why the log stopped accepting changes, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.node.borrow().is_leader()
    }

    pub fn term(&self) -> u64 {
        self.node.borrow().term()
    }

    /// The leader's node id, if known.
    pub fn leader(&self) -> Option<i32> {
        self.node.borrow().leader().map(|id| id as i32 - 1)
    }

    /// Whether this node leads and its image holds everything committed before its term
    /// (a decision on an older image could undo a predecessor's).
    pub fn ready_to_decide(&self) -> bool {
        let node = self.node.borrow();
        node.is_leader() && node.committed_in_term() && self.applied.get() >= node.commit_index()
    }

    pub fn commit_index(&self) -> u64 {
        self.node.borrow().commit_index()
    }

    /// Each voter's highest replicated index by node id (on the leader; empty elsewhere).
    pub fn progress(&self) -> Vec<(i32, u64)> {
        self.node
            .borrow()
            .progress()
            .into_iter()
            .map(|(id, m)| (id as i32 - 1, m))
            .collect()
    }

    /// Proposes `records` as one entry and waits until it is committed and applied to the
    /// image (returns the entry's index, the offset the image then has at least).
    pub async fn commit(
        &self,
        records: Vec<MetadataRecord>,
        timeout: Duration,
    ) -> Result<u64, CommitError> {
        if let Some(why) = self.failed.borrow().clone() {
            return Err(CommitError::Storage(why));
        }
        let data = encode_batch(&records);
        if data.len() + 64 > FRAME_MAX_BYTES {
            return Err(CommitError::TooLarge(data.len()));
        }
        if self.waiters.borrow().len() >= PROPOSALS_IN_FLIGHT_MAX {
            return Err(CommitError::Refused(
                "too many metadata changes in flight".into(),
            ));
        }
        let (index, term) = {
            let mut node = self.node.borrow_mut();
            node.propose(data).map_err(|e| match e {
                ProposeError::NotLeader { leader } => CommitError::NotLeader {
                    leader: leader.map(|id| id as i32 - 1),
                },
                e => CommitError::Refused(e.to_string()),
            })?;
            (node.last_index(), node.term())
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        self.waiters.borrow_mut().push(Waiter {
            index,
            term,
            done: tx,
        });
        // A failed drive answered every waiter, this one included.
        let _ = self.drive().await;
        let timed = glommio::timer::timeout(timeout, async {
            Ok(rx.await.unwrap_or(Err(CommitError::Lost)))
        })
        .await;
        match timed {
            Ok(r) => r.map(|()| index),
            Err(_) => {
                self.waiters.borrow_mut().retain(|w| w.index != index);
                Err(CommitError::Timeout(timeout))
            }
        }
    }

    /// Runs the node's ready loop until it has nothing more (see `drive_inner`); on a
    /// failure the log stops for good and every waiting proposal is answered.
    async fn drive(&self) -> Result<()> {
        if let Some(why) = self.failed.borrow().clone() {
            bail!("{why}");
        }
        let r = self.drive_inner().await;
        if let Err(e) = &r {
            let why = format!("{e:#}");
            tracing::error!(
                error = %why,
                "metadata log failed: metadata changes are refused until a restart"
            );
            *self.failed.borrow_mut() = Some(why.clone());
            for w in self.waiters.borrow_mut().drain(..) {
                let _ = w.done.send(Err(CommitError::Storage(why.clone())));
            }
        }
        r
    }

    /// Writes made durable, then (with peers) messages sent, then committed entries applied.
    async fn drive_inner(&self) -> Result<()> {
        let _permit = self
            .ready_lock
            .acquire_permit(1)
            .await
            .map_err(|e| anyhow::anyhow!("metadata log closed: {e}"))?;
        loop {
            let (out, commit) = {
                let mut node = self.node.borrow_mut();
                let Some(out) = node.handle_ready() else {
                    break;
                };
                (out, node.commit_index())
            };
            let Output {
                writes,
                messages,
                committed,
                restore,
            } = out;
            self.persist(writes).await?;
            self.send(messages);
            if let Some(snap) = restore {
                let image = ClusterImage::decode_snapshot(&snap.data)
                    .context("decoding a metadata snapshot from the leader")?;
                *self.image.borrow_mut() = Arc::new(image);
            }
            self.apply(committed);
            self.applied.set(self.applied.get().max(commit));
            self.settle_waiters();
            self.maybe_snapshot().await?;
        }
        Ok(())
    }

    /// Hands Raft messages to the peers' outboxes; a message that cannot be queued makes
    /// its peer unreachable for raft (which resends), and a snapshot is reported as sent or
    /// failed (raft sends the follower nothing else until it hears).
    fn send(&self, messages: Vec<replication::quorum::eraftpb::Message>) {
        if messages.is_empty() {
            return;
        }
        let outboxes = self.outboxes.borrow();
        for m in messages {
            let to = m.to;
            let snapshot =
                m.get_msg_type() == replication::quorum::eraftpb::MessageType::MsgSnapshot;
            let sent = outboxes.as_ref().is_some_and(|o| o.send(m));
            let mut node = self.node.borrow_mut();
            if !sent {
                node.report_unreachable(to);
            }
            if snapshot {
                node.report_snapshot(to, sent);
            }
        }
    }

    /// Connects the log to its peers (a quorum of more than one).
    pub fn set_outboxes(&self, outboxes: crate::peers::RaftOutboxes) {
        *self.outboxes.borrow_mut() = Some(outboxes);
    }

    /// Tells raft that messages to `node_id` are not getting through.
    pub fn report_unreachable(&self, node_id: i32) {
        self.node.borrow_mut().report_unreachable(raft_id(node_id));
    }

    /// Takes a Raft message from a peer.
    pub async fn step(&self, m: replication::quorum::eraftpb::Message) {
        if self.failed.borrow().is_some() {
            return;
        }
        if let Err(e) = self.node.borrow_mut().step(m) {
            tracing::debug!(error = %e, "raft message refused");
            return;
        }
        let _ = self.drive().await;
    }

    fn apply(&self, committed: Vec<Committed>) {
        if committed.is_empty() {
            return;
        }
        let mut image = (**self.image.borrow()).clone();
        for c in committed {
            if c.index <= image.offset {
                continue;
            }
            self.bytes_since_snapshot
                .set(self.bytes_since_snapshot.get() + c.data.len() as u64);
            match decode_batch(&c.data) {
                Ok(records) => {
                    if let Err(e) = image.apply_batch(c.index, &records) {
                        tracing::error!(index = c.index, error = %e, "metadata batch refused");
                    }
                }
                Err(e) => {
                    image.offset = c.index;
                    tracing::error!(
                        index = c.index,
                        error = %e,
                        "metadata entry this build cannot decode; skipped"
                    );
                }
            }
            let mut waiters = self.waiters.borrow_mut();
            if let Some(pos) = waiters.iter().position(|w| w.index == c.index) {
                let w = waiters.swap_remove(pos);
                let r = if w.term == c.term {
                    Ok(())
                } else {
                    Err(CommitError::Lost)
                };
                let _ = w.done.send(r);
            }
        }
        *self.image.borrow_mut() = Arc::new(image);
        self.applied_event.notify(usize::MAX);
    }

    /// Proposals at or below the commit index that were not answered by `apply` were
    /// replaced by another leader's entries.
    fn settle_waiters(&self) {
        let commit = self.node.borrow().commit_index();
        let mut waiters = self.waiters.borrow_mut();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].index <= commit {
                let w = waiters.swap_remove(i);
                let _ = w.done.send(Err(CommitError::Lost));
            } else {
                i += 1;
            }
        }
    }

    /// Appends entries and the hard state to the log file and fdatasyncs it; a snapshot from
    /// the leader replaces the files first.
    async fn persist(&self, writes: Writes) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        if let Some(snap) = &writes.snapshot {
            let index = snap.get_metadata().index;
            self.install_snapshot(snap.clone(), index, Vec::new(), None)
                .await?;
        }
        if writes.entries.is_empty() && writes.hard_state.is_none() {
            return Ok(());
        }
        let bytes = disk::encode_writes(&writes.entries, writes.hard_state.as_ref());
        let mut appending = self
            .appending
            .borrow_mut()
            .take()
            .context("metadata log file busy")?;
        let back = glommio::executor()
            .spawn_blocking(move || {
                use std::io::Write;
                let r = appending
                    .file
                    .write_all(&bytes)
                    .and_then(|()| appending.file.sync_data())
                    .with_context(|| format!("writing {}", appending.path.display()));
                (appending, r)
            })
            .await;
        let (appending, r) = back;
        *self.appending.borrow_mut() = Some(appending);
        r
    }

    /// Snapshots the image once enough log has been applied since the last snapshot.
    async fn maybe_snapshot(&self) -> Result<()> {
        if self.bytes_since_snapshot.get() < self.config.snapshot_after_bytes {
            return Ok(());
        }
        let image = self.image();
        let index = image.offset;
        if index <= self.node.borrow().snapshot_index() {
            return Ok(());
        }
        let (snap, keep, hs) = {
            let mut node = self.node.borrow_mut();
            let snap = node.compact(index, image.encode_snapshot())?;
            (snap, node.entries_after(index), node.hard_state())
        };
        self.install_snapshot(snap, index, keep, Some(hs)).await?;
        self.bytes_since_snapshot.set(0);
        tracing::info!(index, "metadata snapshot written");
        Ok(())
    }

    /// Makes `snap` (at `index`) the durable snapshot: a new log file starting after it
    /// holds `keep` and `hs`, then the snapshot file replaces the old one, then older log
    /// files go. A crash between any two steps recovers the same state.
    async fn install_snapshot(
        &self,
        snap: Snapshot,
        index: u64,
        keep: Vec<replication::quorum::eraftpb::Entry>,
        hs: Option<HardState>,
    ) -> Result<()> {
        let dir = self.dir.clone();
        let old = self
            .appending
            .borrow_mut()
            .take()
            .context("metadata log file busy")?;
        let r = glommio::executor()
            .spawn_blocking(move || -> Result<Appending> {
                use std::io::Write;
                let path = dir.join(log_file_name(index + 1));
                let appending = if path == old.path {
                    old
                } else {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(true)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    file.write_all(&disk::encode_writes(&keep, hs.as_ref()))?;
                    file.sync_data()?;
                    storage::segment::sync_dir(&dir)?;
                    drop(old);
                    let file = std::fs::OpenOptions::new().append(true).open(&path)?;
                    Appending { path, file }
                };
                let snap_path = dir.join(SNAPSHOT_FILE);
                storage::index::write_file_atomically(&snap_path, &disk::encode_snapshot(&snap))
                    .with_context(|| format!("writing {}", snap_path.display()))?;
                storage::segment::sync_dir(&dir)?;
                for e in std::fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
                    let name = e.file_name();
                    let Some(first) = name.to_str().and_then(log_file_first_index) else {
                        continue;
                    };
                    if first < index + 1 {
                        std::fs::remove_file(e.path())?;
                    }
                }
                storage::segment::sync_dir(&dir)?;
                Ok(appending)
            })
            .await;
        match r {
            Ok(a) => {
                *self.appending.borrow_mut() = Some(a);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
