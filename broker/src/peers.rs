//! Inter-node traffic on the controller listener (codec: `replication::wire`), on shard 0.
//!
//! - **Raft**: one outbound connection per other voter, fed by a bounded outbox
//!   ([`RAFT_OUTBOX_MAX`] messages); a message that does not fit, or a connection that is
//!   down, is dropped and reported to raft as unreachable (raft resends). A lost connection
//!   is retried with backoff ([`RECONNECT_BACKOFF_MIN`] doubling to
//!   [`RECONNECT_BACKOFF_MAX`]).
//! - **Calls** (registration, heartbeats, forwarded admin changes): one short connection
//!   per call, answered by one `Reply`, within `controller.quorum.request.timeout.ms`.
//!
//! Every connection opens with a `Hello` each way; a peer of another cluster, or whose
//! `controller.quorum.voters` differ, gets a `HelloRefused` and is closed (with a log line).
//! So does a second process with a node id that is already connected under another
//! incarnation (a copied configuration, a forgotten process elsewhere): the first one keeps
//! the id while its connection lives and it spoke within `broker.session.timeout.ms`; a
//! node killed and restarted is admitted at once (its old connection closed with it). On
//! one machine the copy does not even start: start-up refuses a controller listener address
//! another process serves. Raft frames must come from the node that said Hello and be meant
//! for this one. Known gap: a follower that holds no connection from node N admits a twin
//! of N; the leader refuses it and pre-vote keeps its empty log from winning an election.
//! Inbound frames are length-checked against `sluice.controller.frame.max.bytes` before
//! anything is allocated; a malformed frame closes its connection and is logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use replication::quorum::eraftpb::Message;
use replication::wire::{self, PeerMessage, Voter};

use crate::controller::Controller;

/// Raft messages queued for one peer before new ones are dropped.
pub const RAFT_OUTBOX_MAX: usize = 1024;
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Who this node is, as its `Hello` says.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: i32,
    pub voters: Vec<Voter>,
    /// `sluice.controller.frame.max.bytes`.
    pub frame_max: usize,
    /// `controller.quorum.request.timeout.ms`.
    pub timeout: Duration,
    /// This process's incarnation id (random per start).
    pub incarnation: [u8; 16],
    /// How long a peer's incarnation counts as live after its last frame
    /// (`broker.session.timeout.ms`).
    pub liveness: Duration,
}

impl Identity {
    fn hello(&self) -> PeerMessage {
        PeerMessage::Hello {
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
            voters: self.voters.clone(),
            incarnation: self.incarnation,
        }
    }

    pub fn voter_addr(&self, node_id: i32) -> Option<String> {
        self.voters
            .iter()
            .find(|v| v.node_id == node_id)
            .map(|v| format!("{}:{}", v.host, v.port))
    }
}

async fn write_frame(s: &mut TcpStream, correlation: u32, msg: &PeerMessage) -> Result<()> {
    s.write_all(&wire::encode(correlation, msg)).await?;
    Ok(())
}

async fn read_frame(s: &mut TcpStream, max: usize) -> Result<Option<(u32, PeerMessage)>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = wire::frame_length(len, max)?;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).await?;
    Ok(Some(wire::decode(&body)?))
}

/// Opens a connection to `addr` and exchanges Hellos; `expect` is the node id that must
/// answer there (a voter's address answered by another node is refused).
async fn connect(me: &Identity, addr: &str, expect: Option<i32>) -> Result<TcpStream> {
    let sock: SocketAddr = {
        use std::net::ToSocketAddrs;
        addr.to_socket_addrs()
            .with_context(|| format!("resolving {addr}"))?
            .next()
            .with_context(|| format!("{addr} resolves to nothing"))?
    };
    let mut s = TcpStream::connect_timeout(sock, me.timeout)
        .await
        .map_err(std::io::Error::from)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true).map_err(std::io::Error::from)?;
    s.set_read_timeout(Some(me.timeout))
        .map_err(std::io::Error::from)?;
    s.set_write_timeout(Some(me.timeout))
        .map_err(std::io::Error::from)?;
    write_frame(&mut s, 0, &me.hello()).await?;
    match read_frame(&mut s, me.frame_max).await? {
        Some((
            _,
            PeerMessage::Hello {
                cluster_id,
                node_id,
                voters,
                ..
            },
        )) => {
            wire::check_hello(
                (&me.cluster_id, &me.voters),
                (&cluster_id, &voters),
                node_id,
            )
            .map_err(anyhow::Error::msg)?;
            if let Some(want) = expect.filter(|w| *w != node_id) {
                bail!("{addr} should be node {want} but node {node_id} answered");
            }
            Ok(s)
        }
        Some((_, PeerMessage::HelloRefused { reason })) => bail!("{addr} refused us: {reason}"),
        Some(_) => bail!("{addr} did not answer with a Hello"),
        None => bail!("{addr} closed the connection"),
    }
}

/// `fut`'s output if it completes within `limit`.
pub async fn within<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let sleep = glommio::timer::sleep(limit);
    match futures::future::select(Box::pin(fut), Box::pin(sleep)).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

/// One call to the node at `addr`: a request, its reply.
pub async fn call(me: &Identity, addr: &str, msg: &PeerMessage) -> Result<PeerMessage> {
    let work = async {
        let mut s = connect(me, addr, None).await?;
        write_frame(&mut s, 1, msg).await?;
        match read_frame(&mut s, me.frame_max).await? {
            Some((_, reply @ (PeerMessage::Reply { .. } | PeerMessage::MetadataUpdate { .. }))) => {
                Ok(reply)
            }
            Some(_) => bail!("{addr} answered with something other than a Reply"),
            None => bail!("{addr} closed the connection before replying"),
        }
    };
    match within(me.timeout * 2, work).await {
        Some(r) => r,
        None => bail!("call to {addr} timed out"),
    }
}

/// The outboxes of Raft messages, one per other voter.
pub struct RaftOutboxes {
    outboxes: BTreeMap<i32, flume::Sender<Message>>,
}

impl RaftOutboxes {
    /// Starts one sender task per other voter; `unreachable` is told of each peer whose
    /// messages could not be delivered.
    pub fn start(me: Rc<Identity>, unreachable: Rc<dyn Fn(i32)>) -> RaftOutboxes {
        let mut outboxes = BTreeMap::new();
        for v in me.voters.iter().filter(|v| v.node_id != me.node_id) {
            let (tx, rx) = flume::bounded::<Message>(RAFT_OUTBOX_MAX);
            outboxes.insert(v.node_id, tx);
            let (me, peer, unreachable) = (me.clone(), v.node_id, unreachable.clone());
            glommio::spawn_local(async move {
                let addr = me.voter_addr(peer).expect("a voter");
                let mut backoff = RECONNECT_BACKOFF_MIN;
                let mut logged = false;
                loop {
                    // Wait for something to send before connecting.
                    let Ok(first) = rx.recv_async().await else {
                        return;
                    };
                    let mut s = match connect(&me, &addr, Some(peer)).await {
                        Ok(s) => s,
                        Err(e) => {
                            if !logged {
                                tracing::warn!(peer, error = %format!("{e:#}"), "cannot reach voter; retrying");
                                logged = true;
                            }
                            unreachable(peer);
                            // Drop what queued meanwhile: raft resends what matters.
                            while rx.try_recv().is_ok() {}
                            glommio::timer::sleep(backoff).await;
                            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                            continue;
                        }
                    };
                    if logged {
                        tracing::info!(peer, "voter reachable again");
                    }
                    logged = false;
                    backoff = RECONNECT_BACKOFF_MIN;
                    let mut next = Some(first);
                    loop {
                        let m = match next.take() {
                            Some(m) => m,
                            None => match rx.recv_async().await {
                                Ok(m) => m,
                                Err(_) => return,
                            },
                        };
                        if let Err(e) = write_frame(&mut s, 0, &PeerMessage::Raft(m)).await {
                            tracing::debug!(peer, error = %e, "voter connection lost");
                            unreachable(peer);
                            break;
                        }
                    }
                }
            })
            .detach();
        }
        RaftOutboxes { outboxes }
    }

    /// Queues `m` for its peer; false if it could not be queued.
    pub fn send(&self, m: Message) -> bool {
        let to = m.to as i32 - 1;
        match self.outboxes.get(&to) {
            Some(tx) => tx.try_send(m).is_ok(),
            None => false,
        }
    }
}

/// The incarnation each peer node id last spoke with, and whether it still holds an
/// inbound connection: a second process with the same node.id (a copied configuration, a
/// forgotten process on another host) is refused while the first one lives, so that it
/// never takes part in Raft under another node's identity.
#[derive(Default)]
struct LivePeers {
    peers: std::cell::RefCell<BTreeMap<i32, LivePeer>>,
}

struct LivePeer {
    incarnation: [u8; 16],
    connections: usize,
    last_frame: std::time::Instant,
}

impl LivePeers {
    /// Admits a connection from `node_id` as `incarnation`, or says why not.
    fn admit(&self, node_id: i32, incarnation: [u8; 16], liveness: Duration) -> Result<(), String> {
        let mut peers = self.peers.borrow_mut();
        let now = std::time::Instant::now();
        match peers.get_mut(&node_id) {
            Some(p) if p.incarnation == incarnation => {
                p.connections += 1;
                p.last_frame = now;
            }
            Some(p) if p.connections > 0 && now.duration_since(p.last_frame) < liveness => {
                return Err(format!(
                    "node {node_id} is already connected as incarnation {}; is a second process \
                     running with node.id={node_id}?",
                    hex(&p.incarnation)
                ));
            }
            _ => {
                peers.insert(
                    node_id,
                    LivePeer {
                        incarnation,
                        connections: 1,
                        last_frame: now,
                    },
                );
            }
        }
        Ok(())
    }

    fn heard(&self, node_id: i32, incarnation: [u8; 16]) {
        if let Some(p) = self.peers.borrow_mut().get_mut(&node_id) {
            if p.incarnation == incarnation {
                p.last_frame = std::time::Instant::now();
            }
        }
    }

    fn closed(&self, node_id: i32, incarnation: [u8; 16]) {
        if let Some(p) = self.peers.borrow_mut().get_mut(&node_id) {
            if p.incarnation == incarnation {
                p.connections = p.connections.saturating_sub(1);
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves the controller listener: Hellos checked, Raft messages stepped into the local
/// quorum node, calls answered by the controller.
pub fn start_listener(
    addr: SocketAddr,
    me: Rc<Identity>,
    controller: Weak<Controller>,
) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .map_err(std::io::Error::from)
        .with_context(|| format!("binding the controller listener {addr}"))?;
    tracing::info!(%addr, "controller listener");
    let live = Rc::new(LivePeers::default());
    glommio::spawn_local(async move {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "controller listener accept failed; backing off");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (me, controller, live) = (me.clone(), controller.clone(), live.clone());
            glommio::spawn_local(async move {
                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                if let Err(e) = serve(stream, &me, controller, &live).await {
                    tracing::warn!(peer = ?peer, error = %format!("{e:#}"), "inter-node connection closed");
                }
            })
            .detach();
        }
    })
    .detach();
    Ok(())
}

async fn serve(
    mut s: TcpStream,
    me: &Identity,
    controller: Weak<Controller>,
    live: &LivePeers,
) -> Result<()> {
    s.set_nodelay(true).map_err(std::io::Error::from)?;
    // The Hello must come at once; afterwards a voter's connection may idle between
    // heartbeats (raft's heartbeats keep it busy while a leader lives).
    s.set_read_timeout(Some(me.timeout))
        .map_err(std::io::Error::from)?;
    let first = read_frame(&mut s, me.frame_max).await?;
    let Some((
        _,
        PeerMessage::Hello {
            cluster_id,
            node_id,
            voters,
            incarnation,
        },
    )) = first
    else {
        bail!("the first frame was not a Hello");
    };
    let admitted = wire::check_hello(
        (&me.cluster_id, &me.voters),
        (&cluster_id, &voters),
        node_id,
    )
    .and_then(|()| {
        if node_id == me.node_id && incarnation != me.incarnation {
            return Err(format!(
                "node {node_id} is this node; is a second process running with \
                 node.id={node_id}?"
            ));
        }
        live.admit(node_id, incarnation, me.liveness)
    });
    if let Err(reason) = admitted {
        let _ = write_frame(
            &mut s,
            0,
            &PeerMessage::HelloRefused {
                reason: reason.clone(),
            },
        )
        .await;
        bail!("refused node {node_id}: {reason}");
    }
    let served = serve_admitted(&mut s, me, controller, live, node_id, incarnation).await;
    live.closed(node_id, incarnation);
    served
}

async fn serve_admitted(
    s: &mut TcpStream,
    me: &Identity,
    controller: Weak<Controller>,
    live: &LivePeers,
    node_id: i32,
    incarnation: [u8; 16],
) -> Result<()> {
    write_frame(s, 0, &me.hello()).await?;
    s.set_read_timeout(None).map_err(std::io::Error::from)?;
    loop {
        let Some((correlation, msg)) = read_frame(s, me.frame_max).await? else {
            return Ok(());
        };
        live.heard(node_id, incarnation);
        let Some(c) = controller.upgrade() else {
            return Ok(());
        };
        match msg {
            PeerMessage::Raft(m) => {
                // Raft ids are node.id + 1; a message must come from the node that said
                // Hello and be meant for this one.
                let raft_id = |id: i32| u64::try_from(id).ok().map(|id| id + 1);
                if Some(m.from) != raft_id(node_id) || Some(m.to) != raft_id(me.node_id) {
                    bail!(
                        "node {node_id} sent a Raft message from {} to {} (raft ids)",
                        m.from,
                        m.to
                    );
                }
                c.step_raft(m).await
            }
            PeerMessage::FetchMetadata { after, max_wait_ms } => {
                let reply = c
                    .serve_metadata_fetch(after, Duration::from_millis(u64::from(max_wait_ms)))
                    .await;
                write_frame(s, correlation, &reply).await?;
            }
            PeerMessage::Register { .. }
            | PeerMessage::Heartbeat { .. }
            | PeerMessage::Forward { .. } => {
                let reply = c.answer_call(msg).await;
                write_frame(s, correlation, &reply).await?;
            }
            other => bail!("unexpected {:?} frame", std::mem::discriminant(&other)),
        }
    }
}
