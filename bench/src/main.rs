//! `sluice-bench`: an open-loop Kafka load generator and latency report for any
//! Kafka-compatible bootstrap address (Kafka 2.8 or later, Redpanda, Sluice).
//!
//! - `run`: one workload (file and/or flags) -> live progress, a table, a JSON result and
//!   SVG charts (`run.rs`, `report.rs`).
//! - `compare`: the same workload against two addresses in alternation, with ratios.
//! - `limits`: the machine's direct-write (fio) and loopback TCP (iperf3) bandwidth.
//! - `crosscore`: the cost of a shard-to-shard hop as the broker makes it.
//! - `throughput`, `commits`: the older closed-loop probes.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use clap::{Parser, Subcommand};
use protocol::kafka_protocol::messages::*;
use protocol::kafka_protocol::protocol::{Request, StrBytes};
use protocol::kafka_protocol::records::Compression;
use protocol::records::{encode_plain_batch, PlainRecord};

mod chart;
mod compare;
mod crosscore;
mod limits;
mod rate;
mod records;
mod report;
mod run;
mod stats;
mod workload;

#[derive(Parser)]
#[command(name = "sluice-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one workload: live progress on stderr, then a table, `<out>/<name>.json` and
    /// SVG charts.
    Run(report::RunArgs),
    /// Run one workload against two addresses in alternation and print the ratios.
    Compare(compare::CompareArgs),
    /// Measure the machine's limits: fio direct sequential write and iperf3 loopback TCP.
    Limits(limits::LimitsArgs),
    /// Measure a cross-core hop (the broker's invoke_on: a closure over a bounded flume
    /// channel to another glommio executor, the answer over a one-shot channel).
    Crosscore(crosscore::CrosscoreArgs),
    /// Produce fixed-size records as fast as acknowledgements allow, then fetch them all back.
    Throughput(Args),
    /// Commit offsets (OffsetCommit, outside group management) back to back from one
    /// connection: commits per second and per-commit latency (each answer means durable).
    Commits(CommitArgs),
}

#[derive(Parser, Clone)]
struct CommitArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "bench-commits")]
    group: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of the topic (created if missing); each commit names all of them.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per batch (one batch per partition per request).
    #[arg(long, default_value_t = 64)]
    batch_records: usize,
    /// Producer connections, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = -1)]
    acks: i16,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Produce as an idempotent producer (InitProducerId per connection, sequence numbers per
    /// partition). Every batch's header is rewritten and its CRC recomputed in both modes,
    /// so the client does the same work either way.
    #[arg(long)]
    idempotent: bool,
}

/// A blocking connection to one broker.
struct Conn(protocol::client::Connection<TcpStream>);

impl Conn {
    fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn(protocol::client::Connection::new(
            stream,
            "sluice-bench",
        )))
    }

    fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        self.0.send(req, version)
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn make_batch(records: usize, record_bytes: usize) -> Result<Bytes> {
    let value = Bytes::from(vec![b'x'; record_bytes]);
    let recs = vec![
        PlainRecord {
            value: Some(value),
            ..Default::default()
        };
        records
    ];
    // `stamp_producer` later sets the real producer fields and base sequence.
    let buf = encode_plain_batch(&recs, 0, Compression::None)?;
    let size = protocol::record_batch::RecordBatchView::parse(&buf)?.size_bytes();
    anyhow::ensure!(size == buf.len(), "the records did not encode as one batch");
    Ok(buf)
}

/// Sets a stored batch's producer id, epoch and base sequence, then its CRC32C.
fn stamp_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn init_producer_id(conn: &mut Conn) -> Result<(i64, i16)> {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let resp = conn.send(&req, 4)?;
    if resp.error_code != 0 {
        bail!("InitProducerId failed with error {}", resp.error_code);
    }
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// Creates `topic` unless it exists.
fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) -> Result<()> {
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let code = conn.send(&req, 5)?.topics[0].error_code;
    if code != 0 && code != 36 {
        bail!("create topic failed with error {code}");
    }
    Ok(())
}

/// The value at quantile `q` of sorted samples.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn commits(a: CommitArgs) -> Result<()> {
    let mut conn = Conn::connect(&a.bootstrap)?;
    create_topic(&mut conn, &a.topic, a.partitions)?;
    let mut find = FindCoordinatorRequest::default();
    find.key = StrBytes::from_string(a.group.clone());
    let found = conn.send(&find, 3)?;
    if found.error_code != 0 {
        bail!("FindCoordinator failed with error {}", found.error_code);
    }
    let mut conn = Conn::connect(&format!("{}:{}", found.host.as_str(), found.port))?;
    let mut latencies_us = Vec::new();
    let started = Instant::now();
    let mut next = 0i64;
    while started.elapsed() < Duration::from_secs(a.seconds) {
        next += 1;
        let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = name(&a.topic);
        t.partitions = (0..a.partitions)
            .map(|p| {
                let mut op = offset_commit_request::OffsetCommitRequestPartition::default();
                op.partition_index = p;
                op.committed_offset = next;
                op.committed_leader_epoch = -1;
                op
            })
            .collect();
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(StrBytes::from_string(a.group.clone()));
        req.generation_id_or_member_epoch = -1;
        req.topics = vec![t];
        let sent = Instant::now();
        let resp = conn.send(&req, 8)?;
        latencies_us.push(sent.elapsed().as_micros() as u64);
        for p in &resp.topics[0].partitions {
            if p.error_code != 0 {
                bail!(
                    "commit error {} on partition {}",
                    p.error_code,
                    p.partition_index
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    println!(
        "commits: {:.0}/s from one connection ({} commits of {} partition(s) in {:.1}s); latency p50 {} us, p99 {} us, max {} us",
        latencies_us.len() as f64 / secs,
        latencies_us.len(),
        a.partitions,
        secs,
        quantile(&latencies_us, 0.5),
        quantile(&latencies_us, 0.99),
        latencies_us.last().copied().unwrap_or(0)
    );
    Ok(())
}

fn throughput(a: Args) -> Result<()> {
    let mut admin = Conn::connect(&a.bootstrap)?;
    create_topic(&mut admin, &a.topic, a.partitions)?;
    let batch = make_batch(a.batch_records, a.record_bytes)?;
    let stop = Arc::new(AtomicBool::new(false));
    let bytes_acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let producers: Vec<_> = (0..a.connections)
        .map(|_| {
            let (a, batch, stop, acked) =
                (a.clone(), batch.clone(), stop.clone(), bytes_acked.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut conn = Conn::connect(&a.bootstrap)?;
                let (producer_id, epoch) = if a.idempotent {
                    init_producer_id(&mut conn)?
                } else {
                    (-1, -1)
                };
                let mut sequences = vec![0i32; a.partitions as usize];
                let mut req = ProduceRequest::default();
                req.acks = a.acks;
                req.timeout_ms = 30_000;
                let payload = (a.partitions as usize * a.batch_records * a.record_bytes) as u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut td = produce_request::TopicProduceData::default();
                    td.name = name(&a.topic);
                    td.partition_data = (0..a.partitions)
                        .map(|p| {
                            let seq = &mut sequences[p as usize];
                            let mut b = BytesMut::from(&batch[..]);
                            let base_sequence = if a.idempotent { *seq } else { -1 };
                            stamp_producer(&mut b, producer_id, epoch, base_sequence);
                            *seq = seq.wrapping_add(a.batch_records as i32);
                            let mut pd = produce_request::PartitionProduceData::default();
                            pd.index = p;
                            pd.records = Some(b.freeze());
                            pd
                        })
                        .collect();
                    req.topic_data = vec![td];
                    let resp = conn.send(&req, 9)?;
                    for p in &resp.responses[0].partition_responses {
                        if p.error_code != 0 {
                            bail!("produce error {} on partition {}", p.error_code, p.index);
                        }
                    }
                    acked.fetch_add(payload, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().expect("producer thread")?;
    }
    let produce_secs = started.elapsed().as_secs_f64();
    let produced = bytes_acked.load(Ordering::Relaxed);

    // Fetch everything back from the start of every partition.
    let mut conn = Conn::connect(&a.bootstrap)?;
    let mut offsets = vec![0i64; a.partitions as usize];
    let mut done = vec![false; a.partitions as usize];
    let mut fetched = 0u64;
    let fetch_started = Instant::now();
    while done.iter().any(|d| !d) {
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = name(&a.topic);
        ft.partitions = (0..a.partitions)
            .filter(|p| !done[*p as usize])
            .map(|p| {
                let mut fp = fetch_request::FetchPartition::default();
                fp.partition = p;
                fp.fetch_offset = offsets[p as usize];
                fp.partition_max_bytes = 4 << 20;
                fp
            })
            .collect();
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = 0;
        req.max_bytes = 32 << 20;
        req.topics = vec![ft];
        let resp = conn.send(&req, 11)?;
        for pd in &resp.responses[0].partitions {
            let p = pd.partition_index as usize;
            let records = pd.records.clone().unwrap_or_default();
            fetched += records.len() as u64;
            let mut last = None;
            for b in protocol::record_batch::BatchIter::new(&records, false) {
                last = Some(b.last_offset());
            }
            if let Some(l) = last {
                offsets[p] = l + 1;
            }
            if offsets[p] >= pd.high_watermark {
                done[p] = true;
            }
        }
    }
    let fetch_secs = fetch_started.elapsed().as_secs_f64();
    let mb = |b: u64, s: f64| b as f64 / s / 1e6;
    println!(
        "produce: {:.1} MB/s of record values ({} MB in {:.1}s, acks={}, {} connections, {} x {} B records per batch, {} partitions, idempotent={})",
        mb(produced, produce_secs),
        produced / 1_000_000,
        produce_secs,
        a.acks,
        a.connections,
        a.batch_records,
        a.record_bytes,
        a.partitions,
        a.idempotent
    );
    println!(
        "fetch:   {:.1} MB/s of stored batches ({} MB in {:.1}s, one connection, from the start)",
        mb(fetched, fetch_secs),
        fetched / 1_000_000,
        fetch_secs
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run(a) => report::run_cmd(a),
        Cmd::Compare(a) => compare::compare_cmd(a),
        Cmd::Limits(a) => limits::limits_cmd(a),
        Cmd::Crosscore(a) => crosscore::crosscore_cmd(a),
        Cmd::Throughput(a) => throughput(a),
        Cmd::Commits(a) => commits(a),
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
