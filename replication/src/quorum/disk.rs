//! A voter's durable Raft state, as bytes: the log file's frames and the snapshot file,
//! encoded and recovered here without I/O (the driver writes the bytes, fdatasyncs, and
//! hands the bytes back at start-up).
//!
//! **Log file** (`quorum-<first index, 20 digits>.log`), append-only, a sequence of frames:
//!
//! ```text
//! frame   = length:u32 crc:u32 kind:u8 payload      (big-endian)
//! length  = bytes of kind + payload (at most FRAME_MAX_BYTES)
//! crc     = CRC32C of kind + payload
//! kind 1  = an entry: payload is raft's eraftpb.Entry, protobuf-encoded
//! kind 2  = the hard state: term:u64 vote:u64 commit:u64
//! ```
//!
//! Replay applies frames in order: an entry whose index is at or below the last one replaces
//! it and everything after it (a new leader overwrote an uncommitted suffix); the last hard
//! state wins. The first frame that is short, too long, or fails its CRC ends the log: it is a
//! write torn by a crash (never fsync'ed, so never acknowledged), and the driver truncates
//! the file there before appending again.
//!
//! **Snapshot file** (`quorum.snapshot`, replaced atomically: temp file, fsync, rename,
//! directory fsync):
//!
//! ```text
//! magic "SLQS" version:u16 index:u64 term:u64 voters:u32 voter:u64 * voters
//! data_len:u32 data crc:u32   (CRC32C of everything before it)
//! ```
//!
//! A snapshot at index `i` makes log entries up to `i` redundant: the driver starts a new log
//! file at `i + 1` and deletes older ones once the snapshot is durable.

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::DiskState;

/// Largest frame accepted in a log file (an entry is one metadata record, far smaller).
pub const FRAME_MAX_BYTES: usize = 16 << 20;

const FRAME_HEADER: usize = 8;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLQS";
const SNAPSHOT_VERSION: u16 = 0;

fn frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = 1 + payload.len();
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The frames that make `entries` and `hard_state` durable, to append to the log file.
pub fn encode_writes(entries: &[Entry], hard_state: Option<&HardState>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let payload = e
            .write_to_bytes()
            .expect("encoding a raft entry into memory");
        frame(KIND_ENTRY, &payload, &mut out);
    }
    if let Some(hs) = hard_state {
        let mut payload = [0u8; 24];
        payload[..8].copy_from_slice(&hs.term.to_be_bytes());
        payload[8..16].copy_from_slice(&hs.vote.to_be_bytes());
        payload[16..].copy_from_slice(&hs.commit.to_be_bytes());
        frame(KIND_HARD_STATE, &payload, &mut out);
    }
    out
}

/// What replaying a log file found.
#[derive(Debug, Default)]
pub struct Replayed {
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    /// Bytes of whole, valid frames; anything after is a torn tail to truncate.
    pub valid_bytes: usize,
    /// Why replay stopped before the end of the bytes, if it did.
    pub torn: Option<&'static str>,
}

/// Replays a log file's bytes (see the module doc).
pub fn replay(bytes: &[u8]) -> Replayed {
    let mut r = Replayed::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < FRAME_HEADER + 1 {
            r.torn = Some("short frame header");
            break;
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > FRAME_MAX_BYTES {
            r.torn = Some("frame length out of range");
            break;
        }
        let Some(body) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
            r.torn = Some("frame cut short");
            break;
        };
        if crc32c::crc32c(body) != crc {
            r.torn = Some("frame CRC mismatch");
            break;
        }
        let (kind, payload) = (body[0], &body[1..]);
        match kind {
            KIND_ENTRY => match Entry::parse_from_bytes(payload) {
                Ok(e) => {
                    if let Some(pos) = r.entries.iter().position(|x| x.index >= e.index) {
                        r.entries.truncate(pos);
                    }
                    r.entries.push(e);
                }
                Err(_) => {
                    r.torn = Some("undecodable entry");
                    break;
                }
            },
            KIND_HARD_STATE if payload.len() == 24 => {
                let word = |i: usize| {
                    u64::from_be_bytes(payload[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
                };
                r.hard_state = Some(HardState {
                    term: word(0),
                    vote: word(1),
                    commit: word(2),
                    ..Default::default()
                });
            }
            _ => {
                r.torn = Some("unknown frame kind");
                break;
            }
        }
        at += FRAME_HEADER + len;
        r.valid_bytes = at;
    }
    r
}

/// The snapshot file's bytes.
pub fn encode_snapshot(snap: &Snapshot) -> Vec<u8> {
    let meta = snap.get_metadata();
    let voters = &meta.get_conf_state().voters;
    let mut out = Vec::with_capacity(40 + voters.len() * 8 + snap.data.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    out.extend_from_slice(&meta.index.to_be_bytes());
    out.extend_from_slice(&meta.term.to_be_bytes());
    out.extend_from_slice(&(voters.len() as u32).to_be_bytes());
    for v in voters {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&(snap.data.len() as u32).to_be_bytes());
    out.extend_from_slice(&snap.data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a quorum snapshot (bad magic)")]
    Magic,
    #[error("snapshot format version {0} is newer than this build")]
    Version(u16),
    #[error("snapshot truncated")]
    Truncated,
    #[error("snapshot CRC mismatch")]
    Crc,
}

/// Decodes the snapshot file. Unlike a log tail, a bad snapshot is never silently dropped:
/// it was renamed into place only once whole and synced, so damage is the disk's.
pub fn decode_snapshot(b: &[u8]) -> Result<Snapshot, SnapshotError> {
    if b.len() < 4 || &b[..4] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::Magic);
    }
    if b.len() < 30 + 4 {
        return Err(SnapshotError::Truncated);
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return Err(SnapshotError::Crc);
    }
    let version = u16::from_be_bytes([body[4], body[5]]);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    let u64_at = |i: usize| {
        body.get(i..i + 8)
            .map(|s| u64::from_be_bytes(s.try_into().expect("8")))
    };
    let u32_at = |i: usize| {
        body.get(i..i + 4)
            .map(|s| u32::from_be_bytes(s.try_into().expect("4")))
    };
    let index = u64_at(6).ok_or(SnapshotError::Truncated)?;
    let term = u64_at(14).ok_or(SnapshotError::Truncated)?;
    let n = u32_at(22).ok_or(SnapshotError::Truncated)? as usize;
    if n.saturating_mul(8) > body.len() {
        return Err(SnapshotError::Truncated);
    }
    let mut voters = Vec::with_capacity(n);
    for i in 0..n {
        voters.push(u64_at(26 + i * 8).ok_or(SnapshotError::Truncated)?);
    }
    let at = 26 + n * 8;
    let len = u32_at(at).ok_or(SnapshotError::Truncated)? as usize;
    let data = body
        .get(at + 4..at + 4 + len)
        .ok_or(SnapshotError::Truncated)?;
    if at + 4 + len != body.len() {
        return Err(SnapshotError::Truncated);
    }
    let mut snap = Snapshot::default();
    snap.set_data(data.to_vec().into());
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(ConfState::from((voters, vec![])));
    Ok(snap)
}

/// The state to restart a voter from: the snapshot (or the bootstrap configuration when
/// none was ever taken) and the replayed log files' entries and hard state.
pub fn recover(snapshot: Snapshot, logs: &[Replayed]) -> DiskState {
    let mut entries: Vec<Entry> = Vec::new();
    let mut hard_state = HardState::default();
    for log in logs {
        for e in &log.entries {
            if let Some(pos) = entries.iter().position(|x| x.index >= e.index) {
                entries.truncate(pos);
            }
            entries.push(e.clone());
        }
        if let Some(hs) = &log.hard_state {
            hard_state = hs.clone();
        }
    }
    let snap_index = snapshot.get_metadata().index;
    entries.retain(|e| e.index > snap_index);
    DiskState {
        hard_state,
        snapshot,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn replay_keeps_the_last_word_on_every_index_and_the_hard_state() {
        let mut file = encode_writes(&[entry(1, 1, b"a"), entry(2, 1, b"b")], Some(&hs(1, 1, 1)));
        file.extend(encode_writes(
            &[entry(2, 2, b"B"), entry(3, 2, b"c")],
            Some(&hs(2, 2, 3)),
        ));
        let r = replay(&file);
        assert_eq!(r.torn, None);
        assert_eq!(r.valid_bytes, file.len());
        let got: Vec<(u64, u64, Vec<u8>)> = r
            .entries
            .iter()
            .map(|e| (e.index, e.term, e.data.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 1, b"a".to_vec()),
                (2, 2, b"B".to_vec()),
                (3, 2, b"c".to_vec())
            ]
        );
        assert_eq!(r.hard_state, Some(hs(2, 2, 3)));
    }

    /// A crash can leave any prefix of the last write: replay keeps exactly the whole
    /// frames before it, whatever byte the tear falls on, and a flipped bit anywhere in a
    /// frame ends the log at that frame.
    #[test]
    fn a_torn_or_corrupt_tail_ends_the_log_at_the_last_whole_frame() {
        let first = encode_writes(&[entry(1, 1, b"one")], Some(&hs(1, 1, 0)));
        let second = encode_writes(&[entry(2, 1, b"two"), entry(3, 1, b"three")], None);
        let mut file = first.clone();
        file.extend(&second);
        let b2 = first.len() + encode_writes(&[entry(2, 1, b"two")], None).len();
        for cut in first.len()..=file.len() {
            let r = replay(&file[..cut]);
            let expect = 1 + usize::from(cut >= b2) + usize::from(cut == file.len());
            assert_eq!(r.entries.len(), expect, "cut at {cut}");
            assert!(r.valid_bytes <= cut && r.valid_bytes >= first.len());
            assert_eq!(r.torn.is_some(), cut != r.valid_bytes, "cut at {cut}");
        }
        let originals = [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
        for flip in first.len()..file.len() {
            let mut bad = file.clone();
            bad[flip] ^= 0x10;
            let r = replay(&bad);
            assert!(r.valid_bytes >= first.len());
            assert!(r.valid_bytes < file.len(), "flip at {flip} went unnoticed");
            assert!(
                r.entries
                    .iter()
                    .all(|e| originals.contains(&e.data.to_vec())),
                "flip at {flip} let a damaged entry through"
            );
        }
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_an_error() {
        let mut snap = Snapshot::default();
        snap.set_data(b"image".to_vec().into());
        snap.mut_metadata().index = 9;
        snap.mut_metadata().term = 3;
        snap.mut_metadata()
            .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        let bytes = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(&bytes).unwrap(), snap);
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for flip in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[flip] ^= 1;
            assert!(decode_snapshot(&bad).is_err(), "flip at {flip}");
        }
    }

    #[test]
    fn recovery_drops_entries_the_snapshot_covers() {
        let a = replay(&encode_writes(
            &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            Some(&hs(1, 1, 3)),
        ));
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 2;
        snap.mut_metadata().term = 1;
        let d = recover(snap, &[a]);
        assert_eq!(
            d.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(d.hard_state, hs(1, 1, 3));
    }
}
