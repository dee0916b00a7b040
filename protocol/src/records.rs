//! Record-level reads of a stored batch, for the few requests that must look inside one
//! (ListOffsets by timestamp), and re-compression for topics whose `compression.type` is a
//! fixed codec. Plain Produce and Fetch never come here: they move whole batches.
//!
//! Decoding goes through the `kafka-protocol` record codec, which decompresses gzip, snappy,
//! lz4 and zstd batches.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as Codec, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use thiserror::Error;

use crate::compression::records_bytes;
use crate::record_batch::{
    BatchError, RecordBatchView, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES,
};
use crate::validate::{walk_records, ClientBatchError};

#[derive(Debug, Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("cannot decode the records of the batch at offset {base_offset}: {reason}")]
    Decode { base_offset: i64, reason: String },
}

/// One record of a plain batch (no producer id, not transactional).
#[derive(Debug, Clone, Default)]
pub struct PlainRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(StrBytes, Option<Bytes>)>,
}

/// `records` as one v2 batch (offset deltas 0, 1, ...; every record stamped `timestamp_ms`;
/// leader epoch -1, which the broker sets on append), compressed with `codec`.
pub fn encode_plain_batch(
    records: &[PlainRecord],
    timestamp_ms: i64,
    codec: Codec,
) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset - sequence changes: keeping it
            // constant makes one batch (the header's base sequence stays -1).
            sequence: i as i32,
            timestamp: timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.iter().cloned().collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )?;
    Ok(buf.freeze())
}

/// The offset and timestamp of the first record in `batch` whose timestamp is at or after
/// `target` — Kafka's answer to a ListOffsets query by time — or `None` when no record
/// reaches it. With log-append time every record carries the batch's max timestamp. The
/// records are decompressed within `decompressed_max_bytes`.
pub fn first_record_at_or_after(
    batch: &Bytes,
    target: i64,
    decompressed_max_bytes: usize,
) -> Result<Option<(i64, i64)>, RecordsError> {
    let view = RecordBatchView::parse(batch)?;
    if view.max_timestamp() < target {
        return Ok(None);
    }
    if view.is_log_append_time() {
        return Ok(Some((view.base_offset(), view.max_timestamp())));
    }
    let base_offset = view.base_offset();
    let decode = |reason: String| RecordsError::Decode {
        base_offset,
        reason,
    };
    let records =
        records_bytes(&view, decompressed_max_bytes).map_err(|e| decode(e.to_string()))?;
    let mut found = None;
    let walked = walk_records::<ClientBatchError>(
        &records,
        view.records_count().max(0),
        view.base_timestamp(),
        |r| {
            if found.is_none() && r.timestamp >= target {
                found = Some((base_offset + r.offset_delta as i64, r.timestamp));
            }
            Ok(())
        },
    );
    match (found, walked) {
        (Some(hit), _) => Ok(Some(hit)),
        (None, Ok(())) => Ok(None),
        (None, Err(e)) => Err(decode(e.to_string())),
    }
}

/// `view` as an uncompressed batch with the same header fields and records (the codec bits
/// cleared, length and CRC recomputed), decompressing within `decompressed_max_bytes`.
fn uncompressed_equivalent(
    view: &RecordBatchView<'_>,
    decompressed_max_bytes: usize,
) -> Result<BytesMut, RecordsError> {
    let records =
        records_bytes(view, decompressed_max_bytes).map_err(|e| RecordsError::Decode {
            base_offset: view.base_offset(),
            reason: e.to_string(),
        })?;
    let header = &view.as_bytes()[..BATCH_HEADER_BYTES];
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.extend_from_slice(header);
    // The decoder adds offset deltas to the base offset: a client's base offset is any value
    // (the broker assigns offsets on append), so decode from 0.
    out[0..8].copy_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&records);
    let length = (out.len() - BATCH_LENGTH_PREFIX_BYTES) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = view.attributes() & !0x7;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Re-encodes every batch in `batches` whose codec is not `target` (one batch out per batch
/// in, records, producer fields and timestamps unchanged), as Kafka does for a topic with a
/// fixed `compression.type`. `None` when every batch already uses `target`. Decompression is
/// bounded by `decompressed_max_bytes` per batch.
pub fn recompress(
    batches: &Bytes,
    target: Codec,
    decompressed_max_bytes: usize,
) -> Result<Option<Bytes>, RecordsError> {
    let wanted = match target {
        Codec::None => crate::record_batch::Compression::None,
        Codec::Gzip => crate::record_batch::Compression::Gzip,
        Codec::Snappy => crate::record_batch::Compression::Snappy,
        Codec::Lz4 => crate::record_batch::Compression::Lz4,
        Codec::Zstd => crate::record_batch::Compression::Zstd,
    };
    if crate::record_batch::BatchIter::new(batches, false).all(|v| v.compression() == wanted) {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(batches.len());
    let mut rest = batches.clone();
    while !rest.is_empty() {
        let (size, base_offset, codec) = {
            let view = RecordBatchView::parse(&rest)?;
            (view.size_bytes(), view.base_offset(), view.compression())
        };
        let one = rest.split_to(size);
        if codec == wanted {
            out.extend_from_slice(&one);
            continue;
        }
        let view = RecordBatchView::parse(&one)?;
        let mut plain = uncompressed_equivalent(&view, decompressed_max_bytes)?.freeze();
        let set = RecordBatchDecoder::decode(&mut plain).map_err(|e| RecordsError::Decode {
            base_offset,
            reason: e.to_string(),
        })?;
        let options = RecordEncodeOptions {
            version: 2,
            compression: target,
        };
        RecordBatchEncoder::encode(&mut out, &set.records, &options).map_err(|e| {
            RecordsError::Decode {
                base_offset,
                reason: e.to_string(),
            }
        })?;
    }
    Ok(Some(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(base_offset: i64, timestamps: &[i64], compression: Compression) -> Bytes {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &ts)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base_offset + i as i64,
                // One batch needs offset - sequence to be constant across its records.
                sequence: i as i32,
                timestamp: ts,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from_static(b"value")),
                headers: [(StrBytes::from_static_str("h"), None)]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    #[test]
    fn recompression_keeps_records_and_changes_the_codec() {
        use crate::record_batch::{BatchIter, Compression as Stored};
        let original = batch(0, &[1, 2, 3], Compression::Gzip);
        let out = recompress(&original, Compression::Zstd, 1 << 20)
            .unwrap()
            .unwrap();
        let views: Vec<_> = BatchIter::new(&out, true).collect();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].compression(), Stored::Zstd);
        assert_eq!(views[0].records_count(), 3);
        let mut a = original.clone();
        let mut b = out.clone();
        let before = RecordBatchDecoder::decode(&mut a).unwrap().records;
        let after = RecordBatchDecoder::decode(&mut b).unwrap().records;
        assert_eq!(before.len(), after.len());
        for (x, y) in before.iter().zip(&after) {
            assert_eq!(
                (&x.key, &x.value, x.timestamp),
                (&y.key, &y.value, y.timestamp)
            );
            assert_eq!(x.headers, y.headers);
        }
        assert!(
            recompress(&out, Compression::Zstd, 1 << 20)
                .unwrap()
                .is_none(),
            "already zstd"
        );
        let plain = recompress(&original, Compression::None, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(
            BatchIter::new(&plain, true).next().unwrap().compression(),
            Stored::None
        );
    }

    #[test]
    fn finds_the_first_record_at_or_after_the_target_in_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            // Out of order on purpose: create time need not be monotonic within a batch.
            let b = batch(
                100,
                &[1234, 999_999_999_999, 5000, 2_000_000_000_000],
                codec,
            );
            let at = |t| first_record_at_or_after(&b, t, 1 << 20).unwrap();
            assert_eq!(at(0), Some((100, 1234)), "{codec:?}");
            assert_eq!(at(1234), Some((100, 1234)), "{codec:?}");
            assert_eq!(at(1235), Some((101, 999_999_999_999)), "{codec:?}");
            assert_eq!(
                at(999_999_999_999),
                Some((101, 999_999_999_999)),
                "{codec:?}"
            );
            assert_eq!(
                at(1_000_000_000_000),
                Some((103, 2_000_000_000_000)),
                "{codec:?}"
            );
            assert_eq!(at(2_000_000_000_001), None, "{codec:?}");
        }
    }

    #[test]
    fn recompression_survives_extreme_base_offsets() {
        let b = batch(0, &[1, 2, 3], Compression::Gzip);
        let mut v = b.to_vec();
        v[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
        let out = recompress(&Bytes::from(v), Compression::Lz4, 1 << 20).unwrap();
        assert!(out.is_some());
    }

    #[test]
    fn decompression_is_bounded() {
        let b = batch(0, &[1, 2, 3], Compression::Zstd);
        assert!(recompress(&b, Compression::Gzip, 16).is_err());
        assert!(first_record_at_or_after(&b, 2, 16).is_err());
        assert!(recompress(&b, Compression::Gzip, 1 << 20).is_ok());
    }

    #[test]
    fn a_damaged_batch_is_an_error_not_a_panic() {
        let b = batch(0, &[1, 2, 3], Compression::Lz4);
        let mut damaged = BytesMut::from(&b[..]);
        let n = damaged.len();
        damaged[n - 5] ^= 0xff;
        damaged.truncate(n - 2);
        assert!(first_record_at_or_after(&damaged.freeze(), 2, 1 << 20).is_err());
    }
}
