//! Replica fetchers: one task per (shard, source broker), the card's "replication fetcher"
//! per core. It multiplexes every partition this shard follows from that broker into Kafka
//! Fetch requests (v15: ReplicaState with this broker's id, LastFetchedEpoch), appends the
//! leader's batches exactly as stored (`Append::Replication`: same offsets, epochs and
//! CRCs) and reports as its fetch offset only what it has made durable: after an append the
//! next fetch waits until the batches are fdatasync'ed, so the leader's high watermark (the
//! minimum fetch offset over the ISR) counts only records on every ISR member's disk.
//!
//! A diverging epoch in the answer (KIP-320) truncates the log to where it last agrees
//! with the leader's (`replica::truncation`) before fetching again. A partition whose
//! leader refuses it (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH,
//! OFFSET_OUT_OF_RANGE) waits [`PARTITION_BACKOFF`] (the metadata moves it meanwhile); a
//! lost connection is retried with backoff. Partitions come and go with the metadata image
//! (`Shard::apply_roles` calls [`Fetchers::update`]); a fetcher with none left ends.
//!
//! Today the connection lands on whichever shard of the leader the kernel picks (the
//! client listener's SO_REUSEPORT), which forwards to the partition's owner: one
//! cross-core hop on the leader that a per-shard replication listener would remove.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use replication::{Append, LeaderEpoch, Partition};
use storage::Offset;
use uuid::Uuid;

use crate::shard::Shard;

/// The Fetch version followers send (ReplicaState, topic ids, LastFetchedEpoch).
const FETCH_VERSION: i16 = 15;
/// How long a partition the leader refused waits before it is fetched again.
pub const PARTITION_BACKOFF: Duration = Duration::from_secs(1);
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A partition this shard follows from one leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    pub topic_id: Uuid,
    pub leader_epoch: i32,
}

/// This shard's fetchers, by source broker.
#[derive(Default)]
pub struct Fetchers {
    by_leader: RefCell<BTreeMap<i32, Rc<Fetcher>>>,
}

struct Fetcher {
    leader: i32,
    partitions: RefCell<BTreeMap<(String, i32), Followed>>,
    /// Partitions the leader refused, until when.
    backoff: RefCell<BTreeMap<(String, i32), Instant>>,
    changed: event_listener::Event,
    stopped: Cell<bool>,
}

impl Fetchers {
    /// Follows exactly `wanted` (leader -> partitions) from now on: new fetchers start,
    /// fetchers left with nothing stop.
    pub fn update(
        &self,
        shard: &Rc<Shard>,
        wanted: BTreeMap<i32, BTreeMap<(String, i32), Followed>>,
    ) {
        let mut by_leader = self.by_leader.borrow_mut();
        by_leader.retain(|leader, f| {
            let keep = wanted.contains_key(leader);
            if !keep {
                f.stopped.set(true);
                f.changed.notify(usize::MAX);
            }
            keep
        });
        for (leader, partitions) in wanted {
            match by_leader.get(&leader) {
                Some(f) => {
                    if *f.partitions.borrow() != partitions {
                        *f.partitions.borrow_mut() = partitions;
                        f.changed.notify(usize::MAX);
                    }
                }
                None => {
                    let f = Rc::new(Fetcher {
                        leader,
                        partitions: RefCell::new(partitions),
                        backoff: RefCell::new(BTreeMap::new()),
                        changed: event_listener::Event::new(),
                        stopped: Cell::new(false),
                    });
                    tracing::info!(leader, shard = shard.id.0, "replica fetcher started");
                    glommio::spawn_local(run(Rc::downgrade(shard), f.clone())).detach();
                    by_leader.insert(leader, f);
                }
            }
        }
    }

    pub fn stop_all(&self) {
        for f in self.by_leader.borrow_mut().values() {
            f.stopped.set(true);
            f.changed.notify(usize::MAX);
        }
        self.by_leader.borrow_mut().clear();
    }
}

async fn run(shard: Weak<Shard>, f: Rc<Fetcher>) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut logged = false;
    while !f.stopped.get() {
        let Some(s) = shard.upgrade() else { return };
        let Some((host, port)) = crate::handlers::endpoint(&s, f.leader) else {
            drop(s);
            wait_changed(&f, PARTITION_BACKOFF).await;
            continue;
        };
        let timeout =
            Duration::from_millis(s.config.replica_fetch_wait_max_ms) * 4 + Duration::from_secs(10);
        drop(s);
        match session(&shard, &f, &host, port, timeout).await {
            Ok(()) => return,
            Err(e) => {
                if !logged {
                    tracing::warn!(leader = f.leader, error = %format!("{e:#}"), "replica fetch failed; retrying");
                    logged = true;
                }
            }
        }
        wait_changed(&f, backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// Waits up to `d`, or less if the fetcher's partitions change.
async fn wait_changed(f: &Fetcher, d: Duration) {
    let l = f.changed.listen();
    futures_lite::future::or(l, async {
        glommio::timer::sleep(d).await;
    })
    .await;
}

/// One connection's life: fetch rounds until the fetcher stops (Ok) or the connection fails.
async fn session(
    shard: &Weak<Shard>,
    f: &Rc<Fetcher>,
    host: &str,
    port: i32,
    timeout: Duration,
) -> Result<()> {
    let addr: SocketAddr = {
        use std::net::ToSocketAddrs;
        (host, port as u16)
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("{host}:{port} resolves to nothing"))?
    };
    let mut conn = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(std::io::Error::from)
        .with_context(|| format!("connecting to broker {} at {addr}", f.leader))?;
    conn.set_nodelay(true).map_err(std::io::Error::from)?;
    conn.set_read_timeout(Some(timeout))
        .map_err(std::io::Error::from)?;
    let mut correlation = 0i32;
    let client_id = StrBytes::from_static_str("sluice-replica-fetcher");
    loop {
        if f.stopped.get() {
            return Ok(());
        }
        let Some(s) = shard.upgrade() else {
            return Ok(());
        };
        let Some((req, asked)) = build_request(&s, f) else {
            drop(s);
            wait_changed(f, PARTITION_BACKOFF).await;
            continue;
        };
        let frame_max = s.config.replica_fetch_response_max_bytes + (1 << 20);
        drop(s);
        correlation = correlation.wrapping_add(1);
        let buf = protocol::client::encode_request(&req, FETCH_VERSION, correlation, &client_id)?;
        conn.write_all(&buf).await?;
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).await?;
        let n = i32::from_be_bytes(len);
        if n < 0 || n as usize > frame_max {
            bail!("fetch response of {n} bytes refused");
        }
        let mut body = vec![0u8; n as usize];
        conn.read_exact(&mut body).await?;
        if let Some(s) = shard.upgrade() {
            let m = &s.metrics;
            m.replica_fetch_bytes
                .set(m.replica_fetch_bytes.get() + n as u64);
        }
        let resp: FetchResponse = protocol::client::decode_response::<FetchRequest>(
            Bytes::from(body),
            FETCH_VERSION,
            correlation,
        )?;
        if resp.error_code != 0 {
            bail!("fetch refused: error {}", resp.error_code);
        }
        let Some(s) = shard.upgrade() else {
            return Ok(());
        };
        apply_response(&s, f, resp, &asked).await;
    }
}

/// The next Fetch for every partition not backing off: from each one's log end (durable:
/// an append is waited on before the next round), with its last batch's epoch.
fn build_request(s: &Rc<Shard>, f: &Fetcher) -> Option<(FetchRequest, BTreeMap<Uuid, String>)> {
    let now = Instant::now();
    f.backoff.borrow_mut().retain(|_, until| *until > now);
    let backoff = f.backoff.borrow();
    let mut topics: BTreeMap<Uuid, (String, Vec<FetchPartition>)> = BTreeMap::new();
    for ((topic, index), followed) in f.partitions.borrow().iter() {
        if backoff.contains_key(&(topic.clone(), *index)) {
            continue;
        }
        let Some(p) = s.partition(topic, *index) else {
            continue;
        };
        if p.is_leader() {
            continue;
        }
        let mut fp = FetchPartition::default();
        fp.partition = *index;
        fp.current_leader_epoch = followed.leader_epoch;
        fp.fetch_offset = p.log_end_offset().0;
        fp.last_fetched_epoch = p.latest_epoch().map_or(-1, |e| e.0);
        fp.log_start_offset = p.log_start_offset().0;
        fp.partition_max_bytes = s.config.replica_fetch_max_bytes as i32;
        topics
            .entry(followed.topic_id)
            .or_insert_with(|| (topic.clone(), Vec::new()))
            .1
            .push(fp);
    }
    if topics.is_empty() {
        return None;
    }
    let mut req = FetchRequest::default();
    let mut state = ReplicaState::default();
    state.replica_id = BrokerId(s.config.node_id);
    state.replica_epoch = -1;
    req.replica_state = state;
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = s.config.replica_fetch_wait_max_ms as i32;
    req.min_bytes = 1;
    req.max_bytes = s.config.replica_fetch_response_max_bytes as i32;
    let mut names = BTreeMap::new();
    req.topics = topics
        .into_iter()
        .map(|(id, (name, partitions))| {
            names.insert(id, name);
            let mut t = FetchTopic::default();
            t.topic_id = id;
            t.partitions = partitions;
            t
        })
        .collect();
    Some((req, names))
}

async fn apply_response(
    s: &Rc<Shard>,
    f: &Fetcher,
    resp: FetchResponse,
    names: &BTreeMap<Uuid, String>,
) {
    for t in resp.responses {
        let Some(topic) = names.get(&t.topic_id) else {
            continue;
        };
        for pd in t.partitions {
            let key = (topic.clone(), pd.partition_index);
            let Some(p) = s.partition(topic, pd.partition_index) else {
                continue;
            };
            if p.is_leader() {
                continue;
            }
            if pd.error_code == ResponseError::OffsetOutOfRange.code() {
                if let Err(e) = out_of_range(&p, &pd).await {
                    tracing::warn!(%topic, partition = pd.partition_index, error = %e, "cannot move an out-of-range follower log");
                }
                continue;
            }
            if pd.error_code != 0 {
                let code = ResponseError::try_from_code(pd.error_code);
                tracing::debug!(%topic, partition = pd.partition_index, leader = f.leader, error = ?code, "leader refused a replica fetch");
                f.backoff
                    .borrow_mut()
                    .insert(key, Instant::now() + PARTITION_BACKOFF);
                continue;
            }
            if let Err(e) = apply_partition(&p, &pd).await {
                tracing::warn!(%topic, partition = pd.partition_index, error = %e, "replica append failed");
                f.backoff
                    .borrow_mut()
                    .insert(key, Instant::now() + PARTITION_BACKOFF);
            }
        }
    }
}

/// OFFSET_OUT_OF_RANGE from the leader, as Kafka's follower handles it: a log wholly older
/// than the leader's log start is emptied and starts there; a log beyond what the leader
/// has (an unclean election gave it a shorter log) is cut back to the leader's high
/// watermark, where both agree, and fetched again from there.
async fn out_of_range(
    p: &Partition,
    pd: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<(), storage::StorageError> {
    let end = p.log_end_offset();
    if pd.log_start_offset > end.0 {
        tracing::warn!(topic = %p.topic(), partition = p.index(), end = end.0, leader_log_start = pd.log_start_offset, "follower log behind the leader's log start: starting again there");
        return p.reset_to(Offset(pd.log_start_offset)).await;
    }
    if pd.high_watermark >= 0 && pd.high_watermark < end.0 {
        tracing::warn!(topic = %p.topic(), partition = p.index(), end = end.0, leader_high_watermark = pd.high_watermark, "follower log beyond the leader's: truncating to its high watermark");
        p.truncate_to(Offset(pd.high_watermark)).await?;
    }
    Ok(())
}

/// One partition's answer: truncate on a diverging epoch, else append what came and wait
/// until it is durable; then take the leader's high watermark.
async fn apply_partition(
    p: &Partition,
    pd: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<(), storage::StorageError> {
    let d = &pd.diverging_epoch;
    if d.epoch >= 0 || d.end_offset >= 0 {
        let diverging = replication::replica::DivergingEpoch {
            epoch: LeaderEpoch(d.epoch),
            end_offset: Offset(d.end_offset),
        };
        let end = p.log_end_offset();
        let t = replication::replica::truncation(
            |e| {
                p.local_end_offset_for_epoch(LeaderEpoch(e))
                    .map(|(e, o)| (e.0, o))
            },
            end,
            p.high_watermark(),
            diverging,
        );
        tracing::info!(topic = %p.topic(), partition = p.index(), from = end.0, to = t.offset.0, "truncating a diverged follower log");
        p.truncate_to(t.offset).await?;
        return Ok(());
    }
    if let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) {
        let info = p
            .append(
                Append::Replication {
                    records: records.clone(),
                },
                crate::handlers::now_ms(),
            )
            .await?;
        // Only what is durable here may be reported as fetched.
        p.wait_durable(info.end_offset).await?;
    }
    p.set_leader_high_watermark(Offset(pd.high_watermark));
    // Retention and DeleteRecords on the leader move every replica's log start.
    if pd.log_start_offset > p.log_start_offset().0 {
        p.follow_log_start(Offset(pd.log_start_offset)).await?;
    }
    Ok(())
}
