//! The admin HTTP server: `/metrics` parses as Prometheus text (checked by a parser here) and
//! its counters move with traffic; the JSON API and health endpoints answer.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::Broker;
use kafka_protocol::records::Compression;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// A strict reader of the Prometheus text format: `# HELP` / `# TYPE` lines, and samples
/// `name{label="value",...} number` whose family was typed before. Returns every sample.
fn parse_prometheus(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap();
            assert!(valid_name(name), "bad name in {line:?}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&t), "{line:?}");
                assert!(
                    types.insert(name.to_owned(), t.to_owned()).is_none(),
                    "typed twice: {name}"
                );
            } else {
                assert_eq!(kind, "HELP", "{line:?}");
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}")),
            ),
            None => (head, ""),
        };
        assert!(valid_name(name), "bad name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
            assert!(valid_name(k), "label {k:?} in {line:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => value.push(chars.next().unwrap().1),
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label in {line:?}"),
                }
            };
            map.insert(k.to_owned(), value);
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push((name.to_owned(), map, value));
    }
    samples
}

fn sample(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"), 2, &[]);
    let admin = broker
        .admin_addr()
        .expect("admin address in the ready line");
    assert_eq!(get(admin, "/v1/health").0, 200);
    assert_eq!(get(admin, "/v1/ready").0, 200);
    assert_eq!(get(admin, "/nope").0, 404);

    let (status, before) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let before = parse_prometheus(&before);
    let mut c = broker.client();
    assert_eq!(c.create_topic("m", 2), 0);
    for i in 0..20 {
        let b = common::batch(&[vec![1u8; 1000]], i, Compression::None);
        assert_eq!(c.produce("m", &[(i as i32 % 2, b)], -1)[0].1, 0);
    }
    assert_eq!(c.fetch_all("m", 0).len(), 10);

    let (_, after) = get(admin, "/metrics");
    let after = parse_prometheus(&after);
    let produce = sample(&after, "sluice_requests_total", &[("api", "Produce")]);
    assert_eq!(
        produce - sample(&before, "sluice_requests_total", &[("api", "Produce")]),
        20.0
    );
    assert!(sample(&after, "sluice_requests_total", &[("api", "Fetch")]) >= 1.0);
    assert!(
        sample(&after, "sluice_bytes_received_total", &[])
            > sample(&before, "sluice_bytes_received_total", &[]) + 20_000.0
    );
    assert_eq!(
        sample(&after, "sluice_log_end_offset", &[("topic", "m")]),
        20.0
    );
    assert!(sample(&after, "sluice_fsync_latency_seconds_count", &[]) >= 1.0);
    // Histograms: cumulative buckets, +Inf equals the count.
    let inf = sample(
        &after,
        "sluice_request_latency_seconds_bucket",
        &[("api", "Produce"), ("le", "+Inf")],
    );
    let count = sample(
        &after,
        "sluice_request_latency_seconds_count",
        &[("api", "Produce")],
    );
    assert_eq!(inf, count);
    let small = sample(
        &after,
        "sluice_request_latency_seconds_bucket",
        &[("api", "Produce"), ("le", "0.0001")],
    );
    assert!(small <= inf);

    let (_, topics) = get(admin, "/v1/topics");
    let topics: serde_json::Value = serde_json::from_str(&topics).unwrap();
    let m = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "m")
        .unwrap();
    assert_eq!(m["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(m["partitions"][0]["log_end_offset"], 10);
    // A group's committed offset shows as lag in both /metrics and /v1/groups.
    let mut t =
        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = kafka_protocol::messages::TopicName(
        kafka_protocol::protocol::StrBytes::from_static_str("m"),
    );
    let mut p =
        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 4;
    t.partitions = vec![p];
    let mut req = kafka_protocol::messages::OffsetCommitRequest::default();
    req.group_id = kafka_protocol::messages::GroupId(
        kafka_protocol::protocol::StrBytes::from_static_str("watchers"),
    );
    req.generation_id_or_member_epoch = -1;
    req.topics = vec![t];
    assert_eq!(c.send(&req, 8).topics[0].partitions[0].error_code, 0);
    let (_, text) = get(admin, "/metrics");
    let samples = parse_prometheus(&text);
    assert_eq!(
        sample(
            &samples,
            "sluice_consumer_group_lag",
            &[("group", "watchers"), ("topic", "m"), ("partition", "0")]
        ),
        6.0
    );
    let (_, groups) = get(admin, "/v1/groups");
    let groups: serde_json::Value = serde_json::from_str(&groups).unwrap();
    let w = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "watchers")
        .unwrap();
    assert_eq!(w["state"], "Empty");
    assert_eq!(w["offsets"][0]["lag"], 6);

    let (_, brokers) = get(admin, "/v1/brokers");
    let brokers: serde_json::Value = serde_json::from_str(&brokers).unwrap();
    assert_eq!(brokers["this"]["shards"], 2);
    // The cluster as the metadata log has it: this broker registered and unfenced, and the
    // controller is this node (a quorum of one).
    let cluster = &brokers["cluster"];
    assert_eq!(cluster["controller"], 0, "{brokers}");
    assert_eq!(cluster["brokers"][0]["node_id"], 0, "{brokers}");
    assert_eq!(cluster["brokers"][0]["state"], "unfenced", "{brokers}");
    assert_eq!(cluster["brokers"][0]["shards"], 2, "{brokers}");
}
