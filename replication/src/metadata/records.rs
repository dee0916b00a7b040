//! The metadata log's records, KRaft's in spirit, and their byte format.
//!
//! Every committed Raft entry of the metadata log holds one batch of records, applied as
//! a whole or not at all (a topic's Topic, Partition and Config records land together):
//!
//! ```text
//! batch   = count:u32 (length:u32 record){count}     (at most BATCH_RECORDS_MAX records)
//! record  = type:u16 version:u16 payload
//! ```
//!
//! integers are big-endian; the payload of each (type, version) is the fields listed on its
//! variant, in order, with these encodings:
//!
//! | field        | bytes                                                                  |
//! |--------------|------------------------------------------------------------------------|
//! | `i16`..`i64`, `u16`, `u32` | fixed width, big-endian                                  |
//! | `bool`       | one byte, 0 or 1 (anything else is an error)                           |
//! | `uuid`       | 16 bytes                                                               |
//! | `string`     | length `u16` (at most [`STRING_MAX_BYTES`]) then that many UTF-8 bytes |
//! | `string?`    | length `i16`, -1 for none, then the bytes                              |
//! | `[T]`        | count `u32` then the elements (the count must fit the bytes left)      |
//! | `[T]?`       | count `i32`, -1 for none (an unchanged field), then the elements       |
//!
//! A record decodes only if every byte is used: trailing bytes, an unknown type or a version
//! this build does not know are errors (a broker must not apply a record it half
//! understands; a newer record version needs a newer broker). Decoding never panics and
//! never allocates more than the input's length.
//!
//! Versions evolve by adding a new version number to a type with its field list; old
//! versions stay decodable forever.

use std::fmt;

/// Longest string in a record (topic names are 249 bytes; hosts and config values more).
pub const STRING_MAX_BYTES: usize = 32767;

/// Most records one batch (one Raft entry) may hold: a CreateTopics of
/// `sluice.topic.partitions.max` partitions with its configs fits.
pub const BATCH_RECORDS_MAX: usize = 65_536;

/// The bytes of one Raft entry: `records` as a batch (see the module doc).
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + records.len() * 48);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        let b = r.encode();
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

/// Decodes one Raft entry's batch; every byte must belong to a record.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or(DecodeError::Truncated(at))
    };
    let count = u32_at(0)?;
    // Each record takes at least its length and its type and version.
    if count > BATCH_RECORDS_MAX || count.saturating_mul(8) > bytes.len() {
        return Err(DecodeError::Invalid {
            at: 0,
            what: "batch record count",
        });
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let len = u32_at(at)?;
        let body = bytes
            .get(at + 4..at + 4 + len)
            .ok_or(DecodeError::Truncated(at + 4))?;
        out.push(MetadataRecord::decode(body)?);
        at += 4 + len;
    }
    if at != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - at));
    }
    Ok(out)
}

/// Kafka's topic id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopicId(pub [u8; 16]);

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A listener a broker serves clients on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id (0 PLAINTEXT).
    pub security_protocol: i16,
}

/// A config resource's kind, with Kafka's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigResource {
    Topic,
    Broker,
}

impl ConfigResource {
    fn id(self) -> i8 {
        match self {
            ConfigResource::Topic => 2,
            ConfigResource::Broker => 4,
        }
    }
}

/// One metadata record (type id and version in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// (1, v0) A broker joins or rejoins: broker_id `i32`, incarnation `uuid` (new at every
    /// process start), broker_epoch `i64`, endpoints `[name string, host string, port u16,
    /// security_protocol i16]`, rack `string?`, shards `u32` (shards the broker runs, so
    /// that placement picks a shard index every replica has), fenced `bool`. A live
    /// registration has
    /// epoch [`EPOCH_FROM_OFFSET`] (the broker's epoch becomes the record's offset in the
    /// log) and is fenced; a snapshot writes the epoch and fencing it had.
    RegisterBroker {
        broker_id: i32,
        incarnation: [u8; 16],
        broker_epoch: i64,
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
        shards: u32,
        fenced: bool,
    },
    /// (2, v0) broker_id `i32`, broker_epoch `i64`: the broker left for good.
    UnregisterBroker { broker_id: i32, broker_epoch: i64 },
    /// (3, v0) broker_id `i32`, broker_epoch `i64`: missed its session timeout (or shut down).
    FenceBroker { broker_id: i32, broker_epoch: i64 },
    /// (4, v0) broker_id `i32`, broker_epoch `i64`: caught up with the log, may lead.
    UnfenceBroker { broker_id: i32, broker_epoch: i64 },
    /// (5, v0) name `string`, topic_id `uuid`.
    Topic { name: String, topic_id: TopicId },
    /// (6, v0) topic_id `uuid`, partition `i32`, replicas `[i32]`, isr `[i32]`, leader
    /// `i32` (-1: none), leader_epoch `i32`, partition_epoch `i32`, shard_index `u32` (the
    /// same shard index on every replica's broker).
    Partition {
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        shard_index: u32,
    },
    /// (7, v0) topic_id `uuid`, partition `i32`, leader `i32` (-1 none, -2 unchanged), isr
    /// `[i32]?`, replicas `[i32]?` (none: unchanged). Applying it bumps the partition epoch,
    /// and the leader epoch when the leader changes.
    PartitionChange {
        topic_id: TopicId,
        partition: i32,
        leader: i32,
        isr: Option<Vec<i32>>,
        replicas: Option<Vec<i32>>,
    },
    /// (8, v0) topic_id `uuid`.
    RemoveTopic { topic_id: TopicId },
    /// (9, v0) resource `i8` (2 topic, 4 broker), resource_name `string` (empty: the
    /// cluster-wide broker default), name `string`, value `string?` (none: deleted).
    Config {
        resource: ConfigResource,
        resource_name: String,
        name: String,
        value: Option<String>,
    },
    /// (10, v0) broker_id `i32`, broker_epoch `i64`, next_producer_id `i64`: the block below
    /// `next_producer_id` is handed out to that broker.
    ProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        next_producer_id: i64,
    },
}

/// `RegisterBroker::broker_epoch` of a live registration: the epoch is the record's offset.
pub const EPOCH_FROM_OFFSET: i64 = -1;

/// The value of `PartitionChange::leader` that leaves the leader as it is.
pub const LEADER_UNCHANGED: i32 = -2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown record type {0}")]
    UnknownType(u16),
    #[error("record type {kind} has no version {version} in this build")]
    UnsupportedVersion { kind: u16, version: u16 },
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("invalid field at byte {at}: {what}")]
    Invalid { at: usize, what: &'static str },
}

impl MetadataRecord {
    pub fn type_id(&self) -> u16 {
        match self {
            MetadataRecord::RegisterBroker { .. } => 1,
            MetadataRecord::UnregisterBroker { .. } => 2,
            MetadataRecord::FenceBroker { .. } => 3,
            MetadataRecord::UnfenceBroker { .. } => 4,
            MetadataRecord::Topic { .. } => 5,
            MetadataRecord::Partition { .. } => 6,
            MetadataRecord::PartitionChange { .. } => 7,
            MetadataRecord::RemoveTopic { .. } => 8,
            MetadataRecord::Config { .. } => 9,
            MetadataRecord::ProducerIds { .. } => 10,
        }
    }

    /// The record in its newest version's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u16(self.type_id());
        w.u16(0);
        match self {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation,
                broker_epoch,
                endpoints,
                rack,
                shards,
                fenced,
            } => {
                w.i32(*broker_id);
                w.bytes(incarnation);
                w.i64(*broker_epoch);
                w.u32(endpoints.len() as u32);
                for e in endpoints {
                    w.string(&e.name);
                    w.string(&e.host);
                    w.u16(e.port);
                    w.i16(e.security_protocol);
                }
                w.opt_string(rack.as_deref());
                w.u32(*shards);
                w.0.push(u8::from(*fenced));
            }
            MetadataRecord::UnregisterBroker {
                broker_id,
                broker_epoch,
            }
            | MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            }
            | MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                w.i32(*broker_id);
                w.i64(*broker_epoch);
            }
            MetadataRecord::Topic { name, topic_id } => {
                w.string(name);
                w.bytes(&topic_id.0);
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                shard_index,
            } => {
                w.bytes(&topic_id.0);
                w.i32(*partition);
                w.i32s(replicas);
                w.i32s(isr);
                w.i32(*leader);
                w.i32(*leader_epoch);
                w.i32(*partition_epoch);
                w.u32(*shard_index);
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
            } => {
                w.bytes(&topic_id.0);
                w.i32(*partition);
                w.i32(*leader);
                w.opt_i32s(isr.as_deref());
                w.opt_i32s(replicas.as_deref());
            }
            MetadataRecord::RemoveTopic { topic_id } => w.bytes(&topic_id.0),
            MetadataRecord::Config {
                resource,
                resource_name,
                name,
                value,
            } => {
                w.0.push(resource.id() as u8);
                w.string(resource_name);
                w.string(name);
                w.opt_string(value.as_deref());
            }
            MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            } => {
                w.i32(*broker_id);
                w.i64(*broker_epoch);
                w.i64(*next_producer_id);
            }
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, DecodeError> {
        let mut r = Reader { b: bytes, at: 0 };
        let kind = r.u16()?;
        let version = r.u16()?;
        let known = matches!(kind, 1..=10);
        if !known {
            return Err(DecodeError::UnknownType(kind));
        }
        if version != 0 {
            return Err(DecodeError::UnsupportedVersion { kind, version });
        }
        let record = match kind {
            1 => {
                let broker_id = r.i32()?;
                let incarnation = r.array16()?;
                let broker_epoch = r.i64()?;
                let n = r.count(2 + 2 + 2 + 2)?;
                let mut endpoints = Vec::with_capacity(n);
                for _ in 0..n {
                    endpoints.push(Endpoint {
                        name: r.string()?,
                        host: r.string()?,
                        port: r.u16()?,
                        security_protocol: r.i16()?,
                    });
                }
                MetadataRecord::RegisterBroker {
                    broker_id,
                    incarnation,
                    broker_epoch,
                    endpoints,
                    rack: r.opt_string()?,
                    shards: r.u32()?,
                    fenced: r.bool()?,
                }
            }
            2..=4 => {
                let broker_id = r.i32()?;
                let broker_epoch = r.i64()?;
                match kind {
                    2 => MetadataRecord::UnregisterBroker {
                        broker_id,
                        broker_epoch,
                    },
                    3 => MetadataRecord::FenceBroker {
                        broker_id,
                        broker_epoch,
                    },
                    _ => MetadataRecord::UnfenceBroker {
                        broker_id,
                        broker_epoch,
                    },
                }
            }
            5 => MetadataRecord::Topic {
                name: r.string()?,
                topic_id: TopicId(r.array16()?),
            },
            6 => MetadataRecord::Partition {
                topic_id: TopicId(r.array16()?),
                partition: r.i32()?,
                replicas: r.i32s()?,
                isr: r.i32s()?,
                leader: r.i32()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
                shard_index: r.u32()?,
            },
            7 => MetadataRecord::PartitionChange {
                topic_id: TopicId(r.array16()?),
                partition: r.i32()?,
                leader: r.i32()?,
                isr: r.opt_i32s()?,
                replicas: r.opt_i32s()?,
            },
            8 => MetadataRecord::RemoveTopic {
                topic_id: TopicId(r.array16()?),
            },
            9 => {
                let at = r.at;
                let resource = match r.i8()? {
                    2 => ConfigResource::Topic,
                    4 => ConfigResource::Broker,
                    _ => {
                        return Err(DecodeError::Invalid {
                            at,
                            what: "config resource type",
                        })
                    }
                };
                MetadataRecord::Config {
                    resource,
                    resource_name: r.string()?,
                    name: r.string()?,
                    value: r.opt_string()?,
                }
            }
            _ => MetadataRecord::ProducerIds {
                broker_id: r.i32()?,
                broker_epoch: r.i64()?,
                next_producer_id: r.i64()?,
            },
        };
        match r.b.len() - r.at {
            0 => Ok(record),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// Strings longer than [`STRING_MAX_BYTES`] are cut at a char boundary below it: the
    /// controller validates names and values before it writes a record, so this only keeps
    /// a bug from writing an undecodable one.
    fn string(&mut self, s: &str) {
        let s = truncate(s);
        self.u16(s.len() as u16);
        self.bytes(s.as_bytes());
    }
    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            None => self.i16(-1),
            Some(s) => {
                let s = truncate(s);
                self.i16(s.len() as i16);
                self.bytes(s.as_bytes());
            }
        }
    }
    fn i32s(&mut self, v: &[i32]) {
        self.u32(v.len() as u32);
        for x in v {
            self.i32(*x);
        }
    }
    fn opt_i32s(&mut self, v: Option<&[i32]>) {
        match v {
            None => self.i32(-1),
            Some(v) => {
                self.i32(v.len() as i32);
                for x in v {
                    self.i32(*x);
                }
            }
        }
    }
}

fn truncate(s: &str) -> &str {
    if s.len() <= STRING_MAX_BYTES {
        return s;
    }
    let mut end = STRING_MAX_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.b.len() - self.at < n {
            return Err(DecodeError::Truncated(self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn array16(&mut self) -> Result<[u8; 16], DecodeError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(a)
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        let at = self.at;
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid {
                at,
                what: "bool is neither 0 nor 1",
            }),
        }
    }
    fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.take(1)?[0] as i8)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn utf8(&mut self, n: usize) -> Result<String, DecodeError> {
        let at = self.at;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid {
                at,
                what: "string is not UTF-8",
            })
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.at;
        let n = self.u16()? as usize;
        if n > STRING_MAX_BYTES {
            return Err(DecodeError::Invalid {
                at,
                what: "string too long",
            });
        }
        self.utf8(n)
    }
    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        let at = self.at;
        match self.i16()? {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::Invalid {
                at,
                what: "negative string length",
            }),
            n => self.utf8(n as usize).map(Some),
        }
    }
    /// An element count that the remaining bytes can hold at `min_bytes` per element.
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let at = self.at;
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.b.len() - self.at {
            return Err(DecodeError::Truncated(at));
        }
        Ok(n)
    }
    fn i32s(&mut self) -> Result<Vec<i32>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.i32()).collect()
    }
    fn opt_i32s(&mut self) -> Result<Option<Vec<i32>>, DecodeError> {
        let at = self.at;
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::Invalid {
                at,
                what: "negative array length",
            }),
            n => {
                let n = n as usize;
                if n.saturating_mul(4) > self.b.len() - self.at {
                    return Err(DecodeError::Truncated(at));
                }
                (0..n)
                    .map(|_| self.i32())
                    .collect::<Result<_, _>>()
                    .map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<MetadataRecord> {
        let id = TopicId([7; 16]);
        vec![
            MetadataRecord::RegisterBroker {
                broker_id: 2,
                incarnation: [9; 16],
                broker_epoch: EPOCH_FROM_OFFSET,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "10.0.0.2".into(),
                    port: 9092,
                    security_protocol: 0,
                }],
                rack: Some("r1".into()),
                shards: 2,
                fenced: true,
            },
            MetadataRecord::UnregisterBroker {
                broker_id: 2,
                broker_epoch: 5,
            },
            MetadataRecord::FenceBroker {
                broker_id: 3,
                broker_epoch: 77,
            },
            MetadataRecord::UnfenceBroker {
                broker_id: 3,
                broker_epoch: 77,
            },
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id: id,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 4,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 3,
                partition_epoch: 9,
                shard_index: 1,
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 4,
                leader: LEADER_UNCHANGED,
                isr: Some(vec![1]),
                replicas: None,
            },
            MetadataRecord::RemoveTopic { topic_id: id },
            MetadataRecord::Config {
                resource: ConfigResource::Topic,
                resource_name: "orders".into(),
                name: "retention.ms".into(),
                value: None,
            },
            MetadataRecord::ProducerIds {
                broker_id: 1,
                broker_epoch: 3,
                next_producer_id: 2000,
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for r in samples() {
            let bytes = r.encode();
            assert_eq!(MetadataRecord::decode(&bytes), Ok(r));
        }
    }

    #[test]
    fn the_byte_layout_is_the_documented_one() {
        let r = MetadataRecord::FenceBroker {
            broker_id: 3,
            broker_epoch: 0x0102,
        };
        assert_eq!(
            r.encode(),
            [0, 3, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2],
            "type 3, version 0, broker id, broker epoch"
        );
        let t = MetadataRecord::Topic {
            name: "ab".into(),
            topic_id: TopicId([1; 16]),
        };
        let b = t.encode();
        assert_eq!(&b[..8], &[0, 5, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(&b[8..], &[1; 16]);
    }

    #[test]
    fn truncations_trailing_bytes_and_unknown_kinds_are_errors() {
        for r in samples() {
            let bytes = r.encode();
            for cut in 0..bytes.len() {
                assert!(
                    MetadataRecord::decode(&bytes[..cut]).is_err(),
                    "{r:?} cut at {cut} decoded"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                MetadataRecord::decode(&longer),
                Err(DecodeError::Trailing(1))
            );
            let mut newer = bytes.clone();
            newer[3] = 1;
            assert!(matches!(
                MetadataRecord::decode(&newer),
                Err(DecodeError::UnsupportedVersion { version: 1, .. })
            ));
        }
        assert_eq!(
            MetadataRecord::decode(&[0, 99, 0, 0]),
            Err(DecodeError::UnknownType(99))
        );
    }

    /// Seeded garbage and bit flips: decoding returns, without panicking or allocating
    /// past the input (a huge count is refused before any allocation).
    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let samples: Vec<Vec<u8>> = samples().iter().map(|r| r.encode()).collect();
        for i in 0..200_000 {
            let mut b = if i % 2 == 0 {
                samples[(next() % samples.len() as u64) as usize].clone()
            } else {
                let n = (next() % 64) as usize;
                (0..n).map(|_| next() as u8).collect()
            };
            if !b.is_empty() {
                for _ in 0..(next() % 4) {
                    let at = (next() % b.len() as u64) as usize;
                    b[at] ^= 1 << (next() % 8);
                }
                // Keep the type in range half the time so payloads get exercised.
                if b.len() >= 4 && next() % 2 == 0 {
                    b[0] = 0;
                    b[1] = 1 + (next() % 10) as u8;
                    b[2] = 0;
                    b[3] = 0;
                }
            }
            let _ = MetadataRecord::decode(&b);
        }
        let huge = [
            0, 6, 0, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 1, 0xff, 0xff,
            0xff, 0xff,
        ];
        assert!(matches!(
            MetadataRecord::decode(&huge),
            Err(DecodeError::Truncated(_))
        ));
    }
}
