//! Hostile and malformed input: each case gets Kafka's error code or a closed connection and
//! a log line, the broker keeps serving other connections, and stored data stays intact.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::{batch, Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use rand::{Rng, SeedableRng};

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_CONFIG: i16 = 40;

/// A broker with one topic holding one known record, to check nothing was damaged.
fn broker_with_data(props: &[&str]) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 2, props);
    let mut c = broker.client();
    assert_eq!(c.create_topic("safe", 2), 0);
    let r = c.produce(
        "safe",
        &[(0, batch(&[b"keep-me".to_vec()], 42, Compression::None))],
        -1,
    );
    assert_eq!(r[0].1, 0);
    (dir, broker)
}

fn assert_intact(broker: &mut Broker) {
    assert!(broker.is_running(), "broker died: {}", broker.log());
    let mut c = broker.client();
    let recs = c.fetch_all("safe", 0);
    assert_eq!(recs.len(), 1, "log changed");
    assert_eq!(recs[0].value.as_deref(), Some(&b"keep-me"[..]));
}

fn raw_frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let len = 4 + 4 + 2 + body.len();
    f.extend_from_slice(&(len as i32).to_be_bytes());
    f.extend_from_slice(&api_key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&7i32.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    f.extend_from_slice(body);
    f
}

#[test]
fn random_bytes_close_the_connection_and_nothing_else() {
    let (_dir, mut broker) = broker_with_data(&[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    // Pure noise, including its length prefix.
    for _ in 0..20 {
        let mut c = broker.client();
        let noise: Vec<u8> = (0..rng.gen_range(1..4096)).map(|_| rng.gen()).collect();
        let _ = c.stream.write_all(&noise);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        assert!(c.is_closed_by_peer());
    }
    // Valid headers of every API we serve (and some we do not) with garbage bodies: this
    // drives the message decoders with hostile lengths.
    for api_key in 0..70i16 {
        for version in [0i16, 1, 3, 4, 7, 9, 12] {
            let mut c = broker.client();
            let body: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
            let mut body_ff = vec![0x7f, 0xff, 0xff, 0xff];
            body_ff.extend_from_slice(&body);
            let _ = c.stream.write_all(&raw_frame(api_key, version, &body_ff));
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            // Either a response or a close; never a hang (read timeout) or a crash.
            let _ = c.read_frame();
        }
    }
    assert_intact(&mut broker);
    assert!(
        broker.log().contains("closing connection"),
        "bad input is logged"
    );
}

#[test]
fn oversized_frame_is_refused_before_it_is_read() {
    let (_dir, mut broker) = broker_with_data(&["socket.request.max.bytes=1048576"]);
    let mut c = broker.client();
    c.stream.write_all(&(2i32 << 20).to_be_bytes()).unwrap();
    c.stream.write_all(&[0u8; 1024]).unwrap();
    assert!(c.is_closed_by_peer());
    assert!(
        broker.log().contains("exceeds the maximum"),
        "{}",
        broker.log()
    );
    assert_intact(&mut broker);
}

#[test]
fn unknown_api_key_and_unsupported_versions() {
    let (_dir, mut broker) = broker_with_data(&[]);
    let mut c = broker.client();
    c.stream.write_all(&raw_frame(31_000, 0, &[])).unwrap();
    assert!(c.is_closed_by_peer(), "unknown api key closes");

    let mut c = broker.client();
    let req = MetadataRequest::default();
    let mut frame = c.encode_request(&req, 1).to_vec();
    frame[6..8].copy_from_slice(&99i16.to_be_bytes());
    c.stream.write_all(&frame).unwrap();
    assert!(c.is_closed_by_peer(), "unsupported Metadata version closes");

    // ApiVersions of an unknown version answers v0 with the error and the supported list.
    let mut c = broker.client();
    let mut frame = c.encode_request(&ApiVersionsRequest::default(), 0).to_vec();
    frame[6..8].copy_from_slice(&99i16.to_be_bytes());
    c.stream.write_all(&frame).unwrap();
    let mut body = c.read_frame().expect("a response");
    let _header =
        <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut body, 0).unwrap();
    let resp =
        <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, UNSUPPORTED_VERSION);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == 0 && k.min_version == 0));
    assert!(
        broker.log().contains("unsupported version"),
        "{}",
        broker.log()
    );
    assert_intact(&mut broker);
}

#[test]
fn bad_batches_get_corrupt_message_and_leave_the_log_alone() {
    let (_dir, mut broker) = broker_with_data(&[]);
    let mut c = broker.client();
    let good = batch(&[b"x".to_vec(), b"y".to_vec()], 1, Compression::None);
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    let truncated = good.slice(..good.len() - 5);
    for (what, records) in [("crc", Bytes::from(bad_crc)), ("truncated", truncated)] {
        let r = c.produce("safe", &[(0, records)], -1);
        assert_eq!(r[0].1, CORRUPT_MESSAGE, "{what}");
    }
    let (err, hw, _) = c.fetch("safe", 0, 0, 0);
    assert_eq!((err, hw), (0, 1), "nothing appended");
    assert!(
        broker.log().contains("produce rejected"),
        "{}",
        broker.log()
    );
    assert_intact(&mut broker);
}

#[test]
fn bad_topic_names_and_missing_partitions() {
    let (_dir, mut broker) = broker_with_data(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("bad/name", 1), INVALID_TOPIC_EXCEPTION);
    assert_eq!(c.create_topic(&"x".repeat(250), 1), INVALID_TOPIC_EXCEPTION);

    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("no such topic!")));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = true;
    let resp = c.send(&req, 9);
    assert_eq!(resp.topics[0].error_code, INVALID_TOPIC_EXCEPTION);

    let one = batch(&[b"z".to_vec()], 1, Compression::None);
    let r = c.produce("safe", &[(7, one.clone())], -1);
    assert_eq!(
        r[0].1, UNKNOWN_TOPIC_OR_PARTITION,
        "partition 7 of a 2-partition topic"
    );
    let r = c.produce("never-created", &[(0, one)], -1);
    assert_eq!(r[0].1, UNKNOWN_TOPIC_OR_PARTITION);
    let (err, _, _) = c.fetch("safe", 5, 0, 0);
    assert_eq!(err, UNKNOWN_TOPIC_OR_PARTITION);
    assert_intact(&mut broker);
}

#[test]
fn unknown_topic_configs_are_refused_known_ones_accepted() {
    let (_dir, mut broker) = broker_with_data(&[]);
    let mut c = broker.client();
    let create = |c: &mut Client, topic: &str, config: &str| {
        let mut cfg = create_topics_request::CreatableTopicConfig::default();
        cfg.name = StrBytes::from_string(config.into());
        cfg.value = Some(StrBytes::from_static_str("lz4"));
        let mut t = create_topics_request::CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.into()));
        t.num_partitions = 1;
        t.replication_factor = 1;
        t.configs = vec![cfg];
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 10_000;
        c.send(&req, 5).topics[0].error_code
    };
    assert_eq!(
        create(&mut c, "cfg-bad", "dummy.doesntexist"),
        INVALID_CONFIG
    );
    assert_eq!(create(&mut c, "cfg-good", "compression.type"), 0);
    let (err, _, _) = c.fetch("cfg-bad", 0, 0, 0);
    assert_eq!(
        err, UNKNOWN_TOPIC_OR_PARTITION,
        "the refused topic was not created"
    );
    assert_intact(&mut broker);
}

#[test]
fn other_connections_are_served_while_one_misbehaves() {
    let (_dir, mut broker) = broker_with_data(&[]);
    // A connection that sends half a frame and stalls must not block anyone.
    let mut stalled = Client::connect(broker.addr);
    stalled.stream.write_all(&100i32.to_be_bytes()).unwrap();
    stalled.stream.write_all(&[0, 3]).unwrap();
    assert_intact(&mut broker);
}
