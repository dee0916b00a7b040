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
    let shards = common::metadata_shards(&dir.path().join("data"), "grow");
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
