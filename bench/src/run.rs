//! One benchmark run: create the topics, start consumers at the log end, start producers on
//! their schedules, warm up, measure, and summarise.
//!
//! Threads: each producer is a generator thread (schedule, partitioning, batching, writes)
//! plus one response-reader thread per broker it writes to, joined by a bounded in-flight
//! queue (`max_in_flight`); each consumer is one thread fetching from partition leaders. The
//! calling thread prints a progress line every second and collects the interval histograms.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use protocol::client::cluster::{check, error_name, key_partition, s, Cluster};
use protocol::client::member::{Member, HEARTBEAT_EVERY};
use protocol::client::{decode_response, encode_request, read_frame};
use protocol::record_batch::BatchIter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::rate::{latency_us, Schedule};
use crate::records::{encode_batch, send_times, Rec};
use crate::stats::{new_histogram, spectrum, Interval, Percentiles, Recorder};
use crate::workload::{key_bytes, SizeDistribution, Workload};

pub const CLIENT_ID: &str = "sluice-bench";
/// Produce and Fetch versions the bench speaks (Kafka 2.8 and later, Redpanda, Sluice).
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 11;
/// Size of the random payload pool record values are cut from.
const PAYLOAD_POOL_BYTES: usize = 4 << 20;
/// Upper bound of records one producer generates per wake-up, so a producer that fell far
/// behind still sends and reads between catch-up bursts.
const MAX_RECORDS_PER_WAKE: usize = 20_000;
/// Longest a fetch waits at the broker for data.
const FETCH_MAX_WAIT_MS: i32 = 100;
const FETCH_PARTITION_MAX_BYTES: i32 = 4 << 20;
const FETCH_MAX_BYTES: i32 = 32 << 20;

/// What to run against.
#[derive(Clone, Debug)]
pub struct Target {
    pub bootstrap: String,
    /// A local broker's pid, for broker CPU seconds (from /proc).
    pub broker_pid: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
}

impl Throughput {
    fn over(records: u64, bytes: u64, secs: f64) -> Throughput {
        Throughput {
            records,
            bytes,
            records_per_sec: records as f64 / secs,
            mb_per_sec: bytes as f64 / secs / 1e6,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerCpu {
    pub seconds: f64,
    /// Broker CPU seconds per GiB of record values produced.
    pub seconds_per_gib: f64,
}

/// Everything a run measured; written as the JSON result.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub workload: Workload,
    pub bootstrap: String,
    pub started_unix_secs: u64,
    pub measured_secs: f64,
    /// Record values acknowledged (for acks=0: written) during the measured phase.
    pub produce: Throughput,
    /// From each record's intended send time to its acknowledgement (acks=0: to its write).
    pub produce_latency: Percentiles,
    /// Stored batch bytes and records received by consumers during the measured phase.
    pub consume: Throughput,
    /// From each record's intended send time to its receipt by a consumer.
    pub end_to_end_latency: Percentiles,
    /// Reading the whole topic back from its start after producing (`catch_up_read`).
    pub catch_up: Option<Throughput>,
    pub broker_cpu: Option<BrokerCpu>,
    /// Error name -> count, from produce and fetch responses.
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<Interval>,
    /// (quantile, ms) points of the measured phase's distributions, for charts.
    pub produce_spectrum: Vec<(f64, f64)>,
    pub end_to_end_spectrum: Vec<(f64, f64)>,
}

/// State shared by the run's threads.
struct Shared {
    w: Workload,
    bootstrap: String,
    /// (topic, partition, leader) for every partition, in a fixed order.
    partitions: Vec<(String, i32, i32)>,
    payload: Vec<u8>,
    /// Unix nanoseconds at `anchor`, to turn `Instant`s into wall-clock send times.
    anchor: Instant,
    anchor_unix_ns: i64,
    stop_producers: AtomicBool,
    stop_consumers: AtomicBool,
    produced_records: AtomicU64,
    produced_bytes: AtomicU64,
    consumed_records: AtomicU64,
    consumed_bytes: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn new(
        w: Workload,
        bootstrap: String,
        partitions: Vec<(String, i32, i32)>,
        payload: Vec<u8>,
    ) -> Shared {
        Shared {
            w,
            bootstrap,
            partitions,
            payload,
            anchor: Instant::now(),
            anchor_unix_ns: unix_now_ns(),
            stop_producers: AtomicBool::new(false),
            stop_consumers: AtomicBool::new(false),
            produced_records: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
            consumed_records: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    fn unix_ns(&self, at: Instant) -> i64 {
        self.anchor_unix_ns + at.saturating_duration_since(self.anchor).as_nanos() as i64
    }

    fn now_unix_ns(&self) -> i64 {
        self.unix_ns(Instant::now())
    }

    fn error(&self, code: i16) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(error_name(code))
            .or_default() += 1;
    }
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Creates the workload's topics (when missing) and returns every partition's leader.
fn prepare_topics(c: &mut Cluster, w: &Workload) -> Result<Vec<(String, i32, i32)>> {
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 30_000;
    req.topics = w
        .topic_names()
        .iter()
        .map(|t| {
            let mut ct = create_topics_request::CreatableTopic::default();
            ct.name = TopicName(s(t));
            ct.num_partitions = w.partitions;
            ct.replication_factor = -1; // the broker's default
            ct.configs = w
                .topic_configs
                .iter()
                .map(|(k, v)| {
                    let mut c = create_topics_request::CreatableTopicConfig::default();
                    c.name = s(k);
                    c.value = Some(s(v));
                    c
                })
                .collect();
            ct
        })
        .collect();
    let resp = c.send(&req, 5)?;
    for t in &resp.topics {
        // 36: TOPIC_ALREADY_EXISTS, fine for repeated runs.
        if t.error_code != 0 && t.error_code != 36 {
            bail!(
                "creating {}: {}",
                t.name.0.as_str(),
                error_name(t.error_code)
            );
        }
    }
    let mut out = Vec::new();
    for topic in w.topic_names() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders = c.leaders(&topic);
            if let Ok(l) = &leaders {
                if l.len() as i32 >= w.partitions && l.values().all(|n| *n >= 0) {
                    if l.len() as i32 > w.partitions {
                        eprintln!(
                            "note: {topic} has {} partitions; the workload uses {}",
                            l.len(),
                            w.partitions
                        );
                    }
                    out.extend(
                        l.iter()
                            .filter(|(p, _)| **p < w.partitions)
                            .map(|(p, n)| (topic.clone(), *p, *n)),
                    );
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("{topic} has no leader for every partition: {leaders:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(out)
}

fn delete_topics(c: &mut Cluster, w: &Workload) -> Result<()> {
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = w.topic_names().iter().map(|t| TopicName(s(t))).collect();
    req.timeout_ms = 30_000;
    let resp = c.send(&req, 4)?;
    for r in &resp.responses {
        if r.error_code != 0 {
            eprintln!(
                "note: deleting {}: {}",
                r.name.as_ref().map_or("?", |n| n.0.as_str()),
                error_name(r.error_code)
            );
        }
    }
    Ok(())
}

/// A payload pool of lowercase text: it compresses roughly as log lines or JSON do (about
/// 2x with lz4, more with zstd), unlike either random bytes or one repeated value.
fn payload_pool(max_record: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(42);
    let words = [
        "sluice", "kafka", "event", "order", "user", "id", "value", "price", "status", "ok",
        "region", "eu", "us", "time", "2026", "count", "item", "cart", "click", "view",
    ];
    let mut out = Vec::with_capacity(PAYLOAD_POOL_BYTES + max_record);
    while out.len() < PAYLOAD_POOL_BYTES + max_record {
        if rng.gen_bool(0.3) {
            out.extend(format!("{}", rng.gen_range(0..100_000)).bytes());
        } else {
            out.extend(words[rng.gen_range(0..words.len())].bytes());
        }
        out.push(if rng.gen_bool(0.1) { b',' } else { b' ' });
    }
    out
}

fn max_record_bytes(w: &Workload) -> usize {
    match w.record_size {
        SizeDistribution::Fixed => w.record_bytes as usize,
        SizeDistribution::Uniform { max, .. } | SizeDistribution::Exponential { max } => {
            max as usize
        }
    }
}

/// Linux CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
pub fn process_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f
        .get(11)
        .zip(f.get(12))
        .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / hz)
}

/// Runs `w` against `target`, printing progress to stderr.
pub fn run(w: &Workload, target: &Target) -> Result<RunResult> {
    w.validate()?;
    if w.consumer_group.is_some() && w.topics > 1 {
        bail!("consumer_group workloads use one topic");
    }
    let mut cluster = Cluster::connect(&target.bootstrap, CLIENT_ID)?;
    let partitions = prepare_topics(&mut cluster, w)?;
    let started_unix_secs = (unix_now_ns() / 1_000_000_000) as u64;
    let shared = Arc::new(Shared::new(
        w.clone(),
        target.bootstrap.clone(),
        partitions,
        payload_pool(max_record_bytes(w)),
    ));

    // Consumers first, positioned at the log end, so they see every record produced.
    let (ready_tx, ready_rx) = flume::bounded(w.consumers as usize);
    let e2e: Vec<Recorder> = (0..w.consumers).map(|_| Recorder::default()).collect();
    let consumers: Vec<JoinHandle<Result<()>>> = e2e
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let (sh, rec, ready) = (shared.clone(), rec.clone(), ready_tx.clone());
            std::thread::spawn(move || consumer(&sh, i, &rec, ready))
        })
        .collect();
    drop(ready_tx);
    for _ in 0..w.consumers {
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("a consumer did not get its partitions within 60 s"))?;
    }

    let produce: Vec<Recorder> = (0..w.producers).map(|_| Recorder::default()).collect();
    let start = Instant::now();
    let producers: Vec<JoinHandle<Result<()>>> = produce
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let (sh, rec) = (shared.clone(), rec.clone());
            std::thread::spawn(move || producer(&sh, i, start, &rec))
        })
        .collect();

    let measure_at = start + Duration::from_secs_f64(w.warmup_secs);
    let end_at = measure_at + Duration::from_secs_f64(w.duration_secs);
    let mut timeline = Vec::new();
    let mut measuring = false;
    let mut last = (0u64, 0u64, 0u64, 0u64);
    let mut at_measure = last;
    let mut cpu_at_measure = None;
    let mut tick = start;
    let mut failed = None;
    loop {
        tick += Duration::from_secs(1);
        let now = Instant::now();
        if tick > now {
            std::thread::sleep(tick - now);
        }
        let now = Instant::now();
        let counters = (
            shared.produced_records.load(Ordering::Relaxed),
            shared.produced_bytes.load(Ordering::Relaxed),
            shared.consumed_records.load(Ordering::Relaxed),
            shared.consumed_bytes.load(Ordering::Relaxed),
        );
        let (mut ph, mut eh) = (new_histogram(), new_histogram());
        produce.iter().for_each(|r| r.drain_interval(&mut ph));
        e2e.iter().for_each(|r| r.drain_interval(&mut eh));
        let t = now.saturating_duration_since(measure_at).as_secs_f64()
            - measure_at.saturating_duration_since(now).as_secs_f64();
        let iv = Interval {
            t: (t * 10.0).round() / 10.0,
            produced_records: counters.0 - last.0,
            produced_mb: (counters.1 - last.1) as f64 / 1e6,
            consumed_records: counters.2 - last.2,
            consumed_mb: (counters.3 - last.3) as f64 / 1e6,
            produce: Percentiles::of(&ph),
            end_to_end: Percentiles::of(&eh),
        };
        last = counters;
        eprintln!("{}", progress_line(&iv, measuring));
        if measuring {
            timeline.push(iv);
        }
        if let Some(h) = producers
            .iter()
            .chain(consumers.iter())
            .find(|h| h.is_finished())
        {
            let _ = h;
            failed = Some("a producer or consumer stopped early");
            break;
        }
        if !measuring && now >= measure_at {
            produce.iter().for_each(Recorder::start_measuring);
            e2e.iter().for_each(Recorder::start_measuring);
            at_measure = counters;
            cpu_at_measure = target.broker_pid.map(process_cpu_secs).transpose()?;
            measuring = true;
        }
        if measuring && now >= end_at {
            break;
        }
    }
    let measured_secs = Instant::now()
        .saturating_duration_since(measure_at)
        .as_secs_f64()
        .max(1e-3);
    produce.iter().for_each(Recorder::stop_measuring);
    e2e.iter().for_each(Recorder::stop_measuring);
    let end = (
        shared.produced_records.load(Ordering::Relaxed),
        shared.produced_bytes.load(Ordering::Relaxed),
        shared.consumed_records.load(Ordering::Relaxed),
        shared.consumed_bytes.load(Ordering::Relaxed),
    );
    let cpu_at_end = target.broker_pid.map(process_cpu_secs).transpose()?;
    shared.stop_producers.store(true, Ordering::Relaxed);
    let mut thread_errors = Vec::new();
    for p in producers {
        if let Err(e) = p.join().map_err(|_| anyhow!("producer panicked"))? {
            thread_errors.push(format!("producer: {e:#}"));
        }
    }
    // Let consumers read what was acknowledged last, then stop them.
    std::thread::sleep(Duration::from_millis(500));
    shared.stop_consumers.store(true, Ordering::Relaxed);
    for c in consumers {
        if let Err(e) = c.join().map_err(|_| anyhow!("consumer panicked"))? {
            thread_errors.push(format!("consumer: {e:#}"));
        }
    }
    if let Some(why) = failed {
        bail!("{why}: {}", thread_errors.join("; "));
    }
    if !thread_errors.is_empty() {
        bail!("{}", thread_errors.join("; "));
    }

    let catch_up = if w.catch_up_read {
        Some(catch_up_read(&shared)?)
    } else {
        None
    };
    if w.delete_topics {
        delete_topics(&mut cluster, w)?;
    }
    let (mut ph, mut eh) = (new_histogram(), new_histogram());
    produce.iter().for_each(|r| r.add_total(&mut ph));
    e2e.iter().for_each(|r| r.add_total(&mut eh));
    let produced_bytes = end.1 - at_measure.1;
    let broker_cpu = cpu_at_measure.zip(cpu_at_end).map(|(a, b)| BrokerCpu {
        seconds: b - a,
        seconds_per_gib: (b - a) / (produced_bytes.max(1) as f64 / (1u64 << 30) as f64),
    });
    let errors = shared.errors.lock().expect("errors lock").clone();
    Ok(RunResult {
        workload: w.clone(),
        bootstrap: target.bootstrap.clone(),
        started_unix_secs,
        measured_secs,
        produce: Throughput::over(end.0 - at_measure.0, produced_bytes, measured_secs),
        produce_latency: Percentiles::of(&ph),
        consume: Throughput::over(end.2 - at_measure.2, end.3 - at_measure.3, measured_secs),
        end_to_end_latency: Percentiles::of(&eh),
        catch_up,
        broker_cpu,
        errors,
        timeline,
        produce_spectrum: spectrum(&ph),
        end_to_end_spectrum: spectrum(&eh),
    })
}

fn progress_line(iv: &Interval, measuring: bool) -> String {
    let phase = if measuring { "measure" } else { "warm-up" };
    let mut line = format!(
        "[{phase} {:>6.1}s] produce {:>9} rec/s {:>8.1} MB/s p50 {:>7.3} p99 {:>7.3} max {:>8.3} ms",
        iv.t, iv.produced_records, iv.produced_mb, iv.produce.p50_ms, iv.produce.p99_ms,
        iv.produce.max_ms
    );
    if iv.consumed_records > 0 || iv.end_to_end.count > 0 {
        line += &format!(
            " | consume {:>9} rec/s {:>8.1} MB/s e2e p50 {:>7.3} p99 {:>7.3} ms",
            iv.consumed_records, iv.consumed_mb, iv.end_to_end.p50_ms, iv.end_to_end.p99_ms
        );
    }
    line
}

/// A batch being filled for one partition.
#[derive(Default)]
struct Pending {
    records: Vec<Rec>,
    intended: Vec<Instant>,
    bytes: usize,
    /// When the first record arrived (the linger clock).
    since: Option<Instant>,
}

/// What a response reader needs to account for one request.
struct InFlight {
    correlation: i32,
    /// Intended send time of every record in the request.
    intended: Vec<Instant>,
    bytes: u64,
}

/// A producer's connection to one broker: requests are written here, responses read in
/// order by a reader thread. A request needs a permit; the reader returns one per response,
/// so at most `max_in_flight` requests are outstanding (none are needed with acks=0).
struct NodeLink {
    stream: TcpStream,
    in_flight: Option<flume::Sender<InFlight>>,
    permits: Option<flume::Receiver<()>>,
    reader: Option<JoinHandle<Result<()>>>,
    /// Permits taken from `permits` but not used yet.
    held: usize,
    correlation: i32,
}

impl NodeLink {
    fn open(sh: &Arc<Shared>, addr: &str, rec: &Recorder) -> Result<NodeLink> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
        stream.set_nodelay(true)?;
        if sh.w.acks == 0 {
            return Ok(NodeLink {
                stream,
                in_flight: None,
                permits: None,
                reader: None,
                held: 0,
                correlation: 0,
            });
        }
        let (tx, rx) = flume::bounded::<InFlight>(sh.w.max_in_flight);
        let (permit_tx, permit_rx) = flume::bounded::<()>(sh.w.max_in_flight);
        for _ in 0..sh.w.max_in_flight {
            permit_tx.send(()).expect("capacity");
        }
        let mut read = stream.try_clone()?;
        let (sh, rec) = (sh.clone(), rec.clone());
        let reader = std::thread::spawn(move || -> Result<()> {
            while let Ok(f) = rx.recv() {
                let body = read_frame(&mut read)?;
                let resp = decode_response::<ProduceRequest>(body, PRODUCE_VERSION, f.correlation)?;
                let done = Instant::now();
                let _ = permit_tx.send(());
                let mut failed = false;
                for p in resp
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                {
                    if p.error_code != 0 {
                        sh.error(p.error_code);
                        failed = true;
                    }
                }
                if !failed {
                    rec.record_all(f.intended.iter().map(|t| latency_us(*t, done)));
                    sh.produced_records
                        .fetch_add(f.intended.len() as u64, Ordering::Relaxed);
                    sh.produced_bytes.fetch_add(f.bytes, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        Ok(NodeLink {
            stream,
            in_flight: Some(tx),
            permits: Some(permit_rx),
            reader: Some(reader),
            held: 0,
            correlation: 0,
        })
    }

    /// Takes a permit to send, waiting until `deadline` at most.
    fn permit(&mut self, deadline: Instant) -> bool {
        if self.held > 0 {
            self.held -= 1;
            return true;
        }
        match &self.permits {
            None => true,
            Some(p) => p.recv_deadline(deadline).is_ok(),
        }
    }

    /// Keeps a permit that was taken but not used for the next request.
    fn give_back(&mut self) {
        self.held += 1;
    }

    /// Waits for every response and stops the reader.
    fn close(mut self) -> Result<()> {
        drop(self.in_flight.take());
        if let Some(r) = self.reader.take() {
            r.join()
                .map_err(|_| anyhow!("response reader panicked"))??;
        }
        Ok(())
    }
}

/// A producer's unsent records: one open batch per partition, and the batches that filled
/// up (sealed) waiting for a request, oldest first.
#[derive(Default)]
struct Accumulator {
    open: Vec<Pending>,
    sealed: VecDeque<(usize, Pending)>,
    /// Value bytes of every unsent record.
    bytes: usize,
}

impl Accumulator {
    fn new(partitions: usize) -> Accumulator {
        Accumulator {
            open: (0..partitions).map(|_| Pending::default()).collect(),
            ..Default::default()
        }
    }

    /// Adds a record to partition `at`'s open batch; true when that sealed the batch.
    fn push(
        &mut self,
        at: usize,
        rec: Rec,
        intended: Instant,
        now: Instant,
        batch_bytes: usize,
    ) -> bool {
        let p = &mut self.open[at];
        p.since.get_or_insert(now);
        p.bytes += rec.value_len;
        self.bytes += rec.value_len;
        p.records.push(rec);
        p.intended.push(intended);
        if p.bytes >= batch_bytes {
            let full = std::mem::take(p);
            self.sealed.push_back((at, full));
            return true;
        }
        false
    }

    /// Leaders that have a batch to send now: a sealed one, or an open one that lingered.
    fn ready_nodes(&self, sh: &Shared, now: Instant, linger: Duration) -> Vec<i32> {
        let mut nodes: Vec<i32> = self
            .sealed
            .iter()
            .map(|(i, _)| sh.partitions[*i].2)
            .chain(self.open.iter().enumerate().filter_map(|(i, p)| {
                p.since
                    .is_some_and(|s| now >= s + linger)
                    .then_some(sh.partitions[i].2)
            }))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The batches of one request to `node`: at most one per partition (Kafka's rule for
    /// Produce v3+), sealed ones first, then open ones that lingered, never overtaking an
    /// older batch of the same partition.
    fn take_ready(
        &mut self,
        sh: &Shared,
        node: i32,
        now: Instant,
        linger: Duration,
    ) -> Vec<(usize, Pending)> {
        let mut out: Vec<(usize, Pending)> = Vec::new();
        let mut kept = VecDeque::with_capacity(self.sealed.len());
        let mut blocked = std::collections::HashSet::new();
        while let Some((i, p)) = self.sealed.pop_front() {
            if sh.partitions[i].2 == node && !blocked.contains(&i) {
                blocked.insert(i);
                out.push((i, p));
            } else {
                blocked.insert(i);
                kept.push_back((i, p));
            }
        }
        self.sealed = kept;
        for (i, p) in self.open.iter_mut().enumerate() {
            let lingered = p.since.is_some_and(|s| now >= s + linger);
            if lingered && sh.partitions[i].2 == node && !blocked.contains(&i) {
                out.push((i, std::mem::take(p)));
            }
        }
        self.bytes -= out.iter().map(|(_, p)| p.bytes).sum::<usize>();
        out
    }

    /// When the oldest open batch's linger ends.
    fn next_linger(&self, linger: Duration) -> Option<Instant> {
        self.open
            .iter()
            .filter_map(|p| p.since)
            .min()
            .map(|s| s + linger)
    }
}

fn producer(sh: &Arc<Shared>, index: usize, start: Instant, rec: &Recorder) -> Result<()> {
    let w = &sh.w;
    let mut rng = StdRng::seed_from_u64(1000 + index as u64);
    let mut schedule = Schedule::new(start, w.rate as f64 / w.producers.max(1) as f64);
    let linger = Duration::from_secs_f64(w.linger_ms / 1000.0);
    let n = sh.partitions.len();
    let topics = w.topic_names();
    let mut acc = Accumulator::new(n);
    let mut sticky = rng.gen_range(0..n);
    let mut links: HashMap<i32, NodeLink> = HashMap::new();
    let mut cluster = Cluster::connect(&sh.bootstrap, CLIENT_ID)?;
    cluster.metadata(None)?;
    while !sh.stop_producers.load(Ordering::Relaxed) {
        // Generate the records due by now (as fast as possible: until a batch fills), as
        // long as the buffer has room (buffer_bytes; beyond it the producer waits for
        // acknowledgements, as Kafka's does at buffer.memory).
        let now = Instant::now();
        let mut generated = 0;
        while acc.bytes < w.buffer_bytes {
            let Some(intended) = schedule.take_due(now) else {
                break;
            };
            let value_len = w.record_size.sample(w.record_bytes, &mut rng);
            let key = w.keys.sample(&mut rng).map(key_bytes);
            let topic = rng.gen_range(0..topics.len());
            let at = match &key {
                Some(k) => topic * w.partitions as usize + key_partition(k, w.partitions) as usize,
                None => sticky,
            };
            let record = Rec {
                key,
                value_at: rng.gen_range(0..PAYLOAD_POOL_BYTES),
                value_len,
                sent_ns: sh.unix_ns(intended),
            };
            let sealed = acc.push(at, record, intended, now, w.batch_bytes);
            generated += 1;
            if sealed && at == sticky {
                // Kafka's sticky partitioner moves on when a batch is complete.
                sticky = rng.gen_range(0..n);
            }
            if (sealed && !schedule.is_open_loop()) || generated >= MAX_RECORDS_PER_WAKE {
                break;
            }
        }
        // Send each broker's ready batches in one request, when a permit is free; with
        // nothing else to do, wait for a permit until the next record or linger is due.
        let now = Instant::now();
        let mut wake = schedule.next_at(now);
        if let Some(l) = acc.next_linger(linger) {
            wake = wake.min(l);
        }
        let buffer_full = acc.bytes >= w.buffer_bytes;
        let wake = if buffer_full {
            now + Duration::from_millis(50)
        } else {
            wake
        };
        let wake = wake.min(now + Duration::from_millis(50));
        let nodes = acc.ready_nodes(sh, now, linger);
        let mut sent = false;
        for (k, node) in nodes.iter().enumerate() {
            let link = match links.entry(*node) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let addr = cluster
                        .brokers
                        .get(node)
                        .cloned()
                        .ok_or_else(|| anyhow!("broker {node} is not in the metadata"))?;
                    e.insert(NodeLink::open(sh, &addr, rec)?)
                }
            };
            // Only the last node may wait (and only when nothing was sent this round).
            let deadline = if k + 1 == nodes.len() && !sent {
                wake
            } else {
                now
            };
            if link.permit(deadline) {
                let batches = acc.take_ready(sh, *node, Instant::now(), linger);
                if batches.iter().any(|(i, _)| *i == sticky) {
                    sticky = rng.gen_range(0..n);
                }
                if batches.is_empty() {
                    link.give_back();
                } else {
                    send_request(sh, link, batches, rec)?;
                    sent = true;
                }
            }
        }
        let now = Instant::now();
        if nodes.is_empty() && wake > now {
            std::thread::sleep(wake - now);
        }
    }
    for (_, link) in links {
        link.close()?;
    }
    Ok(())
}

/// Sends `batches` as one Produce request; returns their value bytes.
fn send_request(
    sh: &Shared,
    link: &mut NodeLink,
    batches: Vec<(usize, Pending)>,
    rec: &Recorder,
) -> Result<usize> {
    let w = &sh.w;
    let timestamp_ms = sh.now_unix_ns() / 1_000_000;
    let mut topics: BTreeMap<&str, Vec<produce_request::PartitionProduceData>> = BTreeMap::new();
    let mut intended = Vec::new();
    let mut bytes = 0usize;
    for (i, p) in batches {
        let batch = encode_batch(&p.records, &sh.payload, w.compression, timestamp_ms)?;
        let (topic, partition, _) = &sh.partitions[i];
        let mut pd = produce_request::PartitionProduceData::default();
        pd.index = *partition;
        pd.records = Some(batch);
        topics.entry(topic.as_str()).or_default().push(pd);
        intended.extend(p.intended);
        bytes += p.bytes;
    }
    let mut req = ProduceRequest::default();
    req.acks = w.acks;
    req.timeout_ms = 30_000;
    req.topic_data = per_topic(topics, |name, partition_data| {
        let mut td = produce_request::TopicProduceData::default();
        td.name = name;
        td.partition_data = partition_data;
        td
    });
    link.correlation = link.correlation.wrapping_add(1);
    let frame = encode_request(
        &req,
        PRODUCE_VERSION,
        link.correlation,
        &StrBytes::from_static_str(CLIENT_ID),
    )?;
    match &link.in_flight {
        Some(tx) => {
            // Never blocks: the caller holds one of max_in_flight permits.
            tx.send(InFlight {
                correlation: link.correlation,
                intended,
                bytes: bytes as u64,
            })
            .map_err(|_| anyhow!("the response reader stopped"))?;
            link.stream.write_all(&frame).context("sending produce")?;
        }
        None => {
            link.stream.write_all(&frame).context("sending produce")?;
            let done = Instant::now();
            rec.record_all(intended.iter().map(|t| latency_us(*t, done)));
            sh.produced_records
                .fetch_add(intended.len() as u64, Ordering::Relaxed);
            sh.produced_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
    Ok(bytes)
}

/// One request entry per topic from partitions grouped by topic name.
fn per_topic<P, T>(
    groups: BTreeMap<&str, Vec<P>>,
    make: impl Fn(TopicName, Vec<P>) -> T,
) -> Vec<T> {
    groups
        .into_iter()
        .map(|(t, ps)| make(TopicName(s(t)), ps))
        .collect()
}

/// The latest (`-1`) or earliest (`-2`) offset of each of `parts` (positions in
/// `sh.partitions`).
fn offsets_at(c: &mut Cluster, sh: &Shared, parts: &[usize], which: i64) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(parts.len());
    let mut by_topic: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
    for i in parts {
        let (t, p, _) = &sh.partitions[*i];
        by_topic.entry(t).or_default().insert(*p, which);
    }
    let mut found: HashMap<(String, i32), i64> = HashMap::new();
    for (t, q) in by_topic {
        for (p, o) in c.list_offsets(t, &q)? {
            found.insert((t.to_owned(), p), o);
        }
    }
    for i in parts {
        let (t, p, _) = &sh.partitions[*i];
        out.push(
            *found
                .get(&(t.clone(), *p))
                .ok_or_else(|| anyhow!("no offset for {t}-{p}"))?,
        );
    }
    Ok(out)
}

/// One fetch round over `parts` from their leaders. Returns (records, stored bytes) read;
/// advances `offsets`. With `send_times_into`, collects the records' send times.
fn fetch_round(
    c: &mut Cluster,
    sh: &Shared,
    parts: &[usize],
    offsets: &mut [i64],
    max_wait_ms: i32,
    mut send_times_into: Option<&mut Vec<i64>>,
) -> Result<(u64, u64, Vec<i64>)> {
    let mut by_node: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (k, i) in parts.iter().enumerate() {
        by_node.entry(sh.partitions[*i].2).or_default().push(k);
    }
    let wait = max_wait_ms / by_node.len().max(1) as i32;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut high_watermarks = vec![-1i64; parts.len()];
    for (node, ks) in by_node {
        let mut topics: BTreeMap<&str, Vec<fetch_request::FetchPartition>> = BTreeMap::new();
        let mut index: HashMap<(&str, i32), usize> = HashMap::new();
        for k in ks {
            let (t, p, _) = &sh.partitions[parts[k]];
            let mut fp = fetch_request::FetchPartition::default();
            fp.partition = *p;
            fp.fetch_offset = offsets[k];
            fp.partition_max_bytes = FETCH_PARTITION_MAX_BYTES;
            topics.entry(t.as_str()).or_default().push(fp);
            index.insert((t.as_str(), *p), k);
        }
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = wait;
        req.min_bytes = 1;
        req.max_bytes = FETCH_MAX_BYTES;
        req.topics = per_topic(topics, |name, partitions| {
            let mut ft = fetch_request::FetchTopic::default();
            ft.topic = name;
            ft.partitions = partitions;
            ft
        });
        let resp = c.node(node)?.send(&req, FETCH_VERSION)?;
        check(resp.error_code, "fetch")?;
        for t in &resp.responses {
            for pd in &t.partitions {
                let Some(&k) = index.get(&(t.topic.0.as_str(), pd.partition_index)) else {
                    continue;
                };
                if pd.error_code != 0 {
                    sh.error(pd.error_code);
                    continue;
                }
                high_watermarks[k] = pd.high_watermark;
                let data = pd.records.clone().unwrap_or_default();
                for b in BatchIter::new(&data, false) {
                    if b.last_offset() < offsets[k] {
                        continue;
                    }
                    offsets[k] = b.last_offset() + 1;
                    records += b.records_count().max(0) as u64;
                    bytes += b.size_bytes() as u64;
                    if let Some(out) = send_times_into.as_deref_mut() {
                        if let Err(e) = send_times(b.as_bytes(), out) {
                            eprintln!("unreadable batch at {}: {e:#}", b.base_offset());
                        }
                    }
                }
            }
        }
    }
    Ok((records, bytes, high_watermarks))
}

fn consumer(
    sh: &Arc<Shared>,
    index: usize,
    rec: &Recorder,
    ready: flume::Sender<()>,
) -> Result<()> {
    let w = &sh.w;
    let mut c = Cluster::connect(&sh.bootstrap, CLIENT_ID)?;
    c.metadata(None)?;
    let mut member = w
        .consumer_group
        .as_ref()
        .map(|g| Member::new(&format!("{g}-{}", sh.anchor_unix_ns), &w.topic));
    let assign = |c: &mut Cluster, member: &mut Option<Member>| -> Result<Vec<usize>> {
        Ok(match member {
            Some(m) => {
                let mine = m.join(c)?;
                (0..sh.partitions.len())
                    .filter(|i| mine.contains(&sh.partitions[*i].1))
                    .collect()
            }
            None => (0..sh.partitions.len())
                .filter(|i| i % w.consumers as usize == index)
                .collect(),
        })
    };
    let mut parts = assign(&mut c, &mut member)?;
    let mut offsets = offsets_at(&mut c, sh, &parts, -1)?;
    let _ = ready.send(());
    let mut times = Vec::new();
    while !sh.stop_consumers.load(Ordering::Relaxed) {
        if let Some(m) = member.as_mut() {
            if m.last_heartbeat.elapsed() >= HEARTBEAT_EVERY && m.heartbeat(&mut c)? {
                // A rebalance: newly assigned partitions start at the log end.
                parts = assign(&mut c, &mut member)?;
                offsets = offsets_at(&mut c, sh, &parts, -1)?;
            }
        }
        if parts.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        times.clear();
        let (records, bytes, _) = fetch_round(
            &mut c,
            sh,
            &parts,
            &mut offsets,
            FETCH_MAX_WAIT_MS,
            Some(&mut times),
        )?;
        let now = sh.now_unix_ns();
        rec.record_all(times.iter().map(|t| ((now - t).max(0) / 1000) as u64));
        sh.consumed_records.fetch_add(records, Ordering::Relaxed);
        sh.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    if let Some(m) = &member {
        let _ = m.leave(&mut c);
    }
    Ok(())
}

/// Reads every partition from its start to its current end as fast as possible, with one
/// thread per consumer (at least one), records not decoded: the catch-up read rate.
fn catch_up_read(sh: &Arc<Shared>) -> Result<Throughput> {
    let readers = sh.w.consumers.max(1) as usize;
    let started = Instant::now();
    let handles: Vec<JoinHandle<Result<(u64, u64)>>> = (0..readers)
        .map(|r| {
            let sh = sh.clone();
            std::thread::spawn(move || {
                let mut c = Cluster::connect(&sh.bootstrap, CLIENT_ID)?;
                c.metadata(None)?;
                let parts: Vec<usize> = (0..sh.partitions.len())
                    .filter(|i| i % readers == r)
                    .collect();
                let mut offsets = offsets_at(&mut c, &sh, &parts, -2)?;
                let ends = offsets_at(&mut c, &sh, &parts, -1)?;
                let (mut records, mut bytes) = (0, 0);
                let mut left: Vec<usize> = (0..parts.len()).collect();
                while !left.is_empty() {
                    let ps: Vec<usize> = left.iter().map(|k| parts[*k]).collect();
                    let mut os: Vec<i64> = left.iter().map(|k| offsets[*k]).collect();
                    let (n, b, _) = fetch_round(&mut c, &sh, &ps, &mut os, 0, None)?;
                    records += n;
                    bytes += b;
                    for (j, k) in left.iter().enumerate() {
                        offsets[*k] = os[j];
                    }
                    left.retain(|k| offsets[*k] < ends[*k]);
                    if n == 0 && !left.is_empty() && started.elapsed() > Duration::from_secs(600) {
                        bail!("catch-up read made no progress");
                    }
                }
                Ok((records, bytes))
            })
        })
        .collect();
    let (mut records, mut bytes) = (0, 0);
    for h in handles {
        let (n, b) = h.join().map_err(|_| anyhow!("reader panicked"))??;
        records += n;
        bytes += b;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprintln!(
        "[catch-up] read {records} records, {:.1} MB in {secs:.2}s",
        bytes as f64 / 1e6
    );
    Ok(Throughput::over(records, bytes, secs))
}

/// The measured-phase table of one result.
pub fn table(r: &RunResult) -> String {
    let mut out = String::new();
    let w = &r.workload;
    out += &format!(
        "workload {} against {}: {} topic(s) x {} partitions, {} B records, rate {}, acks={}, {:?}, {} producer(s), {} consumer(s), {:.0}s measured\n",
        w.name,
        r.bootstrap,
        w.topics,
        w.partitions,
        w.record_bytes,
        if w.rate == 0 { "max".to_string() } else { format!("{}/s", w.rate) },
        w.acks,
        w.compression,
        w.producers,
        w.consumers,
        r.measured_secs
    );
    out += &format!(
        "{:<12} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "",
        "records/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "p99.99",
        "max ms",
        "count"
    );
    let row = |name: &str, t: Option<&Throughput>, p: &Percentiles| {
        let (rps, mbs) = t.map_or((String::new(), String::new()), |t| {
            (
                format!("{:.0}", t.records_per_sec),
                format!("{:.1}", t.mb_per_sec),
            )
        });
        format!(
            "{name:<12} {rps:>12} {mbs:>10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9}\n",
            p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.p9999_ms, p.max_ms, p.count
        )
    };
    out += &row("produce", Some(&r.produce), &r.produce_latency);
    if w.consumers > 0 {
        out += &row("end-to-end", Some(&r.consume), &r.end_to_end_latency);
    }
    if let Some(c) = &r.catch_up {
        out += &format!(
            "{:<12} {:>12.0} {:>10.1}   (whole topic from its start, {} records)\n",
            "catch-up", c.records_per_sec, c.mb_per_sec, c.records
        );
    }
    if let Some(cpu) = &r.broker_cpu {
        out += &format!(
            "broker CPU: {:.2} s over the measured phase, {:.2} s per GiB produced\n",
            cpu.seconds, cpu.seconds_per_gib
        );
    }
    if !r.errors.is_empty() {
        out += &format!("errors: {:?}\n", r.errors);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(partitions: Vec<(String, i32, i32)>) -> Shared {
        Shared::new(Workload::default(), String::new(), partitions, Vec::new())
    }

    fn rec(len: usize, sent_ns: i64) -> Rec {
        Rec {
            key: None,
            value_at: 0,
            value_len: len,
            sent_ns,
        }
    }

    #[test]
    fn requests_carry_one_batch_per_partition_in_order() {
        // Partitions 0 and 1 on node 7, partition 2 on node 8.
        let sh = shared(vec![
            ("t".into(), 0, 7),
            ("t".into(), 1, 7),
            ("t".into(), 2, 8),
        ]);
        let mut acc = Accumulator::new(3);
        let t0 = Instant::now();
        let linger = Duration::from_millis(5);
        // Partition 0 fills two batches (100 bytes each), then starts a third.
        for i in 0..5 {
            acc.push(0, rec(50, i), t0, t0, 100);
        }
        acc.push(1, rec(10, 100), t0, t0, 100);
        acc.push(2, rec(10, 200), t0, t0, 100);
        assert_eq!(acc.bytes, 270);
        // Before the linger ends only node 7 has something to send: its sealed batches.
        assert_eq!(acc.ready_nodes(&sh, t0, linger), vec![7]);
        let first = acc.take_ready(&sh, 7, t0, linger);
        assert_eq!(first.len(), 1, "one batch per partition per request");
        assert_eq!(first[0].0, 0);
        let sent: Vec<i64> = first[0].1.records.iter().map(|r| r.sent_ns).collect();
        assert_eq!(sent, vec![0, 1], "the oldest batch goes first");
        // After the linger: partition 0's second sealed batch; its open batch (record 4) may
        // not overtake it, partition 1's open batch goes along.
        let later = t0 + linger;
        let second = acc.take_ready(&sh, 7, later, linger);
        let parts: Vec<usize> = second.iter().map(|(i, _)| *i).collect();
        assert_eq!(parts, vec![0, 1]);
        assert_eq!(
            second[0]
                .1
                .records
                .iter()
                .map(|r| r.sent_ns)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        let third = acc.take_ready(&sh, 7, later, linger);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].1.records[0].sent_ns, 4);
        // Node 8's lingering batch was never taken for node 7.
        assert_eq!(acc.ready_nodes(&sh, later, linger), vec![8]);
        assert_eq!(
            acc.take_ready(&sh, 8, later, linger)[0].1.records[0].sent_ns,
            200
        );
        assert_eq!(acc.bytes, 0);
        assert!(acc.next_linger(linger).is_none());
    }
}
