//! Size-prefixed Kafka frames and the request/response envelopes.
//!
//! Wire layout of a request frame:
//!
//! ```text
//! length: i32 (bytes that follow)
//! request_api_key: i16, request_api_version: i16, correlation_id: i32
//! client_id: nullable string            (header v1 and v2)
//! tagged fields                          (header v2: flexible versions)
//! body                                   (the API's request message)
//! ```
//!
//! A response frame is `length: i32`, `correlation_id: i32`, tagged fields in header v1
//! (flexible versions, except ApiVersions which always answers with header v0), then the body.
//!
//! The frame length is checked against a maximum before any byte of the body is read, so a
//! peer cannot make the broker allocate more than that.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

/// Bytes of the length prefix in front of every frame.
pub const FRAME_PREFIX_BYTES: usize = 4;
/// api key, api version and correlation id: the part of a header every version has.
const HEADER_FIXED_BYTES: usize = 8;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame length {length} is negative")]
    NegativeLength { length: i32 },
    #[error("frame of {length} bytes exceeds the maximum of {max_bytes}")]
    Oversized { length: usize, max_bytes: usize },
    #[error("frame of {length} bytes is shorter than a request header")]
    TooShort { length: usize },
    #[error("unknown api key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("malformed {api_key:?} v{api_version} request header: {reason}")]
    BadHeader {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
    #[error("malformed {api_key:?} v{api_version} request body: {reason}")]
    BadBody {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
    #[error("cannot encode {api_key:?} v{api_version} response: {reason}")]
    Encode {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
}

/// Whether the first four bytes of a connection are a TLS handshake record rather than a
/// Kafka length prefix: content type 22 (handshake), then a record version 3.0 (SSL 3.0)
/// to 3.4. Read as a length they would declare a frame of about 369 MB.
pub fn is_tls_handshake(prefix: [u8; 4]) -> bool {
    prefix[0] == 0x16 && prefix[1] == 0x03 && prefix[2] <= 0x04
}

/// Checks the 4-byte length prefix and returns the frame length.
pub fn frame_length(prefix: [u8; 4], max_bytes: usize) -> Result<usize, FrameError> {
    let length = i32::from_be_bytes(prefix);
    if length < 0 {
        return Err(FrameError::NegativeLength { length });
    }
    let length = length as usize;
    if length > max_bytes {
        return Err(FrameError::Oversized { length, max_bytes });
    }
    if length < HEADER_FIXED_BYTES {
        return Err(FrameError::TooShort { length });
    }
    Ok(length)
}

/// A request whose header is parsed and whose body is still raw bytes (a zero-copy slice
/// of the frame).
#[derive(Debug, Clone)]
pub struct RequestEnvelope {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: Bytes,
}

/// Parses the header of a request frame (without its length prefix).
pub fn parse_request(frame: Bytes) -> Result<RequestEnvelope, FrameError> {
    if frame.len() < HEADER_FIXED_BYTES {
        return Err(FrameError::TooShort {
            length: frame.len(),
        });
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| FrameError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let codec = api_key.valid_versions();
    let known = api_version >= codec.min && api_version <= codec.max;
    // An ApiVersions request of a version we do not know is answered (KIP-511), so its
    // header is read in the oldest form that has a client id: whatever follows is ignored.
    let header_version = if api_key == ApiKey::ApiVersions && !known {
        1
    } else {
        api_key.request_header_version(api_version)
    };
    let mut rest = frame;
    let header =
        guarded(|| RequestHeader::decode(&mut rest, header_version)).map_err(|reason| {
            FrameError::BadHeader {
                api_key,
                api_version,
                reason,
            }
        })?;
    Ok(RequestEnvelope {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|s| s.as_str().to_owned()),
        body: rest,
    })
}

impl RequestEnvelope {
    /// Decodes the body with the `kafka-protocol` codec. The caller has already checked that
    /// the version is one Sluice supports. Records stay as slices of the frame.
    pub fn decode_body(&self) -> Result<RequestKind, FrameError> {
        let mut body = self.body.clone();
        guarded(|| RequestKind::decode(self.api_key, &mut body, self.api_version)).map_err(
            |reason| FrameError::BadBody {
                api_key: self.api_key,
                api_version: self.api_version,
                reason,
            },
        )
    }
}

/// Runs a decoder, turning both its errors and any panic inside it (a slice out of range on
/// hostile input) into a reason string. The `kafka-protocol` codecs report errors as
/// `anyhow::Error`; they are flattened to text here and never leave this crate as anyhow.
fn guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("decoder panicked on malformed input".to_owned()),
    }
}

/// Encodes a whole response frame: length prefix, response header, body.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, FrameError> {
    let encode_err = |e: anyhow::Error| FrameError::Encode {
        api_key,
        api_version,
        reason: e.to_string(),
    };
    // ApiVersions answers with header v0 at every version (KIP-511), so that a client can
    // read the error even when it asked with a version the broker does not know.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(api_version)
    };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(encode_err)?;
    body.encode(&mut buf, api_version).map_err(encode_err)?;
    let length = (buf.len() - FRAME_PREFIX_BYTES) as i32;
    buf[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    #[test]
    fn tls_records_are_told_from_length_prefixes() {
        // A TLS 1.0 record header (what OpenSSL's ClientHello starts with) and TLS 1.2's.
        assert!(is_tls_handshake([0x16, 0x03, 0x01, 0x02]));
        assert!(is_tls_handshake([0x16, 0x03, 0x03, 0x00]));
        assert!(!is_tls_handshake([0x16, 0x03, 0x05, 0x00]));
        assert!(!is_tls_handshake([0x00, 0x00, 0x00, 0x30]));
        assert!(!is_tls_handshake(
            0x1603_0000i32.wrapping_sub(1).to_be_bytes()
        ));
    }

    fn request_frame(api_key: i16, version: i16, header_version: i16, body: &[u8]) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = api_key;
        header.request_api_version = version;
        header.correlation_id = 42;
        header.client_id = Some(kafka_protocol::protocol::StrBytes::from_static_str("t"));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, header_version).unwrap();
        buf.extend_from_slice(body);
        buf.freeze()
    }

    #[test]
    fn frame_length_limits() {
        assert_eq!(frame_length(100i32.to_be_bytes(), 1000).unwrap(), 100);
        assert!(matches!(
            frame_length(1001i32.to_be_bytes(), 1000),
            Err(FrameError::Oversized { length: 1001, .. })
        ));
        assert!(matches!(
            frame_length((-5i32).to_be_bytes(), 1000),
            Err(FrameError::NegativeLength { .. })
        ));
        assert!(matches!(
            frame_length(3i32.to_be_bytes(), 1000),
            Err(FrameError::TooShort { .. })
        ));
    }

    #[test]
    fn parses_flexible_header_and_body() {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = kafka_protocol::protocol::StrBytes::from_static_str("x");
        let mut body = BytesMut::new();
        req.encode(&mut body, 3).unwrap();
        let env = parse_request(request_frame(18, 3, 2, &body)).unwrap();
        assert_eq!(env.api_key, ApiKey::ApiVersions);
        assert_eq!(env.correlation_id, 42);
        assert_eq!(env.client_id.as_deref(), Some("t"));
        match env.decode_body().unwrap() {
            RequestKind::ApiVersions(r) => assert_eq!(r.client_software_name.as_str(), "x"),
            other => panic!("wrong kind {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_key_and_garbage_body() {
        let frame = request_frame(0, 3, 1, &[]);
        let mut raw = frame.to_vec();
        raw[0..2].copy_from_slice(&9999i16.to_be_bytes());
        assert!(matches!(
            parse_request(Bytes::from(raw)),
            Err(FrameError::UnknownApiKey { api_key: 9999, .. })
        ));
        // A Metadata v1 body claiming 2^31-1 topics with nothing behind it.
        let env = parse_request(request_frame(3, 1, 1, &[0x7f, 0xff, 0xff, 0xff])).unwrap();
        assert!(matches!(env.decode_body(), Err(FrameError::BadBody { .. })));
    }
}
