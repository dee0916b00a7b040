//! Consumer-group membership for the tools (the `sluice consume --group` CLI and the bench's
//! group consumers): the classic protocol, the range assignor when this member leads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::cluster::{check, s, Cluster};

/// Session timeout of a tool's group membership; it heartbeats every [`HEARTBEAT_EVERY`].
pub const SESSION_TIMEOUT_MS: i32 = 10_000;
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Membership of a consumer group (the classic protocol, the range assignor when leading).
pub struct Member {
    pub group: String,
    pub topic: String,
    pub id: String,
    pub generation: i32,
    pub last_heartbeat: Instant,
}

impl Member {
    /// A member of `group` that has not joined yet, subscribed to `topic`.
    pub fn new(group: &str, topic: &str) -> Member {
        Member {
            group: group.to_owned(),
            topic: topic.to_owned(),
            id: String::new(),
            generation: -1,
            last_heartbeat: Instant::now(),
        }
    }

    /// Joins (or rejoins) and returns this member's partitions of the topic.
    pub fn join(&mut self, c: &mut Cluster) -> Result<Vec<i32>> {
        use kafka_protocol::protocol::{Decodable, Encodable};
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![s(&self.topic)];
        sub.user_data = None;
        let mut meta = BytesMut::new();
        meta.extend_from_slice(&0i16.to_be_bytes());
        sub.encode(&mut meta, 0)?;
        let meta = meta.freeze();
        let joined = loop {
            let mut p = join_group_request::JoinGroupRequestProtocol::default();
            p.name = s("range");
            p.metadata = meta.clone();
            let mut req = JoinGroupRequest::default();
            req.group_id = GroupId(s(&self.group));
            req.session_timeout_ms = SESSION_TIMEOUT_MS;
            req.rebalance_timeout_ms = 60_000;
            req.member_id = s(&self.id);
            req.protocol_type = s("consumer");
            req.protocols = vec![p];
            let r = c.coordinator(&self.group)?.send(&req, 5)?;
            if r.error_code == ResponseError::MemberIdRequired.code() {
                self.id = r.member_id.to_string();
                continue;
            }
            if r.error_code == ResponseError::UnknownMemberId.code() {
                self.id.clear();
                continue;
            }
            check(r.error_code, &format!("joining {}", self.group))?;
            break r;
        };
        self.id = joined.member_id.to_string();
        self.generation = joined.generation_id;
        let mut assignments = Vec::new();
        if joined.leader == joined.member_id {
            // Range assignment of every subscribed topic among its subscribers.
            let mut subscribers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for m in &joined.members {
                let mut b = m.metadata.clone();
                if b.len() < 2 {
                    continue;
                }
                let version = i16::from_be_bytes([b[0], b[1]]);
                let _ = b.split_to(2);
                let Ok(sub) = ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3))
                else {
                    continue;
                };
                for t in sub.topics {
                    subscribers
                        .entry(t.to_string())
                        .or_default()
                        .push(m.member_id.to_string());
                }
            }
            let mut plan: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
            for (topic, mut members) in subscribers {
                members.sort();
                let n = c.leaders(&topic).map(|l| l.len()).unwrap_or(0);
                let per = n / members.len();
                let extra = n % members.len();
                for (i, m) in members.iter().enumerate() {
                    let start = i * per + i.min(extra);
                    let len = per + usize::from(i < extra);
                    plan.entry(m.clone()).or_default().insert(
                        topic.clone(),
                        (start..start + len).map(|p| p as i32).collect(),
                    );
                }
            }
            for m in &joined.members {
                let mut asg = ConsumerProtocolAssignment::default();
                asg.assigned_partitions = plan
                    .get(m.member_id.as_str())
                    .map(|topics| {
                        topics
                            .iter()
                            .map(|(t, ps)| {
                                let mut tp =
                                    consumer_protocol_assignment::TopicPartition::default();
                                tp.topic = TopicName(s(t));
                                tp.partitions = ps.clone();
                                tp
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut b = BytesMut::new();
                b.extend_from_slice(&0i16.to_be_bytes());
                asg.encode(&mut b, 0)?;
                let mut x = sync_group_request::SyncGroupRequestAssignment::default();
                x.member_id = m.member_id.clone();
                x.assignment = b.freeze();
                assignments.push(x);
            }
        }
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(s(&self.group));
        req.generation_id = self.generation;
        req.member_id = s(&self.id);
        req.assignments = assignments;
        let r = c.coordinator(&self.group)?.send(&req, 3)?;
        if r.error_code == ResponseError::RebalanceInProgress.code() {
            return self.join(c);
        }
        check(r.error_code, &format!("syncing {}", self.group))?;
        self.last_heartbeat = Instant::now();
        let mut b = r.assignment;
        if b.len() < 2 {
            return Ok(Vec::new());
        }
        let version = i16::from_be_bytes([b[0], b[1]]);
        let _ = b.split_to(2);
        let asg = ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3))?;
        Ok(asg
            .assigned_partitions
            .into_iter()
            .filter(|tp| tp.topic.0.as_str() == self.topic)
            .flat_map(|tp| tp.partitions)
            .collect())
    }

    /// Whether the group wants this member to rejoin.
    pub fn heartbeat(&mut self, c: &mut Cluster) -> Result<bool> {
        self.last_heartbeat = Instant::now();
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(s(&self.group));
        req.generation_id = self.generation;
        req.member_id = s(&self.id);
        let r = c.coordinator(&self.group)?.send(&req, 3)?;
        match ResponseError::try_from_code(r.error_code) {
            None => Ok(false),
            Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => Ok(true),
            Some(ResponseError::UnknownMemberId) => {
                self.id.clear();
                Ok(true)
            }
            Some(e) => bail!("heartbeat in {}: {e:?}", self.group),
        }
    }

    pub fn leave(&self, c: &mut Cluster) -> Result<()> {
        let mut m = leave_group_request::MemberIdentity::default();
        m.member_id = s(&self.id);
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(s(&self.group));
        req.members = vec![m];
        c.coordinator(&self.group)?.send(&req, 3)?;
        Ok(())
    }
}
