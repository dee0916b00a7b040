//! The inter-node protocol on the controller listener: Raft messages between voters, broker
//! registration and heartbeats, and admin requests forwarded to the active controller.
//! Encoding and decoding only; `broker/` owns the sockets.
//!
//! A connection starts with a [`PeerMessage::Hello`] each way; a peer from another cluster,
//! or whose `controller.quorum.voters` differs, is answered with a `HelloRefused` and
//! closed. Then frames flow both ways:
//!
//! ```text
//! frame   = length:u32 version:u16 kind:u16 correlation:u32 payload
//! length  = bytes after the length field (at most the configured maximum)
//! version = WIRE_VERSION; a frame of another version is refused (the connection closes)
//! ```
//!
//! big-endian integers; `string` is `u16` length + UTF-8, `bytes` is `u32` length + bytes,
//! `[T]` is a `u32` count + elements. Payloads by kind:
//!
//! | kind | message | payload |
//! |---|---|---|
//! | 1 | Hello | cluster_id string, node_id i32, voters [node_id i32, host string, port u16], incarnation 16 bytes |
//! | 2 | HelloRefused | reason string |
//! | 3 | Raft | raft's eraftpb.Message, protobuf-encoded (bytes) |
//! | 4 | Register | the RegisterBroker metadata record's bytes (bytes) |
//! | 5 | Heartbeat | broker_id i32, broker_epoch i64, applied_offset u64, shutting_down u8 |
//! | 6 | Forward | api_key i16, api_version i16, request body (bytes) |
//! | 7 | Reply | error_code i16, message string, broker_epoch i64, fenced u8, committed_offset u64, body (bytes) |
//! | 8 | FetchMetadata | after u64, max_wait_ms u32 |
//! | 9 | MetadataUpdate | leader i32 (-1: unknown), term u64, commit u64, image (bytes; empty: none), entries [index u64, data (bytes)] |
//!
//! `FetchMetadata` is a broker-only node's long poll for the committed metadata log after
//! offset `after` (a KRaft observer's fetch): a voter answers once it has applied more, or
//! after `max_wait_ms`, with the committed entries in order, or, when it no longer holds
//! them (snapshotted away), its whole image (`ClusterImage::encode_snapshot`) and the
//! entries after it.
//!
//! `correlation` pairs a reply with its request (Raft frames carry 0 and get no reply).

use bytes::Bytes;
use protobuf::Message as _;

/// The protocol version this build speaks.
pub const WIRE_VERSION: u16 = 0;

/// Bytes of a frame before its payload, length field included.
pub const FRAME_HEADER_BYTES: usize = 12;

/// A voter as `controller.quorum.voters` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PeerMessage {
    Hello {
        cluster_id: String,
        node_id: i32,
        voters: Vec<Voter>,
        /// Random per process start: two live processes with one node.id differ in it.
        incarnation: [u8; 16],
    },
    HelloRefused {
        reason: String,
    },
    Raft(raft::eraftpb::Message),
    Register {
        record: Bytes,
    },
    Heartbeat {
        broker_id: i32,
        broker_epoch: i64,
        applied_offset: u64,
        shutting_down: bool,
    },
    Forward {
        api_key: i16,
        api_version: i16,
        body: Bytes,
    },
    Reply {
        error_code: i16,
        message: String,
        broker_epoch: i64,
        fenced: bool,
        committed_offset: u64,
        body: Bytes,
    },
    FetchMetadata {
        after: u64,
        max_wait_ms: u32,
    },
    MetadataUpdate {
        leader: i32,
        term: u64,
        commit: u64,
        image: Bytes,
        entries: Vec<(u64, Bytes)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {length} bytes exceeds the maximum of {max}")]
    TooLarge { length: usize, max: usize },
    #[error("frame shorter than its header")]
    Short,
    #[error("protocol version {0} is not {WIRE_VERSION}")]
    Version(u16),
    #[error("unknown message kind {0}")]
    Kind(u16),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

impl PeerMessage {
    fn kind(&self) -> u16 {
        match self {
            PeerMessage::Hello { .. } => 1,
            PeerMessage::HelloRefused { .. } => 2,
            PeerMessage::Raft(_) => 3,
            PeerMessage::Register { .. } => 4,
            PeerMessage::Heartbeat { .. } => 5,
            PeerMessage::Forward { .. } => 6,
            PeerMessage::Reply { .. } => 7,
            PeerMessage::FetchMetadata { .. } => 8,
            PeerMessage::MetadataUpdate { .. } => 9,
        }
    }

    fn name(kind: u16) -> &'static str {
        match kind {
            1 => "Hello",
            2 => "HelloRefused",
            3 => "Raft",
            4 => "Register",
            5 => "Heartbeat",
            6 => "Forward",
            7 => "Reply",
            8 => "FetchMetadata",
            _ => "MetadataUpdate",
        }
    }
}

/// Encodes one frame.
pub fn encode(correlation: u32, msg: &PeerMessage) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&WIRE_VERSION.to_be_bytes());
    out.extend_from_slice(&msg.kind().to_be_bytes());
    out.extend_from_slice(&correlation.to_be_bytes());
    let w = &mut out;
    match msg {
        PeerMessage::Hello {
            cluster_id,
            node_id,
            voters,
            incarnation,
        } => {
            put_str(w, cluster_id);
            w.extend_from_slice(&node_id.to_be_bytes());
            w.extend_from_slice(&(voters.len() as u32).to_be_bytes());
            for v in voters {
                w.extend_from_slice(&v.node_id.to_be_bytes());
                put_str(w, &v.host);
                w.extend_from_slice(&v.port.to_be_bytes());
            }
            w.extend_from_slice(incarnation);
        }
        PeerMessage::HelloRefused { reason } => put_str(w, reason),
        PeerMessage::Raft(m) => {
            let b = m
                .write_to_bytes()
                .expect("encoding a raft message into memory");
            put_bytes(w, &b);
        }
        PeerMessage::Register { record } => put_bytes(w, record),
        PeerMessage::Heartbeat {
            broker_id,
            broker_epoch,
            applied_offset,
            shutting_down,
        } => {
            w.extend_from_slice(&broker_id.to_be_bytes());
            w.extend_from_slice(&broker_epoch.to_be_bytes());
            w.extend_from_slice(&applied_offset.to_be_bytes());
            w.push(u8::from(*shutting_down));
        }
        PeerMessage::Forward {
            api_key,
            api_version,
            body,
        } => {
            w.extend_from_slice(&api_key.to_be_bytes());
            w.extend_from_slice(&api_version.to_be_bytes());
            put_bytes(w, body);
        }
        PeerMessage::Reply {
            error_code,
            message,
            broker_epoch,
            fenced,
            committed_offset,
            body,
        } => {
            w.extend_from_slice(&error_code.to_be_bytes());
            put_str(w, message);
            w.extend_from_slice(&broker_epoch.to_be_bytes());
            w.push(u8::from(*fenced));
            w.extend_from_slice(&committed_offset.to_be_bytes());
            put_bytes(w, body);
        }
        PeerMessage::FetchMetadata { after, max_wait_ms } => {
            w.extend_from_slice(&after.to_be_bytes());
            w.extend_from_slice(&max_wait_ms.to_be_bytes());
        }
        PeerMessage::MetadataUpdate {
            leader,
            term,
            commit,
            image,
            entries,
        } => {
            w.extend_from_slice(&leader.to_be_bytes());
            w.extend_from_slice(&term.to_be_bytes());
            w.extend_from_slice(&commit.to_be_bytes());
            put_bytes(w, image);
            w.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (index, data) in entries {
                w.extend_from_slice(&index.to_be_bytes());
                put_bytes(w, data);
            }
        }
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    w.extend_from_slice(&(s.len() as u16).to_be_bytes());
    w.extend_from_slice(s);
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_be_bytes());
    w.extend_from_slice(b);
}

/// The length a frame's first four bytes announce, checked against `max` before anything
/// is allocated for it.
pub fn frame_length(header: [u8; 4], max: usize) -> Result<usize, WireError> {
    let length = u32::from_be_bytes(header) as usize;
    if length > max {
        return Err(WireError::TooLarge { length, max });
    }
    if length < FRAME_HEADER_BYTES - 4 {
        return Err(WireError::Short);
    }
    Ok(length)
}

/// Decodes a frame's bytes after its length field: (correlation, message).
pub fn decode(frame: &[u8]) -> Result<(u32, PeerMessage), WireError> {
    if frame.len() < FRAME_HEADER_BYTES - 4 {
        return Err(WireError::Short);
    }
    let version = u16::from_be_bytes([frame[0], frame[1]]);
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let kind = u16::from_be_bytes([frame[2], frame[3]]);
    if !(1..=9).contains(&kind) {
        return Err(WireError::Kind(kind));
    }
    let correlation = u32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
    let mut r = Reader {
        b: &frame[8..],
        what: PeerMessage::name(kind),
    };
    let msg = match kind {
        1 => {
            let cluster_id = r.str()?;
            let node_id = r.i32()?;
            let n = r.u32()? as usize;
            // Each voter takes at least 8 bytes: no count can make us allocate past input.
            if n.saturating_mul(8) > r.b.len() {
                return Err(r.bad());
            }
            let mut voters = Vec::with_capacity(n);
            for _ in 0..n {
                voters.push(Voter {
                    node_id: r.i32()?,
                    host: r.str()?,
                    port: r.u16()?,
                });
            }
            let incarnation = r.take(16)?.try_into().expect("16");
            PeerMessage::Hello {
                cluster_id,
                node_id,
                voters,
                incarnation,
            }
        }
        2 => PeerMessage::HelloRefused { reason: r.str()? },
        3 => {
            let b = r.bytes()?;
            PeerMessage::Raft(raft::eraftpb::Message::parse_from_bytes(b).map_err(|_| r.bad())?)
        }
        4 => PeerMessage::Register {
            record: Bytes::copy_from_slice(r.bytes()?),
        },
        5 => PeerMessage::Heartbeat {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
            applied_offset: r.u64()?,
            shutting_down: r.bool()?,
        },
        6 => PeerMessage::Forward {
            api_key: r.i16()?,
            api_version: r.i16()?,
            body: Bytes::copy_from_slice(r.bytes()?),
        },
        7 => PeerMessage::Reply {
            error_code: r.i16()?,
            message: r.str()?,
            broker_epoch: r.i64()?,
            fenced: r.bool()?,
            committed_offset: r.u64()?,
            body: Bytes::copy_from_slice(r.bytes()?),
        },
        8 => PeerMessage::FetchMetadata {
            after: r.u64()?,
            max_wait_ms: r.u32()?,
        },
        _ => {
            let leader = r.i32()?;
            let term = r.u64()?;
            let commit = r.u64()?;
            let image = Bytes::copy_from_slice(r.bytes()?);
            let n = r.u32()? as usize;
            // Each entry takes at least 12 bytes: no count can make us allocate past input.
            if n.saturating_mul(12) > r.b.len() {
                return Err(r.bad());
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push((r.u64()?, Bytes::copy_from_slice(r.bytes()?)));
            }
            PeerMessage::MetadataUpdate {
                leader,
                term,
                commit,
                image,
                entries,
            }
        }
    };
    if !r.b.is_empty() {
        return Err(r.bad());
    }
    Ok((correlation, msg))
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn bad(&self) -> WireError {
        WireError::Malformed(self.what)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(self.bad());
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad()),
        }
    }
    fn str(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad())
    }
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Why a peer's Hello is refused, if it is.
pub fn check_hello(
    ours: (&str, &[Voter]),
    theirs: (&str, &[Voter]),
    their_node_id: i32,
) -> Result<(), String> {
    if ours.0 != theirs.0 {
        return Err(format!(
            "node {their_node_id} belongs to cluster {:?}, this node to {:?}",
            theirs.0, ours.0
        ));
    }
    let mut a = ours.1.to_vec();
    let mut b = theirs.1.to_vec();
    a.sort_by_key(|v| v.node_id);
    b.sort_by_key(|v| v.node_id);
    if a != b {
        return Err(format!(
            "node {their_node_id} has other controller.quorum.voters than this node"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PeerMessage> {
        let voters = vec![
            Voter {
                node_id: 1,
                host: "127.0.0.1".into(),
                port: 9093,
            },
            Voter {
                node_id: 2,
                host: "127.0.0.1".into(),
                port: 9094,
            },
        ];
        let mut raft_msg = raft::eraftpb::Message::default();
        raft_msg.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
        raft_msg.to = 2;
        raft_msg.from = 1;
        raft_msg.term = 7;
        raft_msg.entries.push(raft::eraftpb::Entry {
            index: 3,
            term: 7,
            data: b"record".to_vec().into(),
            ..Default::default()
        });
        vec![
            PeerMessage::Hello {
                cluster_id: "c1".into(),
                node_id: 1,
                voters,
                incarnation: [7; 16],
            },
            PeerMessage::HelloRefused {
                reason: "other cluster".into(),
            },
            PeerMessage::FetchMetadata {
                after: 41,
                max_wait_ms: 500,
            },
            PeerMessage::MetadataUpdate {
                leader: 2,
                term: 3,
                commit: 44,
                image: Bytes::from_static(b"image"),
                entries: vec![(42, Bytes::from_static(b"a")), (43, Bytes::new())],
            },
            PeerMessage::Raft(raft_msg),
            PeerMessage::Register {
                record: Bytes::from_static(b"\x00\x01"),
            },
            PeerMessage::Heartbeat {
                broker_id: 2,
                broker_epoch: 40,
                applied_offset: 99,
                shutting_down: false,
            },
            PeerMessage::Forward {
                api_key: 19,
                api_version: 7,
                body: Bytes::from_static(b"create"),
            },
            PeerMessage::Reply {
                error_code: 0,
                message: String::new(),
                broker_epoch: 40,
                fenced: true,
                committed_offset: 12,
                body: Bytes::new(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_its_length_is_the_frame() {
        for (i, m) in samples().into_iter().enumerate() {
            let f = encode(i as u32, &m);
            let len = frame_length(f[..4].try_into().unwrap(), 1 << 20).unwrap();
            assert_eq!(len, f.len() - 4);
            assert_eq!(decode(&f[4..]).unwrap(), (i as u32, m));
        }
    }

    #[test]
    fn oversized_short_truncated_and_foreign_frames_are_refused() {
        assert_eq!(
            frame_length(100u32.to_be_bytes(), 99),
            Err(WireError::TooLarge {
                length: 100,
                max: 99
            })
        );
        assert_eq!(frame_length(3u32.to_be_bytes(), 99), Err(WireError::Short));
        for m in samples() {
            let f = encode(1, &m);
            for cut in 4..f.len() {
                assert!(decode(&f[4..cut]).is_err(), "{m:?} cut at {cut} decoded");
            }
            let mut v = f.clone();
            v[5] = 9;
            assert_eq!(decode(&v[4..]), Err(WireError::Version(9)));
            let mut longer = f.clone();
            longer.push(0);
            assert!(decode(&longer[4..]).is_err(), "a trailing byte accepted");
        }
        let mut k = encode(1, &samples()[1]);
        k[7] = 0x40;
        assert_eq!(decode(&k[4..]), Err(WireError::Kind(0x40)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let frames: Vec<Vec<u8>> = samples().iter().map(|m| encode(5, m)).collect();
        for i in 0..100_000 {
            let mut f = if i % 2 == 0 {
                frames[(next() % frames.len() as u64) as usize][4..].to_vec()
            } else {
                (0..(next() % 80)).map(|_| next() as u8).collect()
            };
            if f.len() > 4 {
                f[0] = 0;
                f[1] = 0;
                for _ in 0..(next() % 4) {
                    let at = 4 + (next() % (f.len() as u64 - 4)) as usize;
                    f[at] ^= 1 << (next() % 8);
                }
            }
            let _ = decode(&f);
        }
    }

    #[test]
    fn hellos_from_another_cluster_or_quorum_are_refused() {
        let v = |ids: &[i32]| -> Vec<Voter> {
            ids.iter()
                .map(|&node_id| Voter {
                    node_id,
                    host: "h".into(),
                    port: 1,
                })
                .collect()
        };
        assert!(check_hello(("a", &v(&[1, 2, 3])), ("a", &v(&[3, 2, 1])), 2).is_ok());
        assert!(check_hello(("a", &v(&[1, 2, 3])), ("b", &v(&[1, 2, 3])), 2)
            .unwrap_err()
            .contains("cluster"));
        assert!(check_hello(("a", &v(&[1, 2, 3])), ("a", &v(&[1, 2])), 2)
            .unwrap_err()
            .contains("voters"));
    }
}
