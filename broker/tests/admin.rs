//! Admin APIs against the real binary: CreatePartitions (placement over shards, data in the
//! new partitions, kept across restarts, Kafka's refusals).

mod common;

use common::{Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_REQUEST: i16 = 42;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// CreatePartitions of one topic to `count`, optionally with explicit broker assignments.
fn create_partitions(c: &mut Client, topic: &str, count: i32, brokers: Option<&[i32]>) -> i16 {
    let mut t = create_partitions_request::CreatePartitionsTopic::default();
    t.name = TopicName(s(topic));
    t.count = count;
    t.assignments = brokers.map(|b| {
        b.iter()
            .map(|id| {
                let mut a = create_partitions_request::CreatePartitionsAssignment::default();
                a.broker_ids = vec![BrokerId(*id)];
                a
            })
            .collect()
    });
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    c.send(&req, 3).results[0].error_code
}

fn partition_count(c: &mut Client, topic: &str) -> usize {
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(s(topic)));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    c.send(&req, 12).topics[0].partitions.len()
}

#[test]
fn create_partitions_adds_partitions_that_work_and_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), 2, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("grow", 2), 0);
    assert_eq!(create_partitions(&mut c, "grow", 5, None), 0);
    assert_eq!(partition_count(&mut c, "grow"), 5);
    assert_eq!(create_partitions(&mut c, "grow", 6, Some(&[0])), 0);
    let shards = common::metadata_shards(&broker, "grow");
    assert_eq!(shards.len(), 6);
    assert!(shards.contains(&0) && shards.contains(&1), "{shards:?}");
    for p in 0..6 {
        let b = common::batch(&[format!("p{p}").into_bytes()], 1, Compression::None);
        assert_eq!(c.produce("grow", &[(p, b)], -1)[0].1, 0, "partition {p}");
    }

    // Kafka's refusals.
    assert_eq!(
        create_partitions(&mut c, "grow", 6, None),
        INVALID_PARTITIONS
    );
    assert_eq!(
        create_partitions(&mut c, "grow", 3, None),
        INVALID_PARTITIONS
    );
    assert_eq!(
        create_partitions(&mut c, "nope", 3, None),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        create_partitions(&mut c, "grow", 7, Some(&[5])),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(
        create_partitions(&mut c, "grow", 8, Some(&[0])),
        INVALID_REPLICA_ASSIGNMENT,
        "one assignment for two new partitions"
    );
    let mut find = FindCoordinatorRequest::default();
    find.key = s("g");
    assert_eq!(c.send(&find, 3).error_code, 0);
    assert_eq!(
        create_partitions(&mut c, "__consumer_offsets", 60, None),
        INVALID_REQUEST
    );

    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(partition_count(&mut c, "grow"), 6);
    for p in 0..6 {
        let recs = c.fetch_all("grow", p);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].value.as_deref(), Some(format!("p{p}").as_bytes()));
    }
}

const OFFSET_OUT_OF_RANGE: i16 = 1;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_CONFIG: i16 = 40;

/// DescribeConfigs of a topic: name -> (value, source).
fn describe_configs(
    c: &mut Client,
    topic: &str,
) -> std::collections::BTreeMap<String, (String, i8)> {
    let mut r = describe_configs_request::DescribeConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = s(topic);
    r.configuration_keys = None;
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![r];
    let resp = c.send(&req, 4);
    assert_eq!(resp.results[0].error_code, 0);
    resp.results[0]
        .configs
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                (e.value.as_ref().unwrap().to_string(), e.config_source),
            )
        })
        .collect()
}

/// IncrementalAlterConfigs of one topic: `(name, op, value)`; the resource's error code.
fn alter(c: &mut Client, topic: &str, ops: &[(&str, i8, &str)]) -> i16 {
    let mut r = incremental_alter_configs_request::AlterConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = s(topic);
    r.configs = ops
        .iter()
        .map(|(n, op, v)| {
            let mut x = incremental_alter_configs_request::AlterableConfig::default();
            x.name = s(n);
            x.config_operation = *op;
            x.value = Some(s(v));
            x
        })
        .collect();
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![r];
    c.send(&req, 1).responses[0].error_code
}

fn delete_records(c: &mut Client, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    let mut p = delete_records_request::DeleteRecordsPartition::default();
    p.partition_index = partition;
    p.offset = offset;
    let mut t = delete_records_request::DeleteRecordsTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut req = DeleteRecordsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let r = c.send(&req, 2);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

fn earliest(c: &mut Client, topic: &str, partition: i32) -> i64 {
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = -2;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    c.send(&req, 6).topics[0].partitions[0].offset
}

#[test]
fn topic_configs_take_effect_and_retention_trims_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, 2, &["log.retention.check.interval.ms=200"]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("cfg", 1), 0);

    // Defaults, then overrides with their source; bad values are refused whole.
    let d = describe_configs(&mut c, "cfg");
    assert_eq!(d["retention.ms"], ("604800000".to_owned(), 5));
    assert_eq!(d["cleanup.policy"], ("delete".to_owned(), 5));
    assert_eq!(
        alter(
            &mut c,
            "cfg",
            &[("segment.bytes", 0, "20000"), ("retention.ms", 0, "soon")]
        ),
        INVALID_CONFIG
    );
    assert_eq!(alter(&mut c, "cfg", &[("no.such", 0, "1")]), INVALID_CONFIG);
    assert_eq!(
        alter(&mut c, "cfg", &[("retention.ms", 2, "1")]),
        INVALID_CONFIG
    );
    assert_eq!(
        describe_configs(&mut c, "cfg")["segment.bytes"].1,
        5,
        "nothing applied"
    );
    assert_eq!(
        alter(
            &mut c,
            "cfg",
            &[
                ("segment.bytes", 0, "20000"),
                ("retention.bytes", 0, "60000"),
                ("max.message.bytes", 0, "4000"),
            ]
        ),
        0
    );
    let d = describe_configs(&mut c, "cfg");
    assert_eq!(d["segment.bytes"], ("20000".to_owned(), 1));
    assert_eq!(d["retention.bytes"], ("60000".to_owned(), 1));

    // max.message.bytes is the topic's now.
    let big = common::batch(&[vec![7u8; 6000]], 1, Compression::None);
    assert_eq!(c.produce("cfg", &[(0, big)], -1)[0].1, MESSAGE_TOO_LARGE);

    // ~300 KB in ~3 KB batches over 20 KB segments; retention keeps about 60 KB (the
    // timestamps are current: retention.ms, 7 days by default, must not be what trims).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..100 {
        let b = common::batch(&[vec![i as u8; 3000]], now + i, Compression::None);
        assert_eq!(c.produce("cfg", &[(0, b)], -1)[0].1, 0);
    }
    // The retention check runs every 200 ms: wait for one after the last append.
    let segments = || {
        std::fs::read_dir(data.join("cfg-0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segments() > 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(segments() <= 5, "{} segments left", segments());
    let start = earliest(&mut c, "cfg", 0);
    assert!((50..=85).contains(&start), "log start moved to {start}");
    assert_eq!(c.fetch("cfg", 0, 0, 0).0, OFFSET_OUT_OF_RANGE);
    let rest = c.fetch_all_from("cfg", 0, start);
    assert_eq!(rest.len() as i64, 100 - start);
    assert_eq!(rest.last().unwrap().offset, 99);

    // DeleteRecords moves the start further, durably.
    assert_eq!(delete_records(&mut c, "cfg", 0, 95), (0, 95));
    assert_eq!(delete_records(&mut c, "cfg", 0, 101).0, OFFSET_OUT_OF_RANGE);
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(earliest(&mut c, "cfg", 0), 95);
    assert_eq!(c.fetch_all_from("cfg", 0, 95).len(), 5);
    assert_eq!(
        describe_configs(&mut c, "cfg")["retention.bytes"].0,
        "60000"
    );
}

#[test]
fn list_offsets_max_timestamp_finds_the_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("ts", 1), 0);
    let query = |c: &mut Client| {
        let mut p = list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = 0;
        p.timestamp = -3;
        let mut t = list_offsets_request::ListOffsetsTopic::default();
        t.name = TopicName(s("ts"));
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![t];
        let r = c.send(&req, 7);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(query(&mut c), (0, -1, -1), "empty log");
    // Batches (one record each) at 5_000, 9_000, 7_000: the newest is offset 1.
    for ts in [5_000, 9_000, 7_000] {
        let b = common::batch(&[b"r".to_vec()], ts, Compression::Lz4);
        assert_eq!(c.produce("ts", &[(0, b)], -1)[0].1, 0);
    }
    assert_eq!(query(&mut c), (0, 1, 9_000));
}

#[test]
fn compacted_topics_refuse_records_without_keys() {
    use protocol::records::{encode_plain_batch, PlainRecord};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("compacted", 1), 0);
    assert_eq!(
        alter(&mut c, "compacted", &[("cleanup.policy", 0, "compact")]),
        0
    );
    let keys = [Some("a"), None, Some("c"), None];
    let records: Vec<PlainRecord> = keys
        .iter()
        .map(|k| PlainRecord {
            key: k.map(|k| bytes::Bytes::from(k.to_owned())),
            value: Some(bytes::Bytes::from_static(b"v")),
            headers: Vec::new(),
        })
        .collect();
    let batch = encode_plain_batch(&records, 1, Compression::Zstd).unwrap();
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(batch);
    let mut td = produce_request::TopicProduceData::default();
    td.name = TopicName(s("compacted"));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let r = c.send(&req, 9);
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 87, "INVALID_RECORD");
    let bad: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(bad, vec![1, 3]);
    assert!(
        c.fetch_all("compacted", 0).is_empty(),
        "nothing of the batch was written"
    );
    let keyed = common::batch(&[b"x".to_vec()], 1, Compression::None);
    assert_eq!(c.produce("compacted", &[(0, keyed)], -1)[0].1, 0);
}

#[test]
fn a_fixed_compression_type_recompresses_batches() {
    use protocol::record_batch::{BatchIter, Compression as Stored};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("z", 1), 0);
    assert_eq!(alter(&mut c, "z", &[("compression.type", 0, "zstd")]), 0);
    let values: Vec<Vec<u8>> = (0..20).map(|i| format!("value-{i}").into_bytes()).collect();
    let gz = common::batch(&values, 1_000, Compression::Gzip);
    assert_eq!(c.produce("z", &[(0, gz)], -1)[0].1, 0);
    let plain = common::batch(&values[..2], 2_000, Compression::None);
    assert_eq!(c.produce("z", &[(0, plain)], -1)[0].1, 0);

    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = 0;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = TopicName(s("z"));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_bytes = 1 << 20;
    req.topics = vec![ft];
    let r = c.send(&req, 11);
    let raw = r.responses[0].partitions[0].records.clone().unwrap();
    let codecs: Vec<Stored> = BatchIter::new(&raw, true)
        .map(|v| v.compression())
        .collect();
    // common::batch writes one batch per record: 22 batches in, 22 out, all zstd now.
    assert_eq!(codecs, vec![Stored::Zstd; 22]);
    let recs = c.fetch_all("z", 0);
    assert_eq!(recs.len(), 22);
    assert_eq!(recs[19].value.as_deref(), Some(&b"value-19"[..]));
    assert_eq!((recs[20].timestamp, recs[21].timestamp), (2_000, 2_001));
}
