//! A minimal blocking Kafka client connection over any `Read + Write` stream, for Sluice's
//! tools (the `sluice` CLI, `sluice-bench`): one request at a time, request header v1/v2 and
//! the `kafka-protocol` codecs. [`cluster`] opens TCP connections to a cluster's brokers and
//! coordinators and [`member`] is a consumer group's member: the tools' one exception to this
//! crate's no-sockets rule (the broker never uses either).

pub mod cluster;
pub mod member;

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Largest response frame a tool accepts.
pub const RESPONSE_MAX_BYTES: usize = 256 << 20;

pub struct Connection<S> {
    stream: S,
    correlation: i32,
    client_id: StrBytes,
}

impl<S: Read + Write> Connection<S> {
    pub fn new(stream: S, client_id: &str) -> Connection<S> {
        Connection {
            stream,
            correlation: 0,
            client_id: StrBytes::from_string(client_id.to_owned()),
        }
    }

    /// Sends `req` as version `version` and reads its response.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        let buf = encode_request(req, version, self.correlation, &self.client_id)?;
        self.stream.write_all(&buf).context("sending request")?;
        let body = read_frame(&mut self.stream)?;
        decode_response::<R>(body, version, self.correlation)
    }
}

/// `req` as one size-prefixed request frame (header v1/v2 as the API version needs).
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
    client_id: &StrBytes,
) -> Result<BytesMut> {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation;
    header.client_id = Some(client_id.clone());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header.encode(&mut buf, R::header_version(version))?;
    req.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Reads one size-prefixed response frame (at most [`RESPONSE_MAX_BYTES`]) and returns its
/// body.
pub fn read_frame(stream: &mut impl Read) -> Result<Bytes> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .context("reading response length")?;
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > RESPONSE_MAX_BYTES {
        bail!("response frame of {len} bytes refused");
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).context("reading response")?;
    Ok(Bytes::from(body))
}

/// Decodes a response frame's body as `R`'s response of `version`, checking that it answers
/// request `correlation`.
pub fn decode_response<R: Request>(
    mut body: Bytes,
    version: i16,
    correlation: i32,
) -> Result<R::Response> {
    let header = ResponseHeader::decode(
        &mut body,
        <R::Response as HeaderVersion>::header_version(version),
    )?;
    if header.correlation_id != correlation {
        bail!(
            "response correlation id {} for request {correlation}",
            header.correlation_id
        );
    }
    R::Response::decode(&mut body, version)
}
