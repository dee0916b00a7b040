//! Per-shard metrics (plain cells, no locks: each shard counts its own) and their Prometheus
//! text rendering. The admin server (`admin.rs`) asks every shard for a [`ShardSnapshot`]
//! over the shard inboxes and renders them together, labelled by shard.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;

use kafka_protocol::messages::ApiKey;
use storage::group_commit::{SyncLatency, SYNC_LATENCY_BUCKETS_US};

/// Upper bounds (seconds) of the request latency buckets.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default, Clone, Debug)]
pub struct Histogram {
    /// Cumulative: observations at or below each bound of [`LATENCY_BUCKETS_S`].
    pub buckets: [u64; 12],
    pub count: u64,
    pub sum_s: f64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum_s += secs;
    }
}

/// One shard's counters, updated on the shard only.
#[derive(Default)]
pub struct Metrics {
    /// Request latency (and count) by API key.
    pub requests: RefCell<BTreeMap<i16, Histogram>>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub connections: Cell<u64>,
    pub connections_total: Cell<u64>,
    /// Requests read while an earlier request of the same connection was in progress.
    pub requests_pipelined: Cell<u64>,
    /// Jobs this shard sent to other shards.
    pub cross_core_sent: Cell<u64>,
    /// Connections closed at accept: over `max.connections` or `max.connections.per.ip`.
    pub connections_refused: Cell<u64>,
    /// Accepts that failed (out of descriptors or memory) and were backed off from.
    pub accept_failures: Cell<u64>,
    /// Fetch response bytes this shard's replica fetchers received.
    pub replica_fetch_bytes: Cell<u64>,
    /// Connections closed because a frame did not arrive or a reply was not read in time.
    pub connections_timed_out: Cell<u64>,
    /// Connection warnings left out of the log by the rate limit.
    pub log_lines_suppressed: Cell<u64>,
    /// ISR shrinks and expansions this shard's leaders had committed.
    pub isr_shrinks: Cell<u64>,
    pub isr_expands: Cell<u64>,
}

impl Metrics {
    pub fn request(&self, api: i16, secs: f64) {
        self.requests
            .borrow_mut()
            .entry(api)
            .or_default()
            .observe(secs);
    }
}

/// A partition as the metrics show it.
#[derive(Debug, Clone)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    pub log_start: i64,
    pub log_end: i64,
    pub size_bytes: u64,
    pub high_watermark: i64,
    /// On a leader: each follower's id, lag in offsets behind the log end, and
    /// milliseconds since it was last caught up.
    pub follower_lag: Vec<(i32, i64, u64)>,
}

/// Everything one shard reports, sendable across cores.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub requests: Vec<(i16, Histogram)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: u64,
    pub connections_total: u64,
    pub requests_pipelined: u64,
    pub cross_core_sent: u64,
    pub connections_refused: u64,
    pub accept_failures: u64,
    pub connections_timed_out: u64,
    pub log_lines_suppressed: u64,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Partitions this shard leads whose ISR is smaller than their replica set.
    pub under_replicated: u64,
    /// Partitions this shard holds a replica of that have no leader.
    pub offline_partitions: u64,
    /// Record bytes this shard's replica fetchers received.
    pub replica_fetch_bytes: u64,
    pub sync_latency: SyncLatency,
    pub partitions: Vec<PartitionStats>,
    /// (group, topic, partition, committed offset) of the groups this shard coordinates.
    pub committed: Vec<(String, String, i32, i64)>,
    /// (group, state, protocol type, members) of the groups this shard coordinates.
    pub groups: Vec<(String, String, String, usize)>,
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| key.to_string())
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-shard metric: name, type, help, value.
type ShardFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardSnapshot) -> u64,
);
/// A per-partition gauge: name, help, value.
type PartitionFamily = (&'static str, &'static str, fn(&PartitionStats) -> String);

/// Renders every shard's snapshot in the Prometheus text exposition format (0.0.4).
pub fn render(shards: &[ShardSnapshot]) -> String {
    let mut out = String::new();
    let family = |name: &str, kind: &str, help: &str, out: &mut String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    family(
        "sluice_requests_total",
        "counter",
        "Requests answered, by API.",
        &mut out,
    );
    for s in shards {
        for (api, h) in &s.requests {
            let _ = writeln!(
                out,
                "sluice_requests_total{{shard=\"{}\",api=\"{}\"}} {}",
                s.shard,
                api_name(*api),
                h.count
            );
        }
    }
    family(
        "sluice_request_latency_seconds",
        "histogram",
        "Time from a request's arrival to its response, by API.",
        &mut out,
    );
    for s in shards {
        for (api, h) in &s.requests {
            let labels = format!("shard=\"{}\",api=\"{}\"", s.shard, api_name(*api));
            for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "sluice_request_latency_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "sluice_request_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "sluice_request_latency_seconds_sum{{{labels}}} {}",
                h.sum_s
            );
            let _ = writeln!(
                out,
                "sluice_request_latency_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
    let per_shard: [ShardFamily; 15] = [
        (
            "sluice_bytes_received_total",
            "counter",
            "Request bytes read from clients.",
            |s| s.bytes_in,
        ),
        (
            "sluice_bytes_sent_total",
            "counter",
            "Response bytes written to clients.",
            |s| s.bytes_out,
        ),
        (
            "sluice_connections",
            "gauge",
            "Open client connections.",
            |s| s.connections,
        ),
        (
            "sluice_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            |s| s.connections_total,
        ),
        (
            "sluice_requests_pipelined_total",
            "counter",
            "Requests started while an earlier request of the same connection was in progress.",
            |s| s.requests_pipelined,
        ),
        (
            "sluice_cross_core_messages_total",
            "counter",
            "Jobs sent to other shards.",
            |s| s.cross_core_sent,
        ),
        (
            "sluice_connections_refused_total",
            "counter",
            "Connections closed at accept (max.connections, max.connections.per.ip).",
            |s| s.connections_refused,
        ),
        (
            "sluice_accept_failures_total",
            "counter",
            "Accepts that failed for want of descriptors or memory (then backed off).",
            |s| s.accept_failures,
        ),
        (
            "sluice_connections_timed_out_total",
            "counter",
            "Connections closed: a frame did not arrive or a reply was not read in time.",
            |s| s.connections_timed_out,
        ),
        (
            "sluice_log_lines_suppressed_total",
            "counter",
            "Connection warnings left out of the log by its rate limit.",
            |s| s.log_lines_suppressed,
        ),
        (
            "sluice_isr_shrinks_total",
            "counter",
            "ISR shrinks of partitions this shard leads (a follower lagging past replica.lag.time.max.ms).",
            |s| s.isr_shrinks,
        ),
        (
            "sluice_isr_expands_total",
            "counter",
            "ISR expansions of partitions this shard leads (a follower caught up again).",
            |s| s.isr_expands,
        ),
        (
            "sluice_under_replicated_partitions",
            "gauge",
            "Partitions this shard leads whose ISR is smaller than their replica set.",
            |s| s.under_replicated,
        ),
        (
            "sluice_offline_partitions",
            "gauge",
            "Partitions this shard holds a replica of that have no leader (unavailable to clients).",
            |s| s.offline_partitions,
        ),
        (
            "sluice_replica_fetch_bytes_total",
            "counter",
            "Fetch response bytes this shard's replica fetchers received from leaders.",
            |s| s.replica_fetch_bytes,
        ),
    ];
    for (name, kind, help, get) in per_shard {
        family(name, kind, help, &mut out);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    family(
        "sluice_fsync_latency_seconds",
        "histogram",
        "fdatasync latency of segment files.",
        &mut out,
    );
    for s in shards {
        let l = &s.sync_latency;
        for (i, bound) in SYNC_LATENCY_BUCKETS_US.iter().enumerate() {
            let _ = writeln!(
                out,
                "sluice_fsync_latency_seconds_bucket{{shard=\"{}\",le=\"{}\"}} {}",
                s.shard,
                *bound as f64 / 1e6,
                l.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "sluice_fsync_latency_seconds_bucket{{shard=\"{}\",le=\"+Inf\"}} {}",
            s.shard, l.count
        );
        let _ = writeln!(
            out,
            "sluice_fsync_latency_seconds_sum{{shard=\"{}\"}} {}",
            s.shard,
            l.sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "sluice_fsync_latency_seconds_count{{shard=\"{}\"}} {}",
            s.shard, l.count
        );
    }
    let per_partition: [PartitionFamily; 4] = [
        (
            "sluice_log_start_offset",
            "First offset of a partition's log.",
            |p| p.log_start.to_string(),
        ),
        (
            "sluice_log_end_offset",
            "Offset after a partition's last record.",
            |p| p.log_end.to_string(),
        ),
        (
            "sluice_log_size_bytes",
            "Bytes of a partition's segments.",
            |p| p.size_bytes.to_string(),
        ),
        (
            "sluice_high_watermark",
            "Offset below which a partition's records are on every in-sync replica.",
            |p| p.high_watermark.to_string(),
        ),
    ];
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (name, help, get) in per_partition {
        family(name, "gauge", help, &mut out);
        for s in shards {
            for p in &s.partitions {
                ends.insert((p.topic.clone(), p.partition), p.log_end);
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                    s.shard,
                    escape(&p.topic),
                    p.partition,
                    get(p)
                );
            }
        }
    }
    family(
        "sluice_replica_lag_records",
        "gauge",
        "How many offsets a follower is behind the leader's log end (on the leader).",
        &mut out,
    );
    for s in shards {
        for p in &s.partitions {
            for (replica, lag, _) in &p.follower_lag {
                let _ = writeln!(
                    out,
                    "sluice_replica_lag_records{{shard=\"{}\",topic=\"{}\",partition=\"{}\",replica=\"{replica}\"}} {lag}",
                    s.shard,
                    escape(&p.topic),
                    p.partition,
                );
            }
        }
    }
    family(
        "sluice_replica_lag_ms",
        "gauge",
        "Milliseconds since a follower was last caught up with the leader's log end (on the leader).",
        &mut out,
    );
    for s in shards {
        for p in &s.partitions {
            for (replica, _, ms) in &p.follower_lag {
                let _ = writeln!(
                    out,
                    "sluice_replica_lag_ms{{shard=\"{}\",topic=\"{}\",partition=\"{}\",replica=\"{replica}\"}} {ms}",
                    s.shard,
                    escape(&p.topic),
                    p.partition,
                );
            }
        }
    }
    family(
        "sluice_consumer_group_committed_offset",
        "gauge",
        "A group's committed offset of a partition.",
        &mut out,
    );
    for s in shards {
        for (g, t, p, o) in &s.committed {
            let _ = writeln!(
                out,
                "sluice_consumer_group_committed_offset{{group=\"{}\",topic=\"{}\",partition=\"{p}\"}} {o}",
                escape(g),
                escape(t)
            );
        }
    }
    family(
        "sluice_consumer_group_lag",
        "gauge",
        "Log end offset minus a group's committed offset.",
        &mut out,
    );
    for s in shards {
        for (g, t, p, o) in &s.committed {
            if let Some(end) = ends.get(&(t.clone(), *p)) {
                let _ = writeln!(
                    out,
                    "sluice_consumer_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{p}\"}} {}",
                    escape(g),
                    escape(t),
                    (end - o).max(0)
                );
            }
        }
    }
    family(
        "sluice_consumer_group_members",
        "gauge",
        "Members of a consumer group.",
        &mut out,
    );
    for s in shards {
        for (g, state, _, members) in &s.groups {
            let _ = writeln!(
                out,
                "sluice_consumer_group_members{{group=\"{}\",state=\"{state}\"}} {members}",
                escape(g)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::default();
        for s in [0.00005, 0.002, 0.002, 3.0] {
            h.observe(s);
        }
        assert_eq!(h.buckets[0], 1); // <= 100 µs
        assert_eq!(h.buckets[4], 3); // <= 2.5 ms
        assert_eq!(h.buckets[11], 3); // <= 1 s
        assert_eq!(h.count, 4);
        assert!((h.sum_s - 3.00405).abs() < 1e-9);
    }

    #[test]
    fn rendering_has_types_before_samples_and_escapes_labels() {
        let mut s = ShardSnapshot {
            shard: 1,
            ..ShardSnapshot::default()
        };
        let mut h = Histogram::default();
        h.observe(0.001);
        s.requests.push((0, h));
        s.partitions.push(PartitionStats {
            topic: "a\"b".into(),
            partition: 0,
            log_start: 0,
            log_end: 10,
            size_bytes: 100,
            high_watermark: 8,
            follower_lag: vec![(2, 3, 1500)],
        });
        s.offline_partitions = 2;
        s.committed.push(("g".into(), "a\"b".into(), 0, 4));
        let text = render(&[s]);
        assert!(text.contains("sluice_requests_total{shard=\"1\",api=\"Produce\"} 1"));
        assert!(text.contains(
            "sluice_replica_lag_records{shard=\"1\",topic=\"a\\\"b\",partition=\"0\",replica=\"2\"} 3"
        ));
        assert!(text.contains(
            "sluice_replica_lag_ms{shard=\"1\",topic=\"a\\\"b\",partition=\"0\",replica=\"2\"} 1500"
        ));
        assert!(text.contains("sluice_offline_partitions{shard=\"1\"} 2"));
        assert!(
            text.contains("sluice_high_watermark{shard=\"1\",topic=\"a\\\"b\",partition=\"0\"} 8")
        );
        assert!(text
            .contains("sluice_consumer_group_lag{group=\"g\",topic=\"a\\\"b\",partition=\"0\"} 6"));
        let type_at = text.find("# TYPE sluice_log_end_offset gauge").unwrap();
        let sample_at = text.find("sluice_log_end_offset{").unwrap();
        assert!(type_at < sample_at);
    }
}
