//! The metadata log on a single node: a one-voter Raft quorum whose files survive restarts,
//! snapshots that bound replay, a torn tail cut off, an upgrade from the pre-quorum
//! `metadata.json`, and a data directory that belongs to another node refused.

mod common;

use std::path::Path;

use common::{batch, metadata_shards, Broker};
use kafka_protocol::records::Compression;

fn quorum_files(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("__cluster/quorum"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn produce_one(broker: &Broker, topic: &str, partition: i32, value: &str) {
    let mut c = broker.client();
    let r = c.produce(
        topic,
        &[(
            partition,
            batch(&[value.as_bytes().to_vec()], 1, Compression::None),
        )],
        -1,
    );
    assert_eq!(r[0].1, 0, "produce to {topic}-{partition}: {r:?}");
}

#[test]
fn topics_survive_restarts_through_the_log_and_its_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A tiny snapshot threshold: every change is followed by a snapshot.
    let props = ["metadata.log.max.record.bytes.between.snapshots=1"];
    let mut broker = Broker::start(&data, 2, &props);
    for i in 0..5 {
        assert_eq!(broker.client().create_topic(&format!("t{i}"), 3), 0);
    }
    produce_one(&broker, "t3", 2, "kept");
    let placement = metadata_shards(&broker, "t3");
    // The log restarted after a snapshot (its first index is past 1) and the files the
    // snapshot covers are gone.
    let files = quorum_files(&data);
    let logs: Vec<&String> = files.iter().filter(|f| f.ends_with(".log")).collect();
    assert_eq!(logs.len(), 1, "older log files must go: {files:?}");
    let first: u64 = logs[0]["quorum-".len()..logs[0].len() - 4].parse().unwrap();
    assert!(first > 5, "no snapshot was taken: {files:?}");
    assert!(files.contains(&"quorum.snapshot".to_string()), "{files:?}");
    broker.restart();
    for i in 0..5 {
        assert_eq!(
            broker.client().metadata_partitions(&format!("t{i}")),
            Some(3),
            "t{i} after restart"
        );
    }
    assert_eq!(metadata_shards(&broker, "t3"), placement);
    let recs = broker.client().fetch_all("t3", 2);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].value.as_deref(), Some(&b"kept"[..]));
    // Without snapshots, the log alone replays the same.
    broker.stop();
    let mut broker = Broker::start(&data, 2, &[]);
    assert_eq!(broker.client().create_topic("t5", 1), 0);
    broker.restart();
    assert_eq!(broker.client().metadata_partitions("t5"), Some(1));
    assert_eq!(broker.client().metadata_partitions("t0"), Some(3));
    broker.kill9();
}

#[test]
fn a_torn_metadata_log_tail_is_cut_off_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, 1, &[]);
    assert_eq!(broker.client().create_topic("before", 2), 0);
    broker.kill9();
    let log = quorum_files(&data)
        .into_iter()
        .rfind(|f| f.ends_with(".log"))
        .expect("a log file");
    let path = data.join("__cluster/quorum").join(&log);
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    // Half a frame: a length that promises more than follows, as a crash mid-write leaves.
    bytes.extend_from_slice(&[0, 0, 0, 200, 1, 2, 3, 4, 1, 9, 9]);
    std::fs::write(&path, &bytes).unwrap();
    broker.spawn();
    assert!(
        broker.log().contains("metadata log tail torn"),
        "{}",
        broker.log()
    );
    assert_eq!(broker.client().metadata_partitions("before"), Some(2));
    assert_eq!(broker.client().create_topic("after", 1), 0);
    broker.restart();
    assert_eq!(broker.client().metadata_partitions("after"), Some(1));
    assert!(
        std::fs::metadata(&path)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
            >= whole
    );
    broker.kill9();
}

#[test]
fn a_pre_quorum_data_directory_is_migrated_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, 2, &[]);
    assert_eq!(broker.client().create_topic("old", 4), 0);
    for p in 0..4 {
        produce_one(&broker, "old", p, &format!("v{p}"));
    }
    let (_, body) = broker.admin_get("/v1/topics");
    let topics: serde_json::Value = serde_json::from_str(&body).unwrap();
    let old = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "old")
        .unwrap()
        .clone();
    let id = old["id"].as_str().unwrap().to_owned();
    let shards = metadata_shards(&broker, "old");
    broker.stop();
    // What the previous version left: partition logs and __cluster/metadata.json, no
    // metadata log. The placement is swapped around to show it is the file's that counts.
    std::fs::remove_dir_all(data.join("__cluster/quorum")).unwrap();
    let swapped: Vec<u64> = shards.iter().map(|s| 1 - s).collect();
    let json = serde_json::json!({
        "version": 7,
        "topics": {"old": {
            "id": id,
            "partitions": swapped.iter().map(|s| serde_json::json!({"shard": s})).collect::<Vec<_>>(),
            "configs": {"retention.ms": "86400000"},
        }},
        "next_producer_id": 5000,
    });
    std::fs::write(
        data.join("__cluster/metadata.json"),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
    broker.spawn();
    assert!(broker.log().contains("migrated into the metadata log"));
    assert!(data.join("__cluster/metadata.json.migrated").exists());
    assert!(!data.join("__cluster/metadata.json").exists());
    assert_eq!(metadata_shards(&broker, "old"), swapped);
    let (_, body) = broker.admin_get("/v1/topics");
    assert!(body.contains(&id), "topic id kept: {body}");
    assert!(body.contains("86400000"), "configs kept: {body}");
    for p in 0..4 {
        let recs = broker.client().fetch_all("old", p);
        assert_eq!(recs.len(), 1, "partition {p}");
        assert_eq!(recs[0].value.as_deref(), Some(format!("v{p}").as_bytes()));
    }
    // Producer ids continue past the migrated counter.
    let pid = broker.client().init_producer_id();
    assert!(pid >= 5000, "producer id {pid} reuses migrated ids");
    // The log is the truth from now on.
    broker.restart();
    assert_eq!(metadata_shards(&broker, "old"), swapped);
    broker.kill9();
}

#[test]
fn a_data_directory_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(&data, 1, &[]);
    assert_eq!(broker.client().create_topic("mine", 1), 0);
    broker.stop();
    let status = broker.run_to_exit(&["node.id=7"]);
    assert!(!status.success(), "a node must not join another's quorum");
    let log = broker.log();
    assert!(
        log.contains("refusing to start") && log.contains("voters"),
        "{log}"
    );
    // Its own node id still starts, with nothing lost.
    broker.spawn();
    assert_eq!(broker.client().metadata_partitions("mine"), Some(1));
    broker.kill9();
}
