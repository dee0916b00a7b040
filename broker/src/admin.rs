//! The admin HTTP server: Prometheus metrics at `/metrics`, a small JSON API (`/v1/brokers`,
//! `/v1/topics`, `/v1/groups`) and health/readiness (`/v1/health`, `/v1/ready`), on a thread
//! of its own bound to `sluice.admin.listen` (default 127.0.0.1:9644). It reads the shards
//! the way shards read each other: a job per shard over the shard inboxes returns a
//! snapshot, so shards keep sharing nothing. One request at a time; requests are small.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::BrokerConfig;
use crate::metadata::MetadataImage;
use crate::metrics::{render, ShardSnapshot};
use crate::shard::{Shard, ShardJob};

/// Largest HTTP request head read (`sluice.admin` requests are tiny).
const REQUEST_HEAD_MAX_BYTES: usize = 8 << 10;
/// How long a shard may take to answer a snapshot job.
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Admin {
    pub senders: Vec<flume::Sender<ShardJob>>,
    pub config: Arc<BrokerConfig>,
    pub ready: Arc<AtomicBool>,
}

pub fn spawn(listener: TcpListener, admin: Admin) {
    std::thread::Builder::new()
        .name("admin-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Err(e) = admin.handle(stream) {
                    tracing::debug!(error = %e, "admin request failed");
                }
            }
        })
        .expect("spawning the admin thread");
}

/// Runs `f` on one shard and waits for its answer.
fn ask<T: Send + 'static>(
    sender: &flume::Sender<ShardJob>,
    f: impl FnOnce(&Shard) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = flume::bounded(1);
    let job: ShardJob = Box::new(move |shard| {
        Box::pin(async move {
            let _ = tx.send(f(&shard));
        })
    });
    sender.send_timeout(job, SHARD_ANSWER_TIMEOUT).ok()?;
    rx.recv_timeout(SHARD_ANSWER_TIMEOUT).ok()
}

impl Admin {
    fn snapshots(&self) -> Vec<ShardSnapshot> {
        self.senders
            .iter()
            .filter_map(|s| ask(s, |shard| shard.snapshot()))
            .collect()
    }

    fn image(&self) -> Option<Arc<MetadataImage>> {
        ask(self.senders.first()?, |shard| shard.metadata())
    }

    fn handle(&self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 || head.len() + n > REQUEST_HEAD_MAX_BYTES {
                return respond(&mut stream, 400, "text/plain", "bad request\n");
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if method != "GET" {
            return respond(&mut stream, 405, "text/plain", "only GET\n");
        }
        match path.split('?').next().unwrap_or("") {
            "/metrics" => {
                let body = render(&self.snapshots());
                respond(&mut stream, 200, "text/plain; version=0.0.4", &body)
            }
            "/v1/health" => respond(
                &mut stream,
                200,
                "application/json",
                "{\"status\":\"ok\"}\n",
            ),
            "/v1/ready" => {
                if self.ready.load(Ordering::Acquire) {
                    respond(&mut stream, 200, "application/json", "{\"ready\":true}\n")
                } else {
                    respond(&mut stream, 503, "application/json", "{\"ready\":false}\n")
                }
            }
            "/v1/brokers" => {
                let c = &self.config;
                let body = json!([{
                    "node_id": c.node_id, "host": c.advertised_host, "port": c.advertised_port,
                    "shards": c.smp, "data_dir": c.data_dir.display().to_string(),
                }]);
                respond(&mut stream, 200, "application/json", &body.to_string())
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
                            .flat_map(|s| s.partitions.iter())
                            .filter(|p| &p.topic == name)
                            .map(|p| {
                                json!({"partition": p.partition, "log_start_offset": p.log_start,
                                "log_end_offset": p.log_end, "size_bytes": p.size_bytes})
                            })
                            .collect();
                        parts.sort_by_key(|p| p["partition"].as_i64());
                        json!({"name": name, "id": t.id, "partitions": parts, "configs": t.configs})
                    })
                    .collect();
                respond(
                    &mut stream,
                    200,
                    "application/json",
                    &json!(topics).to_string(),
                )
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
                respond(
                    &mut stream,
                    200,
                    "application/json",
                    &json!(groups).to_string(),
                )
            }
            _ => respond(&mut stream, 404, "text/plain", "not found\n"),
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
