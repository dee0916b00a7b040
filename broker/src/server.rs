//! The Kafka listener of one shard and its connections.
//!
//! Every shard binds the same address (glommio sets SO_REUSEPORT) and the kernel spreads
//! connections over them. A connection reads one size-prefixed frame at a time, checks its
//! length against `socket.request.max.bytes` before allocating, and processes requests in
//! order, one at a time, as Kafka does — so responses leave in request order. Anything that
//! cannot be parsed closes the connection with a log line; the shard keeps serving others.

use std::net::SocketAddr;
use std::rc::Rc;

use anyhow::{Context, Result};
use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use protocol::frame::{frame_length, parse_request, FrameError};

use crate::api::{dispatch, Reply};
use crate::shard::Shard;

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
    let mut reader = BufReader::with_capacity(CONNECTION_READ_BUFFER_BYTES, stream);
    let max_bytes = shard.config.socket_request_max_bytes;
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
        let Ok(_memory) = shard
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
        let _inflight = shard.begin_request();
        let started = std::time::Instant::now();
        let api = envelope.api_key as i16;
        shard
            .metrics
            .bytes_in
            .set(shard.metrics.bytes_in.get() + 4 + length as u64);
        let reply = dispatch(shard, envelope, peer).await;
        if !matches!(reply, Reply::Close(_)) {
            shard.metrics.request(api, started.elapsed().as_secs_f64());
        }
        match reply {
            Reply::Response(bytes) => {
                let stream = reader.get_mut();
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
}
