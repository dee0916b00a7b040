//! Consumer groups over the wire against the real binary (two shards, so groups live on
//! both and requests are forwarded): the join/sync/heartbeat/commit path, Kafka's error codes
//! for bad requests without damage to the group, multi-group OffsetFetch, ListGroups state
//! filters, DeleteGroups, and committed offsets and Stable groups surviving kill -9.

mod common;

use bytes::Bytes;
use common::{Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const INVALID_TOPIC_EXCEPTION: i16 = 17;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn join(c: &mut Client, group: &str, member: &str, ptype: &str, meta: Bytes) -> JoinGroupResponse {
    let mut p = join_group_request::JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = meta;
    let mut req = JoinGroupRequest::default();
    req.group_id = gid(group);
    req.session_timeout_ms = 10_000;
    req.rebalance_timeout_ms = 10_000;
    req.member_id = s(member);
    req.protocol_type = s(ptype);
    req.protocols = vec![p];
    c.send(&req, 7)
}

fn sync(c: &mut Client, group: &str, gen: i32, member: &str, assign: &[(&str, &[u8])]) -> i16 {
    let mut req = SyncGroupRequest::default();
    req.group_id = gid(group);
    req.generation_id = gen;
    req.member_id = s(member);
    req.assignments = assign
        .iter()
        .map(|(m, a)| {
            let mut x = sync_group_request::SyncGroupRequestAssignment::default();
            x.member_id = s(m);
            x.assignment = Bytes::copy_from_slice(a);
            x
        })
        .collect();
    c.send(&req, 5).error_code
}

fn heartbeat(c: &mut Client, group: &str, gen: i32, member: &str) -> i16 {
    let mut req = HeartbeatRequest::default();
    req.group_id = gid(group);
    req.generation_id = gen;
    req.member_id = s(member);
    c.send(&req, 4).error_code
}

/// OffsetCommit v8 of `(topic, partition, offset, metadata)`; the per-partition codes.
fn commit(
    c: &mut Client,
    group: &str,
    gen: i32,
    member: &str,
    offsets: &[(&str, i32, i64, &str)],
) -> Vec<i16> {
    let mut req = OffsetCommitRequest::default();
    req.group_id = gid(group);
    req.generation_id_or_member_epoch = gen;
    req.member_id = s(member);
    for (t, p, o, m) in offsets {
        let mut tp = offset_commit_request::OffsetCommitRequestTopic::default();
        tp.name = TopicName(s(t));
        let mut pp = offset_commit_request::OffsetCommitRequestPartition::default();
        pp.partition_index = *p;
        pp.committed_offset = *o;
        pp.committed_leader_epoch = -1;
        pp.committed_metadata = Some(s(m));
        tp.partitions = vec![pp];
        req.topics.push(tp);
    }
    c.send(&req, 8)
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// OffsetFetch v8 of all committed offsets of several groups: group -> [(partition, offset)].
fn fetch_offsets(c: &mut Client, groups: &[String]) -> Vec<(String, Vec<(i32, i64)>)> {
    let mut req = OffsetFetchRequest::default();
    req.groups = groups
        .iter()
        .map(|g| {
            let mut x = offset_fetch_request::OffsetFetchRequestGroup::default();
            x.group_id = gid(g);
            x.topics = None;
            x
        })
        .collect();
    c.send(&req, 8)
        .groups
        .iter()
        .map(|g| {
            assert_eq!(g.error_code, 0);
            let parts = g
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| (p.partition_index, p.committed_offset))
                .collect();
            (g.group_id.0.to_string(), parts)
        })
        .collect()
}

fn describe(c: &mut Client, group: &str) -> (String, usize) {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![gid(group)];
    let r = c.send(&req, 5);
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0);
    (g.group_state.to_string(), g.members.len())
}

fn delete_group(c: &mut Client, group: &str) -> i16 {
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![gid(group)];
    c.send(&req, 2).results[0].error_code
}

#[test]
fn groups_over_the_wire_with_bad_input_and_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(
        &dir.path().join("data"),
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.num.partitions=8",
        ],
    );
    let mut c = broker.client();
    assert_eq!(c.create_topic("orders", 4), 0);

    // Batched FindCoordinator: every group is served here; transactions are refused, fatally.
    let mut find = FindCoordinatorRequest::default();
    find.key_type = 0;
    find.coordinator_keys = vec![s("a"), s("b"), s("c")];
    let r = c.send(&find, 4);
    assert_eq!(r.coordinators.len(), 3);
    for co in &r.coordinators {
        assert_eq!(co.error_code, 0, "{co:?}");
        assert_eq!(co.port, broker.addr.port() as i32);
    }
    find.key_type = 1;
    assert_eq!(
        c.send(&find, 4).coordinators[0].error_code,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );

    // Join: an id first, then generation 1 with this member as leader.
    let first = join(&mut c, "live", "", "consumer", Bytes::from_static(b"m"));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let member = first.member_id.to_string();
    let joined = join(
        &mut c,
        "live",
        &member,
        "consumer",
        Bytes::from_static(b"m"),
    );
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), member);

    // Bad input: each gets Kafka's code.
    let other_type = join(&mut c, "live", "", "connect", Bytes::from_static(b"m"));
    assert_eq!(other_type.error_code, INCONSISTENT_GROUP_PROTOCOL);
    let huge = join(
        &mut c,
        "live",
        "",
        "consumer",
        Bytes::from(vec![7u8; 2 << 20]),
    );
    assert_eq!(huge.error_code, INVALID_REQUEST);
    assert_eq!(sync(&mut c, "live", 1, "stranger", &[]), UNKNOWN_MEMBER_ID);
    assert_eq!(sync(&mut c, "live", 0, &member, &[]), ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&mut c, "nobody-here", 1, "m"), UNKNOWN_MEMBER_ID);

    // The group is unharmed: the leader syncs and heartbeats.
    assert_eq!(sync(&mut c, "live", 1, &member, &[(&member, b"all")]), 0);
    assert_eq!(heartbeat(&mut c, "live", 1, &member), 0);
    assert_eq!(heartbeat(&mut c, "live", 0, &member), ILLEGAL_GENERATION);
    assert_eq!(describe(&mut c, "live"), ("Stable".to_owned(), 1));

    // Commits: by the member, and to partitions that do not exist or with huge metadata.
    let big = "x".repeat(5000);
    assert_eq!(
        commit(
            &mut c,
            "live",
            1,
            &member,
            &[
                ("orders", 0, 42, "meta"),
                ("nope", 0, 1, ""),
                ("orders", 9, 1, ""),
                ("orders", 1, 7, &big),
            ]
        ),
        vec![
            0,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION,
            OFFSET_METADATA_TOO_LARGE
        ]
    );
    assert_eq!(
        commit(&mut c, "live", 0, &member, &[("orders", 0, 1, "")]),
        vec![ILLEGAL_GENERATION]
    );

    // Standalone commits (generation -1) for groups spread over both shards.
    let solo: Vec<String> = (0..12).map(|i| format!("solo-{i}")).collect();
    for (i, g) in solo.iter().enumerate() {
        assert_eq!(
            commit(&mut c, g, -1, "", &[("orders", 2, 100 + i as i64, "")]),
            vec![0]
        );
    }
    let mut all = solo.clone();
    all.push("live".into());
    let before = fetch_offsets(&mut c, &all);
    for (i, (g, parts)) in before.iter().take(12).enumerate() {
        assert_eq!(g, &solo[i]);
        assert_eq!(parts, &vec![(2, 100 + i as i64)]);
    }
    assert_eq!(before[12].1, vec![(0, 42)]);
    let log = broker.log();
    assert!(
        solo.len() > 1 && log.contains("created"),
        "offsets topic was created: {log}"
    );

    // ListGroups with a state filter.
    let mut list = ListGroupsRequest::default();
    list.states_filter = vec![s("Empty")];
    let empty: Vec<String> = c
        .send(&list, 4)
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    assert_eq!(empty.len(), 12, "{empty:?}");
    assert!(!empty.contains(&"live".to_owned()));
    list.states_filter = vec![s("Stable")];
    let stable = c.send(&list, 4);
    assert_eq!(stable.groups.len(), 1);
    assert_eq!(stable.groups[0].group_id.0.as_str(), "live");

    // kill -9: committed offsets and the Stable group (its member, its generation) remain.
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(fetch_offsets(&mut c, &all), before, "{}", broker.log());
    assert_eq!(
        describe(&mut c, "live"),
        ("Stable".to_owned(), 1),
        "{}",
        broker.log()
    );
    assert_eq!(heartbeat(&mut c, "live", 1, &member), 0);
    assert_eq!(
        commit(&mut c, "live", 1, &member, &[("orders", 0, 43, "")]),
        vec![0]
    );

    // Deleting: a live group is refused, an empty one goes, an unknown one is not found.
    assert_eq!(delete_group(&mut c, "live"), NON_EMPTY_GROUP);
    assert_eq!(delete_group(&mut c, "solo-0"), 0);
    assert_eq!(delete_group(&mut c, "solo-0"), GROUP_ID_NOT_FOUND);
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    let after = fetch_offsets(&mut c, &["solo-0".to_owned(), "solo-1".to_owned()]);
    assert_eq!(after[0].1, vec![], "deleted group's offsets stay deleted");
    assert_eq!(after[1].1, vec![(2, 101)]);

    // The internal topic is the coordinator's: clients may not append to or delete it.
    let x = common::batch(&[b"x".to_vec()], 1, Compression::None);
    let r = c.produce("__consumer_offsets", &[(0, x)], -1);
    assert_eq!(r[0].1, INVALID_TOPIC_EXCEPTION);
    assert_eq!(
        delete_topic(&mut c, "__consumer_offsets"),
        INVALID_TOPIC_EXCEPTION
    );

    // Deleting a topic deletes the offsets committed for it, durably.
    assert_eq!(delete_topic(&mut c, "orders"), 0);
    broker.kill9();
    broker.restart();
    let mut c = broker.client();
    let after = fetch_offsets(&mut c, &["solo-1".to_owned(), "live".to_owned()]);
    assert_eq!(after[0].1, vec![]);
    assert_eq!(after[1].1, vec![]);
}

fn delete_topic(c: &mut Client, topic: &str) -> i16 {
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = vec![TopicName(s(topic))];
    req.timeout_ms = 10_000;
    c.send(&req, 4).responses[0].error_code
}
