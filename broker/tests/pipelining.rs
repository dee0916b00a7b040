//! Pipelined requests on one connection: a client may send many requests before reading
//! any response (librdkafka and the Java client do, up to max.in.flight). Responses must come
//! back in request order, every partition must keep the connection's order, and a produce
//! request may start while the one before it waits for its fdatasync.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::Bytes;
use common::{batch, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::Compression;

const TOPIC: &str = "pipelined";
const PARTITIONS: i32 = 4;
const REQUESTS: usize = 300;

fn produce_request(i: usize) -> ProduceRequest {
    // Request i writes one record "i" to partition i % 4 and one to (i + 1) % 4.
    let value = i.to_string().into_bytes();
    let mut td = produce_request::TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str(TOPIC));
    td.partition_data = [i as i32 % PARTITIONS, (i as i32 + 1) % PARTITIONS]
        .iter()
        .map(|p| {
            let mut pd = produce_request::PartitionProduceData::default();
            pd.index = *p;
            pd.records = Some(batch(std::slice::from_ref(&value), 0, Compression::None));
            pd
        })
        .collect();
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    req
}

/// Sum over shards of a counter in the admin server's /metrics.
fn metric_sum(admin: SocketAddr, name: &str) -> f64 {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn pipelined_produce_overlaps_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 2, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, PARTITIONS), 0);
    let admin = broker.admin_addr().expect("admin address");

    // All requests go out before any response is read.
    let mut frames = Vec::new();
    for i in 0..REQUESTS {
        frames.extend_from_slice(&c.encode_request(&produce_request(i), 9));
    }
    let writer = {
        let mut s = c.stream.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&frames).unwrap())
    };
    let mut next_offset = [0i64; PARTITIONS as usize];
    // CreateTopics was request 1 of this connection.
    for i in 0..REQUESTS {
        let mut body: Bytes = c.read_frame().expect("a response for every request");
        let header = ResponseHeader::decode(&mut body, 1).unwrap();
        assert_eq!(
            header.correlation_id,
            i as i32 + 2,
            "responses in request order"
        );
        let resp = ProduceResponse::decode(&mut body, 9).unwrap();
        for p in &resp.responses[0].partition_responses {
            assert_eq!(p.error_code, 0, "request {i} partition {}", p.index);
            // Each partition's offsets follow the connection's order with no gap.
            assert_eq!(p.base_offset, next_offset[p.index as usize], "request {i}");
            next_offset[p.index as usize] += 1;
        }
    }
    writer.join().unwrap();
    let pipelined = metric_sum(admin, "sluice_requests_pipelined_total");

    // Every partition holds its records in request order.
    for p in 0..PARTITIONS {
        let values: Vec<usize> = c
            .fetch_all(TOPIC, p)
            .iter()
            .map(|r| {
                String::from_utf8(r.value.as_ref().unwrap().to_vec())
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let expected: Vec<usize> = (0..REQUESTS)
            .filter(|i| *i as i32 % PARTITIONS == p || (*i as i32 + 1) % PARTITIONS == p)
            .collect();
        assert_eq!(values, expected, "partition {p}");
    }
    // Read one at a time (as before pipelining), no request would start while another of
    // the connection is in progress.
    assert!(
        pipelined >= 1.0,
        "none of {REQUESTS} back-to-back produce requests overlapped its predecessor"
    );
}

#[test]
fn a_bad_request_in_a_pipeline_answers_the_ones_before_it_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 1, &[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic(TOPIC, PARTITIONS), 0);
    let mut frames = Vec::new();
    for i in 0..5 {
        frames.extend_from_slice(&c.encode_request(&produce_request(i), 9));
    }
    // An unsupported Produce version: the broker closes the connection (as Kafka does).
    let mut bad = c.encode_request(&produce_request(5), 9).to_vec();
    bad[6..8].copy_from_slice(&99i16.to_be_bytes());
    frames.extend_from_slice(&bad);
    for i in 6..10 {
        frames.extend_from_slice(&c.encode_request(&produce_request(i), 9));
    }
    c.stream.write_all(&frames).unwrap();
    for i in 0..5 {
        let mut body = c
            .read_frame()
            .expect("the requests before the bad one are answered");
        let header = ResponseHeader::decode(&mut body, 1).unwrap();
        assert_eq!(
            header.correlation_id,
            i + 2,
            "after CreateTopics, in request order"
        );
    }
    assert!(
        c.read_frame().is_none(),
        "the connection closes at the bad request"
    );
    // Nothing after the bad request was written: partition 1 has requests 0, 1 and 4
    // (request i writes to i % 4 and (i + 1) % 4), not 5, 8 or 9.
    let mut c = broker.client();
    let on_p1: Vec<String> = c
        .fetch_all(TOPIC, 1)
        .iter()
        .map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(on_p1, vec!["0", "1", "4"]);
    let total: usize = (0..PARTITIONS).map(|p| c.fetch_all(TOPIC, p).len()).sum();
    assert_eq!(
        total, 10,
        "five requests of two records each, none after the bad one"
    );
}
