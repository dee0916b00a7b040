//! The records the group coordinator keeps in `__consumer_offsets`, in Kafka's own layout so
//! that a tool reading the topic with Kafka's formatter understands them:
//!
//! ```text
//! offset commit   key   v1: i16 version=1, string group, string topic, i32 partition
//!                 value v3: i16 version=3, i64 offset, i32 leader epoch, string metadata,
//!                           i64 commit timestamp
//! group metadata  key   v2: i16 version=2, string group
//!                 value v3: i16 version=3, string protocol type, i32 generation,
//!                           nullable string protocol, nullable string leader,
//!                           i64 state timestamp, i32 member count, then per member:
//!                           string member id, nullable string instance id, string client id,
//!                           string client host, i32 rebalance timeout, i32 session timeout,
//!                           bytes subscription, bytes assignment (bytes: i32 length + data)
//! ```
//!
//! The members are written when a group becomes Stable, so that after a restart its members
//! carry on (commits, heartbeats) with the generation they have, as with Kafka.
//!
//! Strings are i16 length + UTF-8 (length -1 for null). A record without a value (a
//! tombstone) deletes its key. Until compaction exists the log keeps every record; loading
//! replays it in order and the last record per key wins.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use protocol::records::{encode_plain_batch, PlainRecord};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Offset(OffsetValue),
    Group(GroupValue),
}

fn put_str(buf: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

fn get_str(buf: &mut Bytes) -> Option<Option<String>> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 {
        return Some(None);
    }
    let len = len as usize;
    if buf.remaining() < len {
        return None;
    }
    let s = String::from_utf8(buf.split_to(len).to_vec()).ok()?;
    Some(Some(s))
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    let len = get_i32(buf)?;
    let len = usize::try_from(len).ok()?;
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

fn get_i64(buf: &mut Bytes) -> Option<i64> {
    (buf.remaining() >= 8).then(|| buf.get_i64())
}

fn get_i32(buf: &mut Bytes) -> Option<i32> {
    (buf.remaining() >= 4).then(|| buf.get_i32())
}

impl Key {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                buf.put_i16(1);
                put_str(&mut buf, group);
                put_str(&mut buf, topic);
                buf.put_i32(*partition);
            }
            Key::Group(group) => {
                buf.put_i16(2);
                put_str(&mut buf, group);
            }
        }
        buf.freeze()
    }

    /// `None` for keys of other record kinds (transactions, newer coordinators) or damage.
    pub fn decode(mut buf: Bytes) -> Option<Key> {
        if buf.remaining() < 2 {
            return None;
        }
        match buf.get_i16() {
            0 | 1 => Some(Key::Offset {
                group: get_str(&mut buf)??,
                topic: get_str(&mut buf)??,
                partition: get_i32(&mut buf)?,
            }),
            2 => Some(Key::Group(get_str(&mut buf)??)),
            _ => None,
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        buf.put_i64(self.offset);
        buf.put_i32(self.leader_epoch);
        put_str(&mut buf, &self.metadata);
        buf.put_i64(self.commit_timestamp);
        buf.freeze()
    }

    /// Versions 0-3 (v1 also carried an expire timestamp, ignored as Kafka does now).
    pub fn decode(mut buf: Bytes) -> Option<OffsetValue> {
        if buf.remaining() < 2 {
            return None;
        }
        let version = buf.get_i16();
        let offset = get_i64(&mut buf)?;
        let leader_epoch = if version >= 3 { get_i32(&mut buf)? } else { -1 };
        let metadata = get_str(&mut buf)?.unwrap_or_default();
        let commit_timestamp = get_i64(&mut buf)?;
        if !(0..=3).contains(&version) {
            return None;
        }
        Some(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        put_str(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable(&mut buf, self.protocol.as_deref());
        put_nullable(&mut buf, self.leader.as_deref());
        buf.put_i64(self.state_timestamp);
        buf.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_str(&mut buf, &m.member_id);
            put_nullable(&mut buf, m.instance_id.as_deref());
            put_str(&mut buf, &m.client_id);
            put_str(&mut buf, &m.client_host);
            buf.put_i32(m.rebalance_timeout_ms);
            buf.put_i32(m.session_timeout_ms);
            put_bytes(&mut buf, &m.subscription);
            put_bytes(&mut buf, &m.assignment);
        }
        buf.freeze()
    }

    /// Version 3 (Kafka 2.3+: state timestamp and instance ids).
    pub fn decode(mut buf: Bytes) -> Option<GroupValue> {
        if buf.remaining() < 2 || buf.get_i16() != 3 {
            return None;
        }
        let mut v = GroupValue {
            protocol_type: get_str(&mut buf)?.unwrap_or_default(),
            generation: get_i32(&mut buf)?,
            protocol: get_str(&mut buf)?,
            leader: get_str(&mut buf)?,
            state_timestamp: get_i64(&mut buf)?,
            members: Vec::new(),
        };
        let count = get_i32(&mut buf)?;
        for _ in 0..count.max(0) {
            v.members.push(MemberValue {
                member_id: get_str(&mut buf)??,
                instance_id: get_str(&mut buf)?,
                client_id: get_str(&mut buf)?.unwrap_or_default(),
                client_host: get_str(&mut buf)?.unwrap_or_default(),
                rebalance_timeout_ms: get_i32(&mut buf)?,
                session_timeout_ms: get_i32(&mut buf)?,
                subscription: get_bytes(&mut buf)?,
                assignment: get_bytes(&mut buf)?,
            });
        }
        Some(v)
    }
}

/// One uncompressed batch holding `records` (key, value or tombstone) stamped `now_ms`.
pub fn encode_batch(records: &[(Key, Option<Value>)], now_ms: i64) -> Bytes {
    let records: Vec<PlainRecord> = records
        .iter()
        .map(|(key, value)| PlainRecord {
            key: Some(key.encode()),
            value: value.as_ref().map(|v| match v {
                Value::Offset(o) => o.encode(),
                Value::Group(g) => g.encode(),
            }),
            headers: Vec::new(),
        })
        .collect();
    encode_plain_batch(&records, now_ms, Compression::None)
        .expect("encoding an uncompressed batch of owned records cannot fail")
}

/// Every group record in `batches` (concatenated stored batches), in log order. Records
/// this coordinator does not know are skipped; a batch that does not decode ends the scan
/// of that chunk with an error the caller logs.
pub fn decode_batches(batches: Bytes) -> Result<Vec<(Key, Option<Value>)>, String> {
    let mut buf = batches;
    let mut out = Vec::new();
    while buf.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| e.to_string())?;
        for r in set.records {
            if r.control {
                continue;
            }
            let Some(key) = r.key.and_then(Key::decode) else {
                continue;
            };
            let value = match (&key, r.value) {
                (_, None) => None,
                (Key::Offset { .. }, Some(v)) => match OffsetValue::decode(v) {
                    Some(v) => Some(Value::Offset(v)),
                    None => continue,
                },
                (Key::Group(_), Some(v)) => match GroupValue::decode(v) {
                    Some(v) => Some(Value::Group(v)),
                    None => continue,
                },
            };
            out.push((key, value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_batch() {
        let records = vec![
            (
                Key::Offset {
                    group: "g".into(),
                    topic: "orders".into(),
                    partition: 7,
                },
                Some(Value::Offset(OffsetValue {
                    offset: 42,
                    leader_epoch: 3,
                    metadata: "meta".into(),
                    commit_timestamp: 1_700_000_000_000,
                })),
            ),
            (
                Key::Group("g".into()),
                Some(Value::Group(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 5,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    state_timestamp: 9,
                    members: vec![MemberValue {
                        member_id: "m1".into(),
                        instance_id: Some("i1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 300_000,
                        session_timeout_ms: 10_000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                })),
            ),
            (Key::Group("gone".into()), None),
        ];
        let batch = encode_batch(&records, 1);
        let mut two = BytesMut::new();
        two.put_slice(&batch);
        two.put_slice(&batch);
        let back = decode_batches(two.freeze()).unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(back[..3], records[..]);
        assert_eq!(back[3..], records[..]);
    }

    #[test]
    fn kafka_written_offset_values_decode() {
        // OffsetCommitValue v1 as old Kafka wrote it: offset, metadata, commit, expire.
        let mut v1 = BytesMut::new();
        v1.put_i16(1);
        v1.put_i64(10);
        put_str(&mut v1, "m");
        v1.put_i64(100);
        v1.put_i64(200);
        let v = OffsetValue::decode(v1.freeze()).unwrap();
        assert_eq!(
            (v.offset, v.leader_epoch, v.metadata.as_str()),
            (10, -1, "m")
        );
        assert_eq!(v.commit_timestamp, 100);
        // Truncated values and unknown key versions are refused, not misread.
        assert!(OffsetValue::decode(Bytes::from_static(&[0, 3, 0, 0])).is_none());
        assert!(Key::decode(Bytes::from_static(&[0, 9, 0, 1, b'g'])).is_none());
        assert!(Key::decode(Bytes::from_static(&[0, 2, 0, 5, b'g'])).is_none());
    }
}
