//! A minimal blocking Kafka client connection over any `Read + Write` stream, for Sluice's
//! tools (the `sluice` CLI, `sluice-bench`): one request at a time, request header v1/v2 and
//! the `kafka-protocol` codecs. Callers open the stream (this crate opens no sockets).

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
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header.encode(&mut buf, R::header_version(version))?;
        req.encode(&mut buf, version)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).context("sending request")?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("reading response length")?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > RESPONSE_MAX_BYTES {
            bail!("response frame of {len} bytes refused");
        }
        let mut body = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut body)
            .context("reading response")?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )?;
        if header.correlation_id != self.correlation {
            bail!(
                "response correlation id {} for request {}",
                header.correlation_id,
                self.correlation
            );
        }
        R::Response::decode(&mut body, version)
    }
}
