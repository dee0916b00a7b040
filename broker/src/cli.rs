//! The operator's subcommands of `sluice` (in the spirit of kafka-topics.sh and rpk): they
//! speak the Kafka protocol to any broker (`--bootstrap`), following Metadata to partition
//! leaders and FindCoordinator to group coordinators. Human tables by default,
//! `--format json` (one JSON document, or one per record for `consume`) for scripts.
//!
//! `consume --group` joins the group (the classic protocol with the range assignor), reads
//! its partitions from the committed offsets and commits what it printed; `group
//! reset-offsets` needs the group to be empty, as in Kafka.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use protocol::client::cluster::{check, error_name, key_partition, s, Cluster};
use protocol::client::member::{Member, HEARTBEAT_EVERY};
use protocol::records::{encode_plain_batch, PlainRecord};

/// The `client.id` the CLI's connections carry.
const CLIENT_ID: &str = "sluice-cli";
use serde_json::json;

#[derive(Args, Clone)]
pub struct Global {
    /// A broker to start from (host:port).
    #[arg(
        long,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (-1: the broker's num.partitions).
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// Replication factor (-1: the broker default).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// A topic config as key=value (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Partitions, leaders and the configs set on a topic.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
    /// Set or delete topic configs.
    AlterConfig {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// List consumer groups.
    List,
    /// A group's state, members, committed offsets and lag.
    Describe { group: String },
    /// Delete an empty group and its offsets.
    Delete { group: String },
    /// Move an empty group's committed offsets of a topic.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"])]
        to_earliest: bool,
        #[arg(long, conflicts_with = "to_offset")]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Cluster id, the active controller, brokers with their state (fenced or not) and
    /// each voter's lag behind the metadata log's commit.
    Info,
}

#[derive(Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each stdin line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record, key=value (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Write every record to this partition (default: by key hash, as Kafka's default
    /// partitioner; round-robin without a key).
    #[arg(long)]
    pub partition: Option<i32>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the earliest offset.
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, conflicts_with = "timestamp")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the epoch).
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Read from this partition only.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start at the group's committed offsets (when no other start is given) and commit
    /// what was printed.
    #[arg(long)]
    pub group: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<usize>,
    /// Stop when nothing arrived for this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

fn key_value(kv: &str) -> Result<(String, String)> {
    kv.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| anyhow!("{kv}: expected KEY=VALUE"))
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn topic(g: &Global, cmd: TopicCmd) -> Result<()> {
    let mut c = Cluster::connect(&g.bootstrap, CLIENT_ID)?;
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut t = create_topics_request::CreatableTopic::default();
            t.name = TopicName(s(&name));
            t.num_partitions = partitions;
            t.replication_factor = replication_factor;
            for kv in &configs {
                let (k, v) = key_value(kv)?;
                let mut cfg = create_topics_request::CreatableTopicConfig::default();
                cfg.name = s(&k);
                cfg.value = Some(s(&v));
                t.configs.push(cfg);
            }
            let mut req = CreateTopicsRequest::default();
            req.topics = vec![t];
            req.timeout_ms = 30_000;
            let r = c.send(&req, 5)?;
            let t = &r.topics[0];
            check(t.error_code, &format!("creating {name}"))?;
            match g.format {
                Format::Json => println!(
                    "{}",
                    json!({"topic": name, "partitions": t.num_partitions, "topic_id": t.topic_id.to_string()})
                ),
                Format::Table => println!("created {name} with {} partitions", t.num_partitions),
            }
        }
        TopicCmd::List => {
            let md = c.metadata(None)?;
            let mut rows: Vec<(String, usize, bool)> = md
                .topics
                .iter()
                .map(|t| {
                    (
                        t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                        t.partitions.len(),
                        t.is_internal,
                    )
                })
                .collect();
            rows.sort();
            match g.format {
                Format::Json => println!(
                    "{}",
                    json!(rows
                        .iter()
                        .map(|(n, p, i)| json!({"topic": n, "partitions": p, "internal": i}))
                        .collect::<Vec<_>>())
                ),
                Format::Table => print_table(
                    &["TOPIC", "PARTITIONS", "INTERNAL"],
                    &rows
                        .iter()
                        .map(|(n, p, i)| vec![n.clone(), p.to_string(), i.to_string()])
                        .collect::<Vec<_>>(),
                ),
            }
        }
        TopicCmd::Describe { name } => {
            let md = c.metadata(Some(std::slice::from_ref(&name)))?;
            let t = &md.topics[0];
            check(t.error_code, &format!("topic {name}"))?;
            let mut r = describe_configs_request::DescribeConfigsResource::default();
            r.resource_type = 2;
            r.resource_name = s(&name);
            r.configuration_keys = None;
            let mut req = DescribeConfigsRequest::default();
            req.resources = vec![r];
            let cfg = c.send(&req, 4)?;
            let res = &cfg.results[0];
            check(res.error_code, &format!("configs of {name}"))?;
            let set: Vec<(String, String)> = res
                .configs
                .iter()
                .filter(|e| e.config_source == 1)
                .map(|e| {
                    (
                        e.name.to_string(),
                        e.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    )
                })
                .collect();
            let parts: Vec<serde_json::Value> = t
                .partitions
                .iter()
                .map(|p| {
                    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
                    json!({
                        "partition": p.partition_index,
                        "leader": p.leader_id.0,
                        "leader_epoch": p.leader_epoch,
                        "replicas": ids(&p.replica_nodes),
                        "isr": ids(&p.isr_nodes),
                        "offline": ids(&p.offline_replicas),
                    })
                })
                .collect();
            match g.format {
                Format::Json => println!(
                    "{}",
                    json!({
                        "topic": name,
                        "topic_id": t.topic_id.to_string(),
                        "partitions": parts,
                        "configs": set.iter().cloned().collect::<BTreeMap<_, _>>(),
                    })
                ),
                Format::Table => {
                    println!("topic {name} ({} partitions)", parts.len());
                    let cell = |v: &serde_json::Value| v.to_string().replace(',', ", ");
                    print_table(
                        &["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE"],
                        &parts
                            .iter()
                            .map(|p| {
                                [
                                    "partition",
                                    "leader",
                                    "leader_epoch",
                                    "replicas",
                                    "isr",
                                    "offline",
                                ]
                                .iter()
                                .map(|k| cell(&p[*k]))
                                .collect()
                            })
                            .collect::<Vec<_>>(),
                    );
                    for (k, v) in &set {
                        println!("config {k}={v}");
                    }
                }
            }
        }
        TopicCmd::Delete { name } => {
            let mut req = DeleteTopicsRequest::default();
            req.topic_names = vec![TopicName(s(&name))];
            req.timeout_ms = 30_000;
            let r = c.send(&req, 4)?;
            check(r.responses[0].error_code, &format!("deleting {name}"))?;
            println!("deleted {name}");
        }
        TopicCmd::AlterConfig { name, set, delete } => {
            let mut r = incremental_alter_configs_request::AlterConfigsResource::default();
            r.resource_type = 2;
            r.resource_name = s(&name);
            for kv in &set {
                let (k, v) = key_value(kv)?;
                let mut x = incremental_alter_configs_request::AlterableConfig::default();
                x.name = s(&k);
                x.config_operation = 0;
                x.value = Some(s(&v));
                r.configs.push(x);
            }
            for k in &delete {
                let mut x = incremental_alter_configs_request::AlterableConfig::default();
                x.name = s(k);
                x.config_operation = 1;
                x.value = None;
                r.configs.push(x);
            }
            let mut req = IncrementalAlterConfigsRequest::default();
            req.resources = vec![r];
            let resp = c.send(&req, 1)?;
            let out = &resp.responses[0];
            if out.error_code != 0 {
                bail!(
                    "altering {name}: {} {}",
                    error_name(out.error_code),
                    out.error_message.as_deref().unwrap_or("")
                );
            }
            println!("altered {name}");
        }
    }
    Ok(())
}

/// Lines of stdin written as records, batched per partition (up to this many per request).
const PRODUCE_BATCH_RECORDS: usize = 500;

pub fn produce(g: &Global, a: ProduceArgs) -> Result<()> {
    let mut c = Cluster::connect(&g.bootstrap, CLIENT_ID)?;
    let leaders = c.leaders(&a.topic)?;
    let partitions = leaders.len() as i32;
    let headers: Vec<(String, String)> = a
        .headers
        .iter()
        .map(|h| key_value(h))
        .collect::<Result<_>>()?;
    let mut pending: BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>> = BTreeMap::new();
    let mut count = 0usize;
    let mut rr = 0i32;
    let mut total = 0usize;
    let stdin = std::io::stdin();
    let flush =
        |c: &mut Cluster, pending: &mut BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>>| -> Result<()> {
            for (p, recs) in std::mem::take(pending) {
                let leader = *leaders.get(&p).ok_or_else(|| anyhow!("no partition {p}"))?;
                let now = crate::handlers::now_ms() as i64;
                let records: Vec<PlainRecord> = recs
                    .into_iter()
                    .map(|(key, value)| PlainRecord {
                        key,
                        value: Some(value),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (s(k), Some(Bytes::from(v.clone()))))
                            .collect(),
                    })
                    .collect();
                let batch = encode_plain_batch(&records, now, Compression::None)?;
                let mut pd = produce_request::PartitionProduceData::default();
                pd.index = p;
                pd.records = Some(batch);
                let mut td = produce_request::TopicProduceData::default();
                td.name = TopicName(s(&a.topic));
                td.partition_data = vec![pd];
                let mut req = ProduceRequest::default();
                req.acks = -1;
                req.timeout_ms = 30_000;
                req.topic_data = vec![td];
                let r = c.node(leader)?.send(&req, 9)?;
                for pr in r
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                {
                    check(
                        pr.error_code,
                        &format!("producing to {}-{}", a.topic, pr.index),
                    )?;
                }
            }
            Ok(())
        };
    for line in stdin.lock().lines() {
        let line = line?;
        let (key, value) = match &a.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_owned())), Bytes::from(v.to_owned())),
                None => (None, Bytes::from(line)),
            },
            None => (None, Bytes::from(line)),
        };
        let p = match (a.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => key_partition(k, partitions),
            (None, None) => {
                rr = (rr + 1) % partitions;
                rr
            }
        };
        pending.entry(p).or_default().push((key, value));
        count += 1;
        total += 1;
        if count >= PRODUCE_BATCH_RECORDS {
            flush(&mut c, &mut pending)?;
            count = 0;
        }
    }
    flush(&mut c, &mut pending)?;
    if g.format == Format::Json {
        println!("{}", json!({"topic": a.topic, "records": total}));
    } else {
        eprintln!("produced {total} records to {}", a.topic);
    }
    Ok(())
}

fn text(b: &Option<Bytes>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => json!(String::from_utf8_lossy(b)),
    }
}

/// Where to start reading `parts`: an explicit offset or time, else the group's committed
/// offsets, else the earliest (`--from-beginning`) or latest offsets.
fn start_offsets(
    c: &mut Cluster,
    a: &ConsumeArgs,
    parts: &[i32],
    committed: &BTreeMap<(String, i32), i64>,
) -> Result<BTreeMap<i32, i64>> {
    let query = |ts: i64| parts.iter().map(|p| (*p, ts)).collect::<BTreeMap<_, _>>();
    if parts.is_empty() {
        return Ok(BTreeMap::new());
    }
    if let Some(o) = a.offset {
        return Ok(parts.iter().map(|p| (*p, o)).collect());
    }
    let fallback = c.list_offsets(&a.topic, &query(if a.from_beginning { -2 } else { -1 }))?;
    if let Some(ts) = a.timestamp {
        let found = c.list_offsets(&a.topic, &query(ts))?;
        let latest = c.list_offsets(&a.topic, &query(-1))?;
        return Ok(found
            .into_iter()
            .map(|(p, o)| (p, if o < 0 { latest[&p] } else { o }))
            .collect());
    }
    Ok(fallback
        .into_iter()
        .map(|(p, f)| {
            let o = committed.get(&(a.topic.clone(), p)).copied().unwrap_or(-1);
            (p, if o >= 0 { o } else { f })
        })
        .collect())
}

pub fn consume(g: &Global, a: ConsumeArgs) -> Result<()> {
    let mut c = Cluster::connect(&g.bootstrap, CLIENT_ID)?;
    let leaders = c.leaders(&a.topic)?;
    // With --group (and no --partition) this joins the group: partitions are shared among
    // its members and reassigned as they come and go.
    let mut member = match (&a.group, a.partition) {
        (Some(group), None) => Some(Member::new(group, &a.topic)),
        _ => None,
    };
    let mut parts: Vec<i32> = match (a.partition, member.as_mut()) {
        (Some(p), _) if leaders.contains_key(&p) => vec![p],
        (Some(p), _) => bail!("{} has no partition {p}", a.topic),
        (None, Some(m)) => m.join(&mut c)?,
        (None, None) => leaders.keys().copied().collect(),
    };
    let committed = match &a.group {
        Some(group) => fetch_committed(&mut c, group)?,
        None => BTreeMap::new(),
    };
    let mut next = start_offsets(&mut c, &a, &parts, &committed)?;
    let mut printed = 0usize;
    let mut last_data = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    'poll: loop {
        if let Some(m) = member.as_mut() {
            if m.last_heartbeat.elapsed() >= HEARTBEAT_EVERY && m.heartbeat(&mut c)? {
                let _ = commit(&mut c, &a.group, Some(&*m), &a.topic, &next);
                parts = m.join(&mut c)?;
                let committed = fetch_committed(&mut c, &m.group)?;
                next = start_offsets(&mut c, &a, &parts, &committed)?;
            }
        }
        if parts.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            if a.timeout_ms
                .is_some_and(|t| last_data.elapsed() >= Duration::from_millis(t))
            {
                break;
            }
            continue;
        }
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &parts {
            by_leader.entry(leaders[p]).or_default().push(*p);
        }
        let mut got_any = false;
        for (leader, ps) in by_leader {
            let mut t = fetch_request::FetchTopic::default();
            t.topic = TopicName(s(&a.topic));
            t.partitions = ps
                .iter()
                .map(|p| {
                    let mut fp = fetch_request::FetchPartition::default();
                    fp.partition = *p;
                    fp.fetch_offset = next[p];
                    fp.partition_max_bytes = 1 << 20;
                    fp
                })
                .collect();
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(-1);
            req.max_wait_ms = 500;
            req.min_bytes = 1;
            req.max_bytes = 8 << 20;
            req.topics = vec![t];
            let r = c.node(leader)?.send(&req, 11)?;
            for pd in r.responses.iter().flat_map(|t| t.partitions.iter()) {
                let p = pd.partition_index;
                if pd.error_code == ResponseError::OffsetOutOfRange.code() {
                    // Below the log start (retention, DeleteRecords): continue at the start.
                    let start = c.list_offsets(&a.topic, &[(p, -2)].into_iter().collect())?;
                    next.insert(p, start[&p]);
                    continue;
                }
                check(pd.error_code, &format!("fetching {}-{p}", a.topic))?;
                let Some(mut bytes) = pd.records.clone() else {
                    continue;
                };
                while !bytes.is_empty() {
                    let set = match RecordBatchDecoder::decode(&mut bytes) {
                        Ok(set) => set,
                        Err(_) => break, // a partial batch at the end of the fetch
                    };
                    for rec in set.records {
                        if rec.offset < next[&p] || rec.control {
                            continue;
                        }
                        next.insert(p, rec.offset + 1);
                        got_any = true;
                        match g.format {
                            Format::Json => {
                                let headers: BTreeMap<String, serde_json::Value> = rec
                                    .headers
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), text(v)))
                                    .collect();
                                writeln!(
                                    out,
                                    "{}",
                                    json!({
                                        "topic": a.topic, "partition": p, "offset": rec.offset,
                                        "timestamp": rec.timestamp, "key": text(&rec.key),
                                        "value": text(&rec.value), "headers": headers,
                                    })
                                )?;
                            }
                            Format::Table => {
                                writeln!(out, "{}", text(&rec.value).as_str().unwrap_or(""))?
                            }
                        }
                        printed += 1;
                        if a.max_messages.is_some_and(|m| printed >= m) {
                            break 'poll;
                        }
                    }
                }
            }
        }
        out.flush()?;
        if got_any {
            last_data = Instant::now();
            if a.group.is_some() {
                commit(&mut c, &a.group, member.as_ref(), &a.topic, &next)?;
            }
        } else if a
            .timeout_ms
            .is_some_and(|t| last_data.elapsed() >= Duration::from_millis(t))
        {
            break;
        }
    }
    out.flush()?;
    if a.group.is_some() {
        commit(&mut c, &a.group, member.as_ref(), &a.topic, &next)?;
    }
    if let Some(m) = &member {
        m.leave(&mut c)?;
    }
    Ok(())
}

/// A group's committed offsets: (topic, partition) -> offset.
fn fetch_committed(c: &mut Cluster, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s(group));
    g.topics = None;
    let mut req = OffsetFetchRequest::default();
    req.groups = vec![g];
    let r = c.coordinator(group)?.send(&req, 8)?;
    let g = &r.groups[0];
    check(g.error_code, &format!("offsets of {group}"))?;
    Ok(g.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                )
            })
        })
        .collect())
}

/// Commits `offsets` of `topic` for the group, as its member when it joined (a rebalance
/// under way makes the commit wait for the rejoin), else outside group management.
fn commit(
    c: &mut Cluster,
    group: &Option<String>,
    member: Option<&Member>,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<()> {
    let Some(group) = group else {
        return Ok(());
    };
    if offsets.is_empty() {
        return Ok(());
    }
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = offsets
        .iter()
        .map(|(p, o)| {
            let mut x = offset_commit_request::OffsetCommitRequestPartition::default();
            x.partition_index = *p;
            x.committed_offset = *o;
            x.committed_leader_epoch = -1;
            x
        })
        .collect();
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = member.map_or(-1, |m| m.generation);
    req.member_id = s(member.map_or("", |m| m.id.as_str()));
    req.topics = vec![t];
    let r = c.coordinator(group)?.send(&req, 8)?;
    let rebalancing = [
        ResponseError::RebalanceInProgress.code(),
        ResponseError::IllegalGeneration.code(),
        ResponseError::UnknownMemberId.code(),
    ];
    for p in r.topics.iter().flat_map(|t| t.partitions.iter()) {
        if member.is_some() && rebalancing.contains(&p.error_code) {
            continue; // the next heartbeat rejoins; these offsets are committed after it
        }
        check(
            p.error_code,
            &format!("committing {topic}-{} for {group}", p.partition_index),
        )?;
    }
    Ok(())
}

pub fn group(g: &Global, cmd: GroupCmd) -> Result<()> {
    let mut c = Cluster::connect(&g.bootstrap, CLIENT_ID)?;
    match cmd {
        GroupCmd::List => {
            let r = c.send(&ListGroupsRequest::default(), 4)?;
            check(r.error_code, "listing groups")?;
            let mut rows: Vec<Vec<String>> = r
                .groups
                .iter()
                .map(|x| {
                    vec![
                        x.group_id.0.to_string(),
                        x.group_state.to_string(),
                        x.protocol_type.to_string(),
                    ]
                })
                .collect();
            rows.sort();
            match g.format {
                Format::Json => println!(
                    "{}",
                    json!(rows
                        .iter()
                        .map(|r| json!({"group": r[0], "state": r[1], "protocol_type": r[2]}))
                        .collect::<Vec<_>>())
                ),
                Format::Table => print_table(&["GROUP", "STATE", "PROTOCOL TYPE"], &rows),
            }
        }
        GroupCmd::Describe { group } => {
            let mut req = DescribeGroupsRequest::default();
            req.groups = vec![GroupId(s(&group))];
            let r = c.coordinator(&group)?.send(&req, 5)?;
            let d = &r.groups[0];
            check(d.error_code, &format!("describing {group}"))?;
            let committed = fetch_committed(&mut c, &group)?;
            let mut rows = Vec::new();
            let mut topics: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
            for ((t, p), o) in &committed {
                topics.entry(t.clone()).or_default().push((*p, *o));
            }
            for (t, ps) in &topics {
                let ends = c.list_offsets(t, &ps.iter().map(|(p, _)| (*p, -1)).collect())?;
                for (p, o) in ps {
                    let end = ends.get(p).copied().unwrap_or(-1);
                    rows.push((t.clone(), *p, *o, end, end - o));
                }
            }
            match g.format {
                Format::Json => println!(
                    "{}",
                    json!({
                        "group": group, "state": d.group_state.to_string(),
                        "protocol": d.protocol_data.to_string(),
                        "members": d.members.iter().map(|m| json!({
                            "member_id": m.member_id.to_string(),
                            "client_id": m.client_id.to_string(),
                            "host": m.client_host.to_string(),
                        })).collect::<Vec<_>>(),
                        "offsets": rows.iter().map(|(t, p, o, e, l)| json!({
                            "topic": t, "partition": p, "committed": o, "log_end": e, "lag": l
                        })).collect::<Vec<_>>(),
                    })
                ),
                Format::Table => {
                    println!(
                        "group {group}: {} ({} members, protocol {})",
                        d.group_state.as_str(),
                        d.members.len(),
                        d.protocol_data.as_str()
                    );
                    for m in &d.members {
                        println!(
                            "member {} client {} host {}",
                            m.member_id.as_str(),
                            m.client_id.as_str(),
                            m.client_host.as_str()
                        );
                    }
                    print_table(
                        &["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"],
                        &rows
                            .iter()
                            .map(|(t, p, o, e, l)| {
                                vec![
                                    t.clone(),
                                    p.to_string(),
                                    o.to_string(),
                                    e.to_string(),
                                    l.to_string(),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    );
                }
            }
        }
        GroupCmd::Delete { group } => {
            let mut req = DeleteGroupsRequest::default();
            req.groups_names = vec![GroupId(s(&group))];
            let r = c.coordinator(&group)?.send(&req, 2)?;
            check(r.results[0].error_code, &format!("deleting {group}"))?;
            println!("deleted group {group}");
        }
        GroupCmd::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
        } => {
            let leaders = c.leaders(&topic)?;
            let target: BTreeMap<i32, i64> = if to_earliest {
                c.list_offsets(&topic, &leaders.keys().map(|p| (*p, -2)).collect())?
            } else if to_latest {
                c.list_offsets(&topic, &leaders.keys().map(|p| (*p, -1)).collect())?
            } else if let Some(o) = to_offset {
                leaders.keys().map(|p| (*p, o)).collect()
            } else {
                bail!("give --to-earliest, --to-latest or --to-offset");
            };
            commit(&mut c, &Some(group.clone()), None, &topic, &target)?;
            match g.format {
                Format::Json => println!(
                    "{}",
                    json!({"group": group, "topic": topic, "offsets": target})
                ),
                Format::Table => {
                    for (p, o) in &target {
                        println!("{topic}-{p} -> {o}");
                    }
                }
            }
        }
    }
    Ok(())
}

pub fn cluster(g: &Global, cmd: ClusterCmd) -> Result<()> {
    let mut c = Cluster::connect(&g.bootstrap, CLIENT_ID)?;
    match cmd {
        ClusterCmd::Info => {
            // Brokers with their state (DescribeCluster v2 lists fenced ones when asked).
            let mut req = DescribeClusterRequest::default();
            req.include_fenced_brokers = true;
            let d = c.send(&req, 2)?;
            check(d.error_code, "describe cluster")?;
            let brokers: Vec<serde_json::Value> = d
                .brokers
                .iter()
                .map(|b| {
                    json!({
                        "node_id": b.broker_id.0,
                        "address": format!("{}:{}", b.host.as_str(), b.port),
                        "rack": b.rack.as_ref().map(|r| r.to_string()),
                        "state": if b.is_fenced { "fenced" } else { "unfenced" },
                    })
                })
                .collect();
            // The quorum: the active controller and each voter's lag behind the commit.
            let mut q = DescribeQuorumRequest::default();
            let mut t = describe_quorum_request::TopicData::default();
            t.topic_name = TopicName(s("__cluster_metadata"));
            let mut p = describe_quorum_request::PartitionData::default();
            p.partition_index = 0;
            t.partitions = vec![p];
            q.topics = vec![t];
            let q = c.send(&q, 2)?;
            check(q.error_code, "describe quorum")?;
            let part = q
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| anyhow!("DescribeQuorum answered no partition"))?;
            check(part.error_code, "describe quorum")?;
            let voters: Vec<serde_json::Value> = part
                .current_voters
                .iter()
                .map(|v| {
                    json!({
                        "node_id": v.replica_id.0,
                        "log_end_offset": v.log_end_offset,
                        "lag": (part.high_watermark - v.log_end_offset).max(0),
                    })
                })
                .collect();
            let id = d.cluster_id.to_string();
            let controller = part.leader_id.0;
            match g.format {
                Format::Json => println!(
                    "{}",
                    json!({
                        "cluster_id": id, "controller": controller,
                        "epoch": part.leader_epoch,
                        "high_watermark": part.high_watermark,
                        "brokers": brokers, "voters": voters,
                    })
                ),
                Format::Table => {
                    println!(
                        "cluster {id}, controller {controller} (epoch {}, metadata offset {})",
                        part.leader_epoch, part.high_watermark
                    );
                    let text = |v: &serde_json::Value| match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    print_table(
                        &["NODE", "ADDRESS", "RACK", "STATE"],
                        &brokers
                            .iter()
                            .map(|b| {
                                ["node_id", "address", "rack", "state"]
                                    .iter()
                                    .map(|k| text(&b[*k]))
                                    .collect()
                            })
                            .collect::<Vec<_>>(),
                    );
                    println!();
                    print_table(
                        &["VOTER", "LOG END", "LAG"],
                        &voters
                            .iter()
                            .map(|v| {
                                ["node_id", "log_end_offset", "lag"]
                                    .iter()
                                    .map(|k| text(&v[*k]))
                                    .collect()
                            })
                            .collect::<Vec<_>>(),
                    );
                }
            }
        }
    }
    Ok(())
}
