//! Bounded decompression of a batch's records.
//!
//! A compressed RecordBatch is small on the wire but may claim any size once inflated: a
//! 36 KB zstd batch can hold a 1 GiB record. Every decompression here is a stream that stops
//! as soon as the output would pass a caller-given bound, so a hostile batch costs at most
//! that bound in memory and the CPU to produce it — never the size it claims.
//!
//! Codecs, as Kafka writes them in RecordBatch v2 (attributes bits 0-2):
//! - 1 gzip: RFC 1952 members (several concatenated members are read as one stream, as
//!   Java's `GZIPInputStream` does);
//! - 2 snappy: xerial's framing (`\x82SNAPPY\0`, version, compatible version, then blocks of
//!   `u32` big-endian compressed length + raw snappy block), or one raw snappy block when the
//!   magic is absent (Java's fallback);
//! - 3 lz4: the LZ4 frame format;
//! - 4 zstd: zstd frames.

use std::io::Read;

use thiserror::Error;

use crate::record_batch::{Compression, RecordBatchView, BATCH_HEADER_BYTES};

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    #[error("records decompress to more than {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    #[error("cannot decompress {codec:?} records: {reason}")]
    Corrupt { codec: Compression, reason: String },
}

const SNAPPY_XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic, version and compatible version.
const SNAPPY_XERIAL_HEADER_BYTES: usize = 16;
/// Version 1, compatible version 1, big-endian.
const SNAPPY_XERIAL_VERSIONS: [u8; 8] = [0, 0, 0, 1, 0, 0, 0, 1];

/// The records section of `batch` (the bytes after the 61-byte header), decompressed when the
/// batch is compressed, refusing anything that inflates past `max_bytes`.
pub fn records_bytes<'a>(
    batch: &RecordBatchView<'a>,
    max_bytes: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, DecompressError> {
    let body = &batch.as_bytes()[BATCH_HEADER_BYTES..];
    match batch.compression() {
        Compression::None => Ok(std::borrow::Cow::Borrowed(body)),
        codec => decompress(codec, body, max_bytes).map(std::borrow::Cow::Owned),
    }
}

/// Decompresses `input` written with `codec`, refusing output larger than `max_bytes`.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |e: &dyn std::fmt::Display| DecompressError::Corrupt {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => {
            if input.len() > max_bytes {
                return Err(DecompressError::TooLarge { max_bytes });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), max_bytes)
            .map_err(|e| e.or_corrupt(codec)),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(input).map_err(|e| corrupt(&e))?;
            read_bounded(decoder, max_bytes).map_err(|e| e.or_corrupt(codec))
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(input).map_err(|e| corrupt(&e))?;
            read_bounded(decoder, max_bytes).map_err(|e| e.or_corrupt(codec))
        }
        Compression::Snappy => snappy(input, max_bytes),
        Compression::Unknown(id) => Err(DecompressError::UnknownCodec(id)),
    }
}

/// Why a bounded read stopped.
enum ReadStop {
    TooLarge(usize),
    Io(std::io::Error),
}

impl ReadStop {
    fn or_corrupt(self, codec: Compression) -> DecompressError {
        match self {
            ReadStop::TooLarge(max_bytes) => DecompressError::TooLarge { max_bytes },
            ReadStop::Io(e) => DecompressError::Corrupt {
                codec,
                reason: e.to_string(),
            },
        }
    }
}

/// Reads `reader` to its end, stopping with an error one byte past `max_bytes`.
fn read_bounded(reader: impl Read, max_bytes: usize) -> Result<Vec<u8>, ReadStop> {
    let mut out = Vec::new();
    let limit = (max_bytes as u64).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(ReadStop::Io)?;
    if out.len() > max_bytes {
        return Err(ReadStop::TooLarge(max_bytes));
    }
    Ok(out)
}

/// Snappy as Kafka's clients write it; each block's decompressed size is read from its
/// header before anything is allocated for it.
fn snappy(input: &[u8], max_bytes: usize) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |reason: String| DecompressError::Corrupt {
        codec: Compression::Snappy,
        reason,
    };
    let mut out = Vec::new();
    let block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), DecompressError> {
        let len = snap::raw::decompress_len(raw).map_err(|e| corrupt(e.to_string()))?;
        if out.len().saturating_add(len) > max_bytes {
            return Err(DecompressError::TooLarge { max_bytes });
        }
        let at = out.len();
        out.resize(at + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(raw, &mut out[at..])
            .map_err(|e| corrupt(e.to_string()))?;
        out.truncate(at + n);
        Ok(())
    };
    if input.len() < 8 || &input[..8] != SNAPPY_XERIAL_MAGIC {
        block(input, &mut out)?;
        return Ok(out);
    }
    // The readers of Kafka's snappy (kafka-protocol, xerial) want version 1 and compatible
    // version 1 after the magic; anything else would be stored and then unreadable.
    if input.len() < SNAPPY_XERIAL_HEADER_BYTES
        || input[8..SNAPPY_XERIAL_HEADER_BYTES] != SNAPPY_XERIAL_VERSIONS
    {
        return Err(corrupt("xerial header with an unknown version".into()));
    }
    let mut rest = &input[SNAPPY_XERIAL_HEADER_BYTES..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("truncated xerial block length".into()));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if len > rest.len() {
            return Err(corrupt(format!(
                "xerial block of {len} bytes with {} left",
                rest.len()
            )));
        }
        block(&rest[..len], &mut out)?;
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd_of(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn lz4_of(data: &[u8]) -> Vec<u8> {
        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        let (out, r) = e.finish();
        r.unwrap();
        out
    }

    fn snappy_xerial(data: &[u8]) -> Vec<u8> {
        let mut out = SNAPPY_XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        for chunk in data.chunks(32 << 10) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn every_codec_round_trips_within_the_bound() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let cases = [
            (Compression::Gzip, gzip(&data)),
            (Compression::Zstd, zstd_of(&data)),
            (Compression::Lz4, lz4_of(&data)),
            (Compression::Snappy, snappy_xerial(&data)),
            (
                Compression::Snappy,
                snap::raw::Encoder::new().compress_vec(&data).unwrap(),
            ),
        ];
        for (codec, compressed) in cases {
            assert_eq!(
                decompress(codec, &compressed, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
            assert_eq!(
                decompress(codec, &compressed, data.len() - 1),
                Err(DecompressError::TooLarge {
                    max_bytes: data.len() - 1
                }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_bound() {
        // 64 MiB of zeros compress to a few KB; the bound stops it after 1 MiB of output.
        let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 1).unwrap();
        assert!(bomb.len() < 100_000);
        assert_eq!(
            decompress(Compression::Zstd, &bomb, 1 << 20),
            Err(DecompressError::TooLarge { max_bytes: 1 << 20 })
        );
    }

    #[test]
    fn garbage_and_wrong_codecs_are_errors() {
        let plain = b"definitely not compressed at all".to_vec();
        for codec in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            assert!(
                matches!(
                    decompress(codec, &plain, 1 << 20),
                    Err(DecompressError::Corrupt { .. })
                ),
                "{codec:?}"
            );
        }
        assert_eq!(
            decompress(Compression::Unknown(6), &plain, 1 << 20),
            Err(DecompressError::UnknownCodec(6))
        );
        let mut other_version = snappy_xerial(&[7u8; 1000]);
        other_version[11] = 2;
        assert!(matches!(
            decompress(Compression::Snappy, &other_version, 1 << 20),
            Err(DecompressError::Corrupt { .. })
        ));
        let mut truncated = snappy_xerial(&[7u8; 100_000]);
        truncated.truncate(truncated.len() - 3);
        assert!(decompress(Compression::Snappy, &truncated, 1 << 20).is_err());
    }
}
