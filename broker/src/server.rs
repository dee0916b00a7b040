//! The Kafka listener of one shard and its connections.
//!
//! Every shard binds the same address (glommio sets SO_REUSEPORT) and the kernel spreads
//! connections over them. A connection is two tasks: the reader reads one size-prefixed
//! frame at a time (its length checked against `socket.request.max.bytes` before
//! allocating) and starts the request as its own task; the writer sends the responses in
//! request order. The reader reads the next request once the current one is *ordered*: for
//! most requests that is when they complete (one at a time, as Kafka), for Produce when its
//! records are appended — so pipelined produce requests share fdatasync rounds instead of
//! each waiting for its own, while appends keep the connection's order. At most
//! `sluice.connection.pipeline.depth` requests are in progress per connection. Anything that
//! cannot be parsed closes the connection with a log line; the shard keeps serving others.
//!
//! No client can pin the broker's memory or starve other clients:
//! - a frame's bytes are reserved against `queued.max.request.bytes` as they arrive (in
//!   doubling steps), not when its length prefix declares them, and the whole frame must
//!   arrive within `sluice.request.read.timeout.ms`;
//! - as in Kafka, a request other than Produce is answered — its reply written — before the
//!   next one is read, so a client that does not read pins one reply, not a pipeline of
//!   them; a write that makes no progress for `sluice.connection.write.timeout.ms` closes the
//!   connection; a client that hangs up while its request waits (a JoinGroup in a long
//!   rebalance) is noticed at once, not when the request ends;
//! - `connections.max.idle.ms` closes idle connections; `max.connections` (broker-wide) and
//!   `max.connections.per.ip` refuse connections over them as soon as they are accepted;
//! - the accept loop backs off when the process is out of file descriptors (EMFILE/ENFILE)
//!   while open connections keep being served;
//! - connection-level warnings are rate-limited per shard; what is left out is counted in
//!   `sluice_log_lines_suppressed_total`.
//!
//! A connection whose first bytes are a TLS handshake record is a TLS client on this
//! plaintext listener: it is logged as such and closed, not read as a 369 MB frame.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::StaticPermit;
use protocol::frame::{frame_length, is_tls_handshake, parse_request, FrameError};

use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::api::{dispatch, Held, Ordered, Reply};
use crate::shard::{InflightGuard, Shard};

/// Read buffer per connection (`sluice.connection.read.buffer.bytes` is not configurable
/// yet; frames larger than this are read straight into their own buffer).
const CONNECTION_READ_BUFFER_BYTES: usize = 64 << 10;

/// First step of a frame's memory reservation; each further step doubles what is reserved.
const FRAME_RESERVE_STEP_MIN_BYTES: usize = 64 << 10;

/// A request still in progress after this gets its connection watched for a hang-up.
const HANGUP_WATCH_AFTER: Duration = Duration::from_millis(50);

/// Back-off of the accept loop after an accept error (out of descriptors, ...).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connection-level warnings a shard writes per [`WARN_WINDOW`]; the rest are counted.
const WARNINGS_PER_WINDOW_MAX: u64 = 20;
const WARN_WINDOW: Duration = Duration::from_secs(10);

/// Client connections open in this process: the one piece of state shards share, touched
/// once when a connection is accepted and once when it closes (an atomic and a small map),
/// never per request.
struct ConnectionCounts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

static CONNECTIONS: LazyLock<ConnectionCounts> = LazyLock::new(|| ConnectionCounts {
    total: AtomicUsize::new(0),
    per_ip: Mutex::new(HashMap::new()),
});

/// One admitted connection's place in [`CONNECTIONS`], given back when dropped.
struct ConnectionSlot {
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        CONNECTIONS.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = CONNECTIONS.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Takes a place for a connection from `ip`, or says which limit refuses it.
fn admit(
    ip: Option<IpAddr>,
    max_total: usize,
    max_per_ip: usize,
) -> Result<ConnectionSlot, String> {
    let total = CONNECTIONS.total.fetch_add(1, Ordering::AcqRel) + 1;
    // From here on the slot gives the count back whatever happens.
    let mut slot = ConnectionSlot { ip: None };
    if total > max_total {
        return Err(format!("max.connections={max_total} reached"));
    }
    if let Some(ip) = ip {
        let mut per_ip = CONNECTIONS.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(format!(
                "max.connections.per.ip={max_per_ip} reached for {ip}"
            ));
        }
        *n += 1;
        slot.ip = Some(ip);
    }
    Ok(slot)
}

/// Per-shard rate limit for connection-level warnings (one bad client must not fill the
/// disk with log lines).
#[derive(Default)]
pub struct WarnLimiter {
    window_start: std::cell::Cell<Option<Instant>>,
    written: std::cell::Cell<u64>,
    suppressed_in_window: std::cell::Cell<u64>,
}

impl WarnLimiter {
    /// Whether a warning may be written now; `Some(n)` carries how many were left out since
    /// the last one written. Counts left-out lines in the shard's metrics.
    fn admit(&self, shard: &Shard) -> Option<u64> {
        let now = Instant::now();
        let fresh = self
            .window_start
            .get()
            .is_none_or(|t| now.duration_since(t) >= WARN_WINDOW);
        if fresh {
            self.window_start.set(Some(now));
            self.written.set(0);
        }
        if self.written.get() >= WARNINGS_PER_WINDOW_MAX {
            self.suppressed_in_window
                .set(self.suppressed_in_window.get() + 1);
            let m = &shard.metrics;
            m.log_lines_suppressed.set(m.log_lines_suppressed.get() + 1);
            return None;
        }
        self.written.set(self.written.get() + 1);
        Some(self.suppressed_in_window.replace(0))
    }
}

/// A connection-level warning, rate-limited per shard. `peer` and `reason` may carry client
/// bytes, so they are written escaped (Debug).
pub(crate) fn warn_connection(
    shard: &Shard,
    peer: &str,
    what: &str,
    reason: &dyn std::fmt::Display,
) {
    if let Some(suppressed) = shard.warn_limiter.admit(shard) {
        let reason = reason.to_string();
        tracing::warn!(peer = ?peer, reason = ?reason, suppressed, "{what}");
    }
}

/// Binds this shard's listener on `addr` and spawns its accept loop; returns the bound
/// address (its port resolved when `addr` asked for port 0).
pub fn start_listener(shard: Rc<Shard>, addr: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .map_err(std::io::Error::from)
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr().map_err(std::io::Error::from)?;
    shard.listen_port.set(addr.port());
    glommio::spawn_local(accept_loop(shard, listener)).detach();
    Ok(addr)
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let stop = shard.stop_listening.listen();
        if shard.is_stopping() {
            return;
        }
        let accepted = futures::future::select(Box::pin(listener.accept()), stop).await;
        // A connection needs two descriptors (the writer has its own), so running out of
        // descriptors can show at either: both are an accept failure, warned and backed off.
        let accepted = match accepted {
            futures::future::Either::Left((Ok(s), _)) => writer_of(&s).map(|w| (s, w)),
            futures::future::Either::Left((Err(e), _)) => Err(std::io::Error::from(e)),
            futures::future::Either::Right(_) => return,
        };
        let (stream, writer) = match accepted {
            Ok(pair) => {
                backoff = ACCEPT_BACKOFF_MIN;
                pair
            }
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: retrying at once would spin.
                // Open connections keep being served meanwhile.
                let m = &shard.metrics;
                m.accept_failures.set(m.accept_failures.get() + 1);
                warn_connection(&shard, "-", "accept failed; backing off", &e);
                let stop = shard.stop_listening.listen();
                if shard.is_stopping() {
                    return;
                }
                futures::future::select(Box::pin(glommio::timer::sleep(backoff)), stop).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let peer_addr = stream.peer_addr().ok();
        let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
        let slot = match admit(
            peer_addr.map(|a| a.ip()),
            shard.config.max_connections,
            shard.config.max_connections_per_ip,
        ) {
            Ok(slot) => slot,
            Err(reason) => {
                let m = &shard.metrics;
                m.connections_refused.set(m.connections_refused.get() + 1);
                warn_connection(&shard, &peer, "connection refused", &reason);
                drop(stream);
                continue;
            }
        };
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let m = &shard.metrics;
            m.connections.set(m.connections.get() + 1);
            m.connections_total.set(m.connections_total.get() + 1);
            if let Err(e) = serve_connection(&shard, stream, writer, &peer).await {
                tracing::debug!(peer = ?peer, error = %e, "connection ended");
            }
            let m = &shard.metrics;
            m.connections.set(m.connections.get().saturating_sub(1));
            drop(slot);
        })
        .detach();
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("peer closed the connection")]
    Eof,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Refused(String),
    #[error("timed out: {0}")]
    TimedOut(&'static str),
}

/// The connection's writer: its own descriptor of the same socket.
fn writer_of(stream: &TcpStream) -> std::io::Result<TcpStream> {
    // SAFETY: dup has no memory-safety preconditions; the new descriptor is owned below.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly duplicated, open socket descriptor that nothing else owns.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

async fn serve_connection(
    shard: &Rc<Shard>,
    stream: TcpStream,
    writer: TcpStream,
    peer: &str,
) -> Result<(), ConnectionEnd> {
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    writer
        .set_write_timeout(Some(Duration::from_millis(
            shard.config.connection_write_timeout_ms,
        )))
        .map_err(std::io::Error::from)?;
    let (queue_tx, queue_rx) = local_channel::new_bounded(shard.config.connection_pipeline_depth);
    let writing = glommio::spawn_local(write_responses(
        shard.clone(),
        writer,
        queue_rx,
        peer.to_owned(),
    ));
    let read = read_requests(shard, stream, queue_tx, peer).await;
    if matches!(
        read,
        Err(ConnectionEnd::Eof | ConnectionEnd::Io(_) | ConnectionEnd::TimedOut(_))
    ) {
        // The peer is gone (or too slow to keep): nobody will read what is queued. Dropping
        // the writer cancels it, so replies still being computed (a JoinGroup waiting for a
        // rebalance) do not keep the connection open; the requests themselves run on.
        drop(writing);
        return read;
    }
    let written = writing.await;
    read.and(written)
}

/// A finished request: its reply, and what it holds until the reply is written — the frame's
/// bytes against `queued.max.request.bytes`, and its place in the shard's shutdown drain.
struct Finished {
    reply: Reply,
    _memory: Vec<StaticPermit>,
    /// What the handler reserved for its reply (a Fetch's response memory).
    _held: Held,
    _inflight: InflightGuard,
    /// Told once the reply is written (the reader waits for it before reading the next
    /// request, except after a Produce).
    written: Option<oneshot::Sender<()>>,
}

/// Reads requests and starts each as a task; its reply goes to the writer through `queue`.
async fn read_requests(
    shard: &Rc<Shard>,
    stream: TcpStream,
    queue: LocalSender<oneshot::Receiver<Finished>>,
    peer: &str,
) -> Result<(), ConnectionEnd> {
    let mut reader = BufReader::with_capacity(CONNECTION_READ_BUFFER_BYTES, stream);
    let max_bytes = shard.config.socket_request_max_bytes;
    let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
    let frame_timeout = Duration::from_millis(shard.config.request_read_timeout_ms);
    // Requests of this connection started and not finished.
    let in_progress = Rc::new(std::cell::Cell::new(0usize));
    let mut first_frame = true;
    loop {
        if shard.is_stopping() {
            return Ok(());
        }
        let mut prefix = [0u8; 4];
        set_read_timeout(&reader, idle)?;
        if let Err(e) = reader.read_exact(&mut prefix).await {
            return Err(match e.kind() {
                std::io::ErrorKind::UnexpectedEof => ConnectionEnd::Eof,
                std::io::ErrorKind::TimedOut => ConnectionEnd::TimedOut("idle connection"),
                _ => e.into(),
            });
        }
        if std::mem::take(&mut first_frame) && is_tls_handshake(prefix) {
            let reason = "its first bytes are a TLS handshake record (ClientHello); the client \
                          must use security.protocol=PLAINTEXT with this listener";
            warn_connection(
                shard,
                peer,
                "closing connection: a TLS client reached a plaintext listener",
                &reason,
            );
            return Err(ConnectionEnd::Refused(reason.into()));
        }
        let deadline = Instant::now() + frame_timeout;
        let length = frame_length(prefix, max_bytes).inspect_err(|e| {
            warn_connection(shard, peer, "closing connection: bad frame length", e);
        })?;
        let Some((frame, memory)) = read_frame(shard, &mut reader, length, deadline, peer).await?
        else {
            return Ok(()); // the shard is stopping
        };
        let envelope = parse_request(frame.freeze()).inspect_err(|e| {
            warn_connection(shard, peer, "closing connection: bad request header", e);
        })?;
        shard
            .metrics
            .bytes_in
            .set(shard.metrics.bytes_in.get() + 4 + length as u64);
        let (order_tx, order_rx) = oneshot::channel();
        let ordered: Ordered = Rc::new(std::cell::Cell::new(Some(order_tx)));
        let (reply_tx, reply_rx) = oneshot::channel();
        let (written_tx, written_rx) = oneshot::channel();
        let held: Held = Rc::new(RefCell::new(Vec::new()));
        let (task_shard, task_peer) = (shard.clone(), peer.to_owned());
        if in_progress.get() > 0 {
            let m = &shard.metrics;
            m.requests_pipelined.set(m.requests_pipelined.get() + 1);
        }
        in_progress.set(in_progress.get() + 1);
        let task_in_progress = in_progress.clone();
        let api = envelope.api_key as i16;
        // Detached: a request runs to completion even if the connection goes away (an append
        // is never abandoned half-way); the writer just finds nobody to answer.
        glommio::spawn_local(async move {
            let inflight = task_shard.begin_request();
            let started = Instant::now();
            let reply = dispatch(
                &task_shard,
                envelope,
                &task_peer,
                ordered.clone(),
                held.clone(),
            )
            .await;
            if let Some(tx) = ordered.take() {
                let _ = tx.send(!matches!(reply, Reply::Close(_)));
            }
            if !matches!(reply, Reply::Close(_)) {
                task_shard
                    .metrics
                    .request(api, started.elapsed().as_secs_f64());
            }
            task_in_progress.set(task_in_progress.get() - 1);
            let _ = reply_tx.send(Finished {
                reply,
                _memory: memory,
                _held: held,
                _inflight: inflight,
                written: Some(written_tx),
            });
        })
        .detach();
        if queue.send(reply_rx).await.is_err() {
            return Ok(()); // the writer stopped (it closed the connection)
        }
        match unless_hung_up(order_rx, reader.get_ref()).await {
            Some(Ok(true)) => {}
            Some(_) => return Ok(()),
            None => return Err(ConnectionEnd::Eof),
        }
        // As Kafka: the next request is read once this one's reply is written, so a client
        // that does not read pins one reply. Produce replies are small and pipelined.
        if api != kafka_protocol::messages::ApiKey::Produce as i16 {
            match unless_hung_up(written_rx, reader.get_ref()).await {
                Some(Ok(())) => {}
                Some(Err(_)) => return Ok(()), // the writer stopped
                None => return Err(ConnectionEnd::Eof),
            }
        }
    }
}

fn set_read_timeout(reader: &BufReader<TcpStream>, timeout: Duration) -> Result<(), ConnectionEnd> {
    reader
        .get_ref()
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| ConnectionEnd::Io(e.into()))
}

/// Reads a frame of `length` bytes that must be complete by `deadline`, reserving its memory
/// against `queued.max.request.bytes` as its bytes arrive: a client that declares a large
/// frame and sends little holds little. `None` when the shard stops meanwhile.
async fn read_frame(
    shard: &Shard,
    reader: &mut BufReader<TcpStream>,
    length: usize,
    deadline: Instant,
    peer: &str,
) -> Result<Option<(BytesMut, Vec<StaticPermit>)>, ConnectionEnd> {
    let mut frame = BytesMut::new();
    let mut permits = Vec::new();
    let timed_out = || {
        let m = &shard.metrics;
        m.connections_timed_out
            .set(m.connections_timed_out.get() + 1);
        warn_connection(
            shard,
            peer,
            "closing connection",
            &format_args!("a frame of {length} bytes did not arrive in time"),
        );
        ConnectionEnd::TimedOut("frame")
    };
    // `frame` grows (zeroed once) as memory is reserved; `filled` is how much has arrived.
    let mut filled = 0usize;
    while filled < length {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        if filled == frame.len() {
            let step = frame
                .len()
                .max(FRAME_RESERVE_STEP_MIN_BYTES)
                .min(length - frame.len());
            let acquire = shard.request_memory.acquire_static_permit(step as u64);
            let permit = match futures::future::select(
                Box::pin(acquire),
                Box::pin(glommio::timer::sleep(left)),
            )
            .await
            {
                futures::future::Either::Left((Ok(p), _)) => p,
                futures::future::Either::Left((Err(_), _)) => return Ok(None),
                futures::future::Either::Right(_) => return Err(timed_out()),
            };
            permits.push(permit);
            frame.resize(frame.len() + step, 0);
        }
        set_read_timeout(reader, left)?;
        let n = match reader.read(&mut frame[filled..]).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(timed_out()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(ConnectionEnd::Eof);
        }
        filled += n;
    }
    Ok(Some((frame, permits)))
}

/// Awaits `fut` unless the peer hangs up first (`None`). A peer that sends more meanwhile
/// (its next request) is simply waited for.
async fn unless_hung_up<T>(
    fut: impl std::future::Future<Output = T>,
    stream: &TcpStream,
) -> Option<T> {
    // Most requests finish quickly: watch the socket only for those that wait, so a quick
    // request costs no extra socket operation.
    let fut = Box::pin(fut);
    let fut =
        match futures::future::select(fut, Box::pin(glommio::timer::sleep(HANGUP_WATCH_AFTER)))
            .await
        {
            futures::future::Either::Left((v, _)) => return Some(v),
            futures::future::Either::Right((_, fut)) => fut,
        };
    let peek = async {
        let mut byte = [0u8; 1];
        stream.peek(&mut byte).await.map_err(std::io::Error::from)
    };
    match futures::future::select(fut, Box::pin(peek)).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right((Ok(0), _)) => None,
        futures::future::Either::Right((Ok(_), fut)) => Some(fut.await),
        // A read timeout (the idle one) is no hang-up: keep waiting.
        futures::future::Either::Right((Err(e), fut))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            Some(fut.await)
        }
        futures::future::Either::Right((Err(_), _)) => None,
    }
}

/// Writes replies in request order; on a refusal or a write error it shuts the socket down,
/// which also ends the reader.
async fn write_responses(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    queue: LocalReceiver<oneshot::Receiver<Finished>>,
    peer: String,
) -> Result<(), ConnectionEnd> {
    let result = async {
        while let Some(finished) = queue.recv().await {
            // `finished` holds the request's memory and drain place until it is written.
            let Ok(mut finished) = finished.await else {
                return Err(ConnectionEnd::Refused("request task lost".into()));
            };
            match &finished.reply {
                Reply::Response(bytes) => {
                    if let Err(e) = stream.write_all(bytes).await {
                        if e.kind() == std::io::ErrorKind::TimedOut {
                            let m = &shard.metrics;
                            m.connections_timed_out
                                .set(m.connections_timed_out.get() + 1);
                            warn_connection(
                                &shard,
                                &peer,
                                "closing connection: client does not read",
                                &e,
                            );
                        }
                        return Err(e.into());
                    }
                    shard
                        .metrics
                        .bytes_out
                        .set(shard.metrics.bytes_out.get() + bytes.len() as u64);
                }
                Reply::Nothing => {}
                Reply::Close(reason) => {
                    warn_connection(&shard, &peer, "closing connection", reason);
                    return Err(ConnectionEnd::Refused(reason.clone()));
                }
            }
            if let Some(tx) = finished.written.take() {
                let _ = tx.send(());
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        // SAFETY: shutting down a socket we hold open has no memory-safety preconditions.
        unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
    }
    result
}
