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

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

use anyhow::{Context, Result};
use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};
use protocol::frame::{frame_length, parse_request, FrameError};

use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::api::{dispatch, Ordered, Reply};
use crate::shard::{InflightGuard, Shard};

/// Read buffer per connection (`sluice.connection.read.buffer.bytes` is not configurable
/// yet; frames larger than this are read straight into their own buffer).
const CONNECTION_READ_BUFFER_BYTES: usize = 64 << 10;

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
    let limit = Rc::new(Semaphore::new(
        shard.config.max_connections_per_shard as u64,
    ));
    loop {
        let permit = match limit.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => return,
        };
        let stop = shard.stop_listening.listen();
        if shard.is_stopping() {
            return;
        }
        let accepted = futures::future::select(Box::pin(listener.accept()), stop).await;
        let stream = match accepted {
            futures::future::Either::Left((Ok(s), _)) => s,
            futures::future::Either::Left((Err(e), _)) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
            futures::future::Either::Right(_) => return,
        };
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let m = &shard.metrics;
            m.connections.set(m.connections.get() + 1);
            m.connections_total.set(m.connections_total.get() + 1);
            if let Err(e) = serve_connection(&shard, stream, &peer).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            let m = &shard.metrics;
            m.connections.set(m.connections.get().saturating_sub(1));
            drop(permit);
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
}

async fn serve_connection(
    shard: &Rc<Shard>,
    stream: TcpStream,
    peer: &str,
) -> Result<(), ConnectionEnd> {
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    // The writer gets its own descriptor of the same socket.
    // SAFETY: dup has no memory-safety preconditions; the new descriptor is owned below.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is a freshly duplicated, open socket descriptor that nothing else owns.
    let writer = unsafe { TcpStream::from_raw_fd(fd) };
    let (queue_tx, queue_rx) = local_channel::new_bounded(shard.config.connection_pipeline_depth);
    let writing = glommio::spawn_local(write_responses(
        shard.clone(),
        writer,
        queue_rx,
        peer.to_owned(),
    ));
    let read = read_requests(shard, stream, queue_tx, peer).await;
    let written = writing.await;
    read.and(written)
}

/// A finished request: its reply, and what it holds until the reply is written — the frame's
/// bytes against `queued.max.request.bytes`, and its place in the shard's shutdown drain.
struct Finished {
    reply: Reply,
    _memory: StaticPermit,
    _inflight: InflightGuard,
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
    // Requests of this connection started and not finished.
    let in_progress = Rc::new(std::cell::Cell::new(0usize));
    loop {
        if shard.is_stopping() {
            return Ok(());
        }
        let mut prefix = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut prefix).await {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ConnectionEnd::Eof
            } else {
                e.into()
            });
        }
        let length = frame_length(prefix, max_bytes).inspect_err(|e| {
            tracing::warn!(%peer, error = %e, "closing connection: bad frame length");
        })?;
        // Hold the frame's bytes against the shard's budget until the response is sent.
        let Ok(memory) = shard
            .request_memory
            .acquire_static_permit(length as u64)
            .await
        else {
            return Ok(());
        };
        let mut frame = BytesMut::zeroed(length);
        reader.read_exact(&mut frame).await?;
        let envelope = parse_request(frame.freeze()).inspect_err(|e| {
            tracing::warn!(%peer, error = %e, "closing connection: bad request header");
        })?;
        shard
            .metrics
            .bytes_in
            .set(shard.metrics.bytes_in.get() + 4 + length as u64);
        let (order_tx, order_rx) = oneshot::channel();
        let ordered: Ordered = Rc::new(std::cell::Cell::new(Some(order_tx)));
        let (reply_tx, reply_rx) = oneshot::channel();
        let (task_shard, task_peer) = (shard.clone(), peer.to_owned());
        if in_progress.get() > 0 {
            let m = &shard.metrics;
            m.requests_pipelined.set(m.requests_pipelined.get() + 1);
        }
        in_progress.set(in_progress.get() + 1);
        let task_in_progress = in_progress.clone();
        // Detached: a request runs to completion even if the connection goes away (an append
        // is never abandoned half-way); the writer just finds nobody to answer.
        glommio::spawn_local(async move {
            let inflight = task_shard.begin_request();
            let started = std::time::Instant::now();
            let api = envelope.api_key as i16;
            let reply = dispatch(&task_shard, envelope, &task_peer, ordered.clone()).await;
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
                _inflight: inflight,
            });
        })
        .detach();
        if queue.send(reply_rx).await.is_err() {
            return Ok(()); // the writer stopped (it closed the connection)
        }
        if order_rx.await != Ok(true) {
            return Ok(());
        }
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
            let Ok(finished) = finished.await else {
                return Err(ConnectionEnd::Refused("request task lost".into()));
            };
            match finished.reply {
                Reply::Response(bytes) => {
                    stream.write_all(&bytes).await?;
                    shard
                        .metrics
                        .bytes_out
                        .set(shard.metrics.bytes_out.get() + bytes.len() as u64);
                }
                Reply::Nothing => {}
                Reply::Close(reason) => {
                    tracing::warn!(%peer, %reason, "closing connection");
                    return Err(ConnectionEnd::Refused(reason));
                }
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
