//! The admin HTTP server: Prometheus metrics at `/metrics`, a small JSON API (`/v1/brokers`,
//! `/v1/topics`, `/v1/groups`) and health/readiness (`/v1/health`, `/v1/ready`), on threads
//! of its own bound to `sluice.admin.listen` (default 127.0.0.1:9644). It reads the shards
//! the way shards read each other: a job per shard over the shard inboxes returns a
//! snapshot, so shards keep sharing nothing.
//!
//! An accept thread hands each connection to a thread of its own, so a slow client delays
//! only itself: at most `sluice.admin.max.connections` are served at once (one more is
//! answered 503 and closed at once), and a request head must arrive whole within
//! `sluice.admin.request.timeout.ms` of the accept, however slowly its bytes trickle in
//! (the response has the same allowance to be written). One request per connection.
//!
//! `/v1/health` is 200 only when every shard runs a job within [`HEALTH_ANSWER_TIMEOUT`]; a
//! shard that is stuck (or gone) makes it 503 and is named in the body. `/v1/ready` also
//! needs start-up to have finished.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::BrokerConfig;
use crate::metadata::MetadataImage;
use crate::metrics::{render, ShardSnapshot};
use crate::shard::{Shard, ShardJob};

/// Largest HTTP request head read (`sluice.admin` requests are tiny).
const REQUEST_HEAD_MAX_BYTES: usize = 8 << 10;
/// How long a shard may take to answer a snapshot job.
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long every shard together may take to run the health job; shorter than a typical
/// probe timeout so that a stuck shard turns into a 503 rather than a probe timeout.
const HEALTH_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept: the usual cause, running out of descriptors, persists for a
/// while, and accepting again at once would spin the thread.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one accept-failure warning per this interval, so a long descriptor shortage
/// does not flood the log.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

pub struct Admin {
    pub senders: Vec<flume::Sender<ShardJob>>,
    pub config: Arc<BrokerConfig>,
    pub ready: Arc<AtomicBool>,
}

/// One connection's place under `sluice.admin.max.connections`, given back when dropped
/// (also when its thread cannot be started).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn spawn(listener: TcpListener, admin: Admin) {
    let admin = Arc::new(admin);
    std::thread::Builder::new()
        .name("admin-http".into())
        .spawn(move || accept_loop(listener, admin))
        .expect("spawning the admin thread");
}

fn accept_loop(listener: TcpListener, admin: Arc<Admin>) {
    let open = Arc::new(AtomicUsize::new(0));
    let limit = admin.config.admin_max_connections;
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                    tracing::warn!(error = %e, "admin HTTP connection not accepted");
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(ACCEPT_ERROR_PAUSE);
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= limit {
            open.fetch_sub(1, Ordering::AcqRel);
            refuse(stream);
            continue;
        }
        let slot = Slot(open.clone());
        let admin = admin.clone();
        let spawned = std::thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                let _slot = slot;
                admin.serve(stream);
            });
        if let Err(e) = spawned {
            // The closure, with the stream and the slot, is dropped: the client sees the
            // connection close.
            tracing::warn!(error = %e, "admin HTTP connection thread not started");
        }
    }
}

/// Answers a connection over the limit with 503 on the accept thread without waiting for
/// it: the socket is fresh, so the short reply fits its send buffer, and a client that has
/// not sent its request yet is not waited for.
fn refuse(stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let reply = Response::text(503, "too many admin connections\n").encode();
    let mut s = &stream;
    let _ = s.write_all(&reply);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Reading what already arrived lets the close send a FIN rather than a reset that could
    // discard the reply at the client.
    let mut buf = [0u8; 1024];
    for _ in 0..(REQUEST_HEAD_MAX_BYTES / buf.len()) {
        if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Runs `f` on every shard at once and waits until `deadline` for their answers, in shard
/// order; `None` for a shard whose inbox did not take the job or that did not answer.
fn ask_all<T: Send + 'static>(
    senders: &[flume::Sender<ShardJob>],
    f: impl Fn(&Shard) -> T + Clone + Send + 'static,
    deadline: Instant,
) -> Vec<Option<T>> {
    let pending: Vec<_> = senders
        .iter()
        .map(|sender| {
            let (tx, rx) = flume::bounded(1);
            let f = f.clone();
            let job: ShardJob = Box::new(move |shard| {
                Box::pin(async move {
                    let _ = tx.send(f(&shard));
                })
            });
            sender.send_deadline(job, deadline).ok().map(|_| rx)
        })
        .collect();
    pending
        .into_iter()
        .map(|rx| rx?.recv_deadline(deadline).ok())
        .collect()
}

/// An HTTP response before encoding.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: body.to_owned(),
        }
    }

    fn json(status: u16, body: serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: format!("{body}\n"),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            _ => "Service Unavailable",
        };
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// `/v1/health`: 200 when every one of `shards` answered, else 503 naming those that did not.
fn health(shards: usize, unanswered: &[usize]) -> Response {
    if unanswered.is_empty() {
        Response::json(200, json!({"status": "ok", "shards": shards}))
    } else {
        Response::json(
            503,
            json!({"status": "unavailable", "shards": shards, "unanswered_shards": unanswered}),
        )
    }
}

/// `/v1/ready`: 200 once start-up finished and while every shard answers.
fn readiness(started: bool, unanswered: &[usize]) -> Response {
    if started && unanswered.is_empty() {
        Response::json(200, json!({"ready": true}))
    } else {
        Response::json(
            503,
            json!({"ready": false, "started": started, "unanswered_shards": unanswered}),
        )
    }
}

/// What reading a request head came to.
enum Head {
    Complete(Vec<u8>),
    /// Larger than [`REQUEST_HEAD_MAX_BYTES`].
    TooLarge,
    /// The client closed before finishing it.
    Closed,
    /// The deadline passed first.
    TimedOut,
}

/// Reads up to the blank line ending the head. Each read may wait only for what is left
/// until `deadline`, so bytes that trickle in do not extend it.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Head> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Head::TimedOut)
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(Head::Closed);
        }
        if head.len() + n > REQUEST_HEAD_MAX_BYTES {
            return Ok(Head::TooLarge);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Head::Complete(head))
}

/// Writes all of `bytes` by `deadline`, however slowly the client reads.
fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Admin {
    fn snapshots(&self) -> Vec<ShardSnapshot> {
        ask_all(
            &self.senders,
            |shard| shard.snapshot(),
            Instant::now() + SHARD_ANSWER_TIMEOUT,
        )
        .into_iter()
        .flatten()
        .collect()
    }

    fn image(&self) -> Option<Arc<MetadataImage>> {
        let first = self.senders.first()?;
        ask_all(
            std::slice::from_ref(first),
            |shard| shard.metadata(),
            Instant::now() + SHARD_ANSWER_TIMEOUT,
        )
        .pop()
        .flatten()
    }

    /// The shards that did not run a trivial job within [`HEALTH_ANSWER_TIMEOUT`].
    fn unanswered_shards(&self) -> Vec<usize> {
        ask_all(
            &self.senders,
            |_| (),
            Instant::now() + HEALTH_ANSWER_TIMEOUT,
        )
        .iter()
        .enumerate()
        .filter(|(_, answer)| answer.is_none())
        .map(|(i, _)| i)
        .collect()
    }

    /// Serves one connection: one request, then close.
    fn serve(&self, mut stream: TcpStream) {
        let timeout = Duration::from_millis(self.config.admin_request_timeout_ms);
        let response = match read_head(&mut stream, Instant::now() + timeout) {
            Ok(Head::Complete(head)) => self.route(&head),
            Ok(Head::TooLarge) => Response::text(400, "bad request\n"),
            Ok(Head::TimedOut) => Response::text(408, "request timeout\n"),
            Ok(Head::Closed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "admin request failed");
                return;
            }
        };
        if let Err(e) = write_by(&mut stream, &response.encode(), Instant::now() + timeout) {
            tracing::debug!(error = %e, "admin response not written");
        }
    }

    fn route(&self, head: &[u8]) -> Response {
        let line = String::from_utf8_lossy(head);
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if method != "GET" {
            return Response::text(405, "only GET\n");
        }
        match path.split('?').next().unwrap_or("") {
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: render(&self.snapshots()),
            },
            "/v1/health" => health(self.senders.len(), &self.unanswered_shards()),
            "/v1/ready" => {
                // Read before asking, so that a broker that finishes starting meanwhile
                // is still reported as not ready rather than ready without the check.
                let started = self.ready.load(Ordering::Acquire);
                readiness(started, &self.unanswered_shards())
            }
            "/v1/brokers" => {
                let c = &self.config;
                let cluster = self
                    .senders
                    .first()
                    .and_then(|first| {
                        ask_all(
                            std::slice::from_ref(first),
                            |shard| shard.controller.as_ref().map(|c| c.describe()),
                            Instant::now() + SHARD_ANSWER_TIMEOUT,
                        )
                        .pop()
                        .flatten()
                        .flatten()
                    })
                    .unwrap_or(serde_json::Value::Null);
                Response::json(
                    200,
                    json!({
                        "this": {
                            "node_id": c.node_id, "host": c.advertised_host,
                            "port": c.advertised_port, "shards": c.smp,
                            "data_dir": c.data_dir.display().to_string(),
                        },
                        "cluster": cluster,
                    }),
                )
            }
            "/v1/topics" => {
                let image = self.image().unwrap_or_default();
                let shards = self.snapshots();
                let topics: Vec<_> = image
                    .topics
                    .iter()
                    .map(|(name, t)| {
                        let mut parts: Vec<_> = shards
                            .iter()
                            .enumerate()
                            .flat_map(|(i, s)| s.partitions.iter().map(move |p| (i, p)))
                            .filter(|(_, p)| &p.topic == name)
                            .map(|(shard, p)| {
                                let index = t
                                    .partitions
                                    .get(p.partition as usize)
                                    .map(|m| m.shard_index.0);
                                json!({"partition": p.partition, "log_start_offset": p.log_start,
                                "log_end_offset": p.log_end, "size_bytes": p.size_bytes,
                                "shard_index": index, "shard": shard})
                            })
                            .collect();
                        parts.sort_by_key(|p| p["partition"].as_i64());
                        json!({"name": name, "id": t.id, "partitions": parts, "configs": t.configs})
                    })
                    .collect();
                Response::json(200, json!(topics))
            }
            "/v1/groups" => {
                let shards = self.snapshots();
                let ends: std::collections::BTreeMap<(String, i32), i64> = shards
                    .iter()
                    .flat_map(|s| s.partitions.iter())
                    .map(|p| ((p.topic.clone(), p.partition), p.log_end))
                    .collect();
                let ends = &ends;
                let groups: Vec<_> = shards
                    .iter()
                    .flat_map(|s| {
                        s.groups.iter().map(move |(g, state, ptype, members)| {
                            let offsets: Vec<_> = s
                                .committed
                                .iter()
                                .filter(|(cg, ..)| cg == g)
                                .map(|(_, t, p, o)| {
                                    let end = ends.get(&(t.clone(), *p)).copied();
                                    json!({"topic": t, "partition": p, "committed": o,
                                        "lag": end.map(|e| (e - o).max(0))})
                                })
                                .collect();
                            json!({"group": g, "state": state, "protocol_type": ptype,
                                "members": members, "offsets": offsets})
                        })
                    })
                    .collect();
                Response::json(200, json!(groups))
            }
            _ => Response::text(404, "not found\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Response) -> serde_json::Value {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn health_is_503_and_names_the_shards_that_did_not_answer() {
        let ok = health(2, &[]);
        assert_eq!(ok.status, 200);
        assert_eq!(body(&ok)["status"], "ok");
        let bad = health(3, &[1, 2]);
        assert_eq!(bad.status, 503);
        assert_eq!(body(&bad)["unanswered_shards"], json!([1, 2]));
        assert!(String::from_utf8(bad.encode())
            .unwrap()
            .starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    }

    #[test]
    fn ready_needs_start_up_and_every_shard() {
        assert_eq!(readiness(true, &[]).status, 200);
        assert_eq!(readiness(false, &[]).status, 503);
        let stuck = readiness(true, &[0]);
        assert_eq!(stuck.status, 503);
        assert_eq!(body(&stuck)["unanswered_shards"], json!([0]));
    }
}
