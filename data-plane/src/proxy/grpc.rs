//! gRPC clients on routes whose service speaks gRPC: passthrough of native
//! gRPC (HTTP/2, trailers), and gRPC-Web translated to it.
//!
//! A request's content type tells the client ([`GrpcClient::of`]); only
//! routes on `grpc`/`grpcs` services look, so plain routes pay nothing.
//! The client's `grpc-timeout` caps the wait for the upstream's answer
//! ([`timeout`]). The response body is wrapped ([`GrpcBody`]) to read the
//! call's `grpc-status` from the trailers, for passive health, the circuit
//! breaker ([`GrpcCall`]) and `portico_grpc_requests_total`.
//!
//! gRPC-Web (`application/grpc-web[+proto]`, binary, and
//! `application/grpc-web-text[+proto]`, base64) goes upstream as
//! `application/grpc` over HTTP/2: a text body is decoded (read whole:
//! gRPC-Web has no client streaming, and this way base64 groups split
//! across chunks, or padded chunks joined, need no care). The answer keeps
//! the request's content type; its messages pass as they come, and the
//! trailers become a last message flagged `0x80` holding
//! `name: value\r\n` lines, so HTTP/1.1 clients get them; in text mode the
//! output is base64, encoded in whole 3-byte groups as it streams.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

use crate::backend::proxy::{ClientBody, GrpcCall};
use crate::body::{BoxError, RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::upstream::grpc::{self, code};

/// How a client speaks gRPC, from its request's content type.
#[derive(Debug, Clone)]
pub struct GrpcClient {
    /// The request's, which the response carries too.
    content_type: HeaderValue,
    web: Option<Web>,
}

/// gRPC-Web's two encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Web {
    Binary,
    Text,
}

impl GrpcClient {
    /// The client of a request with these headers, when it speaks gRPC or gRPC-Web.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?;
        let web = if grpc::is_grpc_content_type(content_type) {
            None
        } else {
            let value = content_type.to_str().ok()?.to_ascii_lowercase();
            let essence = value.split(';').next().unwrap_or("").trim();
            match essence {
                "application/grpc-web" | "application/grpc-web+proto" => Some(Web::Binary),
                "application/grpc-web-text" | "application/grpc-web-text+proto" => Some(Web::Text),
                _ => return None,
            }
        };
        Some(Self { content_type: content_type.clone(), web })
    }

    /// The content type of the answers this client gets.
    pub fn content_type(&self) -> &HeaderValue {
        &self.content_type
    }

    /// Readies a gRPC-Web request for a gRPC upstream: `application/grpc`,
    /// a text body decoded (read whole, at most `max_body` bytes).
    pub async fn upstream_request(&self, headers: &mut HeaderMap, body: RequestBody, max_body: u64) -> Result<ClientBody, ProxyError> {
        let Some(web) = self.web else { return Ok(ClientBody::Stream(body)) };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        if web == Web::Binary {
            return Ok(ClientBody::Stream(body));
        }
        headers.remove(header::CONTENT_LENGTH);
        let limit = usize::try_from(max_body.saturating_mul(4).div_ceil(3)).unwrap_or(usize::MAX);
        let text = crate::backend::proxy::collect_limited(body, limit, max_body).await?;
        let decoded = decode_text(&text).ok_or(ProxyError::BadRequest("the grpc-web-text body is not base64"))?;
        Ok(ClientBody::Whole(decoded))
    }
}

/// Decodes a gRPC-Web text body: base64, possibly several padded runs one after another.
fn decode_text(text: &[u8]) -> Option<Bytes> {
    let text: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut decoded = Vec::with_capacity(text.len() / 4 * 3);
    let mut rest = text.as_slice();
    while !rest.is_empty() {
        // A run ends after its padding (or at the end).
        let end = match rest.iter().position(|b| *b == b'=') {
            Some(first_pad) => first_pad + rest[first_pad..].iter().take_while(|b| **b == b'=').count(),
            None => rest.len(),
        };
        STANDARD.decode_vec(&rest[..end], &mut decoded).ok()?;
        rest = &rest[end..];
    }
    Some(Bytes::from(decoded))
}

/// The client's `grpc-timeout` (`1-8 digits` and a unit: `H`, `M`, `S`,
/// `m`, `u`, `n`), which caps the wait for the upstream's answer.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(amount * 3600),
        b"M" => Duration::from_secs(amount * 60),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `method` label of a request to `path`: `pkg.Service/Method` when
/// the path has that shape, else `other` (so clients cannot grow the label set at will).
pub fn method_label(path: &str) -> &str {
    let Some((service, method)) = path.strip_prefix('/').and_then(|rest| rest.split_once('/')) else { return "other" };
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if word(service) && service.contains('.') && word(method) && !method.contains('.') { &path[1..] } else { "other" }
}

/// Counts one call for `portico_grpc_requests_total`.
#[derive(Debug)]
pub struct CallMetric {
    route: Arc<str>,
    method: String,
}

impl CallMetric {
    pub fn new(route: Arc<str>, path: &str) -> Self {
        Self { route, method: method_label(path).to_owned() }
    }

    /// The call ended with `code` (a method the upstream did not know counts under `other`).
    fn record(self, code: u32) {
        let method = if code == code::UNIMPLEMENTED { "other".to_owned() } else { self.method };
        crate::metrics::grpc_call(self.route, method, grpc::code_name(code));
    }
}

/// Readies the answer to a request on a route whose service speaks gRPC:
/// the body watched for the call's `grpc-status` (recorded now when the
/// headers hold it: a trailers-only answer, or one of the gateway's
/// errors), and for a gRPC-Web client, re-framed.
pub fn respond(mut response: Response<ResponseBody>, client: Option<&GrpcClient>, metric: CallMetric) -> Response<ResponseBody> {
    let call = response.extensions_mut().remove::<GrpcCall>();
    let web = client.and_then(|c| c.web).filter(|_| response.status() == StatusCode::OK);
    if let Some(client) = client.filter(|_| web.is_some()) {
        response.headers_mut().insert(header::CONTENT_TYPE, client.content_type.clone());
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let known = match grpc::status_of(response.headers()) {
        Some(code) => Some(code),
        // Not a gRPC answer (it passes as is): gRPC's mapping of its status.
        None if !response.status().is_success() || !response.headers().get(header::CONTENT_TYPE).is_some_and(is_grpc_answer) => {
            Some(http_status_code(response.status()))
        }
        None => None,
    };
    let metric = match known {
        Some(code) => {
            metric.record(code);
            None
        }
        None => Some(metric),
    };
    if call.is_none() && metric.is_none() && web.is_none() {
        return response;
    }
    response.map(|inner| ResponseBody::Grpc(Box::new(GrpcBody { inner, call, metric, web: web.map(WebFraming::new), ended: false })))
}

/// A content type of a gRPC or gRPC-Web answer.
fn is_grpc_answer(content_type: &HeaderValue) -> bool {
    content_type.as_bytes().len() >= 16 && content_type.as_bytes()[..16].eq_ignore_ascii_case(b"application/grpc")
}

/// The gRPC status of a non-gRPC answer (gRPC's "HTTP to gRPC status code mapping").
fn http_status_code(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// A gRPC answer's body on its way to the client, watched for its end.
#[derive(Debug)]
pub struct GrpcBody {
    inner: ResponseBody,
    call: Option<GrpcCall>,
    metric: Option<CallMetric>,
    web: Option<WebFraming>,
    ended: bool,
}

impl GrpcBody {
    /// The call ended, with `trailers` when it ended well.
    fn end(&mut self, trailers: Option<&HeaderMap>) {
        if let Some(call) = self.call.take() {
            call.ended(trailers);
        }
        if let Some(metric) = self.metric.take() {
            metric.record(trailers.and_then(grpc::status_of).unwrap_or(code::UNKNOWN));
        }
    }
}

impl Drop for GrpcBody {
    /// A body dropped before its end: the client went away (`CANCELLED`
    /// in the metrics; not the target's doing, so not recorded for it).
    fn drop(&mut self) {
        if let Some(metric) = self.metric.take() {
            metric.record(code::CANCELLED);
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        match frame {
            Some(Ok(frame)) => match frame.into_trailers() {
                Ok(trailers) => {
                    this.end(Some(&trailers));
                    Poll::Ready(Some(Ok(match &mut this.web {
                        Some(web) => {
                            this.ended = true;
                            Frame::data(web.trailers(&trailers))
                        }
                        None => Frame::trailers(trailers),
                    })))
                }
                Err(frame) => Poll::Ready(Some(Ok(match (&mut this.web, frame.into_data()) {
                    (Some(web), Ok(data)) => Frame::data(web.data(data)),
                    (None, Ok(data)) => Frame::data(data),
                    (_, Err(other)) => other,
                }))),
            },
            Some(Err(error)) => {
                this.end(None);
                Poll::Ready(Some(Err(error)))
            }
            None => {
                this.end(None);
                this.ended = true;
                match this.web.as_mut().map(WebFraming::finish).filter(|rest| !rest.is_empty()) {
                    Some(rest) => Poll::Ready(Some(Ok(Frame::data(rest)))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.web.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.web.is_some() { SizeHint::default() } else { self.inner.size_hint() }
    }
}

/// gRPC-Web output: messages as they are (base64 in text mode), the trailers as a last message.
#[derive(Debug)]
struct WebFraming {
    text: bool,
    /// Text mode: bytes short of a 3-byte group, encoded with the next ones.
    carry: BytesMut,
}

impl WebFraming {
    fn new(web: Web) -> Self {
        Self { text: web == Web::Text, carry: BytesMut::new() }
    }

    fn data(&mut self, data: Bytes) -> Bytes {
        if !self.text {
            return data;
        }
        self.carry.extend_from_slice(&data);
        let whole = self.carry.len() / 3 * 3;
        let groups = self.carry.split_to(whole);
        Bytes::from(STANDARD.encode(groups))
    }

    /// The trailers frame: flag `0x80`, length, `name: value\r\n` lines.
    fn trailers(&mut self, trailers: &HeaderMap) -> Bytes {
        let mut block = BytesMut::new();
        for (name, value) in trailers {
            block.put_slice(name.as_str().as_bytes());
            block.put_slice(b": ");
            block.put_slice(value.as_bytes());
            block.put_slice(b"\r\n");
        }
        let mut message = BytesMut::with_capacity(5 + block.len());
        message.put_u8(0x80);
        message.put_u32(u32::try_from(block.len()).unwrap_or(u32::MAX));
        message.put_slice(&block);
        let mut out = self.data(message.freeze()).to_vec();
        out.extend_from_slice(&self.finish());
        Bytes::from(out)
    }

    /// What is left (text mode: the last bytes, padded).
    fn finish(&mut self) -> Bytes {
        if self.carry.is_empty() {
            return Bytes::new();
        }
        Bytes::from(STANDARD.encode(self.carry.split()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_with_their_units() {
        let of = |v: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_static(v));
            timeout(&headers)
        };
        assert_eq!(of("300m"), Some(Duration::from_millis(300)));
        assert_eq!(of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(of("5u"), Some(Duration::from_micros(5)));
        assert_eq!(of("123456789m"), None, "at most 8 digits");
        assert_eq!(of("m"), None);
        assert_eq!(of("10x"), None);
    }

    #[test]
    fn method_labels_come_only_from_grpc_shaped_paths() {
        assert_eq!(method_label("/echo.v1.Echo/Say"), "echo.v1.Echo/Say");
        assert_eq!(method_label("/Echo/Say"), "other", "a package is expected");
        assert_eq!(method_label("/a.B/c/d"), "other");
        assert_eq!(method_label("/"), "other");
    }

    #[test]
    fn text_bodies_decode_across_padded_runs() {
        let one = STANDARD.encode(b"ab");
        let two = STANDARD.encode(b"cde");
        assert_eq!(decode_text(format!("{one}{two}").as_bytes()).unwrap(), Bytes::from_static(b"abcde"));
        assert_eq!(decode_text(b"!!"), None);
    }

    #[test]
    fn text_output_streams_whole_groups_and_pads_at_the_end() {
        let mut web = WebFraming::new(Web::Text);
        let mut out = web.data(Bytes::from_static(b"abcd")).to_vec();
        out.extend_from_slice(&web.data(Bytes::from_static(b"ef")));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        out.extend_from_slice(&web.trailers(&trailers));
        let decoded = STANDARD.decode(&out).unwrap();
        assert_eq!(&decoded[..6], b"abcdef");
        assert_eq!(decoded[6], 0x80);
        assert_eq!(&decoded[11..], b"grpc-status: 0\r\n");
    }
}
