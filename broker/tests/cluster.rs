//! Three combined nodes (broker and controller) on this machine: one metadata quorum,
//! brokers that register, heartbeat and get fenced, partitions spread over the brokers and
//! served by their leaders, a controller that fails over with nothing committed lost.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{batch, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// Fast failure detection for tests: heartbeats every 300 ms, fenced after 2 s.
const FAST: [&str; 3] = [
    "broker.heartbeat.interval.ms=300",
    "broker.session.timeout.ms=2000",
    "controller.quorum.election.timeout.ms=1000",
];

fn metadata(c: &mut Client, topic: Option<&str>) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    req.topics = topic.map(|t| {
        let mut mt = metadata_request::MetadataRequestTopic::default();
        mt.name = Some(TopicName(StrBytes::from_string(t.into())));
        vec![mt]
    });
    req.allow_auto_topic_creation = false;
    c.send(&req, 12)
}

/// Every topic name in `c`'s broker's Metadata.
fn topic_names(c: &mut Client) -> BTreeSet<String> {
    metadata(c, None)
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

/// Each partition's leader as `node`'s Metadata tells it.
fn leaders(cluster: &Cluster, node: i32, topic: &str) -> Vec<i32> {
    let md = metadata(&mut cluster.client(node), Some(topic));
    let t = &md.topics[0];
    assert_eq!(t.error_code, 0, "{topic} on node {node}");
    let mut v: Vec<(i32, i32)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    v.sort();
    v.into_iter().map(|(_, l)| l).collect()
}

fn produce_v10(c: &mut Client, topic: &str, partition: i32, value: &[u8]) -> ProduceResponse {
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(batch(&[value.to_vec()], 1, Compression::None));
    let mut td = produce_request::TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.into()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    c.send(&req, 10)
}

fn fetch_v16(c: &mut Client, topic_id: uuid::Uuid, partition: i32) -> FetchResponse {
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = partition;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic_id = topic_id;
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_bytes = 1 << 20;
    req.topics = vec![ft];
    c.send(&req, 16)
}

/// kill -9 of the three nodes at once, then all three started again; returns once each
/// serves clients and knows the active controller (none can start alone: a quorum needs two).
fn kill_all_and_restart(cluster: &mut Cluster) {
    for node in 1..=3 {
        cluster.kill9(node);
    }
    for node in 1..=3 {
        cluster.launch(node);
    }
    for node in 1..=3 {
        wait_until(
            "restart after a kill of all",
            Duration::from_secs(60),
            || {
                std::net::TcpStream::connect(cluster.node(node).client).is_ok()
                    && cluster.controller(node, Duration::from_millis(1)).is_some()
            },
        );
    }
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_agree_and_each_partition_is_served_by_its_leader() {
    let cluster = Cluster::start(3, &[]);
    // Each node learns of the others' registrations as its image catches up.
    for node in 1..=3 {
        wait_until(
            &format!("brokers 1, 2 and 3 seen by node {node}"),
            Duration::from_secs(10),
            || {
                let md = metadata(&mut cluster.client(node), None);
                let ids: BTreeSet<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
                ids == BTreeSet::from([1, 2, 3])
            },
        );
    }
    // Created through one node (forwarded to the active controller whichever it is).
    assert_eq!(cluster.client(2).create_topic("spread", 12), 0);
    // The node that took the request has the topic when it answers.
    let leaders_seen = leaders(&cluster, 2, "spread");
    assert_eq!(
        leaders_seen.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 2, 3]),
        "12 partitions must have leaders on all three brokers: {leaders_seen:?}"
    );
    // Every node has the same view once the topic is committed there.
    for node in [1, 3] {
        wait_until(
            "the same leaders everywhere",
            Duration::from_secs(10),
            || {
                metadata(&mut cluster.client(node), Some("spread")).topics[0].error_code == 0
                    && leaders(&cluster, node, "spread") == leaders_seen
            },
        );
    }
    let topic_id = metadata(&mut cluster.client(1), Some("spread")).topics[0].topic_id;
    for (p, leader) in leaders_seen.iter().enumerate() {
        let p = p as i32;
        let value = format!("p{p}").into_bytes();
        let mut c = cluster.client(*leader);
        let r = c.produce(
            "spread",
            &[(p, batch(std::slice::from_ref(&value), 1, Compression::None))],
            -1,
        );
        assert_eq!(r[0].1, 0, "produce to partition {p} at its leader {leader}");
        let recs = c.fetch_all("spread", p);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].value.as_deref(), Some(&value[..]));
        // Any other broker sends the client to the leader.
        let other = leader % 3 + 1;
        let r = cluster.client(other).produce(
            "spread",
            &[(p, batch(std::slice::from_ref(&value), 1, Compression::None))],
            -1,
        );
        assert_eq!(
            r[0].1, NOT_LEADER_OR_FOLLOWER,
            "partition {p} at node {other}"
        );
        let (err, _, _) = cluster.client(other).fetch("spread", p, 0, 0);
        assert_eq!(
            err, NOT_LEADER_OR_FOLLOWER,
            "fetch of partition {p} at node {other}"
        );
        // KIP-951: Produce v10+ and Fetch v16 name the leader and its endpoint.
        let leader_port = i32::from(cluster.node(*leader).client.port());
        let resp = produce_v10(&mut cluster.client(other), "spread", p, &value);
        let pr = &resp.responses[0].partition_responses[0];
        assert_eq!(pr.error_code, NOT_LEADER_OR_FOLLOWER);
        assert_eq!(pr.current_leader.leader_id.0, *leader, "partition {p}");
        let ports: Vec<(i32, i32)> = resp
            .node_endpoints
            .iter()
            .map(|e| (e.node_id.0, e.port))
            .collect();
        assert_eq!(ports, [(*leader, leader_port)], "partition {p}");
        let resp = fetch_v16(&mut cluster.client(other), topic_id, p);
        let pd = &resp.responses[0].partitions[0];
        assert_eq!(pd.error_code, NOT_LEADER_OR_FOLLOWER);
        assert_eq!(pd.current_leader.leader_id.0, *leader, "partition {p}");
        let ports: Vec<(i32, i32)> = resp
            .node_endpoints
            .iter()
            .map(|e| (e.node_id.0, e.port))
            .collect();
        assert_eq!(ports, [(*leader, leader_port)], "partition {p}");
    }
    // /v1/brokers shows every broker unfenced and one controller that all agree on.
    let d = cluster.describe(1);
    let states: Vec<&str> = d["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["unfenced"; 3], "{d}");
    let controller = cluster.controller(1, Duration::from_secs(5)).unwrap();
    for node in 2..=3 {
        assert_eq!(
            cluster.controller(node, Duration::from_secs(5)),
            Some(controller)
        );
    }
}

#[test]
fn the_active_controller_fails_over_and_nothing_committed_is_lost() {
    let mut cluster = Cluster::start(3, &FAST);
    let controller = cluster.controller(1, Duration::from_secs(10)).unwrap();
    let via = controller % 3 + 1;
    let mut created = Vec::new();
    let mut gap = Duration::ZERO;
    let mut last_ok = Instant::now();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while created.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "only {} topics created",
            created.len()
        );
        if created.len() == 10 && !killed {
            cluster.kill9(controller);
            killed = true;
        }
        let name = format!("loop-{i}");
        i += 1;
        let code = cluster.client(via).create_topic(&name, 1);
        if code == 0 {
            gap = gap.max(last_ok.elapsed());
            last_ok = Instant::now();
            created.push(name);
        } else {
            // NOT_CONTROLLER or a timeout while the quorum elects a new leader.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let new_controller = cluster.controller(via, Duration::from_secs(10)).unwrap();
    assert_ne!(new_controller, controller, "a new controller took over");
    eprintln!("controller {controller} killed; {new_controller} took over; longest gap between creations {gap:?}");
    // The killed node catches up after its restart.
    cluster.restart(controller);
    for node in 1..=3 {
        wait_until("every topic everywhere", Duration::from_secs(20), || {
            let names = topic_names(&mut cluster.client(node));
            created.iter().all(|c| names.contains(c))
        });
    }
    // All three killed at once and restarted: still every topic.
    kill_all_and_restart(&mut cluster);
    for node in 1..=3 {
        let names = topic_names(&mut cluster.client(node));
        for c in &created {
            assert!(names.contains(c), "{c} lost on node {node}");
        }
    }
}

#[test]
fn with_two_of_three_voters_down_changes_fail_and_data_goes_on() {
    let mut props = FAST.to_vec();
    props.push("sluice.metadata.commit.timeout.ms=3000");
    let mut cluster = Cluster::start(3, &props);
    assert_eq!(cluster.client(1).create_topic("kept", 3), 0);
    let ls = leaders(&cluster, 1, "kept");
    let p1 = ls
        .iter()
        .position(|l| *l == 1)
        .expect("a partition on node 1") as i32;
    cluster.kill9(2);
    cluster.kill9(3);
    let started = Instant::now();
    let code = cluster.client(1).create_topic("refused", 1);
    let took = started.elapsed();
    assert!(
        [7, 41].contains(&code),
        "CreateTopics without a quorum: {code} (REQUEST_TIMED_OUT or NOT_CONTROLLER)"
    );
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
    // Produce and fetch to the partition node 1 leads go on.
    let mut c = cluster.client(1);
    let r = c.produce(
        "kept",
        &[(p1, batch(&[b"on".to_vec()], 1, Compression::None))],
        -1,
    );
    assert_eq!(r[0].1, 0);
    assert_eq!(c.fetch_all("kept", p1).len(), 1);
    assert!(cluster.is_running(1));
}

#[test]
fn a_stopped_broker_is_fenced_and_unfenced_when_it_resumes() {
    let cluster = Cluster::start(3, &FAST);
    assert_eq!(cluster.client(1).create_topic("f", 6), 0);
    let before = leaders(&cluster, 1, "f");
    assert!(before.contains(&3), "{before:?}");
    cluster.signal(3, libc::SIGSTOP);
    // Node 3's partitions go offline and node 3 leaves the broker list.
    wait_until("node 3 fenced", Duration::from_secs(20), || {
        let md = metadata(&mut cluster.client(1), Some("f"));
        let ls = leaders(&cluster, 1, "f");
        !md.brokers.iter().any(|b| b.node_id.0 == 3)
            && before
                .iter()
                .zip(&ls)
                .all(|(b, l)| if *b == 3 { *l == -1 } else { l == b })
    });
    // Its partitions answer LEADER_NOT_AVAILABLE with node 3 as an offline replica, as
    // Kafka's do; the others are untouched.
    let md = metadata(&mut cluster.client(1), Some("f"));
    for p in &md.topics[0].partitions {
        let offline: Vec<i32> = p.offline_replicas.iter().map(|b| b.0).collect();
        if before[p.partition_index as usize] == 3 {
            assert_eq!(p.error_code, 5, "partition {}", p.partition_index);
            assert_eq!(offline, [3], "partition {}", p.partition_index);
        } else {
            assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
            assert!(offline.is_empty(), "partition {}", p.partition_index);
        }
    }
    let d = cluster.describe(1);
    let b3 = d["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["node_id"] == 3)
        .cloned()
        .unwrap();
    assert_eq!(b3["state"], "fenced", "{d}");
    // `sluice cluster info` shows it too, with the quorum's voters (node 3 among them).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "info", "--format", "json"])
        .env("SLUICE_BOOTSTRAP", cluster.node(1).client.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(i64, String)> = info["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["node_id"].as_i64().unwrap(),
                b["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, "unfenced".to_string()),
            (2, "unfenced".into()),
            (3, "fenced".into())
        ],
        "{info}"
    );
    let voters: Vec<i64> = info["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["node_id"].as_i64().unwrap())
        .collect();
    assert_eq!(voters, [1, 2, 3], "{info}");
    assert!(info["controller"].as_i64().unwrap() != 3, "{info}");
    cluster.signal(3, libc::SIGCONT);
    wait_until("node 3 unfenced", Duration::from_secs(20), || {
        leaders(&cluster, 1, "f") == before
    });
    // Each leader change bumped the epoch (offline, then back): Metadata says so, node 3
    // stamps the new epoch on what it appends, and a fetch with the old epoch is fenced.
    let p3 = before.iter().position(|l| *l == 3).unwrap() as i32;
    // (A node answering while it catches up may not list the partition yet: None.)
    let epoch_now = |node: i32| {
        let md = metadata(&mut cluster.client(node), Some("f"));
        md.topics.first().and_then(|t| {
            t.partitions
                .iter()
                .find(|p| p.partition_index == p3)
                .map(|p| p.leader_epoch)
        })
    };
    wait_until(
        "node 3 applied the new epoch",
        Duration::from_secs(10),
        || epoch_now(3).is_some() && epoch_now(3) == epoch_now(1),
    );
    let epoch = epoch_now(1).unwrap();
    assert!(
        epoch >= 2,
        "leader epoch {epoch} after a fence and an unfence"
    );
    let mut c3 = cluster.client(3);
    let r = c3.produce(
        "f",
        &[(p3, batch(&[b"after".to_vec()], 1, Compression::None))],
        -1,
    );
    assert_eq!(r[0].1, 0);
    let fetch = |c: &mut Client, known: i32| {
        let mut fp = fetch_request::FetchPartition::default();
        fp.partition = p3;
        fp.current_leader_epoch = known;
        fp.partition_max_bytes = 1 << 20;
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = TopicName(StrBytes::from_static_str("f"));
        ft.partitions = vec![fp];
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_bytes = 1 << 20;
        req.topics = vec![ft];
        let resp: FetchResponse = c.send(&req, 12);
        resp.responses[0].partitions[0].clone()
    };
    let ok = fetch(&mut c3, epoch);
    assert_eq!(ok.error_code, 0);
    let bytes = ok.records.clone().unwrap_or_default();
    let stamped = protocol::record_batch::BatchIter::new(&bytes, false)
        .map(|v| v.partition_leader_epoch())
        .collect::<Vec<_>>();
    assert_eq!(stamped.last(), Some(&epoch), "{stamped:?}");
    assert_eq!(
        fetch(&mut c3, epoch - 1).error_code,
        74,
        "FENCED_LEADER_EPOCH"
    );
    assert_eq!(
        fetch(&mut c3, epoch + 1).error_code,
        75,
        "UNKNOWN_LEADER_EPOCH"
    );
    // OffsetForLeaderEpoch (KIP-320): the current epoch ends at the log end (one record).
    let end_for = |c: &mut Client, known: i32, asked: i32| {
        let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
        p.partition = p3;
        p.current_leader_epoch = known;
        p.leader_epoch = asked;
        let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("f"));
        t.partitions = vec![p];
        let mut req = OffsetForLeaderEpochRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![t];
        let r: OffsetForLeaderEpochResponse = c.send(&req, 4);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(end_for(&mut c3, epoch, epoch), (0, epoch, 1));
    // A replica fetch (replica id set) from a broker that holds no replica of it is refused
    // and moves nothing: the records stay invisible to it.
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = p3;
    fp.current_leader_epoch = epoch;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("f"));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(1);
    req.max_bytes = 1 << 20;
    req.topics = vec![ft];
    let resp: FetchResponse = c3.send(&req, 12);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
    assert_eq!(end_for(&mut c3, epoch - 1, epoch).0, 74);
    assert_eq!(
        end_for(&mut cluster.client(1), -1, epoch).0,
        6,
        "NOT_LEADER_OR_FOLLOWER"
    );
}

#[test]
fn bad_inter_node_input_is_refused_and_logged() {
    use std::io::{Read, Write};
    let cluster = Cluster::start(3, &[]);
    let target = cluster.node(1).controller;
    // Garbage, a frame that announces 4 GiB, and a truncated frame.
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff, 0xff, 0xff, 0xff, 0, 0][..],
        &[0, 0, 0, 40, 0, 0, 0, 1, 0, 0][..],
    ] {
        let mut s = std::net::TcpStream::connect(target).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    wait_until("the refusals logged", Duration::from_secs(10), || {
        cluster
            .log(1)
            .matches("inter-node connection closed")
            .count()
            >= 3
    });
    // The quorum still works.
    assert_eq!(cluster.client(1).create_topic("after-garbage", 1), 0);
    // A Hello from another cluster is refused with a reason.
    let hello = replication::wire::encode(
        0,
        &replication::wire::PeerMessage::Hello {
            cluster_id: "someone-else".into(),
            node_id: 9,
            voters: vec![],
            incarnation: [9; 16],
        },
    );
    let mut s = std::net::TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&hello).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    match replication::wire::decode(&body).unwrap().1 {
        replication::wire::PeerMessage::HelloRefused { reason } => {
            assert!(reason.contains("cluster"), "{reason}")
        }
        other => panic!("expected HelloRefused, got {other:?}"),
    }
    wait_until("the refused Hello logged", Duration::from_secs(10), || {
        cluster.log(1).contains("refused node 9")
    });
}

#[test]
fn a_broker_killed_and_restarted_at_once_rejoins_with_its_data() {
    let mut cluster = Cluster::start(3, &FAST);
    let controller = cluster.controller(1, Duration::from_secs(10)).unwrap();
    let victim = controller % 3 + 1;
    assert_eq!(cluster.client(controller).create_topic("back", 3), 0);
    let ls = leaders(&cluster, controller, "back");
    let p = ls.iter().position(|l| *l == victim).unwrap() as i32;
    wait_until("the topic on the victim", Duration::from_secs(10), || {
        metadata(&mut cluster.client(victim), Some("back")).topics[0].error_code == 0
    });
    let r = cluster.client(victim).produce(
        "back",
        &[(p, batch(&[b"kept".to_vec()], 1, Compression::None))],
        -1,
    );
    assert_eq!(r[0].1, 0);
    // Restarted within its session: its old registration holds the id until the session
    // expires, then the new process registers and leads its partition again.
    cluster.kill9(victim);
    cluster.restart(victim);
    assert!(
        cluster
            .log(victim)
            .contains("node id held by another registration"),
        "the restart came within the old session: it must have waited for it: {}",
        cluster.log(victim)
    );
    wait_until("the partition led again", Duration::from_secs(20), || {
        leaders(&cluster, controller, "back")[p as usize] == victim
    });
    let recs = cluster.client(victim).fetch_all("back", p);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].value.as_deref(), Some(&b"kept"[..]));
}

#[test]
fn a_broker_stopped_with_sigterm_is_fenced_at_once_and_restarts_without_waiting() {
    // Default heartbeats and sessions (9 s): only a controlled shutdown explains a prompt
    // fence and an immediate re-registration.
    let mut cluster = Cluster::start(3, &[]);
    let controller = cluster.controller(1, Duration::from_secs(10)).unwrap();
    let victim = controller % 3 + 1;
    assert_eq!(cluster.client(controller).create_topic("graceful", 3), 0);
    cluster.signal(victim, libc::SIGTERM);
    let started = Instant::now();
    wait_until("the stopped broker fenced", Duration::from_secs(5), || {
        let md = metadata(&mut cluster.client(controller), Some("graceful"));
        !md.brokers.iter().any(|b| b.node_id.0 == victim)
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("the process exited", Duration::from_secs(30), || {
        !cluster.is_running(victim)
    });
    assert!(cluster.log(victim).contains("controlled shutdown: fenced"));
    cluster.restart(victim);
    assert!(
        !cluster
            .log(victim)
            .contains("node id held by another registration"),
        "a restart after a controlled shutdown must not wait for the old session"
    );
    wait_until("leaders back", Duration::from_secs(10), || {
        leaders(&cluster, controller, "graceful").contains(&victim)
    });
}

/// Runs `sluice start --config <config>` with its log in `log`.
fn spawn_with_config(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("start")
        .arg("--config")
        .arg(config)
        .args(["--smp", "1"])
        .env_remove("SLUICE_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn a_second_process_with_a_running_node_id_is_refused() {
    let cluster = Cluster::start(3, &[]);
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(&cluster.node(3).config).unwrap();
    let data_line = original
        .lines()
        .find(|l| l.starts_with("log.dirs="))
        .unwrap()
        .to_string();
    let elsewhere = format!("log.dirs={}", dir.path().join("data").display());

    // A copy of node 3's configuration on the same machine, moved to a free client port:
    // its controller listener is taken (SO_REUSEPORT would otherwise let the two share it,
    // and the kernel split the voters' Raft traffic between them).
    let n3 = cluster.node(3);
    let ports = common::cluster::free_ports(4);
    let copy = dir.path().join("copy.properties");
    let copied = original
        .replace(&data_line, &elsewhere)
        .replace(&n3.client.port().to_string(), &ports[3].to_string())
        .replace(&n3.admin.port().to_string(), &ports[2].to_string());
    std::fs::write(&copy, copied).unwrap();
    let copy_log = dir.path().join("copy.log");
    let mut child = spawn_with_config(&copy, &copy_log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "a copy of node 3 kept running: {}",
                std::fs::read_to_string(&copy_log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&copy_log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("controller listener address") && text.contains("already served"),
        "{text}"
    );

    // Node 3 again "on another host": same node.id, cluster and voters, its own listeners.
    let other = original
        .replace(&data_line, &elsewhere)
        .replace(&n3.client.port().to_string(), &ports[0].to_string())
        .replace(
            &format!("CONTROLLER://127.0.0.1:{}", n3.controller.port()),
            &format!("CONTROLLER://127.0.0.1:{}", ports[1]),
        )
        .replace(&n3.admin.port().to_string(), &ports[2].to_string());
    let twin = dir.path().join("twin.properties");
    std::fs::write(&twin, other).unwrap();
    let twin_log = dir.path().join("twin.log");
    let mut twin_child = spawn_with_config(&twin, &twin_log);
    wait_until(
        "a voter refusing the twin of node 3",
        Duration::from_secs(60),
        || {
            (1..=3).any(|i| {
                cluster
                    .log(i)
                    .contains("second process running with node.id=3")
            })
        },
    );
    let twin_text = std::fs::read_to_string(&twin_log).unwrap();
    assert!(twin_text.contains("refused us"), "{twin_text}");
    // The quorum goes on with the real node 3: a topic is placed on all three, and node 3
    // as the cluster knows it is the original process.
    assert_eq!(cluster.client(1).create_topic("after-twin", 6), 0);
    let ls = leaders(&cluster, 1, "after-twin");
    assert!(ls.contains(&3), "{ls:?}");
    let d = cluster.describe(1);
    let b3 = d["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["node_id"] == 3)
        .cloned()
        .unwrap_or_default();
    assert_eq!(b3["state"], "unfenced", "{d}");
    assert_eq!(
        b3["port"],
        n3.client.port(),
        "broker 3 must still be the original process: {b3}"
    );
    let _ = twin_child.kill();
    let _ = twin_child.wait();
}

#[test]
fn dedicated_controllers_and_brokers_split_the_roles() {
    // Node 1 is the quorum's only voter and serves no clients; nodes 2 and 3 are brokers
    // that observe its metadata log.
    // The voter snapshots after every few hundred bytes, so that a broker (re)starting
    // gets its image from a snapshot rather than from entries.
    let mut props = FAST.to_vec();
    props.push("metadata.log.max.record.bytes.between.snapshots=200");
    let mut cluster = Cluster::start_roles(&["controller", "broker", "broker"], &props);
    assert!(
        std::net::TcpStream::connect(cluster.node(1).client).is_err(),
        "a controller-only node has no client listener"
    );
    for node in [2, 3] {
        let md = metadata(&mut cluster.client(node), None);
        let ids: BTreeSet<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
        assert_eq!(ids, BTreeSet::from([2, 3]), "brokers seen by node {node}");
    }
    // A topic created at a broker is decided by the controller and placed on brokers only.
    assert_eq!(cluster.client(2).create_topic("split", 4), 0);
    wait_until("the topic at node 3", Duration::from_secs(10), || {
        metadata(&mut cluster.client(3), Some("split")).topics[0].error_code == 0
    });
    let ls = leaders(&cluster, 3, "split");
    assert_eq!(
        ls.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([2, 3]),
        "{ls:?}"
    );
    for (p, leader) in ls.iter().enumerate() {
        let value = format!("v{p}").into_bytes();
        let r = cluster.client(*leader).produce(
            "split",
            &[(
                p as i32,
                batch(std::slice::from_ref(&value), 1, Compression::None),
            )],
            -1,
        );
        assert_eq!(r[0].1, 0, "produce to partition {p} at {leader}");
    }
    // DescribeQuorum asked of a broker names the controller.
    let d = cluster.describe(2);
    assert_eq!(d["controller"], 1, "{d}");
    // A broker killed and restarted catches up from the controller and keeps its data.
    let p3 = ls.iter().position(|l| *l == 3).unwrap() as i32;
    cluster.kill9(3);
    cluster.restart(3);
    wait_until(
        "node 3 leads its partition again",
        Duration::from_secs(30),
        || leaders(&cluster, 2, "split")[p3 as usize] == 3,
    );
    assert!(
        cluster
            .log(3)
            .contains("metadata image taken from a voter's snapshot"),
        "{}",
        cluster.log(3)
    );
    let recs = cluster.client(3).fetch_all("split", p3);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].value.as_deref(), Some(format!("v{p3}").as_bytes()));
    // The controller killed and restarted: brokers serve meanwhile, changes resume after.
    cluster.kill9(1);
    let p2 = ls.iter().position(|l| *l == 2).unwrap() as i32;
    let r = cluster.client(2).produce(
        "split",
        &[(p2, batch(&[b"during".to_vec()], 1, Compression::None))],
        -1,
    );
    assert_eq!(r[0].1, 0, "produce while the controller is down");
    cluster.restart(1);
    wait_until(
        "a topic created after the controller's restart",
        Duration::from_secs(30),
        || cluster.client(3).create_topic("after-restart", 2) == 0,
    );
    wait_until("the new topic at node 2", Duration::from_secs(10), || {
        metadata(&mut cluster.client(2), Some("after-restart")).topics[0].error_code == 0
    });
}

#[test]
fn a_replicated_partition_keeps_acknowledged_records_across_a_leader_change() {
    let mut props = FAST.to_vec();
    props.push("sluice.replication.factor.max=3");
    props.push("default.replication.factor=3");
    let cluster = Cluster::start(3, &props);
    // Without a replication factor, default.replication.factor applies.
    assert_eq!(cluster.client(1).create_topic_rf("r", 1, -1), 0);
    let replicas = |node: i32| {
        let md = metadata(&mut cluster.client(node), Some("r"));
        let p = &md.topics[0].partitions[0];
        (
            p.leader_id.0,
            p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
        )
    };
    wait_until("the topic everywhere", Duration::from_secs(10), || {
        (1..=3).all(|n| metadata(&mut cluster.client(n), Some("r")).topics[0].error_code == 0)
    });
    let (leader, reps, isr) = replicas(1);
    assert_eq!(reps.len(), 3, "{reps:?}");
    assert_eq!(isr.len(), 3, "{isr:?}");
    // acks=all is answered once both followers have the batches on disk. (A leader that
    // moves meanwhile — a loaded machine can miss a heartbeat — answers NOT_LEADER, which a
    // client retries at the new leader: nothing was appended.)
    let mut leader = leader;
    for i in 0..10 {
        let v = format!("r{i}").into_bytes();
        let mut tries = 0;
        loop {
            let mut c = cluster.client(leader);
            let r = c.produce(
                "r",
                &[(0, batch(std::slice::from_ref(&v), 1, Compression::None))],
                -1,
            );
            if r[0].1 == NOT_LEADER_OR_FOLLOWER && tries < 20 {
                tries += 1;
                std::thread::sleep(Duration::from_millis(200));
                leader = replicas(1).0.max(1);
                continue;
            }
            assert_eq!(r[0].1, 0, "acks=all produce {i}");
            assert_eq!(r[0].2, i as i64);
            break;
        }
    }
    let mut c = cluster.client(leader);
    assert_eq!(c.fetch_all("r", 0).len(), 10);
    // The leader stops (SIGTERM: controlled shutdown): another ISR member leads, and has
    // every acknowledged record.
    cluster.signal(leader, libc::SIGTERM);
    let other = reps.iter().copied().find(|b| *b != leader).unwrap();
    wait_until("a new leader", Duration::from_secs(20), || {
        let (l, _, _) = replicas(other);
        l >= 0 && l != leader
    });
    let (next, _, isr) = replicas(other);
    assert!(!isr.contains(&leader), "{isr:?}");
    let mut c = cluster.client(next);
    let want: Vec<_> = (0..10)
        .map(|i| bytes::Bytes::from(format!("r{i}")))
        .collect();
    // Visible once the new leader's high watermark has moved (the remaining follower
    // fetches from it), as a consumer would see by polling.
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < want.len() && Instant::now() < deadline {
        values = c
            .fetch_all("r", 0)
            .iter()
            .map(|r| r.value.clone().unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        values, want,
        "the new leader {next} lost acknowledged records"
    );
    // It takes writes, replicated to the remaining follower.
    let r = c.produce(
        "r",
        &[(0, batch(&[b"after".to_vec()], 1, Compression::None))],
        -1,
    );
    assert_eq!(r[0].1, 0);
    assert_eq!(r[0].2, 10);
}

#[test]
fn the_isr_shrinks_around_a_stopped_follower_and_grows_back() {
    // A follower silent for replica.lag.time.max.ms leaves the ISR (well before its
    // session would expire), so acks=all goes on without it; it rejoins once caught up.
    let cluster = Cluster::start(
        3,
        &[
            "sluice.replication.factor.max=3",
            "replica.lag.time.max.ms=3000",
            "broker.heartbeat.interval.ms=300",
            "broker.session.timeout.ms=60000",
        ],
    );
    assert_eq!(cluster.client(1).create_topic_rf("s", 1, 3), 0);
    let state = |node: i32| {
        let md = metadata(&mut cluster.client(node), Some("s"));
        let p = &md.topics[0].partitions[0];
        let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
        isr.sort();
        (p.leader_id.0, isr)
    };
    wait_until("the topic everywhere", Duration::from_secs(10), || {
        (1..=3).all(|n| metadata(&mut cluster.client(n), Some("s")).topics[0].error_code == 0)
    });
    let (leader, isr) = state(1);
    assert_eq!(isr, [1, 2, 3]);
    let produce = |v: &[u8]| {
        cluster
            .client(leader)
            .produce("s", &[(0, batch(&[v.to_vec()], 1, Compression::None))], -1)[0]
            .1
    };
    assert_eq!(produce(b"a"), 0);
    let follower = (1..=3).find(|b| *b != leader).unwrap();
    cluster.signal(follower, libc::SIGSTOP);
    // Answered once the ISR shrank (the request timeout is 10 s; the lag limit 3 s).
    assert_eq!(produce(b"b"), 0, "acks=all with a stopped follower");
    // (Waited for, not asserted at once: on a loaded machine the other follower may lag
    // past the limit for a moment too, and then rejoin.)
    let mut others: Vec<i32> = (1..=3).filter(|b| *b != follower).collect();
    others.sort();
    wait_until(
        "the ISR without the stopped follower",
        Duration::from_secs(30),
        || state(leader).1 == others,
    );
    let metric = |name: &str| -> f64 {
        let (_, body) = cluster.admin_get(leader, "/metrics");
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(metric("sluice_isr_shrinks_total") >= 1.0);
    assert_eq!(metric("sluice_under_replicated_partitions"), 1.0);
    let lag_in = |family: &str, replica: i32| -> f64 {
        let (_, body) = cluster.admin_get(leader, "/metrics");
        let tag = format!("replica=\"{replica}\"");
        body.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&tag))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let lag_of = |replica: i32| lag_in("sluice_replica_lag_records", replica);
    assert!(lag_of(follower) >= 1.0, "the stopped follower's lag");
    // Out of the ISR for lagging past the 3 s limit: its time lag says so.
    assert!(
        lag_in("sluice_replica_lag_ms", follower) > 3000.0,
        "the stopped follower's lag in ms"
    );
    cluster.signal(follower, libc::SIGCONT);
    wait_until(
        "the follower back in the ISR",
        Duration::from_secs(30),
        || state(leader).1 == [1, 2, 3],
    );
    assert!(metric("sluice_isr_expands_total") >= 1.0);
    assert_eq!(lag_of(follower), 0.0, "caught up");
    // The follower's fetcher counted what it fetched.
    let (_, body) = cluster.admin_get(follower, "/metrics");
    let fetched: f64 = body
        .lines()
        .filter(|l| l.starts_with("sluice_replica_fetch_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(fetched > 0.0, "replica fetch bytes on the follower");
    wait_until(
        "no partition under-replicated",
        Duration::from_secs(10),
        || metric("sluice_under_replicated_partitions") == 0.0,
    );
    assert_eq!(produce(b"c"), 0);
    let values: Vec<_> = cluster
        .client(leader)
        .fetch_all("s", 0)
        .iter()
        .map(|r| r.value.clone().unwrap())
        .collect();
    assert_eq!(values, [&b"a"[..], b"b", b"c"]);
}

#[test]
fn every_acknowledged_record_survives_a_kill_of_all_three_brokers() {
    // acks=all on a replication factor of 3: every acknowledged batch is on all three disks,
    // so a simultaneous kill -9 of every broker loses none of it.
    let mut props = FAST.to_vec();
    props.push("sluice.replication.factor.max=3");
    let mut cluster = Cluster::start(3, &props);
    assert_eq!(cluster.client(1).create_topic_rf("k", 2, 3), 0);
    wait_until("the topic everywhere", Duration::from_secs(10), || {
        (1..=3).all(|n| metadata(&mut cluster.client(n), Some("k")).topics[0].error_code == 0)
    });
    let ls = leaders(&cluster, 1, "k");
    let mut acked: Vec<(i32, Vec<u8>)> = Vec::new();
    for i in 0..40 {
        let p = i % 2;
        let v = format!("k{i}").into_bytes();
        let r = cluster.client(ls[p as usize]).produce(
            "k",
            &[(p, batch(std::slice::from_ref(&v), 1, Compression::None))],
            -1,
        );
        if r[0].1 == 0 {
            acked.push((p, v));
        }
    }
    assert!(acked.len() >= 30, "only {} of 40 acknowledged", acked.len());
    kill_all_and_restart(&mut cluster);
    for p in 0..2 {
        let want: Vec<&Vec<u8>> = acked
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, v)| v)
            .collect();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < want.len() && Instant::now() < deadline {
            let leader = leaders(&cluster, 1, "k")[p as usize];
            if leader >= 0 {
                got = cluster
                    .client(leader)
                    .fetch_all("k", p)
                    .iter()
                    .filter_map(|r| r.value.as_ref().map(|v| v.to_vec()))
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for v in &want {
            assert!(
                got.contains(v),
                "partition {p} lost {:?}",
                String::from_utf8_lossy(v)
            );
        }
    }
}

#[test]
fn with_two_of_three_replicas_down_acks_all_is_refused_and_acks_one_goes_on() {
    // A session long enough that a loaded machine does not fence the leader by accident.
    let mut props = vec![
        "broker.heartbeat.interval.ms=300",
        "broker.session.timeout.ms=4000",
        "controller.quorum.election.timeout.ms=1000",
    ];
    props.push("sluice.replication.factor.max=3");
    props.push("min.insync.replicas=2");
    // A controller of its own, so that the quorum lives through the two brokers' deaths
    // (with three combined nodes, two down would also stop metadata changes).
    let mut cluster = Cluster::start_roles(&["controller", "broker", "broker", "broker"], &props);
    assert_eq!(cluster.client(2).create_topic_rf("m", 1, 3), 0);
    wait_until("the topic everywhere", Duration::from_secs(10), || {
        (2..=4).all(|n| metadata(&mut cluster.client(n), Some("m")).topics[0].error_code == 0)
    });
    let leader = leaders(&cluster, 2, "m")[0];
    let produce = |cluster: &Cluster, acks: i16, v: &[u8]| {
        cluster.client(leader).produce(
            "m",
            &[(0, batch(&[v.to_vec()], 1, Compression::None))],
            acks,
        )[0]
        .1
    };
    assert_eq!(produce(&cluster, -1, b"first"), 0);
    let followers: Vec<i32> = (2..=4).filter(|b| *b != leader).collect();
    for f in &followers {
        cluster.kill9(*f);
    }
    // Once both are out of the ISR (fenced after the session timeout), acks=all is refused
    // before anything is appended, acks=1 is still served.
    wait_until(
        "the ISR down to the leader",
        Duration::from_secs(30),
        || {
            let md = metadata(&mut cluster.client(leader), Some("m"));
            md.topics[0].partitions[0].isr_nodes.len() == 1
        },
    );
    assert_eq!(produce(&cluster, -1, b"refused"), 19, "NOT_ENOUGH_REPLICAS");
    assert_eq!(produce(&cluster, 1, b"one"), 0);
    // Back, caught up, in the ISR again: acks=all works.
    for f in &followers {
        cluster.launch(*f);
    }
    wait_until("the ISR whole again", Duration::from_secs(60), || {
        let md = metadata(&mut cluster.client(leader), Some("m"));
        md.topics[0].partitions[0].isr_nodes.len() == 3
    });
    assert_eq!(produce(&cluster, -1, b"last"), 0);
    let values: Vec<_> = cluster
        .client(leader)
        .fetch_all("m", 0)
        .iter()
        .map(|r| r.value.clone().unwrap())
        .collect();
    assert_eq!(values, [&b"first"[..], b"one", b"last"]);
}

/// Each partition's (leader, preferred replica, ISR) as `node` describes `topic`.
fn placement(cluster: &Cluster, node: i32, topic: &str) -> Vec<(i32, i32, Vec<i32>)> {
    let md = metadata(&mut cluster.client(node), Some(topic));
    let mut parts: Vec<_> = md.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let isr = p.isr_nodes.iter().map(|b| b.0).collect();
            (
                p.partition_index,
                (p.leader_id.0, p.replica_nodes[0].0, isr),
            )
        })
        .collect();
    parts.sort_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, x)| x).collect()
}

fn elect(
    c: &mut Client,
    election: i8,
    partitions: Option<&[(&str, &[i32])]>,
) -> ElectLeadersResponse {
    let mut req = ElectLeadersRequest::default();
    req.election_type = election;
    req.timeout_ms = 30_000;
    req.topic_partitions = partitions.map(|ps| {
        ps.iter()
            .map(|(t, p)| {
                let mut tp = elect_leaders_request::TopicPartitions::default();
                tp.topic = TopicName(StrBytes::from_string((*t).into()));
                tp.partitions = p.to_vec();
                tp
            })
            .collect()
    });
    c.send(&req, 2)
}

/// ElectLeaders' per-partition codes as (topic, partition, code), sorted.
fn election_codes(r: &ElectLeadersResponse) -> Vec<(String, i32, i16)> {
    let mut v: Vec<_> = r
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect();
    v.sort();
    v
}

/// Stops `victim` with SIGTERM (its leaderships move), starts it again and waits until it
/// is back in every ISR of `topic`; returns the placement then.
fn bounce_and_rejoin(cluster: &mut Cluster, victim: i32, topic: &str) -> Vec<(i32, i32, Vec<i32>)> {
    let other = victim % 3 + 1;
    cluster.signal(victim, libc::SIGTERM);
    wait_until("the stopped broker exited", Duration::from_secs(30), || {
        !cluster.is_running(victim)
    });
    cluster.restart(victim);
    let mut now = Vec::new();
    wait_until(
        "the restarted broker back in every ISR",
        Duration::from_secs(60),
        || {
            now = placement(cluster, other, topic);
            now.iter().all(|(_, _, isr)| isr.contains(&victim))
        },
    );
    now
}

#[test]
fn elect_leaders_moves_leaders_back_to_their_preferred_replicas() {
    const ELECTION_NOT_NEEDED: i16 = 84;
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    // No automatic rebalance during the test: only ElectLeaders moves leaders back.
    let mut cluster = Cluster::start(
        3,
        &[
            "sluice.replication.factor.max=3",
            "leader.imbalance.check.interval.seconds=3600",
        ],
    );
    assert_eq!(cluster.client(1).create_topic_rf("preferred", 3, 3), 0);
    let before = placement(&cluster, 1, "preferred");
    // Placement spreads the leaders, each its partition's first replica.
    let mut leaders: Vec<i32> = before.iter().map(|(l, _, _)| *l).collect();
    leaders.sort();
    assert_eq!(leaders, vec![1, 2, 3], "{before:?}");
    assert!(before.iter().all(|(l, p, _)| l == p), "{before:?}");
    let victim = before[0].0;
    let other = victim % 3 + 1;
    let after = bounce_and_rejoin(&mut cluster, victim, "preferred");
    assert!(
        after.iter().all(|(l, _, _)| *l != victim),
        "a restart alone gives no leadership back: {after:?}"
    );

    let mut c = cluster.client(other);
    let r = elect(
        &mut c,
        0,
        Some(&[("preferred", &[0, 1, 2]), ("no-such-topic", &[0])]),
    );
    assert_eq!(r.error_code, 0);
    let mut want = vec![("no-such-topic".to_string(), 0, UNKNOWN_TOPIC_OR_PARTITION)];
    for (i, (l, p, _)) in after.iter().enumerate() {
        let code = if l == p { ELECTION_NOT_NEEDED } else { 0 };
        want.push(("preferred".to_string(), i as i32, code));
    }
    want.sort();
    assert_eq!(election_codes(&r), want);
    wait_until(
        "leaders back on their preferred replicas",
        Duration::from_secs(10),
        || {
            placement(&cluster, other, "preferred")
                .iter()
                .all(|(l, p, _)| l == p)
        },
    );
    // Every partition asked (null): none needs an election, so none is answered.
    let r = elect(&mut c, 0, None);
    assert_eq!((r.error_code, election_codes(&r)), (0, vec![]));
    // An unclean election for a partition that has a leader is not needed either.
    let r = elect(&mut c, 1, Some(&[("preferred", &[1])]));
    assert_eq!(
        election_codes(&r),
        vec![("preferred".to_string(), 1, ELECTION_NOT_NEEDED)]
    );
}

#[test]
fn the_automatic_rebalance_gives_a_restarted_broker_its_leaderships_back() {
    let mut cluster = Cluster::start(
        3,
        &[
            "sluice.replication.factor.max=3",
            "leader.imbalance.check.interval.seconds=1",
        ],
    );
    assert_eq!(cluster.client(1).create_topic_rf("rebalanced", 3, 3), 0);
    let victim = placement(&cluster, 1, "rebalanced")[1].0;
    bounce_and_rejoin(&mut cluster, victim, "rebalanced");
    let other = victim % 3 + 1;
    wait_until(
        "the rebalance to restore preferred leaders",
        Duration::from_secs(30),
        || {
            placement(&cluster, other, "rebalanced")
                .iter()
                .all(|(l, p, _)| l == p)
        },
    );
    let controller = cluster.controller(other, Duration::from_secs(10)).unwrap();
    assert!(cluster
        .log(controller)
        .contains("preferred leaders restored"));
}

/// `name{...topic="<topic>"...}`'s value in `node`'s metrics, if it reports one.
fn partition_metric(cluster: &Cluster, node: i32, name: &str, topic: &str) -> Option<f64> {
    let (_, body) = cluster.admin_get(node, "/metrics");
    let tag = format!("topic=\"{topic}\"");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&tag))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

#[test]
fn log_start_moves_on_every_replica_and_a_follower_behind_it_starts_again_there() {
    let cluster = Cluster::start(
        3,
        &[
            "sluice.replication.factor.max=3",
            "replica.lag.time.max.ms=3000",
            "broker.heartbeat.interval.ms=300",
            "broker.session.timeout.ms=60000",
        ],
    );
    assert_eq!(cluster.client(1).create_topic_rf("behind", 1, 3), 0);
    let leader = leaders(&cluster, 1, "behind")[0];
    let produce = |v: &[u8]| {
        cluster.client(leader).produce(
            "behind",
            &[(0, batch(&[v.to_vec()], 1, Compression::None))],
            -1,
        )[0]
        .1
    };
    for v in [b"a", b"b", b"c"] {
        assert_eq!(produce(v), 0);
    }
    let mut followers = (1..=3).filter(|b| *b != leader);
    let (stopped, other) = (followers.next().unwrap(), followers.next().unwrap());
    cluster.signal(stopped, libc::SIGSTOP);
    // acks=all goes on once the ISR has shrunk without the stopped follower.
    for v in [b"d", b"e", b"f"] {
        assert_eq!(produce(v), 0);
    }
    // DeleteRecords to the high watermark on the leader: everything the stopped follower
    // has is now below the leader's log start.
    let mut p = delete_records_request::DeleteRecordsPartition::default();
    p.partition_index = 0;
    p.offset = -1;
    let mut t = delete_records_request::DeleteRecordsTopic::default();
    t.name = TopicName(StrBytes::from_string("behind".into()));
    t.partitions = vec![p];
    let mut req = DeleteRecordsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let r = cluster.client(leader).send(&req, 2);
    let start = r.topics[0].partitions[0].low_watermark;
    assert_eq!((r.topics[0].partitions[0].error_code, start), (0, 6));
    // The follower in the ISR moves its log start along.
    wait_until(
        "the other follower's log start",
        Duration::from_secs(10),
        || partition_metric(&cluster, other, "sluice_log_start_offset", "behind") == Some(6.0),
    );
    cluster.signal(stopped, libc::SIGCONT);
    wait_until(
        "the stopped follower back in the ISR",
        Duration::from_secs(30),
        || {
            let md = metadata(&mut cluster.client(leader), Some("behind"));
            md.topics[0].partitions[0].isr_nodes.len() == 3
        },
    );
    assert!(cluster
        .log(stopped)
        .contains("follower log behind the leader's log start"));
    assert_eq!(
        partition_metric(&cluster, stopped, "sluice_log_start_offset", "behind"),
        Some(6.0)
    );
    assert_eq!(produce(b"g"), 0);
    wait_until(
        "the restarted follower caught up",
        Duration::from_secs(10),
        || partition_metric(&cluster, stopped, "sluice_log_end_offset", "behind") == Some(7.0),
    );
}
