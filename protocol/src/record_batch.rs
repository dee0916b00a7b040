//! A zero-copy view of Kafka RecordBatch v2 (magic 2) headers.
//!
//! On-disk and on-wire layout of one batch, all integers big-endian:
//!
//! | bytes    | field                  | notes                                        |
//! |----------|------------------------|----------------------------------------------|
//! | 0..8     | base_offset: i64       | rewritten by the broker on append            |
//! | 8..12    | batch_length: i32      | bytes after this field (total = 12 + length) |
//! | 12..16   | partition_leader_epoch | rewritten by the broker on append            |
//! | 16       | magic: i8              | must be 2                                    |
//! | 17..21   | crc: u32               | CRC32C of bytes 21..end                      |
//! | 21..23   | attributes: i16        | bits 0-2 codec, 3 timestamp type, 4 txn, 5 control |
//! | 23..27   | last_offset_delta: i32 |                                              |
//! | 27..35   | base_timestamp: i64    |                                              |
//! | 35..43   | max_timestamp: i64     |                                              |
//! | 43..51   | producer_id: i64       |                                              |
//! | 51..53   | producer_epoch: i16    |                                              |
//! | 53..57   | base_sequence: i32     |                                              |
//! | 57..61   | records_count: i32     |                                              |
//! | 61..     | records                | possibly compressed; never decoded here      |
//!
//! Because the CRC starts at `attributes`, the broker may rewrite the base offset and the
//! leader epoch without recomputing it.

use thiserror::Error;

/// Size of the fixed RecordBatch v2 header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` ends: the minimum needed to learn a batch's total size.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
const CRC_START: usize = 21;

/// Why a byte range is not a valid v2 record batch.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {length} is invalid")]
    BadLength { length: i32 },
    #[error("unsupported record batch magic {magic}")]
    UnsupportedMagic { magic: i8 },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch base offset {found} where {expected} was expected")]
    UnexpectedBaseOffset { expected: i64, found: i64 },
    #[error("record count {records_count} does not match last offset delta {last_offset_delta}")]
    BadRecordCount {
        records_count: i32,
        last_offset_delta: i32,
    },
}

/// Compression codec named by the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Total size of the batch that starts at `bytes[0]`, read from its length prefix, or
/// `None` if fewer than 12 bytes are available. Does not validate anything else.
pub fn batch_size_from_prefix(bytes: &[u8]) -> Option<Result<usize, BatchError>> {
    if bytes.len() < BATCH_LENGTH_PREFIX_BYTES {
        return None;
    }
    let length = be_i32(bytes, 8);
    // The smallest legal batch is a bare header.
    if length < (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32 {
        return Some(Err(BatchError::BadLength { length }));
    }
    Some(Ok(BATCH_LENGTH_PREFIX_BYTES + length as usize))
}

/// A validated view of one v2 batch header over borrowed bytes. The slice is exactly one
/// batch (`len() == 12 + batch_length`).
#[derive(Debug, Clone, Copy)]
pub struct RecordBatchView<'a> {
    bytes: &'a [u8],
}

impl<'a> RecordBatchView<'a> {
    /// Parses the batch at the start of `bytes`, checking length, magic and the header
    /// invariants but not the CRC (see [`Self::verify_crc`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let size = match batch_size_from_prefix(bytes) {
            None => {
                return Err(BatchError::Truncated {
                    needed: BATCH_LENGTH_PREFIX_BYTES,
                    available: bytes.len(),
                })
            }
            Some(size) => size?,
        };
        if bytes.len() < size {
            return Err(BatchError::Truncated {
                needed: size,
                available: bytes.len(),
            });
        }
        let magic = bytes[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let view = RecordBatchView {
            bytes: &bytes[..size],
        };
        if view.records_count() < 0
            || view.last_offset_delta() < 0
            || (view.records_count() > 0
                && (view.last_offset_delta() as i64) + 1 < view.records_count() as i64)
        {
            return Err(BatchError::BadRecordCount {
                records_count: view.records_count(),
                last_offset_delta: view.last_offset_delta(),
            });
        }
        Ok(view)
    }

    /// Parses and checks the CRC: what the broker does with every batch it accepts or
    /// recovers.
    pub fn parse_verified(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let view = Self::parse(bytes)?;
        view.verify_crc()?;
        Ok(view)
    }

    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let stored = self.crc();
        let computed = crc32c::crc32c(&self.bytes[CRC_START..]);
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        Ok(())
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.bytes, 0)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(self.bytes, 8)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.bytes, 12)
    }
    pub fn magic(&self) -> i8 {
        self.bytes[16] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, 17) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, 21)
    }
    pub fn compression(&self) -> Compression {
        match self.attributes() & 0x7 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other as u8),
        }
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & 0x8 != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, 23)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, 27)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, 35)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, 43)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, 51)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, 53)
    }
    pub fn records_count(&self) -> i32 {
        be_i32(self.bytes, 57)
    }
    /// Offset of the last record: `base_offset + last_offset_delta` (saturating: a client's
    /// base offset is any value until the broker rewrites it).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(self.last_offset_delta() as i64)
    }
}

/// Rewrites the base offset of the batch at `bytes[0..8]` in place. The CRC does not cover
/// it, so the batch stays valid.
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch in place (also outside the CRC).
pub fn set_partition_leader_epoch(bytes: &mut [u8], epoch: i32) {
    bytes[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps the batch at `bytes` with the broker's time (`message.timestamp.type=LogAppendTime`):
/// the timestamp-type attribute bit and the max timestamp, which every record of such a batch
/// reports. Both are covered by the CRC, which is recomputed.
pub fn set_log_append_time(bytes: &mut [u8], timestamp_ms: i64) {
    let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) | 0x08;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    bytes[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over consecutive batches in `bytes`, stopping at the first incomplete or invalid
/// one; [`BatchIter::consumed`] tells how many bytes were whole, valid batches.
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    verify_crc: bool,
    error: Option<BatchError>,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8], verify_crc: bool) -> Self {
        BatchIter {
            bytes,
            pos: 0,
            verify_crc,
            error: None,
        }
    }
    /// Bytes covered by the batches returned so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
    /// Why iteration stopped before the end of the input, if it did.
    pub fn error(&self) -> Option<&BatchError> {
        self.error.as_ref()
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = RecordBatchView<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos == self.bytes.len() || self.error.is_some() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        let parsed = if self.verify_crc {
            RecordBatchView::parse_verified(rest)
        } else {
            RecordBatchView::parse(rest)
        };
        match parsed {
            Ok(view) => {
                self.pos += view.size_bytes();
                Some(view)
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a syntactically valid uncompressed batch with `count` empty-ish records.
    /// Records are opaque to the view, so the body is filler of the right shape.
    pub fn make_batch(base_offset: i64, count: i32, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base_offset.to_be_bytes());
        let length = (BATCH_HEADER_BYTES - 12 + body.len()) as i32;
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2); // magic
        b.extend_from_slice(&[0; 4]); // crc placeholder
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&2000i64.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(body);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn parses_header_fields() {
        let b = make_batch(7, 3, b"abc");
        let v = RecordBatchView::parse_verified(&b).unwrap();
        assert_eq!(v.base_offset(), 7);
        assert_eq!(v.records_count(), 3);
        assert_eq!(v.last_offset(), 9);
        assert_eq!(v.max_timestamp(), 2000);
        assert_eq!(v.size_bytes(), b.len());
        assert_eq!(v.compression(), Compression::None);
    }

    #[test]
    fn base_offset_rewrite_keeps_crc_valid() {
        let mut b = make_batch(0, 2, b"xy");
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 5);
        let v = RecordBatchView::parse_verified(&b).unwrap();
        assert_eq!(v.base_offset(), 1234);
        assert_eq!(v.partition_leader_epoch(), 5);
    }

    #[test]
    fn detects_corruption_truncation_and_bad_magic() {
        let mut b = make_batch(0, 1, b"hello");
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            RecordBatchView::parse_verified(&b),
            Err(BatchError::CrcMismatch { .. })
        ));
        let b = make_batch(0, 1, b"hello");
        assert!(matches!(
            RecordBatchView::parse(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut b = make_batch(0, 1, b"hello");
        b[16] = 1;
        assert_eq!(
            RecordBatchView::parse(&b).unwrap_err(),
            BatchError::UnsupportedMagic { magic: 1 }
        );
        let zeros = [0u8; 64];
        assert!(matches!(
            RecordBatchView::parse(&zeros),
            Err(BatchError::BadLength { length: 0 })
        ));
    }

    #[test]
    fn extreme_header_values_are_errors_or_saturate_never_panics() {
        let mut b = make_batch(i64::MAX, 7, b"x");
        b[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let v = RecordBatchView::parse_verified(&b).unwrap();
        assert_eq!(v.last_offset(), i64::MAX);
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        b[23..27].copy_from_slice(&(i32::MAX - 2).to_be_bytes());
        assert!(matches!(
            RecordBatchView::parse(&b),
            Err(BatchError::BadRecordCount { .. })
        ));
    }

    #[test]
    fn iterator_stops_at_torn_tail() {
        let mut all = make_batch(0, 2, b"ab");
        let second = make_batch(2, 1, b"c");
        let first_len = all.len();
        all.extend_from_slice(&second);
        all.extend_from_slice(&second[..20]);
        let mut it = BatchIter::new(&all, true);
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.consumed(), first_len + second.len());
        assert!(matches!(it.error(), Some(BatchError::Truncated { .. })));
    }
}
