//! JSON body shaping for transforms ([`portico_shared::shape`]: RFC 9535
//! JSONPath `allow`, `deny`, `rename`), with bounded cost.
//!
//! A body is read only up to the transform's `max_body_bytes` (compressed
//! and decompressed alike). A response is shaped when it is a `2xx` other
//! than `204`/`206` to a request other than `HEAD`, its `Content-Type` is
//! JSON (`application/json` or `+json`), its encoding is identity, `gzip`,
//! `deflate` or `br`, and `Cache-Control` does not say `no-transform`.
//! Anything else — and a body over the limit or that does not parse — goes
//! to the client untouched, byte for byte (what was read is replayed before
//! the rest), and `portico_transform_skipped_total{route, reason}` counts
//! it. A shaped body is sent as identity with its new `Content-Length`; a
//! strong `ETag` becomes weak (same upstream representation, same shaped
//! bytes) and `Accept-Ranges` goes (ranges of the upstream body no longer
//! apply). A request body is shaped under the same rules except that what
//! cannot be shaped is refused rather than passed on, since the transform may
//! exist to keep fields from the upstream: over the limit `413`, an encoded
//! body `415`, JSON that does not parse `400`; non-JSON and empty bodies pass.
//!
//! Decompression uses flate2 and brotli-decompressor rather than a tower
//! layer: the body is bounded and whole here, not a stream.

use std::collections::VecDeque;
use std::io::Read;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame};
use portico_shared::model::policy::transform::{RequestTransformPolicy, ResponseTransformPolicy};
use portico_shared::shape::JsonShape;

use crate::backend::proxy::ClientBody;
use crate::body::ResponseBody;
use crate::error::ProxyError;

/// A compiled JSON body transform.
#[derive(Debug)]
pub struct BodyShaper {
    shape: JsonShape,
    limit: usize,
}

/// Why a response body went to the client untouched (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    NotJson,
    NoTransform,
    Encoding,
    TooLarge,
    InvalidJson,
    Trailers,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::NoTransform => "no_transform",
            Self::Encoding => "encoding",
            Self::TooLarge => "too_large",
            Self::InvalidJson => "invalid_json",
            Self::Trailers => "trailers",
        }
    }
}

/// The content codings the shaper can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

fn coding(headers: &HeaderMap) -> Option<Coding> {
    let mut codings = headers.get_all(header::CONTENT_ENCODING).iter();
    let Some(value) = codings.next() else { return Some(Coding::Identity) };
    if codings.next().is_some() {
        return None;
    }
    match value.to_str().ok()?.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Some(Coding::Identity),
        "gzip" | "x-gzip" => Some(Coding::Gzip),
        "deflate" => Some(Coding::Deflate),
        "br" => Some(Coding::Brotli),
        _ => None,
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn no_transform(headers: &HeaderMap) -> bool {
    crate::proxy::headers::lists_token(headers, header::CACHE_CONTROL, "no-transform")
}

/// Readies a request whose response a body transform will shape, so that
/// the upstream answers in a form the shaper reads: without `Range` and
/// `If-Range` (a `206` is never shaped, so `Range: bytes=0-` would fetch the
/// whole body unshaped, fields a `deny` removes included), and with
/// `Accept-Encoding` cut to the codings [`decode`] reads (else `zstd` or any
/// coding it cannot read would pass the body through untouched); when none
/// is left, `identity` (no `Accept-Encoding` at all means any coding).
pub fn ask_for_shapeable(headers: &mut HeaderMap) {
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    let readable: Vec<&str> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|item| {
            let coding = item.split(';').next().unwrap_or("").trim();
            ["identity", "gzip", "x-gzip", "deflate", "br"].iter().any(|known| known.eq_ignore_ascii_case(coding))
        })
        .collect();
    let identity = HeaderValue::from_static("identity");
    let value = if readable.is_empty() { identity } else { HeaderValue::from_str(&readable.join(", ")).unwrap_or(identity) };
    headers.insert(header::ACCEPT_ENCODING, value);
}

/// Decodes `bytes` in `coding`, refusing more than `limit` decoded bytes.
fn decode(coding: Coding, bytes: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let read = match coding {
        Coding::Identity => return (bytes.len() <= limit).then(|| bytes.to_vec()),
        Coding::Gzip => flate2::read::MultiGzDecoder::new(bytes).take(cap).read_to_end(&mut out),
        // RFC 9110 `deflate` is zlib; some servers send raw deflate.
        Coding::Deflate => flate2::read::ZlibDecoder::new(bytes).take(cap).read_to_end(&mut out).or_else(|_| {
            out.clear();
            flate2::read::DeflateDecoder::new(bytes).take(cap).read_to_end(&mut out)
        }),
        Coding::Brotli => brotli_decompressor::Decompressor::new(bytes, 4096).take(cap).read_to_end(&mut out),
    };
    read.ok().filter(|_| out.len() <= limit).map(|_| out)
}

impl BodyShaper {
    /// Default `max_body_bytes` of a transform.
    pub const DEFAULT_LIMIT: u64 = 1 << 20;

    fn new(ops: Option<&portico_shared::shape::JsonOps>, max_body_bytes: Option<u64>) -> Result<Option<Self>, String> {
        let Some(ops) = ops else { return Ok(None) };
        let shape = JsonShape::compile(ops).map_err(|e| format!("body.{}: {}", e.field(), e.message()))?;
        let limit = usize::try_from(max_body_bytes.unwrap_or(Self::DEFAULT_LIMIT)).unwrap_or(usize::MAX);
        Ok(Some(Self { shape, limit }))
    }

    pub fn compile(policy: &ResponseTransformPolicy) -> Result<Option<Self>, String> {
        Self::new(policy.body.as_ref(), policy.max_body_bytes)
    }

    pub fn compile_request(policy: &RequestTransformPolicy) -> Result<Option<Self>, String> {
        Self::new(policy.body.as_ref(), policy.max_body_bytes)
    }

    fn shape_bytes(&self, json: &[u8]) -> Option<Bytes> {
        let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
        self.shape.apply(&mut value);
        serde_json::to_vec(&value).ok().map(Bytes::from)
    }

    /// Shapes a response (see the module doc for which ones), or returns
    /// it untouched with the reason. An upstream body that fails while
    /// being read is the upstream's `502`: nothing was sent yet.
    pub async fn response(
        &self,
        response: Response<ResponseBody>,
        head_request: bool,
        upstream: &str,
    ) -> Result<(Response<ResponseBody>, Option<Skipped>), ProxyError> {
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            // Revalidating a shaped body: its validator is the weak one sent with it.
            let mut response = response;
            weaken_etag(response.headers_mut());
            return Ok((response, None));
        }
        if !status.is_success() || status == StatusCode::NO_CONTENT || status == StatusCode::PARTIAL_CONTENT {
            return Ok((response, None));
        }
        let headers = response.headers();
        let coding = coding(headers);
        let skip = if !is_json(headers) {
            Some(Skipped::NotJson)
        } else if no_transform(headers) {
            Some(Skipped::NoTransform)
        } else if coding.is_none() {
            Some(Skipped::Encoding)
        } else if response.body().size_hint().lower() > self.limit as u64 {
            Some(Skipped::TooLarge)
        } else {
            None
        };
        if skip.is_some() {
            return Ok((response, skip));
        }
        if head_request {
            // As a GET's shaped answer would be, less the length it cannot know.
            let mut response = response;
            shaped_headers(response.headers_mut(), None);
            return Ok((response, None));
        }
        let coding = coding.unwrap_or(Coding::Identity);
        let (mut parts, mut body) = response.into_parts();
        let mut frames = VecDeque::new();
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ProxyError::UpstreamUnavailable { upstream: upstream.to_owned(), reason: e.to_string() })?;
            let is_data = frame.is_data();
            read += frame.data_ref().map_or(0, Bytes::len);
            frames.push_back(frame);
            if read > self.limit || !is_data {
                let reason = if is_data { Skipped::TooLarge } else { Skipped::Trailers };
                return Ok((Response::from_parts(parts, ResponseBody::replay(frames, Some(body))), Some(reason)));
            }
        }
        let mut whole = Vec::with_capacity(read);
        frames.iter().filter_map(Frame::data_ref).for_each(|data| whole.extend_from_slice(data));
        let shaped = match decode(coding, &whole, self.limit) {
            None => Err(Skipped::TooLarge),
            Some(json) => self.shape_bytes(&json).ok_or(Skipped::InvalidJson),
        };
        match shaped {
            Err(reason) => Ok((Response::from_parts(parts, ResponseBody::replay(frames, None)), Some(reason))),
            Ok(shaped) => {
                shaped_headers(&mut parts.headers, Some(shaped.len()));
                Ok((Response::from_parts(parts, ResponseBody::Local(Full::new(shaped))), None))
            }
        }
    }

    /// Shapes a JSON request body; other bodies pass as they stream. At
    /// most `route_limit` bytes (the route's own body limit) are read when
    /// that is below the transform's, since a kept body is not limited again.
    pub async fn request(
        &self,
        headers: &mut HeaderMap,
        body: crate::body::RequestBody,
        route_limit: u64,
    ) -> Result<ClientBody, ProxyError> {
        if headers.get_all(header::CONTENT_TYPE).iter().nth(1).is_some() {
            // Two types: the gateway and the upstream might each read another.
            return Err(ProxyError::BadRequest("the request has two Content-Type headers"));
        }
        if !is_json(headers) {
            return Ok(ClientBody::Stream(body));
        }
        if coding(headers) != Some(Coding::Identity) {
            return Err(ProxyError::UntransformableBody("this route reshapes JSON request bodies, which must not be content-encoded"));
        }
        let limit = (self.limit as u64).min(route_limit);
        let collected = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect().await.map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ProxyError::BodyTooLarge { limit }
            } else {
                ProxyError::BadRequest("the request body could not be read")
            }
        })?;
        let collected = collected.to_bytes();
        if collected.is_empty() {
            // No body (a GET or DELETE labelled JSON by its client): nothing to shape.
            return Ok(ClientBody::Whole(collected));
        }
        let shaped = self.shape_bytes(&collected).ok_or(ProxyError::BadRequest("the request body is not valid JSON"))?;
        shaped_headers(headers, Some(shaped.len()));
        Ok(ClientBody::Whole(shaped))
    }
}

/// The headers of a shaped body: identity coding, its length, no strong
/// validator, no ranges.
fn shaped_headers(headers: &mut HeaderMap, length: Option<usize>) {
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::ACCEPT_RANGES);
    headers.remove("content-md5");
    match length {
        Some(length) => headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length)),
        None => headers.remove(header::CONTENT_LENGTH),
    };
    weaken_etag(headers);
}

/// Makes a strong `ETag` weak (`"v1"` → `W/"v1"`).
fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG)
        && etag.as_bytes().starts_with(b"\"")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        match HeaderValue::from_bytes(&weak) {
            Ok(weak) => headers.insert(header::ETAG, weak),
            Err(_) => headers.remove(header::ETAG),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn decodes_each_coding_within_the_limit() {
        let json = br#"{"a":1}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json).unwrap();
        assert_eq!(decode(Coding::Gzip, &gz.finish().unwrap(), 100).unwrap(), json);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(json).unwrap();
        assert_eq!(decode(Coding::Deflate, &zlib.finish().unwrap(), 100).unwrap(), json);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(json).unwrap();
        assert_eq!(decode(Coding::Deflate, &raw.finish().unwrap(), 100).unwrap(), json, "raw deflate too");
        // `brotli.compress(b'{"a":1}')`, made once with Python's brotli (no Rust brotli encoder is a dependency).
        let br = [11, 3, 128, 123, 34, 97, 34, 58, 49, 125, 3];
        assert_eq!(decode(Coding::Brotli, &br, 100).unwrap(), json);
        assert!(decode(Coding::Identity, json, 3).is_none());
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 10 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        assert!(decode(Coding::Gzip, &bomb, 1 << 20).is_none());
    }

    #[test]
    fn codings_and_types_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json; charset=utf-8"));
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(!is_json(&headers));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert_eq!(coding(&headers), Some(Coding::Gzip));
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(coding(&headers), None, "two codings are not read");
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, No-Transform"));
        assert!(no_transform(&headers));
    }

    #[test]
    fn a_shaped_request_asks_for_the_whole_body_in_a_readable_coding() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-"));
        headers.insert(header::IF_RANGE, HeaderValue::from_static("\"v1\""));
        headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd, GZIP;q=0.8"));
        headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br, compress"));
        ask_for_shapeable(&mut headers);
        assert!(headers.get(header::RANGE).is_none() && headers.get(header::IF_RANGE).is_none(), "a 206 would pass unshaped");
        let accepted: Vec<_> = headers.get_all(header::ACCEPT_ENCODING).iter().collect();
        assert_eq!(accepted, ["GZIP;q=0.8, br"]);
        for unreadable in [Some("zstd"), Some("*"), None] {
            let mut headers = HeaderMap::new();
            if let Some(coding) = unreadable {
                headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(coding));
            }
            ask_for_shapeable(&mut headers);
            assert_eq!(headers[header::ACCEPT_ENCODING], "identity", "{unreadable:?}");
        }
    }

    #[tokio::test]
    async fn a_not_modified_answer_carries_the_weak_etag_the_shaped_body_had() {
        let shaper = BodyShaper::new(Some(&serde_json::from_value(serde_json::json!({"deny": ["$.x"]})).unwrap()), None).unwrap().unwrap();
        let mut response = Response::new(ResponseBody::Local(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let (response, skipped) = shaper.response(response, false, "up").await.unwrap();
        assert_eq!(skipped, None);
        assert_eq!(response.headers()[header::ETAG], "W/\"v1\"");
    }

    #[test]
    fn shaped_headers_weaken_strong_etags_and_fix_the_length() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        shaped_headers(&mut headers, Some(12));
        assert_eq!(headers[header::ETAG], "W/\"v1\"");
        assert_eq!(headers[header::CONTENT_LENGTH], "12");
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
    }
}
