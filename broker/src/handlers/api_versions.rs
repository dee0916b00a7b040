//! ApiVersions (key 18): the supported version ranges.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use crate::api::{RequestContext, SUPPORTED_APIS};

fn ranges() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|r| {
            let mut v = ApiVersion::default();
            v.api_key = r.key as i16;
            v.min_version = r.min;
            v.max_version = r.max;
            v
        })
        .collect()
}

pub fn handle(_ctx: &RequestContext, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    // Feature fields stay at their defaults so that they are not encoded at all: old
    // librdkafka (2.0.x) cannot parse a v3 response that carries them.
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = ranges();
    resp
}

/// The v0 answer to an ApiVersions request of a version we do not know.
pub fn unsupported() -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.error_code = ResponseError::UnsupportedVersion.code();
    resp.api_keys = ranges();
    resp
}
