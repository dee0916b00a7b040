use super::*;

fn config(delay: u64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: delay,
        ..GroupConfig::default()
    }
}

fn args(group: &str, member: &str) -> JoinArgs {
    JoinArgs {
        group_id: group.into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        require_known_member_id: true,
    }
}

fn now_result<T: std::fmt::Debug>(r: Reply<T>) -> T {
    match r {
        Reply::Now(t) => t,
        Reply::Later(mut rx) => rx
            .try_recv()
            .expect("sender alive")
            .expect("expected an immediate answer"),
    }
}

fn pending<T>(r: Reply<T>) -> oneshot::Receiver<T> {
    match r {
        Reply::Later(rx) => rx,
        Reply::Now(_) => panic!("expected to wait"),
    }
}

fn ready<T>(rx: &mut oneshot::Receiver<T>) -> Option<T> {
    rx.try_recv().expect("sender alive")
}

/// Joins through MEMBER_ID_REQUIRED and returns the member id and the join receiver.
fn join_new(c: &mut Coordinator, group: &str, now: u64) -> (String, oneshot::Receiver<JoinResult>) {
    let first = now_result(c.join(args(group, ""), now));
    assert_eq!(first.error, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    let rx = pending(c.join(args(group, &first.member_id), now));
    (first.member_id, rx)
}

fn sync(c: &mut Coordinator, group: &str, generation: i32, member: &str) -> Reply<SyncResult> {
    c.sync(
        SyncArgs {
            group_id: group.into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            assignments: Vec::new(),
        },
        0,
    )
}

#[test]
fn partition_for_matches_kafka_hash() {
    // Java: "my-group".hashCode() = -1906497762, so Utils.abs gives 1906497762 % 50 = 12.
    assert_eq!(partition_for("my-group", 50), 12);
    assert_eq!(partition_for("", 50), 0);
    // Negative hash: "polygenelubricants".hashCode() == Integer.MIN_VALUE -> 0.
    assert_eq!(partition_for("polygenelubricants", 50), 0);
}

#[test]
fn a_single_member_group_forms_and_gets_its_assignment() {
    let mut c = Coordinator::new(config(0));
    let (id, mut rx) = join_new(&mut c, "g", 0);
    let joined = ready(&mut rx).expect("joined at once without initial delay");
    assert_eq!(joined.error, 0);
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, id);
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.protocol.as_deref(), Some("range"));
    let mut s = pending(c.sync(
        SyncArgs {
            group_id: "g".into(),
            generation: 1,
            member_id: id.clone(),
            instance_id: None,
            protocol_type: None,
            protocol: None,
            assignments: vec![(id.clone(), Bytes::from_static(b"all"))],
        },
        0,
    ));
    let synced = ready(&mut s).unwrap();
    assert_eq!(synced.error, 0);
    assert_eq!(&synced.assignment[..], b"all");
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    assert_eq!(c.heartbeat("g", 1, &id, None, 1), Ok(()));
}

#[test]
fn a_new_member_makes_everyone_rejoin_and_the_leader_sees_all() {
    let mut c = Coordinator::new(config(0));
    let (a, mut ra) = join_new(&mut c, "g", 0);
    ready(&mut ra).unwrap();
    let _waiting = pending(sync(&mut c, "g", 1, &a));
    let (b, mut rb) = join_new(&mut c, "g", 10);
    assert!(ready(&mut rb).is_none(), "b waits for a to rejoin");
    assert_eq!(
        c.heartbeat("g", 1, &a, None, 10),
        Err(ResponseError::RebalanceInProgress)
    );
    let mut ra = pending(c.join(args("g", &a), 20));
    let ja = ready(&mut ra).unwrap();
    let jb = ready(&mut rb).unwrap();
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(ja.leader, a);
    assert_eq!(ja.members.len(), 2);
    assert!(jb.members.is_empty(), "followers get no member list");
    // A stale generation is refused everywhere.
    assert_eq!(
        c.heartbeat("g", 1, &b, None, 20),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        now_result(sync(&mut c, "g", 1, &b)).error,
        ResponseError::IllegalGeneration.code()
    );
}

#[test]
fn a_silent_member_is_removed_after_its_session_timeout() {
    let mut c = Coordinator::new(config(0));
    let (a, mut ra) = join_new(&mut c, "g", 0);
    ready(&mut ra).unwrap();
    let mut sa = pending(c.sync(
        SyncArgs {
            group_id: "g".into(),
            generation: 1,
            member_id: a.clone(),
            instance_id: None,
            protocol_type: None,
            protocol: None,
            assignments: vec![],
        },
        0,
    ));
    ready(&mut sa).unwrap();
    c.tick(9_999);
    assert_eq!(c.describe("g").unwrap().members.len(), 1);
    c.tick(10_000);
    let d = c.describe("g").unwrap();
    assert_eq!(d.members.len(), 0);
    assert_eq!(d.state, GroupState::Empty);
    assert_eq!(
        c.heartbeat("g", 1, &a, None, 10_001),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn the_initial_delay_holds_the_first_join_and_extends_for_newcomers() {
    let mut c = Coordinator::new(config(3_000));
    let (_, mut ra) = join_new(&mut c, "g", 0);
    c.tick(2_000);
    assert!(ready(&mut ra).is_none());
    let (_, mut rb) = join_new(&mut c, "g", 2_500);
    c.tick(3_000);
    assert!(ready(&mut ra).is_none(), "a newcomer extends the delay");
    c.tick(6_000);
    assert_eq!(ready(&mut ra).unwrap().members.len(), 2);
    assert_eq!(ready(&mut rb).unwrap().generation, 1);
}

#[test]
fn a_static_member_rejoining_a_stable_group_keeps_its_assignment_without_rebalance() {
    let mut c = Coordinator::new(config(0));
    let mut sa = args("g", "");
    sa.instance_id = Some("i1".into());
    let mut ra = pending(c.join(sa, 0));
    let ja = ready(&mut ra).unwrap();
    let a = ja.member_id.clone();
    let mut s = pending(c.sync(
        SyncArgs {
            group_id: "g".into(),
            generation: 1,
            member_id: a.clone(),
            instance_id: Some("i1".into()),
            protocol_type: None,
            protocol: None,
            assignments: vec![(a.clone(), Bytes::from_static(b"p0"))],
        },
        0,
    ));
    ready(&mut s).unwrap();
    // Restarted: same instance id, no member id.
    let mut again = args("g", "");
    again.instance_id = Some("i1".into());
    let j = now_result(c.join(again, 100));
    assert_eq!(j.error, 0);
    assert_eq!(j.generation, 1, "no new generation");
    assert_ne!(j.member_id, a);
    assert_eq!(j.leader, a, "old leader id, so it does not reassign");
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    let synced = now_result(c.sync(
        SyncArgs {
            group_id: "g".into(),
            generation: 1,
            member_id: j.member_id.clone(),
            instance_id: Some("i1".into()),
            protocol_type: None,
            protocol: None,
            assignments: vec![],
        },
        100,
    ));
    assert_eq!(&synced.assignment[..], b"p0");
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", 1, &a, Some("i1"), 100),
        Err(ResponseError::FencedInstanceId)
    );
}

#[test]
fn bad_requests_get_kafka_errors_and_leave_state_alone() {
    let mut c = Coordinator::new(config(0));
    let (a, mut ra) = join_new(&mut c, "g", 0);
    ready(&mut ra).unwrap();
    let mut other = args("g", "");
    other.protocol_type = "connect".into();
    assert_eq!(
        now_result(c.join(other, 0)).error,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let mut no_common = args("g", "");
    no_common.protocols = vec![("roundrobin".into(), Bytes::new())];
    assert_eq!(
        now_result(c.join(no_common, 0)).error,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let mut short = args("g", "");
    short.session_timeout_ms = 10;
    assert_eq!(
        now_result(c.join(short, 0)).error,
        ResponseError::InvalidSessionTimeout.code()
    );
    let mut huge = args("g", "");
    huge.protocols = vec![("range".into(), Bytes::from(vec![0u8; (1 << 20) + 1]))];
    assert_eq!(
        now_result(c.join(huge, 0)).error,
        ResponseError::InvalidRequest.code()
    );
    assert_eq!(
        now_result(c.join(args("", ""), 0)).error,
        ResponseError::InvalidGroupId.code()
    );
    assert_eq!(
        now_result(sync(&mut c, "g", 1, "stranger")).error,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        c.heartbeat("nope", 1, &a, None, 0),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        now_result(c.join(args("g", "stranger"), 0)).error,
        ResponseError::UnknownMemberId.code()
    );
    // None of it disturbed the group.
    let d = c.describe("g").unwrap();
    assert_eq!(d.state, GroupState::CompletingRebalance);
    assert_eq!(d.members.len(), 1);
    assert_eq!(c.heartbeat("g", 1, &a, None, 0), Ok(()));
}

#[test]
fn commits_follow_generation_rules_and_groups_delete_only_when_empty() {
    let mut c = Coordinator::new(config(0));
    // Outside group management: generation -1 creates the group.
    assert!(c.check_commit("solo", -1, "", None, 0).is_ok());
    assert_eq!(
        c.check_commit("unknown", 3, "m", None, 0),
        Err(ResponseError::IllegalGeneration)
    );
    let (a, mut ra) = join_new(&mut c, "g", 0);
    ready(&mut ra).unwrap();
    assert_eq!(
        c.check_commit("g", 1, &a, None, 0),
        Err(ResponseError::RebalanceInProgress)
    );
    let _waiting = pending(sync(&mut c, "g", 1, &a));
    assert!(c.check_commit("g", 1, &a, None, 0).is_ok());
    assert_eq!(
        c.check_commit("g", 0, &a, None, 0),
        Err(ResponseError::IllegalGeneration)
    );
    c.apply_offsets(
        "g",
        [(
            ("t".to_owned(), 0),
            CommittedOffset {
                offset: 5,
                leader_epoch: 0,
                metadata: String::new(),
                commit_timestamp: 0,
            },
        )],
        0,
    );
    assert_eq!(c.offsets("g", None).len(), 1);
    assert_eq!(
        c.delete_group("g").err(),
        Some(ResponseError::NonEmptyGroup)
    );
    assert_eq!(c.leave("g", vec![(a.clone(), None)], 1), vec![Ok(())]);
    assert_eq!(c.describe("g").unwrap().state, GroupState::Empty);
    let w = c.delete_group("g").unwrap();
    assert_eq!(w.records.len(), 2, "one offset tombstone and the group's");
    assert!(c.describe("g").is_none());
    assert_eq!(
        c.delete_group("g").err(),
        Some(ResponseError::GroupIdNotFound)
    );
}

#[test]
fn offsets_of_empty_groups_expire_after_retention() {
    let mut c = Coordinator::new(GroupConfig {
        offsets_retention_ms: 1_000,
        offsets_retention_check_interval_ms: 100,
        ..config(0)
    });
    c.check_commit("solo", -1, "", None, 0).unwrap();
    c.apply_offsets(
        "solo",
        [(
            ("t".to_owned(), 0),
            CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 500,
            },
        )],
        500,
    );
    c.tick(1_499);
    assert_eq!(c.offsets("solo", None).len(), 1);
    c.tick(1_600);
    assert!(c.offsets("solo", None).is_empty());
    assert!(
        c.describe("solo").is_none(),
        "an empty group without offsets is gone"
    );
    assert_eq!(c.take_writes().len(), 1);
}

#[test]
fn a_stable_group_survives_a_reload_with_its_members_and_generation() {
    let mut c = Coordinator::new(config(0));
    let (a, mut ra) = join_new(&mut c, "g", 0);
    ready(&mut ra).unwrap();
    let mut s = pending(c.sync(
        SyncArgs {
            group_id: "g".into(),
            generation: 1,
            member_id: a.clone(),
            instance_id: None,
            protocol_type: None,
            protocol: None,
            assignments: vec![(a.clone(), Bytes::from_static(b"p0"))],
        },
        0,
    ));
    ready(&mut s).unwrap();
    let records: Vec<_> = c
        .take_writes()
        .into_iter()
        .flat_map(|w| w.records)
        .collect();
    assert_eq!(records.len(), 1, "the Stable transition is recorded");

    let mut restarted = Coordinator::new(config(0));
    restarted.load(records, 1_000);
    let d = restarted.describe("g").unwrap();
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(&d.members[0].assignment[..], b"p0");
    assert_eq!(restarted.heartbeat("g", 1, &a, None, 1_000), Ok(()));
    assert!(restarted.check_commit("g", 1, &a, None, 1_000).is_ok());
    // Members that do not come back time out as usual.
    restarted.tick(11_000);
    assert_eq!(
        restarted.heartbeat("g", 1, &a, None, 11_000),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_group_tombstone_after_a_commit_keeps_the_offsets_on_reload() {
    // The retention pass can drop a just-created commit-only group (and write its group
    // tombstone) while that group's first commit is being stored: the offset record lands
    // before the tombstone. Reloading must keep the offset.
    let offset = (
        Key::Offset {
            group: "solo".into(),
            topic: "t".into(),
            partition: 2,
        },
        Some(Value::Offset(records::OffsetValue {
            offset: 111,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 5,
        })),
    );
    let mut c = Coordinator::new(config(0));
    c.load(vec![offset.clone(), (Key::Group("solo".into()), None)], 10);
    let got = c.offsets("solo", None);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.offset, 111);
    // A tombstone for a group without offsets removes it.
    c.load(vec![(Key::Group("solo".into()), None)], 10);
    assert!(c.describe("solo").is_some(), "offsets keep it");
    c.load(
        vec![
            (
                Key::Offset {
                    group: "solo".into(),
                    topic: "t".into(),
                    partition: 2,
                },
                None,
            ),
            (Key::Group("solo".into()), None),
        ],
        10,
    );
    assert!(c.describe("solo").is_none());
}
