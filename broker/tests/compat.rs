//! Wire-level details of the compatibility fixes that real clients found, one test per fix
//! (each is also checked through a real client in `tests/clients/compat.py`).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const GROUP_ID_NOT_FOUND: i16 = 69;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

/// DescribeConfigs of one resource (all keys) at `version`.
fn describe(
    c: &mut Client,
    kind: i8,
    name: &str,
    version: i16,
) -> describe_configs_response::DescribeConfigsResult {
    let mut r = describe_configs_request::DescribeConfigsResource::default();
    r.resource_type = kind;
    r.resource_name = s(name);
    r.configuration_keys = None;
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![r];
    c.send(&req, version).results.remove(0)
}

fn config<'a>(
    r: &'a describe_configs_response::DescribeConfigsResult,
    name: &str,
) -> &'a describe_configs_response::DescribeConfigsResourceResult {
    r.configs
        .iter()
        .find(|e| e.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not described"))
}

#[test]
fn success_answers_carry_null_error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    // CreateTopics carries error_message from v1; the codec serves v2 up.
    for v in 2..=7 {
        let mut t = create_topics_request::CreatableTopic::default();
        t.name = tn(&format!("null-v{v}"));
        t.num_partitions = 1;
        t.replication_factor = 1;
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t.clone()];
        let r = c.send(&req, v).topics.remove(0);
        assert_eq!(
            (r.error_code, r.error_message),
            (0, None),
            "CreateTopics v{v}"
        );
        // A failure still says why.
        let r = c.send(&req, v).topics.remove(0);
        assert_eq!(r.error_code, 36, "CreateTopics v{v}: TOPIC_ALREADY_EXISTS");
        assert!(r.error_message.is_some_and(|m| !m.is_empty()));
    }
    for v in 1..=6 {
        let mut req = FindCoordinatorRequest::default();
        if v >= 4 {
            req.coordinator_keys = vec![s("g")];
        } else {
            req.key = s("g");
        }
        let r = c.send(&req, v);
        if v >= 4 {
            let k = &r.coordinators[0];
            assert_eq!(
                (k.error_code, &k.error_message),
                (0, &None),
                "FindCoordinator v{v}"
            );
        } else {
            assert_eq!(
                (r.error_code, r.error_message),
                (0, None),
                "FindCoordinator v{v}"
            );
        }
    }
    for v in 1..=4 {
        let r = describe(&mut c, 2, "null-v2", v);
        assert_eq!(
            (r.error_code, &r.error_message),
            (0, &None),
            "DescribeConfigs v{v}"
        );
        // Documentation is on the wire from v3 (the codec fills in "" before).
        assert!(v < 3 || r.configs.iter().all(|e| e.documentation.is_none()));
        let r = describe(&mut c, 2, "no-such-topic", v);
        assert_eq!(r.error_code, 3);
        assert!(r.error_message.is_some());
    }
}

#[test]
fn broker_configs_are_all_described_with_their_source_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start(&data, 1, &["num.partitions=3", "log.retention.hours=2"]);
    let mut c = broker.client();
    let r = describe(&mut c, 4, "0", 4);
    assert_eq!(r.error_code, 0);
    assert!(r.configs.len() >= 40, "{} broker configs", r.configs.len());
    assert!(r.configs.iter().all(|e| e.read_only), "all read-only");
    const STATIC: i8 = 4;
    const DEFAULT: i8 = 5;
    let listener = format!("PLAINTEXT://{}", broker.addr);
    let l = config(&r, "listeners");
    assert_eq!(
        l.value.as_deref(),
        Some(listener.as_str()),
        "the port bound"
    );
    assert_eq!(l.config_source, STATIC, "--listen sets it");
    let a = config(&r, "advertised.listeners");
    assert_eq!(a.value.as_deref(), Some(listener.as_str()));
    assert_eq!(a.config_source, DEFAULT);
    let d = config(&r, "log.dirs");
    assert_eq!(
        d.value.as_deref(),
        Some(data.display().to_string().as_str())
    );
    assert_eq!(d.config_source, STATIC);
    let n = config(&r, "num.partitions");
    assert_eq!((n.value.as_deref(), n.config_source), (Some("3"), STATIC));
    let ret = config(&r, "log.retention.ms");
    assert_eq!(
        (ret.value.as_deref(), ret.config_source),
        (Some("7200000"), STATIC),
        "set through its synonym log.retention.hours"
    );
    let m = config(&r, "message.max.bytes");
    assert_eq!(
        (m.value.as_deref(), m.config_source),
        (Some("1048588"), DEFAULT)
    );
    for name in [
        "broker.id",
        "node.id",
        "log.segment.bytes",
        "log.roll.ms",
        "max.connections",
        "connections.max.idle.ms",
        "queued.max.request.bytes",
        "offsets.topic.num.partitions",
        "group.max.size",
        "producer.id.expiration.ms",
        "fetch.max.bytes",
    ] {
        config(&r, name);
    }
}

/// IncrementalAlterConfigs of one op on `cleanup.policy`; returns the error code.
fn alter_cleanup_policy(c: &mut Client, topic: &str, op: i8, value: &str) -> i16 {
    let mut cfg = incremental_alter_configs_request::AlterableConfig::default();
    cfg.name = s("cleanup.policy");
    cfg.config_operation = op;
    cfg.value = Some(s(value));
    let mut r = incremental_alter_configs_request::AlterConfigsResource::default();
    r.resource_type = 2;
    r.resource_name = s(topic);
    r.configs = vec![cfg];
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![r];
    c.send(&req, 1).responses[0].error_code
}

#[test]
fn append_and_subtract_start_from_the_default_value() {
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    let policy = |c: &mut Client, t: &str| {
        let r = describe(c, 2, t, 4);
        let e = config(&r, "cleanup.policy");
        (
            e.value.as_deref().unwrap_or("null").to_owned(),
            e.config_source,
        )
    };
    assert_eq!(c.create_topic("append", 1), 0);
    assert_eq!(policy(&mut c, "append"), ("delete".into(), 5));
    assert_eq!(alter_cleanup_policy(&mut c, "append", APPEND, "compact"), 0);
    assert_eq!(policy(&mut c, "append"), ("delete,compact".into(), 1));
    assert_eq!(alter_cleanup_policy(&mut c, "append", APPEND, "delete"), 0);
    assert_eq!(policy(&mut c, "append"), ("delete,compact".into(), 1));

    assert_eq!(c.create_topic("subtract", 1), 0);
    assert_eq!(
        alter_cleanup_policy(&mut c, "subtract", SUBTRACT, "delete"),
        0
    );
    assert_eq!(
        policy(&mut c, "subtract"),
        ("".into(), 1),
        "an empty list, set"
    );
    assert_eq!(
        alter_cleanup_policy(&mut c, "subtract", APPEND, "compact"),
        0
    );
    assert_eq!(policy(&mut c, "subtract"), ("compact".into(), 1));
    assert_ne!(alter_cleanup_policy(&mut c, "subtract", APPEND, "shred"), 0);
}

#[test]
fn newer_versions_answer_as_kafka_4() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("t", 1), 0);
    let b = common::batch(
        &[b"a".to_vec(), b"b".to_vec()],
        1_000,
        kafka_protocol::records::Compression::None,
    );
    assert_eq!(c.produce("t", &[(0, b)], -1)[0].1, 0);

    // ListOffsets v9: earliest local is the log start (no tiered storage), latest tiered none.
    let parts = [-4i64, -5].map(|ts| {
        let mut p = list_offsets_request::ListOffsetsPartition::default();
        p.timestamp = ts;
        p
    });
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = tn("t");
    t.partitions = parts.to_vec();
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let r = c.send(&req, 9);
    let got: Vec<_> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.offset, p.leader_epoch))
        .collect();
    assert_eq!(got, vec![(0, 0, 0), (0, -1, -1)]);

    // Produce and Fetch v13+ name topics by id; an unknown id is UNKNOWN_TOPIC_ID (100).
    let mut pd = produce_request::PartitionProduceData::default();
    pd.records = Some(common::batch(
        &[b"c".to_vec()],
        1_000,
        kafka_protocol::records::Compression::None,
    ));
    let mut td = produce_request::TopicProduceData::default();
    td.topic_id = uuid::Uuid::from_u128(7);
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5_000;
    req.topic_data = vec![td];
    let r = c.send(&req, 13);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 100);
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic_id = uuid::Uuid::from_u128(7);
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 5_000;
    req.max_bytes = 1 << 20;
    req.topics = vec![ft];
    let started = Instant::now();
    let r = c.send(&req, 17);
    assert_eq!(r.responses[0].partitions[0].error_code, 100);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at once"
    );

    // DescribeGroups v6: an unknown group is GROUP_ID_NOT_FOUND (KIP-1043), Dead before.
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(s("nobody"))];
    let g = c.send(&req, 6).groups.remove(0);
    assert_eq!(
        (g.error_code, g.group_state.as_str()),
        (GROUP_ID_NOT_FOUND, "Dead")
    );
    assert!(g.error_message.is_some());
    let g = c.send(&req, 5).groups.remove(0);
    assert_eq!((g.error_code, g.group_state.as_str()), (0, "Dead"));
}

fn dtp(
    c: &mut Client,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsResponse {
    let mut req = DescribeTopicPartitionsRequest::default();
    req.topics = topics
        .iter()
        .map(|t| {
            let mut r = describe_topic_partitions_request::TopicRequest::default();
            r.name = tn(t);
            r
        })
        .collect();
    req.response_partition_limit = limit;
    req.cursor = cursor.map(|(t, p)| {
        let mut cur = describe_topic_partitions_request::Cursor::default();
        cur.topic_name = tn(t);
        cur.partition_index = p;
        cur
    });
    c.send(&req, 0)
}

#[test]
fn describe_topic_partitions_pages_through_topics_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 2, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("b", 2), 0);
    assert_eq!(c.create_topic("a", 3), 0);
    // All topics, two partitions a page: a0 a1 | a2 b0 | b1.
    let mut pages = Vec::new();
    let mut cursor: Option<(String, i32)> = None;
    loop {
        let r = dtp(
            &mut c,
            &[],
            2,
            cursor.as_ref().map(|(t, p)| (t.as_str(), *p)),
        );
        let page: Vec<String> = r
            .topics
            .iter()
            .flat_map(|t| {
                let name = t.name.as_ref().unwrap().0.to_string();
                t.partitions
                    .iter()
                    .map(move |p| format!("{name}{}", p.partition_index))
            })
            .collect();
        pages.push(page.join(" "));
        for t in &r.topics {
            assert_eq!(t.error_code, 0);
            assert!(!t.topic_id.is_nil());
            assert_eq!(t.topic_authorized_operations, i32::MIN);
            for p in &t.partitions {
                assert_eq!((p.leader_id, p.leader_epoch), (BrokerId(0), 0));
                assert_eq!(p.replica_nodes, vec![BrokerId(0)]);
                assert_eq!(p.isr_nodes, vec![BrokerId(0)]);
                assert_eq!(p.eligible_leader_replicas, Some(vec![]));
                assert!(p.offline_replicas.is_empty());
            }
        }
        match r.next_cursor {
            Some(n) => cursor = Some((n.topic_name.0.to_string(), n.partition_index)),
            None => break,
        }
        assert!(pages.len() < 10, "{pages:?}");
    }
    assert_eq!(pages, vec!["a0 a1", "a2 b0", "b1"]);

    // By name: sorted, unknown ones reported; the offsets topic is internal.
    let mut g = FindCoordinatorRequest::default();
    g.key = s("g");
    assert_eq!(c.send(&g, 3).error_code, 0);
    let r = dtp(&mut c, &["zz", "b", "__consumer_offsets"], 2000, None);
    let names: Vec<_> = r
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().unwrap().0.to_string(),
                t.error_code,
                t.is_internal,
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("__consumer_offsets".into(), 0, true),
            ("b".into(), 0, false),
            ("zz".into(), 3, false)
        ]
    );
    // A cursor naming a topic not asked for is an invalid request.
    let r = dtp(&mut c, &["a"], 10, Some(("b", 0)));
    assert_eq!(r.topics[0].error_code, 42);
}

#[test]
fn transactional_ids_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    let started = Instant::now();
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = Some(TransactionalId(s("tx-1")));
    req.transaction_timeout_ms = 60_000;
    let r = c.send(&req, 4);
    assert_eq!(r.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    assert_eq!(r.producer_id.0, -1);
    for v in [1, 3, 4] {
        let mut req = FindCoordinatorRequest::default();
        req.key_type = 1;
        if v >= 4 {
            req.coordinator_keys = vec![s("tx-1")];
        } else {
            req.key = s("tx-1");
        }
        let r = c.send(&req, v);
        let (code, message) = if v >= 4 {
            let k = r.coordinators.into_iter().next().unwrap();
            (k.error_code, k.error_message)
        } else {
            (r.error_code, r.error_message)
        };
        assert_eq!(code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "v{v}");
        assert!(message.is_some_and(|m| m.contains("transactions")), "v{v}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // An idempotent producer (no transactional id) still gets an id.
    req.transactional_id = None;
    assert_eq!(c.send(&req, 4).error_code, 0);
    let log = broker.log();
    assert!(
        log.contains("transactions are not supported") && log.contains("tx-1"),
        "{log}"
    );
}

#[test]
fn a_tls_client_on_the_plaintext_port_is_named_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    // The start of a TLS 1.2 ClientHello record: handshake (22), version 3.1, length 512.
    let mut tls = Client::connect(broker.addr);
    tls.stream
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
    assert!(tls.is_closed_by_peer());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker
        .log()
        .contains("a TLS client reached a plaintext listener")
    {
        assert!(Instant::now() < deadline, "{}", broker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !broker.log().contains("bad frame length"),
        "{}",
        broker.log()
    );
    // The broker keeps serving.
    let mut c = broker.client();
    assert_eq!(c.create_topic("after-tls", 1), 0);
}
