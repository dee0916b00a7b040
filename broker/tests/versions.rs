//! Every advertised version of every served API gets a well-formed response: encoders refuse
//! fields a version does not have, so each version is exercised once.

mod common;

use bytes::Bytes;
use common::{batch, Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn gid(s: &str) -> GroupId {
    GroupId(StrBytes::from_string(s.to_owned()))
}

fn topic_id(c: &mut Client, topic: &str) -> uuid::Uuid {
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    let id = c.send(&req, 12).topics[0].topic_id;
    assert!(!id.is_nil());
    id
}

fn advertised(c: &mut Client) -> Vec<(i16, i16, i16)> {
    let resp = c.send(&ApiVersionsRequest::default(), 3);
    assert_eq!(resp.error_code, 0);
    resp.api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect()
}

#[test]
fn every_advertised_version_answers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(
        &dir.path().join("data"),
        2,
        &["group.initial.rebalance.delay.ms=0"],
    );
    let mut c = broker.client();
    assert_eq!(c.create_topic("v", 2), 0);
    let one: Bytes = batch(&[b"hello".to_vec()], 1_000, Compression::Gzip);
    let v_id = topic_id(&mut c, "v");
    let apis = advertised(&mut c);
    assert!(apis.len() >= 8);
    for (key, min, max) in apis {
        let api = ApiKey::try_from(key).unwrap();
        for v in min..=max {
            let codec = api.valid_versions();
            if v < codec.min {
                continue; // advertised for client feature detection only
            }
            let ok = match api {
                ApiKey::ApiVersions => c
                    .try_send(&ApiVersionsRequest::default(), v)
                    .is_some_and(|r| r.error_code == 0),
                ApiKey::Metadata => {
                    let mut t = metadata_request::MetadataRequestTopic::default();
                    t.name = Some(name("v"));
                    let mut req = MetadataRequest::default();
                    req.topics = Some(vec![t]);
                    c.try_send(&req, v).is_some_and(|r| {
                        r.topics.len() == 1
                            && r.topics[0].error_code == 0
                            && r.topics[0].partitions.len() == 2
                    })
                }
                ApiKey::CreateTopics => {
                    let mut t = create_topics_request::CreatableTopic::default();
                    t.name = name(&format!("created-v{v}"));
                    t.num_partitions = 1;
                    t.replication_factor = 1;
                    let mut req = CreateTopicsRequest::default();
                    req.topics = vec![t];
                    c.try_send(&req, v)
                        .is_some_and(|r| r.topics[0].error_code == 0)
                }
                ApiKey::DeleteTopics => {
                    assert_eq!(c.create_topic(&format!("doomed-v{v}"), 1), 0);
                    let mut req = DeleteTopicsRequest::default();
                    if v >= 6 {
                        let mut t = delete_topics_request::DeleteTopicState::default();
                        t.name = Some(name(&format!("doomed-v{v}")));
                        req.topics = vec![t];
                    } else {
                        req.topic_names = vec![name(&format!("doomed-v{v}"))];
                    }
                    c.try_send(&req, v)
                        .is_some_and(|r| r.responses[0].error_code == 0)
                }
                ApiKey::Produce => {
                    let mut pd = produce_request::PartitionProduceData::default();
                    pd.index = 1;
                    pd.records = Some(one.clone());
                    let mut td = produce_request::TopicProduceData::default();
                    // From v13 the topic is named by its id only.
                    if v >= 13 {
                        td.topic_id = v_id;
                    } else {
                        td.name = name("v");
                    }
                    td.partition_data = vec![pd];
                    let mut req = ProduceRequest::default();
                    req.acks = -1;
                    req.timeout_ms = 5000;
                    req.topic_data = vec![td];
                    c.try_send(&req, v)
                        .is_some_and(|r| r.responses[0].partition_responses[0].error_code == 0)
                }
                ApiKey::Fetch => {
                    let mut fp = fetch_request::FetchPartition::default();
                    fp.partition = 1;
                    fp.partition_max_bytes = 1 << 20;
                    let mut ft = fetch_request::FetchTopic::default();
                    if v >= 13 {
                        ft.topic_id = v_id;
                    } else {
                        ft.topic = name("v");
                    }
                    ft.partitions = vec![fp];
                    let mut req = FetchRequest::default();
                    req.replica_id = BrokerId(-1);
                    req.max_bytes = 1 << 20;
                    req.topics = vec![ft];
                    c.try_send(&req, v).is_some_and(|r| {
                        let p = &r.responses[0].partitions[0];
                        p.error_code == 0
                            && p.records.as_ref().is_some_and(|b| !b.is_empty())
                            && (v < 13 || r.responses[0].topic_id == v_id)
                    })
                }
                ApiKey::ListOffsets => {
                    let parts = [-1i64, -2, 500].map(|ts| {
                        let mut p = list_offsets_request::ListOffsetsPartition::default();
                        p.partition_index = 1;
                        p.timestamp = ts;
                        p
                    });
                    let mut t = list_offsets_request::ListOffsetsTopic::default();
                    t.name = name("v");
                    t.partitions = if v == 0 {
                        parts[..1].to_vec()
                    } else {
                        parts.to_vec()
                    };
                    let mut req = ListOffsetsRequest::default();
                    req.replica_id = BrokerId(-1);
                    req.topics = vec![t];
                    c.try_send(&req, v).is_some_and(|r| {
                        let ps = &r.topics[0].partitions;
                        ps.iter().all(|p| p.error_code == 0)
                            && ps[1].offset == 0
                            && ps[0].offset > 0
                    })
                }
                ApiKey::FindCoordinator => {
                    let mut req = FindCoordinatorRequest::default();
                    if v >= 4 {
                        req.coordinator_keys = vec![StrBytes::from_static_str("g")];
                    } else {
                        req.key = StrBytes::from_static_str("g");
                    }
                    c.try_send(&req, v).is_some()
                }
                ApiKey::InitProducerId => {
                    let mut req = InitProducerIdRequest::default();
                    req.transactional_id = None;
                    req.transaction_timeout_ms = 60_000;
                    if v >= 3 {
                        req.producer_id = ProducerId(-1);
                        req.producer_epoch = -1;
                    }
                    c.try_send(&req, v)
                        .is_some_and(|r| r.error_code == 0 && r.producer_id.0 >= 0)
                }
                ApiKey::JoinGroup => {
                    let mut p = join_group_request::JoinGroupRequestProtocol::default();
                    p.name = StrBytes::from_static_str("range");
                    let mut req = JoinGroupRequest::default();
                    req.group_id = gid(&format!("join-v{v}"));
                    req.session_timeout_ms = 10_000;
                    req.rebalance_timeout_ms = 10_000;
                    req.protocol_type = StrBytes::from_static_str("consumer");
                    req.protocols = vec![p];
                    // v4+: an id first (MEMBER_ID_REQUIRED); before: joined at once.
                    c.try_send(&req, v).is_some_and(|r| {
                        !r.member_id.is_empty()
                            && if v >= 4 {
                                r.error_code == 79
                            } else {
                                r.error_code == 0 && r.generation_id == 1
                            }
                    })
                }
                ApiKey::SyncGroup => {
                    let mut req = SyncGroupRequest::default();
                    req.group_id = gid("nobody");
                    req.member_id = StrBytes::from_static_str("m");
                    c.try_send(&req, v).is_some_and(|r| r.error_code == 25)
                }
                ApiKey::Heartbeat => {
                    let mut req = HeartbeatRequest::default();
                    req.group_id = gid("nobody");
                    req.member_id = StrBytes::from_static_str("m");
                    c.try_send(&req, v).is_some_and(|r| r.error_code == 25)
                }
                ApiKey::LeaveGroup => {
                    let mut req = LeaveGroupRequest::default();
                    req.group_id = gid("nobody");
                    if v >= 3 {
                        let mut m = leave_group_request::MemberIdentity::default();
                        m.member_id = StrBytes::from_static_str("m");
                        req.members = vec![m];
                    } else {
                        req.member_id = StrBytes::from_static_str("m");
                    }
                    c.try_send(&req, v).is_some_and(|r| {
                        if v >= 3 {
                            r.members.len() == 1 && r.members[0].error_code == 25
                        } else {
                            r.error_code == 25
                        }
                    })
                }
                ApiKey::OffsetCommit => {
                    let mut op = offset_commit_request::OffsetCommitRequestPartition::default();
                    op.committed_offset = 5;
                    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
                    t.name = name("v");
                    t.partitions = vec![op];
                    let mut req = OffsetCommitRequest::default();
                    req.group_id = gid("oc");
                    req.generation_id_or_member_epoch = -1;
                    req.topics = vec![t];
                    c.try_send(&req, v)
                        .is_some_and(|r| r.topics[0].partitions[0].error_code == 0)
                }
                ApiKey::OffsetFetch => {
                    let mut req = OffsetFetchRequest::default();
                    if v >= 8 {
                        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                        g.group_id = gid("oc");
                        g.topics = None;
                        req.groups = vec![g];
                    } else {
                        let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                        t.name = name("v");
                        t.partition_indexes = vec![0];
                        req.group_id = gid("oc");
                        req.topics = Some(vec![t]);
                    }
                    c.try_send(&req, v).is_some_and(|r| {
                        let offset = if v >= 8 {
                            r.groups[0].topics[0].partitions[0].committed_offset
                        } else {
                            r.topics[0].partitions[0].committed_offset
                        };
                        offset == 5
                    })
                }
                ApiKey::DescribeGroups => {
                    let mut req = DescribeGroupsRequest::default();
                    req.groups = vec![gid("oc")];
                    c.try_send(&req, v).is_some_and(|r| {
                        r.groups[0].error_code == 0 && r.groups[0].group_state.as_str() == "Empty"
                    })
                }
                ApiKey::ListGroups => c
                    .try_send(&ListGroupsRequest::default(), v)
                    .is_some_and(|r| r.groups.iter().any(|g| g.group_id.0.as_str() == "oc")),
                ApiKey::DeleteGroups => {
                    let mut req = DeleteGroupsRequest::default();
                    req.groups_names = vec![gid("nobody")];
                    c.try_send(&req, v)
                        .is_some_and(|r| r.results[0].error_code == 69)
                }
                ApiKey::OffsetDelete => {
                    let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
                    p.partition_index = 0;
                    let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
                    t.name = name("v");
                    t.partitions = vec![p];
                    let mut req = OffsetDeleteRequest::default();
                    req.group_id = gid("oc");
                    req.topics = vec![t];
                    c.try_send(&req, v).is_some_and(|r| {
                        r.error_code == 0 && r.topics[0].partitions[0].error_code == 0
                    })
                }
                ApiKey::CreatePartitions => {
                    // Topic "v" starts with 2 partitions; each version adds one.
                    let mut t = create_partitions_request::CreatePartitionsTopic::default();
                    t.name = name("v");
                    t.count = 3 + v as i32;
                    let mut req = CreatePartitionsRequest::default();
                    req.topics = vec![t];
                    req.timeout_ms = 10_000;
                    c.try_send(&req, v)
                        .is_some_and(|r| r.results[0].error_code == 0)
                }
                ApiKey::DescribeConfigs => {
                    let mut r = describe_configs_request::DescribeConfigsResource::default();
                    r.resource_type = 2;
                    r.resource_name = StrBytes::from_static_str("v");
                    r.configuration_keys = None;
                    let mut req = DescribeConfigsRequest::default();
                    req.resources = vec![r];
                    c.try_send(&req, v).is_some_and(|r| {
                        r.results[0].error_code == 0
                            && r.results[0]
                                .configs
                                .iter()
                                .any(|e| e.name.as_str() == "retention.ms")
                    })
                }
                ApiKey::AlterConfigs => {
                    let mut cfg = alter_configs_request::AlterableConfig::default();
                    cfg.name = StrBytes::from_static_str("retention.ms");
                    cfg.value = Some(StrBytes::from_string(format!("{}", 3_600_000 + v as i64)));
                    let mut r = alter_configs_request::AlterConfigsResource::default();
                    r.resource_type = 2;
                    r.resource_name = StrBytes::from_static_str("v");
                    r.configs = vec![cfg];
                    let mut req = AlterConfigsRequest::default();
                    req.resources = vec![r];
                    c.try_send(&req, v)
                        .is_some_and(|r| r.responses[0].error_code == 0)
                }
                ApiKey::IncrementalAlterConfigs => {
                    let mut cfg = incremental_alter_configs_request::AlterableConfig::default();
                    cfg.name = StrBytes::from_static_str("cleanup.policy");
                    cfg.config_operation = 2;
                    cfg.value = Some(StrBytes::from_static_str("delete"));
                    let mut r = incremental_alter_configs_request::AlterConfigsResource::default();
                    r.resource_type = 2;
                    r.resource_name = StrBytes::from_static_str("v");
                    r.configs = vec![cfg];
                    let mut req = IncrementalAlterConfigsRequest::default();
                    req.resources = vec![r];
                    c.try_send(&req, v)
                        .is_some_and(|r| r.responses[0].error_code == 0)
                }
                ApiKey::DeleteRecords => {
                    let mut p = delete_records_request::DeleteRecordsPartition::default();
                    p.partition_index = 1;
                    p.offset = 0;
                    let mut t = delete_records_request::DeleteRecordsTopic::default();
                    t.name = name("v");
                    t.partitions = vec![p];
                    let mut req = DeleteRecordsRequest::default();
                    req.topics = vec![t];
                    req.timeout_ms = 10_000;
                    c.try_send(&req, v).is_some_and(|r| {
                        let p = &r.topics[0].partitions[0];
                        p.error_code == 0 && p.low_watermark == 0
                    })
                }
                ApiKey::OffsetForLeaderEpoch => {
                    let mut p =
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
                    p.partition = 1;
                    p.current_leader_epoch = -1;
                    p.leader_epoch = 0;
                    let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                    t.topic = name("v");
                    t.partitions = vec![p];
                    let mut req = OffsetForLeaderEpochRequest::default();
                    req.replica_id = BrokerId(-1);
                    req.topics = vec![t];
                    c.try_send(&req, v).is_some_and(|r| {
                        let p = &r.topics[0].partitions[0];
                        p.error_code == 0 && p.leader_epoch == 0 && p.end_offset >= 0
                    })
                }
                ApiKey::DescribeCluster => c
                    .try_send(&DescribeClusterRequest::default(), v)
                    .is_some_and(|r| r.error_code == 0 && r.brokers.len() == 1),
                ApiKey::DescribeQuorum => {
                    let mut t = describe_quorum_request::TopicData::default();
                    t.topic_name = name("__cluster_metadata");
                    t.partitions = vec![describe_quorum_request::PartitionData::default()];
                    let mut req = DescribeQuorumRequest::default();
                    req.topics = vec![t];
                    c.try_send(&req, v).is_some_and(|r| {
                        let p = &r.topics[0].partitions[0];
                        // A quorum of one: this node leads, holding everything committed.
                        r.error_code == 0
                            && p.leader_id.0 == 0
                            && p.current_voters.len() == 1
                            && p.current_voters[0].log_end_offset == p.high_watermark
                    })
                }
                ApiKey::DescribeTopicPartitions => {
                    let mut t = describe_topic_partitions_request::TopicRequest::default();
                    t.name = name("v");
                    let mut req = DescribeTopicPartitionsRequest::default();
                    req.topics = vec![t];
                    req.response_partition_limit = 2000;
                    c.try_send(&req, v).is_some_and(|r| {
                        r.topics.len() == 1
                            && r.topics[0].error_code == 0
                            && r.topics[0].topic_id == v_id
                            && r.topics[0].partitions.len() >= 2
                    })
                }
                ApiKey::DescribeLogDirs => {
                    let mut req = DescribeLogDirsRequest::default();
                    req.topics = None;
                    c.try_send(&req, v).is_some_and(|r| {
                        let d = &r.results[0];
                        d.error_code == 0
                            && d.topics.iter().any(|t| {
                                t.name.0.as_str() == "v"
                                    && t.partitions.iter().any(|p| p.partition_size > 0)
                            })
                            && (v < 4 || d.total_bytes > 0)
                    })
                }
                ApiKey::ElectLeaders => {
                    // A preferred election of a partition its preferred replica leads.
                    let mut tp = elect_leaders_request::TopicPartitions::default();
                    tp.topic = name("v");
                    tp.partitions = vec![0];
                    let mut req = ElectLeadersRequest::default();
                    req.topic_partitions = Some(vec![tp]);
                    req.timeout_ms = 10_000;
                    c.try_send(&req, v).is_some_and(|r| {
                        r.error_code == 0
                            && r.replica_election_results.len() == 1
                            && r.replica_election_results[0].partition_result[0].error_code == 84
                    })
                }
                other => panic!("advertised {other:?} without a case in this test"),
            };
            assert!(
                ok,
                "{api:?} v{v}: bad or missing response; broker log:\n{}",
                broker.log()
            );
            if !ok {
                c = broker.client();
            }
        }
    }
}
