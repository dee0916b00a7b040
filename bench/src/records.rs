//! The bench's own record batches: encoding v2 batches with a send-time header, and reading
//! that header back on the consumer side for end-to-end latency.
//!
//! Every record carries one header, `t`: the record's intended send time as 8 big-endian
//! bytes of nanoseconds since the Unix epoch. End-to-end latency is the consumer's clock at
//! receipt minus it, so producer and consumer must share a clock (same host, or PTP).

use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::workload::Codec;

/// The header that carries a record's intended send time.
pub const SEND_TIME_HEADER: &[u8] = b"t";

/// One record to encode: key, value (a slice of the payload pool: `value_at`, `value_len`)
/// and the intended send time in Unix nanoseconds.
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value_at: usize,
    pub value_len: usize,
    pub sent_ns: i64,
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or_else(|| anyhow!("record truncated"))?;
        *at += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    bail!("varint too long")
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Encodes `records` (values are slices of `payload`) as one RecordBatch v2 with
/// `timestamp_ms` as its timestamp, compressed with `codec`, not idempotent.
pub fn encode_batch(
    records: &[Rec],
    payload: &[u8],
    codec: Codec,
    timestamp_ms: i64,
) -> Result<Bytes> {
    let mut body = BytesMut::with_capacity(
        records
            .iter()
            .map(|r| r.value_len + r.key.as_ref().map_or(0, |k| k.len()) + 32)
            .sum(),
    );
    for (i, r) in records.iter().enumerate() {
        let key_len = r.key.as_ref().map_or(-1, |k| k.len() as i64);
        let value = payload
            .get(r.value_at..r.value_at + r.value_len)
            .ok_or_else(|| anyhow!("record of {} bytes exceeds the payload pool", r.value_len))?;
        let header_len =
            varint_len(SEND_TIME_HEADER.len() as i64) + SEND_TIME_HEADER.len() + varint_len(8) + 8;
        let len = 1
            + varint_len(0)
            + varint_len(i as i64)
            + varint_len(key_len)
            + key_len.max(0) as usize
            + varint_len(value.len() as i64)
            + value.len()
            + varint_len(1)
            + header_len;
        put_varint(&mut body, len as i64);
        body.put_u8(0); // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i as i64); // offset delta
        put_varint(&mut body, key_len);
        if let Some(k) = &r.key {
            body.put_slice(k);
        }
        put_varint(&mut body, value.len() as i64);
        body.put_slice(value);
        put_varint(&mut body, 1);
        put_varint(&mut body, SEND_TIME_HEADER.len() as i64);
        body.put_slice(SEND_TIME_HEADER);
        put_varint(&mut body, 8);
        body.put_i64(r.sent_ns);
    }
    let mut out = BytesMut::with_capacity(61 + body.len());
    out.put_i64(0); // base offset
    out.put_i32(0); // batch length, set below
    out.put_i32(-1); // partition leader epoch
    out.put_i8(2); // magic
    out.put_u32(0); // crc, set below
    out.put_i16(codec.attribute());
    out.put_i32(records.len() as i32 - 1);
    out.put_i64(timestamp_ms);
    out.put_i64(timestamp_ms);
    out.put_i64(-1); // producer id
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(records.len() as i32);
    let write = |out: &mut BytesMut| -> Result<()> {
        out.put_slice(&body);
        Ok(())
    };
    match codec {
        Codec::None => out.put_slice(&body),
        Codec::Gzip => Gzip::compress(&mut out, write)?,
        Codec::Snappy => Snappy::compress(&mut out, write)?,
        Codec::Lz4 => Lz4::compress(&mut out, write)?,
        Codec::Zstd => Zstd::compress(&mut out, write)?,
    }
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

/// The send times (Unix ns) carried by the records of one batch, decompressing it if needed.
/// Records without the header are skipped (they were not written by the bench).
pub fn send_times(batch: &[u8], out: &mut Vec<i64>) -> Result<()> {
    if batch.len() < 61 {
        bail!("batch truncated");
    }
    let codec = i16::from_be_bytes([batch[21], batch[22]]) & 0x7;
    let count = i32::from_be_bytes([batch[57], batch[58], batch[59], batch[60]]).max(0);
    let raw = Bytes::copy_from_slice(&batch[61..]);
    let records: Bytes = match codec {
        0 => raw,
        1 => Gzip::decompress(&mut raw.clone(), |b| Ok(b.copy_to_bytes(b.remaining())))?,
        2 => Snappy::decompress(&mut raw.clone(), |b| Ok(b.copy_to_bytes(b.remaining())))?,
        3 => Lz4::decompress(&mut raw.clone(), |b| Ok(b.copy_to_bytes(b.remaining())))?,
        4 => Zstd::decompress(&mut raw.clone(), |b| Ok(b.copy_to_bytes(b.remaining())))?,
        c => bail!("unknown codec {c}"),
    };
    let b = &records[..];
    let mut at = 0;
    for _ in 0..count {
        let len = get_varint(b, &mut at)?;
        let end = at + usize::try_from(len)?;
        if end > b.len() {
            bail!("record truncated");
        }
        at += 1; // attributes
        get_varint(b, &mut at)?; // timestamp delta
        get_varint(b, &mut at)?; // offset delta
        for _ in 0..2 {
            // key, value
            let n = get_varint(b, &mut at)?;
            at += n.max(0) as usize;
        }
        let headers = get_varint(b, &mut at)?;
        for _ in 0..headers {
            let kn = get_varint(b, &mut at)?.max(0) as usize;
            let key = b
                .get(at..at + kn)
                .ok_or_else(|| anyhow!("header truncated"))?;
            at += kn;
            let vn = get_varint(b, &mut at)?;
            let vlen = vn.max(0) as usize;
            let value = b
                .get(at..at + vlen)
                .ok_or_else(|| anyhow!("header truncated"))?;
            at += vlen;
            if key == SEND_TIME_HEADER && vlen == 8 {
                out.push(i64::from_be_bytes(value.try_into().expect("8 bytes")));
            }
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn sample() -> Vec<Rec> {
        (0..50)
            .map(|i| Rec {
                key: (i % 2 == 0).then(|| format!("key-{i}").into_bytes()),
                value_at: i,
                value_len: 10 * i,
                sent_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000,
            })
            .collect()
    }

    #[test]
    fn batches_decode_with_the_reference_codec_for_every_compression() {
        let payload: Vec<u8> = (0..1000).map(|i| b"abcdefgh"[i % 8]).collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let recs = sample();
            let batch = encode_batch(&recs, &payload, codec, 1234).unwrap();
            // Our own header view accepts it, CRC included.
            let view = protocol::record_batch::RecordBatchView::parse(&batch).unwrap();
            view.verify_crc().unwrap();
            assert_eq!(view.size_bytes(), batch.len());
            // And kafka-protocol's decoder reads back every field.
            let set = RecordBatchDecoder::decode(&mut batch.clone()).unwrap();
            assert_eq!(set.records.len(), 50, "{codec:?}");
            for (i, r) in set.records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1234);
                assert_eq!(r.key.as_deref(), recs[i].key.as_deref());
                assert_eq!(r.value.as_deref(), Some(&payload[i..11 * i]));
                let t = r
                    .headers
                    .get(&kafka_protocol::protocol::StrBytes::from_static_str("t"));
                let t = t.unwrap().as_ref().unwrap();
                assert_eq!(
                    i64::from_be_bytes(t[..].try_into().unwrap()),
                    recs[i].sent_ns
                );
            }
            let mut times = Vec::new();
            send_times(&batch, &mut times).unwrap();
            let want: Vec<i64> = recs.iter().map(|r| r.sent_ns).collect();
            assert_eq!(times, want, "{codec:?}");
        }
    }

    #[test]
    fn truncated_or_garbage_batches_are_errors_not_panics() {
        let payload = vec![7u8; 100];
        let batch = encode_batch(&sample()[..5], &payload, Codec::None, 0).unwrap();
        let mut out = Vec::new();
        for cut in [0, 30, 61, 70, batch.len() - 1] {
            let _ = send_times(&batch[..cut], &mut out);
        }
        assert!(send_times(&batch[..30], &mut out).is_err());
        let mut garbage = batch.to_vec();
        for b in &mut garbage[61..] {
            *b = 0xff;
        }
        assert!(send_times(&garbage, &mut out).is_err());
        assert!(encode_batch(&sample(), &payload[..10], Codec::None, 0).is_err());
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at).unwrap(), v);
            assert_eq!(at, b.len());
        }
    }
}
