//! Validation of the record batches a client sends, before any byte of them is stored —
//! what Kafka's `LogValidator` checks for appends from clients (replicated and
//! coordinator-written batches are not checked here: they were checked, or written, by the
//! broker itself).
//!
//! A batch whose CRC is right can still be garbage: a producer bug, or an attacker who
//! recomputes the CRC. Stored, such a batch makes the partition unreadable for every consumer
//! from that offset on (librdkafka stops at the first batch it cannot parse), or moves the
//! log end by 2^31 offsets. So every record is walked, decompressing when the batch is
//! compressed, with a bound on the decompressed size ([`crate::compression`]).
//!
//! Rules, in the order they are checked:
//! 1. not a control batch (only the broker writes commit and abort markers);
//! 2. not transactional (transactions are not served yet, so no transaction is open);
//! 3. `records_count >= 1` and `records_count == last_offset_delta + 1`;
//! 4. producer fields: a producer id (>= 0) must have been issued by InitProducerId, with an
//!    epoch >= 0 and a base sequence >= 0;
//! 5. the batch's max timestamp and every record's timestamp within
//!    `message.timestamp.before.max.ms` / `.after.max.ms` of the broker's clock (skipped for
//!    LogAppendTime topics, whose timestamps the broker replaces);
//! 6. the codec is one Kafka knows, the records decompress within the bound;
//! 7. exactly `records_count` well-formed records fill the records section: lengths that
//!    match, offset deltas 0, 1, 2, ..., key and value lengths >= -1, header counts and
//!    header key lengths >= 0;
//! 8. on a compacted topic every record has a key.
//!
//! Record layout inside a v2 batch (varints are zigzag-encoded, as protobuf's `sint`):
//!
//! | field | encoding |
//! |---|---|
//! | length | varint: bytes of the record after this field |
//! | attributes | int8 (unused) |
//! | timestamp_delta | varlong, from the batch's base timestamp |
//! | offset_delta | varint, from the batch's base offset |
//! | key_length, key | varint (-1: null), bytes |
//! | value_length, value | varint (-1: null), bytes |
//! | header_count | varint |
//! | per header | key_length varint (>= 0), key bytes (UTF-8), value_length varint (-1: null), value bytes |

use thiserror::Error;

use crate::compression::{records_bytes, DecompressError};
use crate::record_batch::RecordBatchView;

/// Kafka's "no timestamp".
const NO_TIMESTAMP: i64 = -1;

/// What a client batch is checked against.
#[derive(Debug, Clone)]
pub struct ClientRules {
    /// The broker's clock, for the timestamp bounds.
    pub now_ms: i64,
    /// `message.timestamp.before.max.ms` / `.after.max.ms`; `None` for a LogAppendTime
    /// topic, where the client's timestamps are replaced.
    pub timestamp_bounds: Option<TimestampBounds>,
    /// A compacted topic: every record needs a key.
    pub require_keys: bool,
    /// `sluice.message.decompressed.max.bytes`: refuse records that inflate past this.
    pub decompressed_max_bytes: usize,
    /// Producer ids below this were handed out by InitProducerId.
    pub producer_ids_issued_end: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct TimestampBounds {
    pub before_max_ms: i64,
    pub after_max_ms: i64,
}

/// Why a client batch is refused. `broker/` maps each to Kafka's error code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ClientBatchError {
    #[error("clients are not allowed to write control records")]
    ControlBatch,
    #[error("transactional batch from producer {producer_id} outside a transaction")]
    Transactional { producer_id: i64 },
    #[error("record count {records_count} does not match last offset delta {last_offset_delta}")]
    RecordCount {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("producer id {producer_id} was not issued by InitProducerId")]
    UnknownProducerId { producer_id: i64 },
    #[error("invalid producer epoch {epoch} for producer {producer_id}")]
    ProducerEpoch { producer_id: i64, epoch: i16 },
    #[error("invalid sequence number {base_sequence} in a batch of producer {producer_id}")]
    Sequence {
        producer_id: i64,
        base_sequence: i32,
    },
    #[error("timestamp {timestamp} is out of range (broker time {now_ms})")]
    Timestamp { timestamp: i64, now_ms: i64 },
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    #[error("record {index}: {fault}")]
    Record { index: i32, fault: RecordFault },
    #[error("compacted topic cannot accept a record without a key")]
    MissingKeys {
        /// Indexes of the keyless records within the batch.
        indexes: Vec<i32>,
    },
}

/// What is wrong inside one record.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum RecordFault {
    #[error("truncated")]
    Truncated,
    #[error("malformed varint")]
    Varint,
    #[error("record length does not match its fields")]
    Length,
    #[error("offset delta {found} where {expected} was expected")]
    OffsetDelta { expected: i32, found: i32 },
    #[error("negative length {0}")]
    NegativeLength(i64),
    #[error("negative header count {0}")]
    HeaderCount(i32),
    #[error("header key is not UTF-8")]
    HeaderKeyUtf8,
    #[error("timestamp overflows")]
    TimestampOverflow,
    #[error("bytes left after the last record")]
    TrailingBytes,
}

/// Checks one batch a client sent (its CRC already verified) against `rules`.
pub fn validate_client_batch(
    batch: &RecordBatchView<'_>,
    rules: &ClientRules,
) -> Result<(), ClientBatchError> {
    if batch.is_control() {
        return Err(ClientBatchError::ControlBatch);
    }
    if batch.is_transactional() {
        return Err(ClientBatchError::Transactional {
            producer_id: batch.producer_id(),
        });
    }
    let (count, delta) = (batch.records_count(), batch.last_offset_delta());
    if count < 1 || delta < 0 || count as i64 != delta as i64 + 1 {
        return Err(ClientBatchError::RecordCount {
            records_count: count,
            last_offset_delta: delta,
        });
    }
    check_producer(batch, rules)?;
    if let Some(bounds) = rules.timestamp_bounds {
        check_timestamp(batch.max_timestamp(), rules.now_ms, bounds)?;
    }
    let records = records_bytes(batch, rules.decompressed_max_bytes)?;
    let mut keyless = Vec::new();
    walk_records::<ClientBatchError>(&records, count, batch.base_timestamp(), |r| {
        if let Some(bounds) = rules.timestamp_bounds {
            check_timestamp(r.timestamp, rules.now_ms, bounds)?;
        }
        if rules.require_keys && !r.has_key {
            keyless.push(r.index);
        }
        Ok(())
    })?;
    if !keyless.is_empty() {
        return Err(ClientBatchError::MissingKeys { indexes: keyless });
    }
    Ok(())
}

fn check_producer(
    batch: &RecordBatchView<'_>,
    rules: &ClientRules,
) -> Result<(), ClientBatchError> {
    let producer_id = batch.producer_id();
    if producer_id < 0 {
        return Ok(());
    }
    if producer_id >= rules.producer_ids_issued_end {
        return Err(ClientBatchError::UnknownProducerId { producer_id });
    }
    if batch.producer_epoch() < 0 {
        return Err(ClientBatchError::ProducerEpoch {
            producer_id,
            epoch: batch.producer_epoch(),
        });
    }
    if batch.base_sequence() < 0 {
        return Err(ClientBatchError::Sequence {
            producer_id,
            base_sequence: batch.base_sequence(),
        });
    }
    Ok(())
}

fn check_timestamp(
    timestamp: i64,
    now_ms: i64,
    bounds: TimestampBounds,
) -> Result<(), ClientBatchError> {
    if timestamp == NO_TIMESTAMP {
        return Ok(());
    }
    let ahead = timestamp as i128 - now_ms as i128;
    if timestamp < 0 || ahead > bounds.after_max_ms as i128 || -ahead > bounds.before_max_ms as i128
    {
        return Err(ClientBatchError::Timestamp { timestamp, now_ms });
    }
    Ok(())
}

/// One record as the walk sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    pub index: i32,
    pub offset_delta: i32,
    pub timestamp: i64,
    pub has_key: bool,
}

/// Walks `count` records in `bytes` (a batch's records section, decompressed), calling `f`
/// for each; every structural rule of the module doc is checked, and the records must fill
/// `bytes` exactly.
pub fn walk_records<E: From<ClientBatchError>>(
    bytes: &[u8],
    count: i32,
    base_timestamp: i64,
    mut f: impl FnMut(RecordInfo) -> Result<(), E>,
) -> Result<(), E> {
    let mut cursor = Cursor { bytes, pos: 0 };
    for index in 0..count {
        let fault = |fault| ClientBatchError::Record { index, fault };
        let info = read_record(&mut cursor, index, base_timestamp).map_err(fault)?;
        f(info)?;
    }
    if cursor.pos != bytes.len() {
        return Err(ClientBatchError::Record {
            index: count,
            fault: RecordFault::TrailingBytes,
        }
        .into());
    }
    Ok(())
}

fn read_record(
    c: &mut Cursor<'_>,
    index: i32,
    base_timestamp: i64,
) -> Result<RecordInfo, RecordFault> {
    let length = c.varint()?;
    if length < 0 {
        return Err(RecordFault::NegativeLength(length as i64));
    }
    let end = c
        .pos
        .checked_add(length as usize)
        .filter(|e| *e <= c.bytes.len())
        .ok_or(RecordFault::Truncated)?;
    let mut r = Cursor {
        bytes: &c.bytes[..end],
        pos: c.pos,
    };
    r.take(1)?; // attributes
    let timestamp_delta = r.varlong()?;
    let offset_delta = r.varint()?;
    if offset_delta != index {
        return Err(RecordFault::OffsetDelta {
            expected: index,
            found: offset_delta,
        });
    }
    let key = r.bytes_field()?;
    r.bytes_field()?; // value
    let headers = r.varint()?;
    if headers < 0 {
        return Err(RecordFault::HeaderCount(headers));
    }
    for _ in 0..headers {
        let key_length = r.varint()?;
        if key_length < 0 {
            return Err(RecordFault::NegativeLength(key_length as i64));
        }
        let key = r.take(key_length as usize)?;
        // Header keys are strings; clients that decode them strictly (the kafka-protocol
        // crate) cannot read a batch whose key is not UTF-8, so it is refused here.
        if std::str::from_utf8(key).is_err() {
            return Err(RecordFault::HeaderKeyUtf8);
        }
        r.bytes_field()?;
    }
    if r.pos != end {
        return Err(RecordFault::Length);
    }
    c.pos = end;
    let timestamp = base_timestamp
        .checked_add(timestamp_delta)
        .ok_or(RecordFault::TimestampOverflow)?;
    Ok(RecordInfo {
        index,
        offset_delta,
        timestamp,
        has_key: key.is_some(),
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordFault> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(RecordFault::Truncated)?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// An unsigned LEB128 value of at most `max_bytes` bytes.
    fn unsigned(&mut self, max_bytes: u32) -> Result<u64, RecordFault> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = *self.bytes.get(self.pos).ok_or(RecordFault::Truncated)?;
            self.pos += 1;
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordFault::Varint)
    }

    fn varint(&mut self) -> Result<i32, RecordFault> {
        let raw = self.unsigned(5)?;
        let raw = u32::try_from(raw).map_err(|_| RecordFault::Varint)?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, RecordFault> {
        let raw = self.unsigned(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// A varint length (-1: null) and that many bytes.
    fn bytes_field(&mut self) -> Result<Option<&'a [u8]>, RecordFault> {
        let length = self.varint()?;
        match length {
            -1 => Ok(None),
            n if n < -1 => Err(RecordFault::NegativeLength(n as i64)),
            n => self.take(n as usize).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::RecordBatchView;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    const NOW: i64 = 1_700_000_000_000;

    fn rules() -> ClientRules {
        ClientRules {
            now_ms: NOW,
            timestamp_bounds: Some(TimestampBounds {
                before_max_ms: i64::MAX,
                after_max_ms: 3_600_000,
            }),
            require_keys: false,
            decompressed_max_bytes: 1 << 20,
            producer_ids_issued_end: 1000,
        }
    }

    fn encode(keys: &[Option<&str>], compression: Compression, producer_id: i64) -> Bytes {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: if producer_id >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // One batch needs offset - sequence constant across its records.
                sequence: i as i32,
                timestamp: NOW - 1000 + i as i64,
                key: k.map(|k| Bytes::from(k.to_owned())),
                value: Some(Bytes::from_static(b"value")),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"v")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn check(bytes: &[u8], rules: &ClientRules) -> Result<(), ClientBatchError> {
        let view = RecordBatchView::parse_verified(bytes).expect("valid header and CRC");
        validate_client_batch(&view, rules)
    }

    /// Sets a header field and recomputes the CRC, as an attacker would.
    fn patch(bytes: &Bytes, at: usize, value: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b[at..at + value.len()].copy_from_slice(value);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn real_batches_of_every_codec_pass() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode(&[Some("a"), None, Some("c")], codec, -1);
            assert_eq!(check(&b, &rules()), Ok(()), "{codec:?}");
            let b = encode(&[Some("a")], codec, 7);
            assert_eq!(check(&b, &rules()), Ok(()), "{codec:?} idempotent");
        }
    }

    #[test]
    fn header_attacks_are_refused() {
        let b = encode(&[Some("a"), Some("b")], Compression::None, -1);
        let rc = |v: Vec<u8>| check(&v, &rules());
        // records_count (57..61) and last_offset_delta (23..27).
        assert!(matches!(
            rc(patch(&b, 57, &1i32.to_be_bytes())),
            Err(ClientBatchError::RecordCount { .. })
        ));
        assert!(matches!(
            rc(patch(&b, 57, &0i32.to_be_bytes())),
            Err(ClientBatchError::RecordCount { .. })
        ));
        assert!(matches!(
            rc(patch(&b, 23, &0x7fff_fffei32.to_be_bytes())),
            Err(ClientBatchError::RecordCount { .. })
        ));
        // Attributes (21..23): control, transactional, unknown codecs, everything set.
        assert_eq!(
            rc(patch(&b, 21, &0x20i16.to_be_bytes())),
            Err(ClientBatchError::ControlBatch)
        );
        assert!(matches!(
            rc(patch(&b, 21, &0x10i16.to_be_bytes())),
            Err(ClientBatchError::Transactional { .. })
        ));
        assert_eq!(
            rc(patch(&b, 21, &6i16.to_be_bytes())),
            Err(ClientBatchError::Decompress(DecompressError::UnknownCodec(
                6
            )))
        );
        assert!(rc(patch(&b, 21, &0x7fffi16.to_be_bytes())).is_err());
        // The gzip flag on plain records.
        assert!(matches!(
            rc(patch(&b, 21, &1i16.to_be_bytes())),
            Err(ClientBatchError::Decompress(
                DecompressError::Corrupt { .. }
            ))
        ));
        // Timestamps (base 27..35, max 35..43).
        for ts in [i64::MIN, i64::MAX, -2, NOW + 3_600_001] {
            assert!(
                matches!(
                    rc(patch(&b, 35, &ts.to_be_bytes())),
                    Err(ClientBatchError::Timestamp { .. })
                ),
                "max timestamp {ts}"
            );
        }
        assert!(matches!(
            rc(patch(&b, 27, &(NOW + 7_200_000).to_be_bytes())),
            Err(ClientBatchError::Timestamp { .. })
        ));
        assert!(matches!(
            rc(patch(&b, 27, &i64::MAX.to_be_bytes())),
            Err(ClientBatchError::Timestamp { .. })
        ));
        // LogAppendTime topics replace timestamps: not checked.
        let lat = ClientRules {
            timestamp_bounds: None,
            ..rules()
        };
        assert_eq!(check(&patch(&b, 35, &i64::MAX.to_be_bytes()), &lat), Ok(()));
        // Producer fields (id 43..51, epoch 51..53, sequence 53..57).
        let p = encode(&[Some("a")], Compression::None, 7);
        assert_eq!(
            rc(patch(&p, 43, &5000i64.to_be_bytes())),
            Err(ClientBatchError::UnknownProducerId { producer_id: 5000 })
        );
        assert!(matches!(
            rc(patch(&p, 51, &(-3i16).to_be_bytes())),
            Err(ClientBatchError::ProducerEpoch { .. })
        ));
        assert!(matches!(
            rc(patch(&p, 53, &(-3i32).to_be_bytes())),
            Err(ClientBatchError::Sequence { .. })
        ));
    }

    #[test]
    fn record_attacks_are_refused() {
        let b = encode(&[Some("a"), Some("b")], Compression::None, -1);
        // The first record starts at 61: length varint, attributes, timestamp delta varlong,
        // then the offset delta varint (zigzag: -5 is 9, 1000 is 2000 = 0xd0 0x0f).
        let first = 61;
        let length = b[first] as usize / 2; // zigzag
        let offset_delta_at = first + 3;
        assert_eq!(b[offset_delta_at], 0, "layout as expected");
        let r = check(&patch(&b, offset_delta_at, &[9]), &rules());
        assert_eq!(
            r,
            Err(ClientBatchError::Record {
                index: 0,
                fault: RecordFault::OffsetDelta {
                    expected: 0,
                    found: -5
                }
            })
        );
        let second_offset_delta_at = first + 1 + length + 3;
        assert_eq!(b[second_offset_delta_at], 2, "second record's delta is 1");
        // 1000 needs two bytes: replacing two bytes shifts the record, which also fails.
        assert!(check(&patch(&b, second_offset_delta_at, &[0xd0, 0x0f]), &rules()).is_err());
        // Garbage records under a valid CRC.
        let mut rng = 0x1234_5678u64;
        for _ in 0..200 {
            let mut g = b.to_vec();
            for byte in &mut g[61..] {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                *byte = (rng >> 33) as u8;
            }
            let crc = crc32c::crc32c(&g[21..]);
            g[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(check(&g, &rules()).is_err());
        }
        // A header key that is not UTF-8 (the record ends with: key length 1 = 0x02, "h",
        // value length 1, "v").
        let key_at = first + 1 + length - 3;
        assert_eq!(b[key_at], b'h', "layout as expected");
        assert_eq!(
            check(&patch(&b, key_at, &[0xff]), &rules()),
            Err(ClientBatchError::Record {
                index: 0,
                fault: RecordFault::HeaderKeyUtf8
            })
        );
        // A negative record length, a huge one, trailing bytes.
        assert!(check(&patch(&b, first, &[1]), &rules()).is_err());
        assert!(check(&patch(&b, first, &[0xfe]), &rules()).is_err());
    }

    #[test]
    fn compressed_garbage_and_bombs_are_refused() {
        let b = encode(&[Some("a")], Compression::Zstd, -1);
        let mut small = rules();
        small.decompressed_max_bytes = 4;
        assert!(matches!(
            check(&b, &small),
            Err(ClientBatchError::Decompress(
                DecompressError::TooLarge { .. }
            ))
        ));
        let mut g = b.to_vec();
        let n = g.len();
        g[n - 4..].copy_from_slice(b"junk");
        let crc = crc32c::crc32c(&g[21..]);
        g[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(check(&g, &rules()).is_err());
    }

    #[test]
    fn compacted_topics_need_keys() {
        let mut r = rules();
        r.require_keys = true;
        let b = encode(&[Some("a"), None, Some("c"), None], Compression::Lz4, -1);
        assert_eq!(
            check(&b, &r),
            Err(ClientBatchError::MissingKeys {
                indexes: vec![1, 3]
            })
        );
        let b = encode(&[Some("a")], Compression::Lz4, -1);
        assert_eq!(check(&b, &r), Ok(()));
    }
}
