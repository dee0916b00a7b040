//! A bounded, seeded wire fuzzer against the real `sluice` binary (2 shards).
//!
//! Several connections in parallel threads send bursts of frames back to back (pipelined,
//! without waiting for each answer); a frame the broker cannot parse closes its connection
//! and the next burst opens a new one. The frames are a mix of
//! - (a) random frames: a random length prefix within and beyond `socket.request.max.bytes`
//!   (set to 1 MiB here), a random request header and a random body;
//! - (b) mutations of valid requests captured for every API key and version the broker
//!   advertises in ApiVersions v3 (encoded with `kafka-protocol`): bit flips, byte
//!   replacements, truncation, insertion, repeated slices, spliced bodies, header edits and
//!   overwrites of the request's length fields (strings, arrays, bytes) and of the frame's
//!   length prefix with 0, -1, `i32::MAX` or small values;
//! - (c) Produce requests (every codec) whose RecordBatch v2 has mutated header fields
//!   (last offset delta, record count, attributes with codec, control and transactional
//!   bits, timestamps, producer id, epoch and sequence, ...) or mutated records (length,
//!   offset and timestamp deltas, key, value and header varints, overlong varints, trailing
//!   or missing bytes), or is a decompression bomb, and whose CRC32C is then recomputed so
//!   that the broker's deeper checks run.
//!
//! Checks: the broker never panics (process alive, no "panicked" in its log); after every
//! chunk of 5,000 requests a fresh connection gets an ApiVersions answer within 2 s and a
//! Metadata answer; a connection whose bytes have all been sent is finished by the broker
//! within 20 s; a "canary" topic written before fuzzing keeps its records; at the end every
//! partition of every topic is read from its log start to its end with Fetch and every
//! returned batch decodes with `RecordBatchDecoder::decode` (what clients do) with
//! increasing offsets; after a clean stop and restart (no "truncating torn or corrupt tail"
//! in the log) and again after a kill -9 and restart, the same holds and every partition has
//! the same log start and end offsets as before.
//!
//! When the broker dies or stops answering, the chunk's frames are written to
//! `$CARGO_TARGET_TMPDIR/sluice-fuzz-<seed>-chunk<n>.bin` and replayed one connection at a
//! time on a fresh broker, then frame by frame, to name the frame that triggers it.
//!
//! Reproduce a run (the seed is printed at the start and in every failure):
//! `SLUICE_FUZZ_SEED=<seed> cargo test -p broker --test fuzz -- --nocapture`.
//! The request count defaults to 100,000 (about a minute on a 2-vCPU debug build); a longer
//! local run is `SLUICE_FUZZ_REQUESTS=2000000 cargo test -p broker --test fuzz -- --nocapture`.
//! Replay a saved chunk: `SLUICE_FUZZ_REPLAY=<file> cargo test -p broker --test fuzz --
//! --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use common::{fix_crc, put_varint, Broker};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// `socket.request.max.bytes` of the fuzzed broker.
const REQUEST_MAX_BYTES: usize = 1 << 20;
/// `sluice.message.decompressed.max.bytes` of the fuzzed broker.
const DECOMPRESSED_MAX_BYTES: usize = 4 << 20;
/// Requests between two liveness checks.
const CHUNK_REQUESTS: u64 = 5_000;
/// Parallel connections (one thread each).
const WORKERS: usize = 4;
/// Most frames one connection sends.
const BURST_MAX: usize = 24;
/// A connection must be finished by the broker this long after its last byte was sent.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(20);
/// A fresh connection's ApiVersions must be answered within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const BROKER_PROPS: &[&str] = &[
    "socket.request.max.bytes=1048576",
    "sluice.message.decompressed.max.bytes=4194304",
    // JoinGroup answers at once instead of after the 3 s initial delay; short sessions.
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=100",
    "offsets.topic.num.partitions=4",
    // A fuzzed Fetch cannot park a connection for long.
    "sluice.fetch.max.wait.ms.max=100",
    // Small segments: many rolls; small preallocation and buffers: fuzzed CreateTopics
    // and CreatePartitions may ask for thousands of partitions.
    "log.segment.bytes=262144",
    "sluice.log.preallocate.bytes=1048576",
    "sluice.log.write.buffer.bytes=131072",
    "log.retention.check.interval.ms=1000",
    "num.partitions=2",
];

struct TopicDef {
    name: &'static str,
    partitions: i32,
    configs: &'static [(&'static str, &'static str)],
}

const CANARY: &str = "canary";

/// Topics created before fuzzing. Each API's template points at its own topics, so that a
/// fuzzed DeleteTopics, DeleteRecords or AlterConfigs cannot reach the canary.
const TOPICS: &[TopicDef] = &[
    TopicDef {
        name: CANARY,
        partitions: 2,
        configs: &[],
    },
    TopicDef {
        name: "fuzz",
        partitions: 4,
        configs: &[],
    },
    TopicDef {
        name: "fuzz-dr",
        partitions: 2,
        configs: &[],
    },
    TopicDef {
        name: "fuzz-cfg",
        partitions: 2,
        configs: &[],
    },
    TopicDef {
        name: "fuzz-compact",
        partitions: 2,
        configs: &[("cleanup.policy", "compact")],
    },
    TopicDef {
        name: "fuzz-lz4",
        partitions: 2,
        configs: &[("compression.type", "lz4")],
    },
    TopicDef {
        name: "fuzz-lat",
        partitions: 1,
        configs: &[("message.timestamp.type", "LogAppendTime")],
    },
    TopicDef {
        name: "fuzz-scratch-0",
        partitions: 1,
        configs: &[],
    },
    TopicDef {
        name: "fuzz-scratch-1",
        partitions: 1,
        configs: &[],
    },
];

/// Topics the Produce fuzzer writes to, with their partition counts.
const PRODUCE_TOPICS: &[(&str, i32)] = &[
    ("fuzz", 4),
    ("fuzz-dr", 2),
    ("fuzz-cfg", 2),
    ("fuzz-compact", 2),
    ("fuzz-lz4", 2),
    ("fuzz-lat", 1),
];

const CODEC_NAMES: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

// ---------------------------------------------------------------------------------------
// Frames and bursts

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// (a) random frame.
    Random = 0,
    /// (b) mutated valid request.
    Mutated = 1,
    /// (c) Produce with a mutated batch and a recomputed CRC.
    Batch = 2,
}

impl Kind {
    fn from_u8(v: u8) -> Kind {
        match v {
            0 => Kind::Random,
            1 => Kind::Mutated,
            _ => Kind::Batch,
        }
    }
}

#[derive(Clone)]
struct Frame {
    kind: Kind,
    /// What was done to it, for reports.
    desc: String,
    /// The bytes sent, length prefix included.
    bytes: Vec<u8>,
}

/// The frames one connection sends back to back.
#[derive(Clone)]
struct Burst {
    frames: Vec<Frame>,
    /// Close the socket at once after writing (a client that vanishes) instead of
    /// half-closing and reading to the end.
    abort: bool,
}

impl Burst {
    fn describe(&self) -> String {
        let mut s = format!(
            "{} frames{}:\n",
            self.frames.len(),
            if self.abort { " (aborted)" } else { "" }
        );
        for (i, f) in self.frames.iter().enumerate() {
            s += &format!(
                "  [{i}] {:?} {} bytes: {}\n      {}\n",
                f.kind,
                f.bytes.len(),
                f.desc,
                hex(&f.bytes, 512)
            );
        }
        s
    }
}

fn hex(b: &[u8], max: usize) -> String {
    let mut s: String = b.iter().take(max).map(|x| format!("{x:02x}")).collect();
    if b.len() > max {
        s += &format!("...(+{} bytes)", b.len() - max);
    }
    s
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("key{key}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn sub_rng(seed: u64, a: u64, b: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix(splitmix(seed ^ splitmix(a)) ^ b))
}

// ---------------------------------------------------------------------------------------
// Encoding requests

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn group(s: &str) -> GroupId {
    GroupId(sb(s))
}

/// A whole frame (length prefix, header, body) of `req` at `version`, its header in the
/// version `header_key`'s header rules give for `header_version_of` (they differ only for
/// versions the codec cannot encode).
fn encode_kind(
    key: ApiKey,
    header_api_version: i16,
    body_version: i16,
    req: &RequestKind,
    correlation_id: i32,
) -> anyhow::Result<Vec<u8>> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = header_api_version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("sluice-fuzz"));
    let mut body = BytesMut::new();
    header.encode(&mut body, key.request_header_version(header_api_version))?;
    req.encode(&mut body, body_version)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

fn encode_request<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("sluice-fuzz"));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .expect("encode header");
    req.encode(&mut body, version).expect("encode request");
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// A consumer-protocol subscription to `fuzz` (JoinGroup metadata).
fn subscription() -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&4i16.to_be_bytes());
    b.extend_from_slice(b"fuzz");
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// A consumer-protocol assignment of `fuzz` partitions 0 and 1 (SyncGroup).
fn assignment() -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&4i16.to_be_bytes());
    b.extend_from_slice(b"fuzz");
    b.extend_from_slice(&2i32.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// A meaningful request of API `key` at version `v` (fields set only where `v` has them),
/// or `None` for an API this fuzzer has no template for.
fn template_request(key: ApiKey, v: i16, records: &Bytes) -> Option<RequestKind> {
    use RequestKind as K;
    Some(match key {
        ApiKey::Produce => {
            let mut pd = produce_request::PartitionProduceData::default();
            pd.index = 0;
            pd.records = Some(records.clone());
            let mut td = produce_request::TopicProduceData::default();
            td.name = topic("fuzz");
            td.partition_data = vec![pd];
            let mut r = ProduceRequest::default();
            r.acks = -1;
            r.timeout_ms = 5_000;
            r.topic_data = vec![td];
            K::Produce(r)
        }
        ApiKey::Fetch => {
            let mut fp = fetch_request::FetchPartition::default();
            fp.partition = 0;
            fp.fetch_offset = 0;
            fp.partition_max_bytes = 65_536;
            let mut ft = fetch_request::FetchTopic::default();
            ft.topic = topic("fuzz");
            ft.partitions = vec![fp];
            let mut r = FetchRequest::default();
            r.replica_id = BrokerId(-1);
            r.max_wait_ms = 10;
            r.min_bytes = 1;
            r.max_bytes = if v >= 3 { 262_144 } else { i32::MAX };
            r.topics = vec![ft];
            K::Fetch(r)
        }
        ApiKey::ListOffsets => {
            let parts = [(0, -1i64), (1, -2), (2, now_ms() - 60_000)]
                .iter()
                .map(|&(p, ts)| {
                    let mut lp = list_offsets_request::ListOffsetsPartition::default();
                    lp.partition_index = p;
                    lp.timestamp = ts;
                    lp
                })
                .collect();
            let mut lt = list_offsets_request::ListOffsetsTopic::default();
            lt.name = topic("fuzz");
            lt.partitions = parts;
            let mut r = ListOffsetsRequest::default();
            r.replica_id = BrokerId(-1);
            r.topics = vec![lt];
            K::ListOffsets(r)
        }
        ApiKey::Metadata => {
            let mut t = metadata_request::MetadataRequestTopic::default();
            t.name = Some(topic("fuzz"));
            let mut t2 = metadata_request::MetadataRequestTopic::default();
            t2.name = Some(topic("fuzz-cfg"));
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![t, t2]);
            r.allow_auto_topic_creation = v < 4;
            K::Metadata(r)
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if v >= 4 {
                r.coordinator_keys = vec![sb("fuzz-group")];
            } else {
                r.key = sb("fuzz-group");
            }
            K::FindCoordinator(r)
        }
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if v >= 3 {
                r.client_software_name = sb("sluice-fuzz");
                r.client_software_version = sb("1.0");
            }
            K::ApiVersions(r)
        }
        ApiKey::CreateTopics => {
            let mut cfg = create_topics_request::CreatableTopicConfig::default();
            cfg.name = sb("segment.bytes");
            cfg.value = Some(sb("131072"));
            let mut t = create_topics_request::CreatableTopic::default();
            t.name = topic("fuzz-scratch-0");
            // The broker default: a mutated -1 is rarely a large valid partition count.
            t.num_partitions = -1;
            t.replication_factor = -1;
            t.configs = vec![cfg];
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 5_000;
            K::CreateTopics(r)
        }
        ApiKey::DeleteTopics => {
            let mut r = DeleteTopicsRequest::default();
            if v >= 6 {
                let mut t = delete_topics_request::DeleteTopicState::default();
                t.name = Some(topic("fuzz-scratch-1"));
                r.topics = vec![t];
            } else {
                r.topic_names = vec![topic("fuzz-scratch-1")];
            }
            r.timeout_ms = 5_000;
            K::DeleteTopics(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = None;
            r.transaction_timeout_ms = 60_000;
            K::InitProducerId(r)
        }
        ApiKey::JoinGroup => {
            let mut p = join_group_request::JoinGroupRequestProtocol::default();
            p.name = sb("range");
            p.metadata = subscription();
            let mut r = JoinGroupRequest::default();
            r.group_id = group("fuzz-group");
            r.session_timeout_ms = 500;
            if v >= 1 {
                r.rebalance_timeout_ms = 500;
            }
            r.protocol_type = sb("consumer");
            r.protocols = vec![p];
            K::JoinGroup(r)
        }
        ApiKey::SyncGroup => {
            let mut a = sync_group_request::SyncGroupRequestAssignment::default();
            a.member_id = sb("fuzz-member");
            a.assignment = assignment();
            let mut r = SyncGroupRequest::default();
            r.group_id = group("fuzz-group");
            r.generation_id = 1;
            r.member_id = sb("fuzz-member");
            if v >= 5 {
                r.protocol_type = Some(sb("consumer"));
                r.protocol_name = Some(sb("range"));
            }
            r.assignments = vec![a];
            K::SyncGroup(r)
        }
        ApiKey::Heartbeat => {
            let mut r = HeartbeatRequest::default();
            r.group_id = group("fuzz-group");
            r.generation_id = 1;
            r.member_id = sb("fuzz-member");
            K::Heartbeat(r)
        }
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupRequest::default();
            r.group_id = group("fuzz-group");
            if v >= 3 {
                let mut m = leave_group_request::MemberIdentity::default();
                m.member_id = sb("fuzz-member");
                if v >= 5 {
                    m.reason = Some(sb("fuzz"));
                }
                r.members = vec![m];
            } else {
                r.member_id = sb("fuzz-member");
            }
            K::LeaveGroup(r)
        }
        ApiKey::OffsetCommit => {
            let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
            p.partition_index = 0;
            p.committed_offset = 1;
            p.committed_metadata = Some(sb("m"));
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = topic("fuzz");
            t.partitions = vec![p];
            let mut r = OffsetCommitRequest::default();
            r.group_id = group("fuzz-commit");
            r.generation_id_or_member_epoch = -1;
            r.topics = vec![t];
            K::OffsetCommit(r)
        }
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if v >= 8 {
                let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
                t.name = topic("fuzz");
                t.partition_indexes = vec![0, 1];
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = group("fuzz-commit");
                g.topics = Some(vec![t]);
                r.groups = vec![g];
            } else {
                let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                t.name = topic("fuzz");
                t.partition_indexes = vec![0, 1];
                r.group_id = group("fuzz-commit");
                r.topics = Some(vec![t]);
            }
            K::OffsetFetch(r)
        }
        ApiKey::DescribeGroups => {
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![group("fuzz-group"), group("fuzz-commit")];
            K::DescribeGroups(r)
        }
        ApiKey::ListGroups => K::ListGroups(ListGroupsRequest::default()),
        ApiKey::DeleteGroups => {
            let mut r = DeleteGroupsRequest::default();
            r.groups_names = vec![group("fuzz-group-del")];
            K::DeleteGroups(r)
        }
        ApiKey::OffsetDelete => {
            let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
            p.partition_index = 0;
            let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
            t.name = topic("fuzz");
            t.partitions = vec![p];
            let mut r = OffsetDeleteRequest::default();
            r.group_id = group("fuzz-commit");
            r.topics = vec![t];
            K::OffsetDelete(r)
        }
        ApiKey::CreatePartitions => {
            let mut t = create_partitions_request::CreatePartitionsTopic::default();
            t.name = topic("fuzz-scratch-0");
            t.count = 2;
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 5_000;
            K::CreatePartitions(r)
        }
        ApiKey::DescribeConfigs => {
            let mut t = describe_configs_request::DescribeConfigsResource::default();
            t.resource_type = 2;
            t.resource_name = sb("fuzz-cfg");
            let mut b = describe_configs_request::DescribeConfigsResource::default();
            b.resource_type = 4;
            b.resource_name = sb("0");
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![t, b];
            K::DescribeConfigs(r)
        }
        ApiKey::AlterConfigs => {
            let configs = [("retention.ms", "3600000"), ("segment.bytes", "131072")]
                .iter()
                .map(|(k, val)| {
                    let mut c = alter_configs_request::AlterableConfig::default();
                    c.name = sb(k);
                    c.value = Some(sb(val));
                    c
                })
                .collect();
            let mut res = alter_configs_request::AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = sb("fuzz-cfg");
            res.configs = configs;
            let mut r = AlterConfigsRequest::default();
            r.resources = vec![res];
            K::AlterConfigs(r)
        }
        ApiKey::IncrementalAlterConfigs => {
            let configs = [("max.message.bytes", "1000000"), ("retention.bytes", "-1")]
                .iter()
                .map(|(k, val)| {
                    let mut c = incremental_alter_configs_request::AlterableConfig::default();
                    c.name = sb(k);
                    c.config_operation = 0;
                    c.value = Some(sb(val));
                    c
                })
                .collect();
            let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = sb("fuzz-cfg");
            res.configs = configs;
            let mut r = IncrementalAlterConfigsRequest::default();
            r.resources = vec![res];
            K::IncrementalAlterConfigs(r)
        }
        ApiKey::DeleteRecords => {
            let mut p = delete_records_request::DeleteRecordsPartition::default();
            p.partition_index = 0;
            p.offset = 1;
            let mut t = delete_records_request::DeleteRecordsTopic::default();
            t.name = topic("fuzz-dr");
            t.partitions = vec![p];
            let mut r = DeleteRecordsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 5_000;
            K::DeleteRecords(r)
        }
        ApiKey::DescribeCluster => K::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeLogDirs => {
            let mut t = describe_log_dirs_request::DescribableLogDirTopic::default();
            t.topic = topic("fuzz");
            t.partitions = vec![0, 1];
            let mut r = DescribeLogDirsRequest::default();
            r.topics = Some(vec![t]);
            K::DescribeLogDirs(r)
        }
        ApiKey::DescribeTopicPartitions => {
            let mut t = describe_topic_partitions_request::TopicRequest::default();
            t.name = topic("fuzz");
            let mut c = describe_topic_partitions_request::Cursor::default();
            c.topic_name = topic("fuzz");
            c.partition_index = 1;
            let mut r = DescribeTopicPartitionsRequest::default();
            r.topics = vec![t];
            r.response_partition_limit = 1;
            r.cursor = Some(c);
            K::DescribeTopicPartitions(r)
        }
        _ => return None,
    })
}

/// A captured valid request of one API key and version.
struct Template {
    key: i16,
    version: i16,
    frame: Vec<u8>,
    /// The broker closes the connection on it by design (an advertised version older than
    /// the codec decodes: the body is the codec's oldest version's).
    expect_close: bool,
    /// It may wait in the broker (group membership): sent last in a burst.
    waits: bool,
    /// Where its length fields are: (offset in frame, width in bytes; 1 = a compact varint).
    length_fields: Vec<(usize, usize)>,
    /// Whether `Default` had to stand in for the meaningful request.
    defaulted: bool,
}

/// Offsets of what look like length fields of `frame`: an INT16 string length or a compact
/// string's varint followed by that many printable bytes, an INT32 array count or bytes
/// length that fits in the rest of the frame.
fn find_length_fields(frame: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let printable = |s: &[u8]| s.iter().all(|c| (0x20..0x7f).contains(c));
    for p in 4..frame.len() {
        if p + 2 <= frame.len() {
            let n = i16::from_be_bytes([frame[p], frame[p + 1]]);
            if n > 0
                && p + 2 + n as usize <= frame.len()
                && printable(&frame[p + 2..][..n as usize])
            {
                out.push((p, 2));
            }
        }
        let c = frame[p] as usize;
        if (2..0x80).contains(&c) && p + c <= frame.len() && printable(&frame[p + 1..][..c - 1]) {
            out.push((p, 1));
        }
        if p + 4 <= frame.len() {
            let n = i32::from_be_bytes(frame[p..p + 4].try_into().unwrap());
            if (1..=64).contains(&n) || (n > 64 && (n as usize) + p + 4 == frame.len()) {
                out.push((p, 4));
            }
        }
    }
    out
}

fn build_templates(
    seed: u64,
    apis: &[(i16, i16, i16)],
    records: &Bytes,
) -> (Vec<Template>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut correlation = 1000;
    for &(k, min, max) in apis {
        let Ok(key) = ApiKey::try_from(k) else {
            notes.push(format!(
                "api key {k} unknown to kafka-protocol: random bodies only"
            ));
            continue;
        };
        let codec = key.valid_versions();
        for v in min..=max {
            correlation += 1;
            let body_version = v.clamp(codec.min, codec.max);
            let expect_close = body_version != v;
            let mut defaulted = false;
            let frame = match template_request(key, body_version, records) {
                Some(req) => encode_kind(key, v, body_version, &req, correlation).or_else(|e| {
                    defaulted = true;
                    notes.push(format!(
                        "{key:?} v{v}: template does not encode ({e}); Default used"
                    ));
                    default_frame(key, v, body_version, correlation)
                }),
                None => {
                    defaulted = true;
                    notes.push(format!("{key:?} v{v}: no template; Default used"));
                    default_frame(key, v, body_version, correlation)
                }
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    notes.push(format!("{key:?} v{v}: not encodable ({e}); skipped"));
                    continue;
                }
            };
            let length_fields = find_length_fields(&frame);
            out.push(Template {
                key: k,
                version: v,
                frame,
                expect_close,
                waits: matches!(key, ApiKey::JoinGroup | ApiKey::SyncGroup),
                length_fields,
                defaulted,
            });
        }
    }
    assert!(!out.is_empty(), "seed={seed}: no templates");
    (out, notes)
}

/// A frame of `key`'s `Default` request. Only the APIs the broker may advertise without a
/// template are listed; others have no generic constructor in `kafka-protocol`.
fn default_frame(
    key: ApiKey,
    header_version: i16,
    body_version: i16,
    correlation_id: i32,
) -> anyhow::Result<Vec<u8>> {
    use RequestKind as K;
    let req = match key {
        ApiKey::Produce => K::Produce(Default::default()),
        ApiKey::Fetch => K::Fetch(Default::default()),
        ApiKey::ListOffsets => K::ListOffsets(Default::default()),
        ApiKey::Metadata => K::Metadata(Default::default()),
        ApiKey::OffsetCommit => K::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => K::OffsetFetch(Default::default()),
        ApiKey::FindCoordinator => K::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => K::JoinGroup(Default::default()),
        ApiKey::Heartbeat => K::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => K::LeaveGroup(Default::default()),
        ApiKey::SyncGroup => K::SyncGroup(Default::default()),
        ApiKey::DescribeGroups => K::DescribeGroups(Default::default()),
        ApiKey::ListGroups => K::ListGroups(Default::default()),
        ApiKey::ApiVersions => K::ApiVersions(Default::default()),
        ApiKey::CreateTopics => K::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => K::DeleteTopics(Default::default()),
        ApiKey::DeleteRecords => K::DeleteRecords(Default::default()),
        ApiKey::InitProducerId => K::InitProducerId(Default::default()),
        ApiKey::DescribeConfigs => K::DescribeConfigs(Default::default()),
        ApiKey::AlterConfigs => K::AlterConfigs(Default::default()),
        ApiKey::DescribeLogDirs => K::DescribeLogDirs(Default::default()),
        ApiKey::CreatePartitions => K::CreatePartitions(Default::default()),
        ApiKey::DeleteGroups => K::DeleteGroups(Default::default()),
        ApiKey::IncrementalAlterConfigs => K::IncrementalAlterConfigs(Default::default()),
        ApiKey::OffsetDelete => K::OffsetDelete(Default::default()),
        ApiKey::DescribeCluster => K::DescribeCluster(Default::default()),
        ApiKey::DescribeTopicPartitions => K::DescribeTopicPartitions(Default::default()),
        ApiKey::DescribeQuorum => K::DescribeQuorum(Default::default()),
        ApiKey::AddPartitionsToTxn => K::AddPartitionsToTxn(Default::default()),
        ApiKey::AddOffsetsToTxn => K::AddOffsetsToTxn(Default::default()),
        ApiKey::EndTxn => K::EndTxn(Default::default()),
        ApiKey::TxnOffsetCommit => K::TxnOffsetCommit(Default::default()),
        ApiKey::DescribeProducers => K::DescribeProducers(Default::default()),
        ApiKey::DescribeTransactions => K::DescribeTransactions(Default::default()),
        ApiKey::ListTransactions => K::ListTransactions(Default::default()),
        ApiKey::SaslHandshake => K::SaslHandshake(Default::default()),
        ApiKey::SaslAuthenticate => K::SaslAuthenticate(Default::default()),
        ApiKey::DescribeAcls => K::DescribeAcls(Default::default()),
        ApiKey::CreateAcls => K::CreateAcls(Default::default()),
        ApiKey::DeleteAcls => K::DeleteAcls(Default::default()),
        ApiKey::ElectLeaders => K::ElectLeaders(Default::default()),
        ApiKey::AlterPartitionReassignments => K::AlterPartitionReassignments(Default::default()),
        ApiKey::ListPartitionReassignments => K::ListPartitionReassignments(Default::default()),
        ApiKey::DescribeClientQuotas => K::DescribeClientQuotas(Default::default()),
        ApiKey::AlterClientQuotas => K::AlterClientQuotas(Default::default()),
        ApiKey::DescribeUserScramCredentials => K::DescribeUserScramCredentials(Default::default()),
        ApiKey::AlterReplicaLogDirs => K::AlterReplicaLogDirs(Default::default()),
        ApiKey::CreateDelegationToken => K::CreateDelegationToken(Default::default()),
        ApiKey::ConsumerGroupHeartbeat => K::ConsumerGroupHeartbeat(Default::default()),
        ApiKey::ConsumerGroupDescribe => K::ConsumerGroupDescribe(Default::default()),
        ApiKey::GetTelemetrySubscriptions => K::GetTelemetrySubscriptions(Default::default()),
        ApiKey::PushTelemetry => K::PushTelemetry(Default::default()),
        _ => anyhow::bail!("no Default request for {key:?}"),
    };
    encode_kind(key, header_version, body_version, &req, correlation_id)
}

// ---------------------------------------------------------------------------------------
// Record batches

/// One field of an encoded record.
#[derive(Clone)]
enum Field {
    Byte(u8),
    Var(i64),
    /// A varint written in more bytes than needed (or a broken encoding).
    RawVar(Vec<u8>),
    Raw(Vec<u8>),
}

impl Field {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Field::Byte(b) => out.push(*b),
            Field::Var(v) => put_varint(out, *v),
            Field::RawVar(b) | Field::Raw(b) => out.extend_from_slice(b),
        }
    }
}

/// A record as a list of fields, and an optional override of its length prefix.
struct RecordFields {
    fields: Vec<Field>,
    length: Option<i64>,
}

impl RecordFields {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        for f in &self.fields {
            f.put(&mut body);
        }
        put_varint(out, self.length.unwrap_or(body.len() as i64));
        out.extend_from_slice(&body);
    }
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    if rng.gen_bool(0.3) {
        // Compressible.
        vec![rng.gen(); n]
    } else {
        (0..n).map(|_| rng.gen()).collect()
    }
}

fn record_fields(rng: &mut StdRng, i: usize, keyed: bool) -> RecordFields {
    let mut fields = vec![Field::Byte(0), Field::Var(i as i64), Field::Var(i as i64)];
    if keyed || rng.gen_bool(0.5) {
        let k = format!("k{}", rng.gen_range(0..50)).into_bytes();
        fields.push(Field::Var(k.len() as i64));
        fields.push(Field::Raw(k));
    } else {
        fields.push(Field::Var(-1));
    }
    if rng.gen_bool(0.05) {
        fields.push(Field::Var(-1));
    } else {
        let v = random_bytes(rng, 300);
        fields.push(Field::Var(v.len() as i64));
        fields.push(Field::Raw(v));
    }
    let headers = if rng.gen_bool(0.2) {
        rng.gen_range(1..=2)
    } else {
        0
    };
    fields.push(Field::Var(headers));
    for h in 0..headers {
        let k = format!("h{h}").into_bytes();
        fields.push(Field::Var(k.len() as i64));
        fields.push(Field::Raw(k));
        let v = random_bytes(rng, 20);
        fields.push(Field::Var(v.len() as i64));
        fields.push(Field::Raw(v));
    }
    RecordFields {
        fields,
        length: None,
    }
}

fn interesting_i32(rng: &mut StdRng, near: i64) -> i64 {
    *[
        0,
        -1,
        -2,
        1,
        near - 1,
        near + 1,
        i32::MAX as i64,
        i32::MAX as i64 - 1,
        i32::MIN as i64,
        rng.gen_range(-1000..1000),
        rng.gen::<i32>() as i64,
    ]
    .choose(rng)
    .unwrap()
}

/// Mutates one record; returns what was done.
fn mutate_record(rng: &mut StdRng, r: &mut RecordFields) -> String {
    let len: usize = r
        .fields
        .iter()
        .map(|f| {
            let mut b = Vec::new();
            f.put(&mut b);
            b.len()
        })
        .sum();
    match rng.gen_range(0..6) {
        0 => {
            let v = interesting_i32(rng, len as i64);
            r.length = Some(v);
            format!("record length={v} (actual {len})")
        }
        1 => {
            let b = rng.gen();
            r.fields[0] = Field::Byte(b);
            format!("record attributes={b:#x}")
        }
        2 => {
            let v = *[i64::MAX, i64::MIN, -1, rng.gen()].choose(rng).unwrap();
            r.fields[1] = Field::Var(v);
            format!("timestamp delta={v}")
        }
        3 => {
            let old = match r.fields[2] {
                Field::Var(v) => v,
                _ => 0,
            };
            let v = interesting_i32(rng, old);
            r.fields[2] = Field::Var(v);
            format!("offset delta={v} (was {old})")
        }
        4 => {
            // A length or count varint (key, value, header count, header key/value).
            let vars: Vec<usize> = (3..r.fields.len())
                .filter(|&i| matches!(r.fields[i], Field::Var(_)))
                .collect();
            let i = *vars.choose(rng).unwrap();
            let old = match r.fields[i] {
                Field::Var(v) => v,
                _ => 0,
            };
            let v = interesting_i32(rng, old);
            r.fields[i] = Field::Var(v);
            format!("record varint field {i}={v} (was {old})")
        }
        _ => {
            // An overlong or unterminated varint.
            let vars: Vec<usize> = (1..r.fields.len())
                .filter(|&i| matches!(r.fields[i], Field::Var(_)))
                .collect();
            let i = *vars.choose(rng).unwrap();
            let bytes = match rng.gen_range(0..3) {
                0 => vec![0x80, 0x80, 0x80, 0x80, 0x00],
                1 => vec![0xff; 11],
                _ => vec![0xff, 0xff, 0xff, 0xff, 0x7f],
            };
            let d = format!("record field {i} as varint bytes {}", hex(&bytes, 16));
            r.fields[i] = Field::RawVar(bytes);
            d
        }
    }
}

fn compress(codec: u8, raw: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let fill = |b: &mut BytesMut| -> anyhow::Result<()> {
        b.extend_from_slice(raw);
        Ok(())
    };
    match codec {
        1 => <Gzip as Compressor<BytesMut>>::compress(&mut out, fill),
        2 => <Snappy as Compressor<BytesMut>>::compress(&mut out, fill),
        3 => <Lz4 as Compressor<BytesMut>>::compress(&mut out, fill),
        4 => <Zstd as Compressor<BytesMut>>::compress(&mut out, fill),
        _ => return raw.to_vec(),
    }
    .expect("compress");
    out.to_vec()
}

/// The header fields of a v2 batch.
#[derive(Clone)]
struct BatchHeader {
    base_offset: i64,
    leader_epoch: i32,
    magic: i8,
    attributes: i16,
    last_offset_delta: i32,
    first_ts: i64,
    max_ts: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records_count: i32,
}

fn assemble(h: &BatchHeader, records: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend_from_slice(&h.base_offset.to_be_bytes());
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&h.leader_epoch.to_be_bytes());
    b.push(h.magic as u8);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&h.attributes.to_be_bytes());
    b.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    b.extend_from_slice(&h.first_ts.to_be_bytes());
    b.extend_from_slice(&h.max_ts.to_be_bytes());
    b.extend_from_slice(&h.producer_id.to_be_bytes());
    b.extend_from_slice(&h.producer_epoch.to_be_bytes());
    b.extend_from_slice(&h.base_sequence.to_be_bytes());
    b.extend_from_slice(&h.records_count.to_be_bytes());
    b.extend_from_slice(records);
    fix_crc(&mut b);
    b
}

/// Mutates one header field; returns what was done.
fn mutate_header(rng: &mut StdRng, h: &mut BatchHeader, n: i32, pids: &[(i64, i16)]) -> String {
    match rng.gen_range(0..13) {
        0 => {
            h.last_offset_delta = interesting_i32(rng, n as i64 - 1) as i32;
            format!("last_offset_delta={}", h.last_offset_delta)
        }
        1 => {
            h.records_count = interesting_i32(rng, n as i64) as i32;
            format!("records_count={}", h.records_count)
        }
        2 => {
            // Consistent with each other, not with the records.
            let lod = *[i32::MAX - 1, i32::MAX / 2, 1_000_000, n + 5]
                .choose(rng)
                .unwrap();
            h.last_offset_delta = lod;
            h.records_count = lod + 1;
            format!("last_offset_delta={lod} records_count={}", lod + 1)
        }
        3 => {
            h.last_offset_delta = i32::MAX;
            h.records_count = n;
            format!("last_offset_delta=i32::MAX records_count={n}")
        }
        4 => {
            let codec = rng.gen_range(0..8i16);
            h.attributes = (h.attributes & !7) | codec;
            format!("attributes codec bits={codec}")
        }
        5 => {
            let bit = *[0x08i16, 0x10, 0x20, 0x30, 0x40, 0x80, 0x100, i16::MIN]
                .choose(rng)
                .unwrap();
            h.attributes |= bit;
            format!("attributes |= {bit:#x} -> {:#x}", h.attributes)
        }
        6 => {
            let v = *[
                i64::MIN,
                i64::MAX,
                -1,
                0,
                now_ms() + 86_400_000 * 365,
                rng.gen(),
            ]
            .choose(rng)
            .unwrap();
            if rng.gen_bool(0.5) {
                h.first_ts = v;
                format!("first_timestamp={v}")
            } else {
                h.max_ts = v;
                format!("max_timestamp={v}")
            }
        }
        7 => {
            h.producer_id = *[
                -1,
                0,
                -2,
                i64::MAX,
                pids[rng.gen_range(0..pids.len())].0,
                pids[0].0 + 1_000_000,
                rng.gen(),
            ]
            .choose(rng)
            .unwrap();
            format!("producer_id={}", h.producer_id)
        }
        8 => {
            h.producer_epoch = *[-1, 0, 1, i16::MAX, i16::MIN, rng.gen()]
                .choose(rng)
                .unwrap();
            format!("producer_epoch={}", h.producer_epoch)
        }
        9 => {
            h.base_sequence = *[-1, 0, i32::MAX, i32::MAX - n / 2, rng.gen()]
                .choose(rng)
                .unwrap();
            format!("base_sequence={}", h.base_sequence)
        }
        10 => {
            h.base_offset = *[-1, i64::MAX, rng.gen()].choose(rng).unwrap();
            h.leader_epoch = rng.gen();
            format!(
                "base_offset={} leader_epoch={}",
                h.base_offset, h.leader_epoch
            )
        }
        11 => {
            h.magic = *[0i8, 1, 3, -1].choose(rng).unwrap();
            format!("magic={}", h.magic)
        }
        _ => {
            h.attributes = rng.gen();
            format!("attributes={:#x}", h.attributes)
        }
    }
}

/// Precomputed decompression bombs: (codec, compressed records, records count, what).
type Bomb = (u8, Vec<u8>, i32, String);

fn make_bombs() -> Vec<Bomb> {
    let mut out = Vec::new();
    // Zeros: every record decodes as length 0, far past the decompressed-size bound.
    let zeros = vec![0u8; 2 * DECOMPRESSED_MAX_BYTES];
    // Valid records, together just under and just over the bound.
    let records = |bytes: usize| {
        let mut raw = Vec::with_capacity(bytes + 256);
        let mut n = 0i32;
        while raw.len() < bytes {
            RecordFields {
                fields: vec![
                    Field::Byte(0),
                    Field::Var(0),
                    Field::Var(n as i64),
                    Field::Var(2),
                    Field::Raw(b"kk".to_vec()),
                    Field::Var(100),
                    Field::Raw(vec![b'v'; 100]),
                    Field::Var(0),
                ],
                length: None,
            }
            .encode(&mut raw);
            n += 1;
        }
        (raw, n)
    };
    let (small, count_small) = records(DECOMPRESSED_MAX_BYTES * 3 / 4);
    let (large, count_large) = records(DECOMPRESSED_MAX_BYTES + (1 << 20));
    for codec in 1..=4u8 {
        let name = CODEC_NAMES[codec as usize];
        out.push((
            codec,
            compress(codec, &zeros),
            1000,
            format!("{name} bomb of {} zero bytes", zeros.len()),
        ));
        out.push((
            codec,
            compress(codec, &small),
            count_small,
            format!(
                "{name} batch of {count_small} records, {} bytes decompressed",
                small.len()
            ),
        ));
        out.push((
            codec,
            compress(codec, &large),
            count_large,
            format!(
                "{name} bomb of {count_large} records, {} bytes decompressed",
                large.len()
            ),
        ));
    }
    out
}

/// Per worker: its producer id and the next sequence per (topic, partition).
#[derive(Default)]
struct Sequences {
    next: BTreeMap<(usize, i32), i32>,
}

/// One batch for `topic_ix`/`partition`, mutated or not, CRC recomputed (mostly).
fn gen_batch(
    rng: &mut StdRng,
    ctx: &Ctx,
    seqs: &mut Sequences,
    worker: usize,
    topic_ix: usize,
    partition: i32,
) -> (Vec<u8>, String) {
    let codec: u8 = rng.gen_range(0..5);
    let (pid, epoch) = ctx.pids[worker % ctx.pids.len()];
    let mut desc = Vec::new();
    let keyed = topic_ix == 3 || rng.gen_bool(0.5);

    // Decompression bombs.
    if rng.gen_bool(0.002) {
        let (codec, body, count, what) = ctx.bombs.choose(rng).unwrap();
        let first_ts = now_ms();
        let h = BatchHeader {
            base_offset: 0,
            leader_epoch: -1,
            magic: 2,
            attributes: *codec as i16,
            last_offset_delta: count - 1,
            first_ts,
            max_ts: first_ts,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: *count,
        };
        return (assemble(&h, body), what.clone());
    }

    let n = if rng.gen_bool(0.9) {
        rng.gen_range(1..=8)
    } else {
        rng.gen_range(9..=200)
    };
    // Unmutated batches are sometimes encoded by kafka-protocol, as clients do.
    let header_mutations = if rng.gen_bool(0.55) {
        rng.gen_range(1..=3)
    } else {
        0
    };
    let record_mutation = rng.gen_bool(0.35);
    let region_mutation = rng.gen_bool(0.1);
    let idempotent = rng.gen_bool(0.4);
    let clean = header_mutations == 0 && !record_mutation && !region_mutation;
    let base_sequence = if idempotent && clean {
        let s = seqs.next.entry((topic_ix, partition)).or_insert(0);
        let v = *s;
        *s = s.wrapping_add(n);
        v
    } else if idempotent {
        rng.gen_range(0..1000)
    } else {
        -1
    };
    let (producer_id, producer_epoch) = if idempotent { (pid, epoch) } else { (-1, -1) };
    let first_ts = now_ms() - rng.gen_range(0..10_000);

    if clean && rng.gen_bool(0.3) {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if idempotent { base_sequence + i } else { -1 },
                timestamp: first_ts + i as i64,
                key: keyed.then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(random_bytes(rng, 200))),
                headers: Default::default(),
            })
            .collect();
        let compression = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ][codec as usize];
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode batch");
        return (
            buf.to_vec(),
            format!(
                "valid {} batch of {n} records (RecordBatchEncoder), pid {producer_id} seq {base_sequence}",
                CODEC_NAMES[codec as usize]
            ),
        );
    }

    let mut recs: Vec<RecordFields> = (0..n as usize)
        .map(|i| record_fields(rng, i, keyed))
        .collect();
    if record_mutation {
        for _ in 0..rng.gen_range(1..=2) {
            let i = rng.gen_range(0..recs.len());
            let d = mutate_record(rng, &mut recs[i]);
            desc.push(format!("record {i}: {d}"));
        }
    }
    let mut raw = Vec::new();
    for r in &recs {
        r.encode(&mut raw);
    }
    if region_mutation {
        match rng.gen_range(0..4) {
            0 => {
                let cut = rng.gen_range(0..raw.len());
                raw.truncate(cut);
                desc.push(format!("records cut to {cut} bytes"));
            }
            1 => {
                let extra = random_bytes(rng, 16);
                desc.push(format!("{} bytes appended to records", extra.len()));
                raw.extend_from_slice(&extra);
            }
            2 => {
                let first_len = {
                    let mut b = Vec::new();
                    recs[0].encode(&mut b);
                    b.len()
                };
                let dup = raw[..first_len].to_vec();
                raw.extend_from_slice(&dup);
                desc.push("record 0 repeated at the end".into());
            }
            _ => {
                raw.clear();
                desc.push("no record bytes".into());
            }
        }
    }
    let mut body = compress(codec, &raw);
    if codec != 0 && rng.gen_bool(0.1) {
        let i = rng.gen_range(0..body.len());
        match rng.gen_range(0..3) {
            0 => {
                body[i] ^= 1 << rng.gen_range(0..8);
                desc.push(format!("compressed byte {i} flipped"));
            }
            1 => {
                body.truncate(i);
                desc.push(format!("compressed data cut to {i} bytes"));
            }
            _ => {
                body.extend_from_slice(&random_bytes(rng, 32));
                desc.push("garbage after compressed data".into());
            }
        }
    }
    let mut h = BatchHeader {
        base_offset: 0,
        leader_epoch: -1,
        magic: 2,
        attributes: codec as i16,
        last_offset_delta: n - 1,
        first_ts,
        max_ts: first_ts + n as i64 - 1,
        producer_id,
        producer_epoch,
        base_sequence,
        records_count: n,
    };
    for _ in 0..header_mutations {
        desc.push(mutate_header(rng, &mut h, n, &ctx.pids));
    }
    let mut batch = assemble(&h, &body);
    if rng.gen_bool(0.03) {
        let v = interesting_i32(rng, batch.len() as i64 - 12) as i32;
        batch[8..12].copy_from_slice(&v.to_be_bytes());
        fix_crc(&mut batch);
        desc.push(format!("batch_length={v} (actual {})", batch.len() - 12));
    }
    if rng.gen_bool(0.03) {
        batch[17] ^= 0x01;
        desc.push("CRC left wrong".into());
    }
    (
        batch,
        format!(
            "{} batch of {n} records, pid {producer_id} seq {base_sequence}: {}",
            CODEC_NAMES[codec as usize],
            if desc.is_empty() {
                "unmutated".to_owned()
            } else {
                desc.join("; ")
            }
        ),
    )
}

/// (c): a Produce request whose batches come from `gen_batch`.
fn batch_frame(rng: &mut StdRng, ctx: &Ctx, seqs: &mut Sequences, worker: usize) -> Frame {
    let version = rng.gen_range(ctx.produce_versions.0..=ctx.produce_versions.1);
    let acks = *[-1i16, -1, 1, 0].choose(rng).unwrap();
    let mut descs = Vec::new();
    let topics = if rng.gen_bool(0.9) { 1 } else { 2 };
    let mut topic_data = Vec::new();
    let mut used = Vec::new();
    for _ in 0..topics {
        let ti = rng.gen_range(0..PRODUCE_TOPICS.len());
        if used.contains(&ti) {
            continue;
        }
        used.push(ti);
        let (name, partitions) = PRODUCE_TOPICS[ti];
        let np = if rng.gen_bool(0.85) { 1 } else { 2 };
        let mut pds = Vec::new();
        let mut used_p = Vec::new();
        for _ in 0..np {
            let p = rng.gen_range(0..partitions);
            if used_p.contains(&p) {
                continue;
            }
            used_p.push(p);
            let mut records = Vec::new();
            let batches = if rng.gen_bool(0.85) {
                1
            } else {
                rng.gen_range(2..=3)
            };
            for _ in 0..batches {
                let (b, d) = gen_batch(rng, ctx, seqs, worker, ti, p);
                descs.push(format!("{name}-{p}: {d}"));
                records.extend_from_slice(&b);
            }
            if rng.gen_bool(0.03) {
                let extra = random_bytes(rng, 40);
                descs.push(format!("{name}-{p}: {} trailing bytes", extra.len()));
                records.extend_from_slice(&extra);
            }
            let mut pd = produce_request::PartitionProduceData::default();
            pd.index = p;
            pd.records = Some(Bytes::from(records));
            pds.push(pd);
        }
        let mut td = produce_request::TopicProduceData::default();
        td.name = topic(name);
        td.partition_data = pds;
        topic_data.push(td);
    }
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 5_000;
    req.topic_data = topic_data;
    let bytes = encode_request(&req, version, rng.gen());
    Frame {
        kind: Kind::Batch,
        desc: format!("Produce v{version} acks={acks}: {}", descs.join(" | ")),
        bytes,
    }
}

// ---------------------------------------------------------------------------------------
// Mutations of valid requests and random frames

fn interesting_len(rng: &mut StdRng) -> i32 {
    *[
        0,
        -1,
        i32::MAX,
        1,
        2,
        3,
        7,
        0x7f,
        0xff,
        0x7fff,
        0xffff,
        i32::MIN,
        rng.gen_range(0..64),
    ]
    .choose(rng)
    .unwrap()
}

/// (b): a mutation of a captured valid request.
fn mutated_frame(rng: &mut StdRng, ctx: &Ctx, t: &Template) -> Frame {
    let mut f = t.frame.clone();
    let mut desc = Vec::new();
    let mut prefix_fixed = true;
    let ops = *[1, 1, 1, 2, 2, 3].choose(rng).unwrap();
    for _ in 0..ops {
        if f.len() <= 5 {
            break;
        }
        match rng.gen_range(0..10) {
            0 | 1 => {
                let flips = rng.gen_range(1..=8);
                for _ in 0..flips {
                    let p = rng.gen_range(4..f.len());
                    f[p] ^= 1 << rng.gen_range(0..8);
                }
                desc.push(format!("{flips} bit flips"));
            }
            2 => {
                let p = rng.gen_range(4..f.len());
                let v = *[0u8, 0xff, 0x7f, 0x80, 0x01, rng.gen()]
                    .choose(rng)
                    .unwrap();
                f[p] = v;
                desc.push(format!("byte {p}={v:#04x}"));
            }
            3 => {
                let cut = rng.gen_range(4..f.len());
                f.truncate(cut);
                desc.push(format!("cut to {cut} bytes"));
            }
            4 => {
                let p = rng.gen_range(4..=f.len());
                let ins: Vec<u8> = if rng.gen_bool(0.3) {
                    vec![0xff, 0xff, 0xff, 0xff, 0x0f]
                } else {
                    (0..rng.gen_range(1..=16)).map(|_| rng.gen()).collect()
                };
                desc.push(format!("inserted {} at {p}", hex(&ins, 16)));
                f.splice(p..p, ins);
            }
            5 | 6 => {
                let (p, w) = if !t.length_fields.is_empty() && rng.gen_bool(0.8) {
                    *t.length_fields.choose(rng).unwrap()
                } else {
                    (rng.gen_range(4..f.len()), *[1, 2, 4].choose(rng).unwrap())
                };
                if p + w > f.len() {
                    continue;
                }
                let v = interesting_len(rng);
                match w {
                    1 => f[p] = v as u8,
                    2 => f[p..p + 2].copy_from_slice(&(v as i16).to_be_bytes()),
                    _ => f[p..p + 4].copy_from_slice(&v.to_be_bytes()),
                }
                desc.push(format!("length field at {p} (width {w})={v}"));
            }
            7 => {
                let a = rng.gen_range(4..f.len());
                let b = rng.gen_range(a..=f.len().min(a + 64));
                let dup = f[a..b].to_vec();
                desc.push(format!("bytes {a}..{b} repeated"));
                f.splice(b..b, dup);
            }
            8 => {
                let other = ctx.templates.choose(rng).unwrap();
                let p = rng.gen_range(4..f.len());
                let q = rng.gen_range(4..other.frame.len());
                f.truncate(p);
                f.extend_from_slice(&other.frame[q..]);
                desc.push(format!(
                    "tail from byte {q} of {} v{} spliced at {p}",
                    api_name(other.key),
                    other.version
                ));
            }
            _ => {
                if f.len() < 8 {
                    continue;
                }
                let (min, max) = ctx
                    .apis
                    .iter()
                    .find(|a| a.0 == t.key)
                    .map(|a| (a.1, a.2))
                    .unwrap_or((0, 0));
                let v = *[min - 1, max + 1, -1, i16::MAX, rng.gen_range(min..=max)]
                    .choose(rng)
                    .unwrap();
                if rng.gen_bool(0.7) {
                    f[6..8].copy_from_slice(&v.to_be_bytes());
                    desc.push(format!("header version={v}"));
                } else {
                    let k = ctx.apis.choose(rng).unwrap().0;
                    f[4..6].copy_from_slice(&k.to_be_bytes());
                    desc.push(format!("header api key={}", api_name(k)));
                }
            }
        }
    }
    let body_len = f.len() as i32 - 4;
    match rng.gen_range(0..20) {
        0 => {
            prefix_fixed = false;
            desc.push("stale length prefix".into());
        }
        1 | 2 => {
            let v = *[
                0,
                -1,
                i32::MAX,
                1,
                3,
                REQUEST_MAX_BYTES as i32,
                REQUEST_MAX_BYTES as i32 + 1,
                body_len + 1,
                body_len - 1,
            ]
            .choose(rng)
            .unwrap();
            f[0..4].copy_from_slice(&v.to_be_bytes());
            prefix_fixed = false;
            desc.push(format!("length prefix={v} (body {body_len})"));
        }
        _ => {}
    }
    if prefix_fixed {
        f[0..4].copy_from_slice(&body_len.to_be_bytes());
    }
    Frame {
        kind: Kind::Mutated,
        desc: format!(
            "{} v{}: {}",
            api_name(t.key),
            t.version,
            if desc.is_empty() {
                "unmutated".to_owned()
            } else {
                desc.join("; ")
            }
        ),
        bytes: f,
    }
}

/// (a): a random frame.
fn random_frame(rng: &mut StdRng, ctx: &Ctx) -> Frame {
    let (key, version) = match rng.gen_range(0..10) {
        0..=5 => {
            let a = ctx.apis.choose(rng).unwrap();
            (a.0, rng.gen_range(a.1..=a.2))
        }
        6 | 7 => {
            let a = ctx.apis.choose(rng).unwrap();
            (a.0, *[-1, a.2 + 1, rng.gen()].choose(rng).unwrap())
        }
        8 => (rng.gen_range(0..100), rng.gen_range(-1..20)),
        _ => (rng.gen(), rng.gen()),
    };
    let mut body = Vec::new();
    body.extend_from_slice(&key.to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&rng.gen::<i32>().to_be_bytes());
    match rng.gen_range(0..10) {
        0..=6 => {
            let id = format!("c{}", rng.gen_range(0..1000));
            body.extend_from_slice(&(id.len() as i16).to_be_bytes());
            body.extend_from_slice(id.as_bytes());
        }
        7 => body.extend_from_slice(&(-1i16).to_be_bytes()),
        _ => body.extend_from_slice(&rng.gen::<i16>().to_be_bytes()),
    }
    // Flexible headers end with tagged fields.
    let flexible = ApiKey::try_from(key)
        .map(|k| k.request_header_version(version) >= 2)
        .unwrap_or(false);
    if flexible {
        match rng.gen_range(0..4) {
            0 | 1 => body.push(0),
            2 => body.extend_from_slice(&[1, rng.gen(), rng.gen(), rng.gen()]),
            _ => body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
        }
    }
    let body_len = match rng.gen_range(0..100) {
        0 => REQUEST_MAX_BYTES - body.len(),
        1..=5 => rng.gen_range(0..65_536),
        _ => rng.gen_range(0..512),
    };
    body.extend((0..body_len).map(|_| rng.gen::<u8>()));
    let full = body.len() as i32;
    let (prefix, what) = match rng.gen_range(0..20) {
        0..=8 => (full, "exact".to_owned()),
        9 | 10 => (rng.gen_range(0..16), "small".to_owned()),
        11 => (
            *[-1, i32::MIN, -rng.gen_range(1..1000)].choose(rng).unwrap(),
            "negative".into(),
        ),
        12 => (REQUEST_MAX_BYTES as i32 + 1, "max+1".into()),
        13 => (i32::MAX, "i32::MAX".into()),
        14 => (REQUEST_MAX_BYTES as i32, "max".into()),
        15 => (rng.gen(), "random".into()),
        _ => (full + rng.gen_range(1..1000), "longer than sent".into()),
    };
    let mut bytes = prefix.to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    Frame {
        kind: Kind::Random,
        desc: format!(
            "random: api key {} version {version}, prefix {prefix} ({what}), body {full} bytes",
            api_name(key)
        ),
        bytes,
    }
}

/// One connection's frames: produce batches first, then mutated requests, then at most one
/// request that may wait in the broker, then at most one random frame (which almost
/// always closes the connection).
fn gen_burst(rng: &mut StdRng, ctx: &Ctx, seqs: &mut Sequences, worker: usize) -> Burst {
    let n = if rng.gen_bool(0.4) {
        rng.gen_range(1..=4)
    } else {
        rng.gen_range(1..=BURST_MAX)
    };
    let mut batches = Vec::new();
    let mut mutated = Vec::new();
    let mut waiting: Option<Frame> = None;
    let mut random: Option<Frame> = None;
    for _ in 0..n {
        let roll = rng.gen_range(0..100);
        if roll < 40 {
            batches.push(batch_frame(rng, ctx, seqs, worker));
        } else if roll < 88 {
            let t = ctx.templates.choose(rng).unwrap();
            let f = mutated_frame(rng, ctx, t);
            if !t.waits {
                mutated.push(f);
            } else if waiting.is_none() {
                waiting = Some(f);
            } else {
                batches.push(batch_frame(rng, ctx, seqs, worker));
            }
        } else if random.is_none() {
            random = Some(random_frame(rng, ctx));
        } else {
            batches.push(batch_frame(rng, ctx, seqs, worker));
        }
    }
    let mut frames = batches;
    frames.extend(mutated);
    frames.extend(waiting);
    frames.extend(random);
    Burst {
        frames,
        abort: rng.gen_bool(0.03),
    }
}

// ---------------------------------------------------------------------------------------
// Sending

#[derive(Default, Clone, Copy)]
struct Stats {
    frames: [u64; 3],
    connections: u64,
    responses: u64,
    /// Bursts the broker closed before answering all of them (a bad frame, acks=0, ...).
    closed_early: u64,
    connect_failures: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        for i in 0..3 {
            self.frames[i] += o.frames[i];
        }
        self.connections += o.connections;
        self.responses += o.responses;
        self.closed_early += o.closed_early;
        self.connect_failures += o.connect_failures;
    }
}

enum Outcome {
    /// The broker closed the connection; responses read.
    Closed(u64),
    ConnectFailed(String),
    /// Still open `CONNECTION_DEADLINE` after the last byte was sent.
    Stuck {
        sent: usize,
        responses: u64,
    },
}

/// Writes a burst's bytes while reading responses (so neither side blocks on a full
/// socket buffer), half-closes, and reads until the broker closes the connection.
fn pump(addr: SocketAddr, burst: &Burst) -> Outcome {
    let data: Vec<u8> = burst.frames.iter().flat_map(|f| f.bytes.clone()).collect();
    let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return Outcome::ConnectFailed(e.to_string()),
    };
    let _ = stream.set_nodelay(true);
    stream.set_nonblocking(true).unwrap();
    let mut s = &stream;
    let fd = stream.as_raw_fd();
    let mut written = 0usize;
    let mut shut = false;
    let mut responses = 0u64;
    let mut len_buf = [0u8; 4];
    let mut len_have = 0usize;
    let mut remaining = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let mut deadline = Instant::now() + CONNECTION_DEADLINE;
    loop {
        if written == data.len() && !shut {
            if burst.abort {
                return Outcome::Closed(responses);
            }
            let _ = stream.shutdown(Shutdown::Write);
            shut = true;
            deadline = Instant::now() + CONNECTION_DEADLINE;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Stuck {
                sent: written,
                responses,
            };
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN | if shut { 0 } else { libc::POLLOUT },
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket this function owns.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(200) as i32) };
        if r <= 0 {
            continue;
        }
        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return Outcome::Closed(responses),
                    Ok(n) => {
                        let mut i = 0;
                        while i < n {
                            if len_have < 4 {
                                len_buf[len_have] = buf[i];
                                len_have += 1;
                                i += 1;
                                if len_have == 4 {
                                    remaining = i32::from_be_bytes(len_buf).max(0) as usize;
                                    if remaining == 0 {
                                        responses += 1;
                                        len_have = 0;
                                    }
                                }
                            } else {
                                let take = remaining.min(n - i);
                                i += take;
                                remaining -= take;
                                if remaining == 0 {
                                    responses += 1;
                                    len_have = 0;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return Outcome::Closed(responses),
                }
            }
        }
        if !shut && pfd.revents & libc::POLLOUT != 0 {
            match s.write(&data[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The broker closed its side (a bad frame): read what it answered.
                Err(_) => {
                    written = data.len();
                    shut = true;
                    deadline = Instant::now() + CONNECTION_DEADLINE;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A small blocking client for the checks (errors are values, never panics)

struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            correlation: 0,
        })
    }

    fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, String> {
        self.correlation += 1;
        let name = api_name(R::KEY);
        let frame = encode_request(req, version, self.correlation);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("{name} v{version}: write: {e}"))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| format!("{name} v{version}: no response: {e}"))?;
        let len = i32::from_be_bytes(len);
        if !(0..=64 << 20).contains(&len) {
            return Err(format!("{name} v{version}: response length {len}"));
        }
        let mut body = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("{name} v{version}: short response: {e}"))?;
        let mut body = Bytes::from(body);
        let header_version = if R::KEY == ApiKey::ApiVersions as i16 {
            0
        } else {
            <R::Response as HeaderVersion>::header_version(version)
        };
        let header = ResponseHeader::decode(&mut body, header_version)
            .map_err(|e| format!("{name} v{version}: response header: {e}"))?;
        if header.correlation_id != self.correlation {
            return Err(format!(
                "{name} v{version}: correlation id {} for {}",
                header.correlation_id, self.correlation
            ));
        }
        R::Response::decode(&mut body, version)
            .map_err(|e| format!("{name} v{version}: response does not decode: {e}"))
    }
}

/// A fresh connection gets ApiVersions answered within `PROBE_TIMEOUT`, then Metadata.
fn probe(addr: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    let mut c = Conn::open(addr, PROBE_TIMEOUT)?;
    let resp = c.call(&ApiVersionsRequest::default(), 3)?;
    let took = started.elapsed();
    if resp.error_code != 0 || resp.api_keys.is_empty() {
        return Err(format!(
            "ApiVersions answered error {} with {} apis",
            resp.error_code,
            resp.api_keys.len()
        ));
    }
    if took > PROBE_TIMEOUT {
        return Err(format!("ApiVersions took {took:?}"));
    }
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // The canary: no template names it, so no fuzzed request can legitimately delete it
    // (a Metadata template whose header key is mutated into DeleteTopics can delete "fuzz").
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(topic(CANARY));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = false;
    let md = c.call(&req, 9)?;
    match md.topics.first() {
        Some(t) if t.error_code == 0 && t.partitions.len() == 2 => Ok(()),
        Some(t) => Err(format!(
            "Metadata of {CANARY}: error {} with {} partitions",
            t.error_code,
            t.partitions.len()
        )),
        None => Err("Metadata answered no topics".into()),
    }
}

// ---------------------------------------------------------------------------------------
// Setup

struct Ctx {
    seed: u64,
    addr: SocketAddr,
    /// (api key, min, max) as the broker advertises them.
    apis: Vec<(i16, i16, i16)>,
    templates: Vec<Template>,
    /// One idempotent producer (id, epoch) per worker.
    pids: Vec<(i64, i16)>,
    bombs: Vec<Bomb>,
    /// Produce versions the codec encodes, within what the broker advertises.
    produce_versions: (i16, i16),
}

/// The canary's records: (partition, offset, key, value).
type Canary = Vec<(i32, i64, Vec<u8>, Vec<u8>)>;

fn create_topics(seed: u64, addr: SocketAddr) -> Result<(), String> {
    let mut c = Conn::open(addr, Duration::from_secs(30))?;
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 30_000;
    req.topics = TOPICS
        .iter()
        .map(|t| {
            let mut ct = create_topics_request::CreatableTopic::default();
            ct.name = topic(t.name);
            ct.num_partitions = t.partitions;
            ct.replication_factor = 1;
            ct.configs = t
                .configs
                .iter()
                .map(|(k, v)| {
                    let mut c = create_topics_request::CreatableTopicConfig::default();
                    c.name = sb(k);
                    c.value = Some(sb(v));
                    c
                })
                .collect();
            ct
        })
        .collect();
    let resp = c.call(&req, 5)?;
    for t in resp.topics {
        if t.error_code != 0 {
            return Err(format!(
                "seed={seed}: creating {} failed with error {}",
                t.name.0, t.error_code
            ));
        }
    }
    Ok(())
}

fn produce_canary(seed: u64, addr: SocketAddr) -> Result<Canary, String> {
    let mut c = Conn::open(addr, Duration::from_secs(30))?;
    let mut out = Vec::new();
    for p in 0..2 {
        let mut offset = 0;
        for (i, compression) in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ]
        .into_iter()
        .enumerate()
        {
            let values: Vec<Vec<u8>> = (0..3)
                .map(|j| format!("canary-{p}-{i}-{j}").into_bytes())
                .collect();
            let b = common::batch(&values, 1_700_000_000_000 + i as i64, compression);
            let mut pd = produce_request::PartitionProduceData::default();
            pd.index = p;
            pd.records = Some(b);
            let mut td = produce_request::TopicProduceData::default();
            td.name = topic(CANARY);
            td.partition_data = vec![pd];
            let mut req = ProduceRequest::default();
            req.acks = -1;
            req.timeout_ms = 10_000;
            req.topic_data = vec![td];
            let resp = c.call(&req, 9)?;
            let pr = &resp.responses[0].partition_responses[0];
            if pr.error_code != 0 || pr.base_offset != offset {
                return Err(format!(
                    "seed={seed}: canary produce to partition {p}: error {} base offset {}",
                    pr.error_code, pr.base_offset
                ));
            }
            for (j, v) in values.into_iter().enumerate() {
                out.push((p, offset, format!("k{j}").into_bytes(), v));
                offset += 1;
            }
        }
    }
    Ok(out)
}

fn init_producer_ids(addr: SocketAddr, n: usize) -> Result<Vec<(i64, i16)>, String> {
    let mut c = Conn::open(addr, Duration::from_secs(30))?;
    let mut out = Vec::new();
    for _ in 0..n {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = 60_000;
        let resp = c.call(&req, 4)?;
        if resp.error_code != 0 {
            return Err(format!("InitProducerId: error {}", resp.error_code));
        }
        out.push((resp.producer_id.0, resp.producer_epoch));
    }
    Ok(out)
}

fn api_versions(addr: SocketAddr) -> Result<Vec<(i16, i16, i16)>, String> {
    let mut c = Conn::open(addr, Duration::from_secs(30))?;
    let resp = c.call(&ApiVersionsRequest::default(), 3)?;
    if resp.error_code != 0 {
        return Err(format!("ApiVersions: error {}", resp.error_code));
    }
    Ok(resp
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect())
}

/// Topics, canary and producer ids of a fresh broker (the same for a replay: producer ids
/// come from the first block, so the fuzzed frames' ids are valid there too).
fn setup(seed: u64, addr: SocketAddr) -> Result<Canary, String> {
    create_topics(seed, addr)?;
    produce_canary(seed, addr)
}

fn start_broker(seed: u64, dir: &Path) -> Broker {
    catch_unwind(AssertUnwindSafe(|| Broker::start(dir, 2, BROKER_PROPS)))
        .unwrap_or_else(|e| panic!("seed={seed}: broker did not start: {}", panic_text(&e)))
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "?".into())
}

/// The broker log's lines about a panic, each once (or its last lines).
fn log_excerpt(log: &str) -> String {
    let mut hits: Vec<&str> = Vec::new();
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let notable = l.contains("panic")
            || l.contains("shutting down")
            || l.contains("start-up failed")
            || l.contains("ERROR");
        if notable && !l.contains("stack backtrace") {
            for m in &lines[i..(i + 2).min(lines.len())] {
                if !m.trim().is_empty() && !m.contains("stack backtrace") && !hits.contains(m) {
                    hits.push(m);
                }
            }
        }
        if hits.len() >= 12 {
            break;
        }
    }
    if hits.is_empty() {
        lines[lines.len().saturating_sub(15)..].join("\n")
    } else {
        hits.join("\n")
    }
}

/// Whether the broker is alive and well: running, no panic in its log after byte
/// `log_from`, a fresh connection answered.
fn health(broker: &mut Broker, log_from: usize) -> Result<(), String> {
    let since = |log: String| log[log_from.min(log.len())..].to_owned();
    if !broker.is_running() {
        return Err(format!(
            "the broker process exited; its log:\n{}",
            log_excerpt(&since(broker.log()))
        ));
    }
    let log = since(broker.log());
    if log.contains("panicked") {
        return Err(format!(
            "the broker log shows a panic:\n{}",
            log_excerpt(&log)
        ));
    }
    probe(broker.addr).map_err(|e| {
        format!(
            "a fresh connection was not served: {e}; broker running: {}; its log:\n{}",
            broker.is_running(),
            log_excerpt(&since(broker.log()))
        )
    })
}

/// A short name for a failure, to isolate each kind once: the panic's location, or what
/// went wrong.
fn signature(failure: &str) -> String {
    if let Some(i) = failure.find("location=") {
        return failure[i..]
            .split_whitespace()
            .next()
            .unwrap_or("location=?")
            .to_owned();
    }
    if failure.contains("panicked at") {
        let i = failure.find("panicked at").unwrap();
        return failure[i..].lines().next().unwrap_or("").to_owned();
    }
    if failure.contains("exited") {
        "exit".into()
    } else {
        "not served".into()
    }
}

/// Sends one frame and reads one response (without half-closing, which drops a pending
/// Produce response): `Some(response)`, or `None` when the broker closes the connection.
fn answer_one(addr: SocketAddr, frame: &[u8]) -> Result<Option<Bytes>, String> {
    let mut c = Conn::open(addr, Duration::from_secs(10))?;
    c.stream
        .write_all(frame)
        .map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 4];
    match c.stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err("no response within 10 s".into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err("no response within 10 s".into())
        }
        Err(_) => return Ok(None),
    }
    let n = i32::from_be_bytes(len).max(0) as usize;
    let mut body = vec![0u8; n];
    c.stream
        .read_exact(&mut body)
        .map_err(|e| format!("short response: {e}"))?;
    Ok(Some(Bytes::from(body)))
}

// ---------------------------------------------------------------------------------------
// Readability and offsets

/// (log start, log end) per partition.
type Offsets = BTreeMap<(String, i32), (i64, i64)>;

fn list_offsets(c: &mut Conn, name: &str, partitions: i32, ts: i64) -> Result<Vec<i64>, String> {
    let mut lt = list_offsets_request::ListOffsetsTopic::default();
    lt.name = topic(name);
    lt.partitions = (0..partitions)
        .map(|p| {
            let mut lp = list_offsets_request::ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = ts;
            lp
        })
        .collect();
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![lt];
    let resp = c.call(&req, 4)?;
    let mut out = vec![-1; partitions as usize];
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(format!(
                    "ListOffsets {name}-{} ts {ts}: error {}",
                    p.partition_index, p.error_code
                ));
            }
            if let Some(slot) = out.get_mut(p.partition_index as usize) {
                *slot = p.offset;
            }
        }
    }
    Ok(out)
}

fn fetch_raw(
    c: &mut Conn,
    name: &str,
    partition: i32,
    offset: i64,
) -> Result<(i16, i64, i64, Bytes), String> {
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = partition;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = topic(name);
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.min_bytes = 1;
    req.max_bytes = 4 << 20;
    req.topics = vec![ft];
    let resp = c.call(&req, 11)?;
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| format!("Fetch {name}-{partition}: no partition in the response"))?;
    Ok((
        p.error_code,
        p.high_watermark,
        p.log_start_offset,
        p.records.clone().unwrap_or_default(),
    ))
}

/// A record read back: (offset, key, value).
type ReadRecord = (i64, Vec<u8>, Vec<u8>);

/// Reads `name`-`partition` from `start` to `end`, decoding every batch as a client does;
/// returns the records read (offset, key, value).
fn read_partition(
    c: &mut Conn,
    name: &str,
    partition: i32,
    start: i64,
    end: i64,
) -> Result<Vec<ReadRecord>, String> {
    let tp = format!("{name}-{partition}");
    let mut out = Vec::new();
    let mut next = start;
    let mut last_offset: Option<i64> = None;
    let mut last_batch_end = i64::MIN;
    while next < end {
        let (err, hw, log_start, records) = fetch_raw(c, name, partition, next)?;
        if err == 1 && log_start > next {
            // Retention moved the log start meanwhile (a fuzzed retention config).
            next = log_start;
            continue;
        }
        if err != 0 {
            return Err(format!(
                "{tp}: Fetch at offset {next} (log {start}..{end}) answered error {err}"
            ));
        }
        if hw < end {
            return Err(format!(
                "{tp}: Fetch high watermark {hw} is below the log end offset {end}"
            ));
        }
        let mut buf = records;
        let before = next;
        while buf.len() >= 12 {
            let base = i64::from_be_bytes(buf[0..8].try_into().unwrap());
            let len = i32::from_be_bytes(buf[8..12].try_into().unwrap());
            if len < 0 {
                return Err(format!(
                    "{tp}: batch at offset {base} has length {len}: {}",
                    hex(&buf, 128)
                ));
            }
            if 12 + len as usize > buf.len() {
                break; // A partial batch at the end of a response, as clients allow.
            }
            let batch = buf.split_to(12 + len as usize);
            let lod = if batch.len() >= 27 {
                i32::from_be_bytes(batch[23..27].try_into().unwrap()) as i64
            } else {
                0
            };
            DECODING.with(|d| d.set(true));
            let decoded = catch_unwind(AssertUnwindSafe(|| {
                let mut b = batch.clone();
                RecordBatchDecoder::decode(&mut b).map(|set| (set, b.len()))
            }));
            DECODING.with(|d| d.set(false));
            let set = match decoded {
                Ok(Ok((set, 0))) => set,
                Ok(Ok((_, left))) => {
                    return Err(format!(
                        "{tp}: batch at offset {base} decodes leaving {left} bytes: {}",
                        hex(&batch, 256)
                    ))
                }
                Ok(Err(e)) => {
                    return Err(format!(
                        "{tp}: batch at offset {base} (fetched at {next}) does not decode: {e:#}; \
                         batch {} bytes: {}",
                        batch.len(),
                        hex(&batch, 256)
                    ))
                }
                Err(p) => {
                    return Err(format!(
                        "{tp}: decoding the batch at offset {base} panicked: {}; batch: {}",
                        panic_text(&p),
                        hex(&batch, 256)
                    ))
                }
            };
            if base <= last_batch_end {
                return Err(format!(
                    "{tp}: batch base offset {base} is not past the previous batch's last \
                     offset {last_batch_end}"
                ));
            }
            last_batch_end = base + lod;
            for r in set.records {
                if r.offset < base || r.offset > base + lod {
                    return Err(format!(
                        "{tp}: record offset {} outside its batch {base}..={}",
                        r.offset,
                        base + lod
                    ));
                }
                if let Some(prev) = last_offset {
                    if r.offset <= prev {
                        return Err(format!(
                            "{tp}: record offset {} after offset {prev}: not increasing",
                            r.offset
                        ));
                    }
                }
                last_offset = Some(r.offset);
                if r.offset >= start {
                    out.push((
                        r.offset,
                        r.key.map(|k| k.to_vec()).unwrap_or_default(),
                        r.value.map(|v| v.to_vec()).unwrap_or_default(),
                    ));
                }
            }
            next = next.max(base + lod + 1);
        }
        if next == before {
            return Err(format!(
                "{tp}: Fetch at offset {next} returned no complete batch below the log end \
                 {end} (high watermark {hw}, {} bytes)",
                buf.len()
            ));
        }
    }
    Ok(out)
}

/// Every partition of every topic: offsets, and every batch from start to end decodes.
/// Returns the offsets and the problems found.
fn check_all(addr: SocketAddr, canary: &Canary, report: bool) -> (Offsets, Vec<String>) {
    let mut problems = Vec::new();
    let mut offsets = Offsets::new();
    let mut c = match Conn::open(addr, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => return (offsets, vec![e]),
    };
    let mut req = MetadataRequest::default();
    req.topics = None;
    req.allow_auto_topic_creation = false;
    let md = match c.call(&req, 9) {
        Ok(m) => m,
        Err(e) => return (offsets, vec![format!("Metadata of all topics: {e}")]),
    };
    let mut topics: Vec<(String, i32)> = md
        .topics
        .iter()
        .filter_map(|t| {
            if t.error_code != 0 {
                problems.push(format!(
                    "Metadata: topic {:?} error {}",
                    t.name, t.error_code
                ));
            }
            Some((t.name.as_ref()?.0.to_string(), t.partitions.len() as i32))
        })
        .collect();
    topics.sort();
    // Topic deletion is open to any client (no ACLs yet), and a mutated request can turn
    // into a DeleteTopics naming a fuzz topic: only the canary, which no template names,
    // must still exist. A deleted fuzz topic is reported, not counted as a problem.
    for def in TOPICS {
        if topics.iter().any(|t| t.0 == def.name) {
            continue;
        }
        if def.name == CANARY {
            problems.push(format!("topic {} is missing", def.name));
        } else if !def.name.starts_with("fuzz-scratch") {
            eprintln!("fuzz: topic {} was deleted by a fuzzed request", def.name);
        }
    }
    let mut records = 0usize;
    for (name, partitions) in &topics {
        let starts = list_offsets(&mut c, name, *partitions, -2);
        let ends = list_offsets(&mut c, name, *partitions, -1);
        let (starts, ends) = match (starts, ends) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(e);
                // The connection may be unusable after an error.
                match Conn::open(addr, Duration::from_secs(30)) {
                    Ok(n) => c = n,
                    Err(e) => {
                        problems.push(e);
                        return (offsets, problems);
                    }
                }
                continue;
            }
        };
        for p in 0..*partitions {
            let (s, e) = (starts[p as usize], ends[p as usize]);
            offsets.insert((name.clone(), p), (s, e));
            if e < s {
                problems.push(format!("{name}-{p}: log end {e} is before log start {s}"));
                continue;
            }
            if e == s {
                continue;
            }
            match read_partition(&mut c, name, p, s, e) {
                Ok(recs) => records += recs.len(),
                Err(err) => {
                    problems.push(err);
                    match Conn::open(addr, Duration::from_secs(30)) {
                        Ok(n) => c = n,
                        Err(e) => {
                            problems.push(e);
                            return (offsets, problems);
                        }
                    }
                }
            }
        }
    }
    // The canary is exactly what was written.
    for p in 0..2 {
        let expected: Vec<ReadRecord> = canary
            .iter()
            .filter(|r| r.0 == p)
            .map(|r| (r.1, r.2.clone(), r.3.clone()))
            .collect();
        let (s, e) = offsets
            .get(&(CANARY.to_owned(), p))
            .copied()
            .unwrap_or((-1, -1));
        if (s, e) != (0, expected.len() as i64) {
            problems.push(format!(
                "{CANARY}-{p}: offsets {s}..{e}, expected 0..{}",
                expected.len()
            ));
            continue;
        }
        match read_partition(&mut c, CANARY, p, 0, e) {
            Ok(got) if got == expected => {}
            Ok(got) => problems.push(format!(
                "{CANARY}-{p}: records changed: got {} records, first differing: {:?}",
                got.len(),
                got.iter()
                    .zip(&expected)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!(
                        "offset {} {:?} instead of offset {} {:?}",
                        a.0,
                        String::from_utf8_lossy(&a.2),
                        b.0,
                        String::from_utf8_lossy(&b.2)
                    ))
            )),
            Err(err) => problems.push(err),
        }
    }
    if report {
        eprintln!(
            "fuzz: read {} partitions of {} topics, {records} records, {} problems",
            offsets.len(),
            topics.len(),
            problems.len()
        );
    }
    (offsets, problems)
}

/// Waits until no partition's end offset moves for a while (requests of closed
/// connections still running).
fn settled_offsets(addr: SocketAddr, canary: &Canary) -> (Offsets, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = check_all(addr, canary, false);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = check_all(addr, canary, false);
        let same = now
            .0
            .iter()
            .all(|(k, v)| last.0.get(k).map(|l| l.1) == Some(v.1))
            && now.0.len() == last.0.len();
        if same || Instant::now() > deadline {
            return check_all(addr, canary, true);
        }
        last = now;
    }
}

fn compare_offsets(before: &Offsets, after: &Offsets, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    if before.is_empty() || after.is_empty() {
        return out; // The failed read is a finding already.
    }
    for (k, b) in before {
        match after.get(k) {
            None => out.push(format!("{}-{}: gone {what}", k.0, k.1)),
            // The group coordinator may append to its own topic at start-up (members whose
            // sessions ended while it was down); nothing may be lost anywhere.
            Some(a) if a.1 < b.1 || (a.1 > b.1 && !k.0.starts_with("__")) => out.push(format!(
                "{}-{}: log end offset {} {what}, {} before",
                k.0, k.1, a.1, b.1
            )),
            Some(a) if a.0 != b.0 => out.push(format!(
                "{}-{}: log start offset {} {what}, {} before",
                k.0, k.1, a.0, b.0
            )),
            Some(_) => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            out.push(format!("{}-{}: appeared {what}", k.0, k.1));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Failure files and isolation

fn save_bursts(path: &Path, bursts: &[Burst]) -> std::io::Result<()> {
    let mut b = Vec::new();
    b.extend_from_slice(b"SFZ1");
    b.extend_from_slice(&(bursts.len() as u32).to_be_bytes());
    for burst in bursts {
        b.push(burst.abort as u8);
        b.extend_from_slice(&(burst.frames.len() as u32).to_be_bytes());
        for f in &burst.frames {
            b.push(f.kind as u8);
            b.extend_from_slice(&(f.desc.len() as u32).to_be_bytes());
            b.extend_from_slice(f.desc.as_bytes());
            b.extend_from_slice(&(f.bytes.len() as u32).to_be_bytes());
            b.extend_from_slice(&f.bytes);
        }
    }
    std::fs::write(path, b)
}

fn load_bursts(path: &Path) -> Result<Vec<Burst>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = data
            .get(at..at + n)
            .ok_or_else(|| format!("{}: truncated", path.display()))?;
        at += n;
        Ok(s)
    };
    if take(4)? != b"SFZ1" {
        return Err(format!("{}: not a fuzz frames file", path.display()));
    }
    let u32_of = |s: &[u8]| u32::from_be_bytes(s.try_into().unwrap()) as usize;
    let n = u32_of(take(4)?);
    let mut out = Vec::new();
    for _ in 0..n {
        let abort = take(1)?[0] != 0;
        let frames_n = u32_of(take(4)?);
        let mut frames = Vec::new();
        for _ in 0..frames_n {
            let kind = Kind::from_u8(take(1)?[0]);
            let dl = u32_of(take(4)?);
            let desc = String::from_utf8_lossy(take(dl)?).into_owned();
            let bl = u32_of(take(4)?);
            let bytes = take(bl)?.to_vec();
            frames.push(Frame { kind, desc, bytes });
        }
        out.push(Burst { frames, abort });
    }
    Ok(out)
}

/// A fresh broker set up as the fuzzed one was.
fn fresh(seed: u64) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(seed, &dir.path().join("data"));
    let setup =
        setup(seed, broker.addr).and_then(|_| init_producer_ids(broker.addr, WORKERS).map(|_| ()));
    if let Err(e) = setup {
        panic!("seed={seed}: setting up a replay broker: {e}");
    }
    (dir, broker)
}

/// Sends `burst` and checks the broker after it; a short pause lets a panic in a request
/// still running end the process first.
fn replay_one(broker: &mut Broker, burst: &Burst) -> Result<(), String> {
    if let Outcome::Stuck { sent, responses } = pump(broker.addr, burst) {
        return Err(format!(
            "the connection was still open {CONNECTION_DEADLINE:?} after its last byte \
             ({sent} bytes sent, {responses} responses)"
        ));
    }
    std::thread::sleep(Duration::from_millis(30));
    health(broker, 0)
}

/// Replays `bursts` one connection at a time on a fresh broker until the failure shows,
/// then tries that connection's frames one by one on fresh brokers; describes the result.
fn isolate(seed: u64, bursts: &[Burst], stem: &str) -> String {
    eprintln!(
        "fuzz: seed={seed}: isolating: replaying {} connections one at a time",
        bursts.len()
    );
    let (_dir, mut broker) = fresh(seed);
    let mut culprit = None;
    for (i, b) in bursts.iter().enumerate() {
        if let Err(e) = replay_one(&mut broker, b) {
            culprit = Some((i, e));
            break;
        }
    }
    drop(broker);
    let Some((i, err)) = culprit else {
        return format!(
            "not reproduced by replaying the {} connections one at a time (it needs \
             concurrency or timing)",
            bursts.len()
        );
    };
    let burst = &bursts[i];
    let mut report = format!(
        "reproduced by replaying connections 0..={i} one at a time; after connection {i}: \
         {err}\nconnection {i}: {}",
        burst.describe()
    );
    if burst.frames.len() > 1 || i > 0 {
        for (j, f) in burst.frames.iter().enumerate() {
            let (_dir, mut broker) = fresh(seed);
            let single = Burst {
                frames: vec![f.clone()],
                abort: false,
            };
            if let Err(e) = replay_one(&mut broker, &single) {
                let file =
                    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{stem}-frame.bin"));
                if save_bursts(&file, std::slice::from_ref(&single)).is_ok() {
                    report += &format!(
                        "\nthe frame alone is saved in {0} (SLUICE_FUZZ_REPLAY={0})",
                        file.display()
                    );
                }
                report += &format!(
                    "\nTHE FRAME ALONE on a fresh broker: frame [{j}] {:?}: {}\n  bytes: {}\n  \
                     result: {e}",
                    f.kind,
                    f.desc,
                    hex(&f.bytes, 1024)
                );
                return report;
            }
        }
        report += "\nno single frame of it fails alone on a fresh broker (needs prior state)";
    }
    report
}

// ---------------------------------------------------------------------------------------
// The test

thread_local! {
    /// Set while a fetched batch is decoded under `catch_unwind`.
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a u64")),
    )
}

#[test]
fn wire_fuzz() {
    let seed = env_u64("SLUICE_FUZZ_SEED").unwrap_or_else(|| rand::thread_rng().gen());
    let requests = env_u64("SLUICE_FUZZ_REQUESTS").unwrap_or(100_000);
    eprintln!("fuzz: SLUICE_FUZZ_SEED={seed} SLUICE_FUZZ_REQUESTS={requests}");
    // Any panic of this test names the seed, whatever code it comes from.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if DECODING.with(|d| d.get()) {
            return; // Caught and reported as a finding.
        }
        eprintln!("fuzz: failure with SLUICE_FUZZ_SEED={seed}");
        default_hook(info);
    }));

    if let Ok(path) = std::env::var("SLUICE_FUZZ_REPLAY") {
        let bursts = load_bursts(Path::new(&path))
            .unwrap_or_else(|e| panic!("seed={seed}: SLUICE_FUZZ_REPLAY: {e}"));
        let report = isolate(seed, &bursts, "sluice-fuzz-replay");
        eprintln!("fuzz: replay of {path}: {report}");
        assert!(
            report.starts_with("not reproduced"),
            "seed={seed}: replay of {path} fails: {report}"
        );
        return;
    }

    let started = Instant::now();
    // Bombs take a few seconds to compress: meanwhile the broker starts.
    let bombs = std::thread::spawn(make_bombs);
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start_broker(seed, &dir.path().join("data"));
    let canary = setup(seed, broker.addr).unwrap_or_else(|e| panic!("seed={seed}: setup: {e}"));
    let pids = init_producer_ids(broker.addr, WORKERS)
        .unwrap_or_else(|e| panic!("seed={seed}: InitProducerId: {e}"));
    let apis = api_versions(broker.addr).unwrap_or_else(|e| panic!("seed={seed}: {e}"));
    let produce = apis
        .iter()
        .find(|a| a.0 == ApiKey::Produce as i16)
        .copied()
        .unwrap_or_else(|| panic!("seed={seed}: Produce not advertised"));
    let codec = ApiKey::Produce.valid_versions();
    let produce_versions = (produce.1.max(codec.min), produce.2.min(codec.max));
    let template_records = common::batch(&[b"template".to_vec()], now_ms(), Compression::None);
    let (templates, notes) = build_templates(seed, &apis, &template_records);
    for n in &notes {
        eprintln!("fuzz: {n}");
    }
    let mut findings: Vec<String> = Vec::new();

    // The captured requests are valid: each is answered on its own connection (except the
    // versions the broker closes by design).
    for t in &templates {
        let what = format!(
            "template {} v{}{}",
            api_name(t.key),
            t.version,
            if t.defaulted { " (Default)" } else { "" }
        );
        match answer_one(broker.addr, &t.frame) {
            Ok(Some(_)) if !t.expect_close => {}
            Ok(None) if t.expect_close => {}
            Ok(Some(_)) => findings.push(format!(
                "{what}: answered, but this version is below what the codec decodes"
            )),
            Ok(None) => findings.push(format!(
                "{what}: the broker closed the connection on this valid request: {}",
                hex(&t.frame, 256)
            )),
            Err(e) => findings.push(format!("{what}: {e}: {}", hex(&t.frame, 256))),
        }
    }
    if let Err(e) = health(&mut broker, 0) {
        panic!("seed={seed}: the broker failed on the valid templates: {e}");
    }
    let bombs = bombs.join().expect("building bombs");
    eprintln!(
        "fuzz: {} apis advertised, {} templates checked, {} bombs, set up in {:?}",
        apis.len(),
        templates.len(),
        bombs.len(),
        started.elapsed()
    );
    let mut ctx = Ctx {
        seed,
        addr: broker.addr,
        apis,
        templates,
        pids,
        bombs,
        produce_versions,
    };

    // Fuzzing, chunk by chunk. A broker that dies or stops answering is a finding: its
    // chunk is saved and isolated, the broker restarted, and fuzzing goes on.
    let mut totals = Stats::default();
    let mut seqs: Vec<Sequences> = (0..WORKERS).map(|_| Sequences::default()).collect();
    let chunks = requests.div_ceil(CHUNK_REQUESTS);
    let mut failures: Vec<String> = Vec::new();
    let mut log_mark = 0usize;
    let fuzz_started = Instant::now();
    for chunk in 0..chunks {
        let in_chunk = CHUNK_REQUESTS.min(requests - chunk * CHUNK_REQUESTS);
        let results: Vec<(Vec<Burst>, Stats, Vec<String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = seqs
                .iter_mut()
                .enumerate()
                .map(|(w, sq)| {
                    let quota = in_chunk / WORKERS as u64
                        + u64::from((w as u64) < in_chunk % WORKERS as u64);
                    let ctx = &ctx;
                    s.spawn(move || {
                        let mut rng = sub_rng(ctx.seed, chunk, w as u64);
                        let mut stats = Stats::default();
                        let mut bursts = Vec::new();
                        let mut stuck = Vec::new();
                        let mut sent = 0u64;
                        while sent < quota {
                            let mut burst = gen_burst(&mut rng, ctx, sq, w);
                            burst.frames.truncate((quota - sent) as usize);
                            sent += burst.frames.len() as u64;
                            for f in &burst.frames {
                                stats.frames[f.kind as usize] += 1;
                            }
                            stats.connections += 1;
                            match pump(ctx.addr, &burst) {
                                Outcome::Closed(n) => {
                                    stats.responses += n;
                                    if (n as usize) < burst.frames.len() {
                                        stats.closed_early += 1;
                                    }
                                }
                                Outcome::ConnectFailed(e) => {
                                    stats.connect_failures += 1;
                                    if stats.connect_failures == 1 {
                                        stuck.push(format!("worker {w}: connect failed: {e}"));
                                    }
                                }
                                Outcome::Stuck { sent, responses } => stuck.push(format!(
                                    "a connection was still open {CONNECTION_DEADLINE:?} \
                                     after its last byte ({sent} bytes sent, {responses} \
                                     responses): {}",
                                    burst.describe()
                                )),
                            }
                            bursts.push(burst);
                        }
                        (bursts, stats, stuck)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut bursts = Vec::new();
        let mut stuck = Vec::new();
        for (b, st, st_stuck) in results {
            bursts.extend(b);
            totals.add(&st);
            stuck.extend(st_stuck);
        }
        let health_result = health(&mut broker, log_mark);
        eprintln!(
            "fuzz: chunk {}/{chunks}: {} requests sent, {:?}, broker {}",
            chunk + 1,
            (chunk * CHUNK_REQUESTS + in_chunk),
            fuzz_started.elapsed(),
            if health_result.is_ok() {
                "ok"
            } else {
                "FAILED"
            }
        );
        let Err(e) = health_result else {
            findings.extend(stuck.into_iter().map(|s| format!("chunk {chunk}: {s}")));
            continue;
        };
        // Connections refused after the broker died are no finding of their own.
        findings.extend(
            stuck
                .into_iter()
                .filter(|s| !s.contains("connect failed"))
                .map(|s| format!("chunk {chunk}: {s}")),
        );
        let sig = signature(&e);
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sluice-fuzz-{seed}-chunk{chunk}.bin"));
        let saved = match save_bursts(&file, &bursts) {
            Ok(()) => format!(
                "frames saved in {0} (replay: SLUICE_FUZZ_REPLAY={0} cargo test -p broker \
                 --test fuzz -- --nocapture)",
                file.display()
            ),
            Err(err) => format!("frames not saved: {err}"),
        };
        let isolated = if failures.contains(&sig) {
            format!("same kind as an earlier failure ({sig}); not isolated again")
        } else {
            isolate(seed, &bursts, &format!("sluice-fuzz-{seed}-chunk{chunk}"))
        };
        failures.push(sig);
        findings.push(format!(
            "chunk {chunk} (requests {}..{}): {e}\n{saved}\nisolation: {isolated}",
            chunk * CHUNK_REQUESTS,
            chunk * CHUNK_REQUESTS + in_chunk,
        ));
        // Restart the broker on its data (a crash recovery too) and go on.
        broker.kill9();
        log_mark = broker.log().len();
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| broker.spawn())) {
            findings.push(format!(
                "the broker did not start again after the failure: {}",
                panic_text(&e)
            ));
            panic!(
                "seed={seed}: {} findings:\n\n{}",
                findings.len(),
                findings.join("\n\n")
            );
        }
        ctx.addr = broker.addr;
        if failures.len() >= 5 {
            findings.push("fuzzing stopped after 5 broker failures".into());
            break;
        }
    }
    let fuzz_time = fuzz_started.elapsed();
    eprintln!(
        "fuzz: {} requests ({} random, {} mutated, {} batch) on {} connections in {fuzz_time:?}; \
         {} responses read, {} connections closed before all were answered, {} connect failures",
        totals.frames.iter().sum::<u64>(),
        totals.frames[Kind::Random as usize],
        totals.frames[Kind::Mutated as usize],
        totals.frames[Kind::Batch as usize],
        totals.connections,
        totals.responses,
        totals.closed_early,
        totals.connect_failures
    );

    // Readability, then a clean restart, then a kill -9 and restart.
    let (before, problems) = settled_offsets(broker.addr, &canary);
    findings.extend(problems.into_iter().map(|p| format!("after fuzzing: {p}")));
    let log_before = broker.log().len();
    match broker.stop_within(Duration::from_secs(60)) {
        Ok(status) if status.success() => {}
        Ok(status) => findings.push(format!(
            "the clean stop (SIGTERM) exited with {status}: {}",
            log_excerpt(broker.log().get(log_before..).unwrap_or(""))
        )),
        Err(e) => findings.push(format!("clean stop: {e}")),
    }
    match catch_unwind(AssertUnwindSafe(|| broker.spawn())) {
        Err(e) => findings.push(format!(
            "the broker did not start after a clean stop: {}",
            panic_text(&e)
        )),
        Ok(()) => {
            let log = broker.log();
            let new = &log[log_before.min(log.len())..];
            if new.contains("truncating torn or corrupt tail") {
                findings.push(format!(
                    "after a clean stop the restart truncated a torn or corrupt tail:\n{}",
                    new.lines()
                        .filter(|l| l.contains("truncating"))
                        .take(10)
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            let (after, problems) = check_all(broker.addr, &canary, true);
            findings.extend(problems.into_iter().map(|p| format!("after restart: {p}")));
            findings.extend(compare_offsets(&before, &after, "after a clean restart"));
            broker.kill9();
            match catch_unwind(AssertUnwindSafe(|| broker.spawn())) {
                Err(e) => findings.push(format!(
                    "the broker did not start after kill -9: {}",
                    panic_text(&e)
                )),
                Ok(()) => {
                    let (after9, problems) = check_all(broker.addr, &canary, true);
                    findings.extend(problems.into_iter().map(|p| format!("after kill -9: {p}")));
                    findings.extend(compare_offsets(
                        &before,
                        &after9,
                        "after kill -9 and restart",
                    ));
                }
            }
        }
    }
    if let Err(e) = health(&mut broker, log_mark) {
        findings.push(format!("at the end: {e}"));
    }
    eprintln!(
        "fuzz: done in {:?}, {} findings (SLUICE_FUZZ_SEED={seed})",
        started.elapsed(),
        findings.len()
    );
    assert!(
        findings.is_empty(),
        "seed={seed}: {} findings (reproduce: SLUICE_FUZZ_SEED={seed} SLUICE_FUZZ_REQUESTS={requests} \
         cargo test -p broker --test fuzz -- --nocapture):\n\n{}",
        findings.len(),
        findings.join("\n\n")
    );
}
