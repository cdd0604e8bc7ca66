//! HTTP/JSON to gRPC transcoding: the pure core, without I/O of its own.
//!
//! A [`Transcoder`] is compiled once per config version from a route's
//! descriptors, services and [`JsonOptions`]: the methods' bindings
//! (`portico_shared::grpc::bindings`) indexed for matching, most specific
//! first (a literal segment beats a variable at the same depth, then a
//! custom verb beats none), each with its request and response mapping.
//! Per request:
//! 1. [`Transcoder::bind`] matches method and path to a binding ([`Bound`]),
//!    whose [`Bound::kind`] says whether the client streams;
//! 2. [`Bound::call`] builds the [`UpstreamCall`]: the gRPC path and, for
//!    unary and server-streaming methods, the framed request message from
//!    path, query and JSON body ([`json`]); a client stream's body goes
//!    through [`UpstreamCall::request_stream`] (NDJSON lines to frames,
//!    [`stream`]). [`grpc_request_headers`] sets what the upstream request needs;
//! 3. [`Transcoder::response`] turns the upstream's `Response` into the
//!    client's: a unary message as JSON, a server stream as NDJSON, SSE or
//!    a JSON array ([`stream`]), a non-OK status as its HTTP status with a
//!    `google.rpc.Status` body ([`status`]).
//!
//! The gateway's own failures are [`TranscodeError`]s, each with its HTTP
//! status: the client's a `400` naming the field (`404`, `405`, `413`),
//! the upstream's a `502`. Sending the call, metadata, deadlines and
//! retries belong to the proxy, not here.

pub mod error;
pub mod frame;
pub mod json;
pub mod status;
pub mod stream;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use portico_shared::grpc::bindings::{self, BindingError, MethodMatch, StreamingKind};
use portico_shared::grpc::http_rule::{Capture, PathTemplate};
use prost_reflect::DescriptorPool;
use prost_reflect::prost::Message;

use crate::body::BoxError;

pub use error::TranscodeError;
pub use json::JsonOptions;
pub use stream::StreamFormat;

use json::{Assignments, RequestMapping, ResponseMapping};
use status::GrpcStatus;
use stream::{Event, JsonStream, MessageReader, NdjsonFrames, StreamRendering};

/// Message size limits, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A bigger request message is a `413`.
    pub max_request_message: usize,
    /// A bigger response message is a `502` (or ends a stream with an error).
    pub max_response_message: usize,
}

impl Default for Limits {
    /// gRPC's customary 4 MiB.
    fn default() -> Self {
        Self { max_request_message: 4 << 20, max_response_message: 4 << 20 }
    }
}

/// A route's bindings, ready to match and translate requests.
#[derive(Debug)]
pub struct Transcoder {
    /// Most specific first.
    entries: Vec<Entry>,
    limits: Limits,
}

#[derive(Debug)]
struct Entry {
    method: MethodMatch,
    template: PathTemplate,
    plan: Arc<Plan>,
}

/// One binding of one method, compiled.
#[derive(Debug)]
struct Plan {
    grpc_path: String,
    /// `pkg.Service.Method`.
    full_name: String,
    /// `GET /v1/{name}`.
    rule: String,
    kind: StreamingKind,
    method_idempotent: bool,
    request: Arc<RequestMapping>,
    rendering: Arc<StreamRendering>,
}

impl Transcoder {
    /// Compiles the bindings of `services` in `pool` (the `google.rpc`
    /// error types are added for rendering error details).
    pub fn new<S: AsRef<str>>(
        pool: &DescriptorPool,
        services: &[S],
        options: JsonOptions,
        limits: Limits,
    ) -> Result<Self, Vec<BindingError>> {
        let pool = status::with_error_types(pool);
        let methods = bindings::method_bindings(&pool, services)?;
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for method in &methods {
            for binding in &method.bindings {
                let compiled = RequestMapping::new(method.method.input(), binding, options).and_then(|request| {
                    let response = ResponseMapping::new(method.method.output(), binding.response_body.as_deref(), &options)?;
                    Ok((request, response))
                });
                let (request, response) = match compiled {
                    Ok(compiled) => compiled,
                    Err(message) => {
                        errors.push(BindingError {
                            method: method.method.full_name().to_owned(),
                            rule: Some(binding.to_string()),
                            message,
                        });
                        continue;
                    }
                };
                let plan = Plan {
                    grpc_path: method.grpc_path.clone(),
                    full_name: method.method.full_name().to_owned(),
                    rule: binding.to_string(),
                    kind: method.kind,
                    method_idempotent: method.idempotent,
                    request: Arc::new(request),
                    rendering: Arc::new(StreamRendering { response, pool: pool.clone() }),
                };
                entries.push(Entry { method: binding.method.clone(), template: binding.template.clone(), plan: Arc::new(plan) });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Stable: among equals, the order of the descriptors.
        entries.sort_by(|a, b| b.template.specificity().cmp(&a.template.specificity()));
        Ok(Self { entries, limits })
    }

    /// The most specific binding of `method` matching `path` (no query).
    pub fn bind<'t>(&'t self, method: &Method, path: &str) -> Result<Bound<'t>, TranscodeError> {
        let mut allowed = Vec::new();
        for entry in &self.entries {
            let captures = entry.template.match_path(path).map_err(|error| TranscodeError::InvalidField {
                field: error.field_path.clone(),
                message: "not valid UTF-8 once percent-decoded".into(),
            });
            match captures {
                Ok(Some(captures)) if entry.method.matches(method) => {
                    return Ok(Bound { entry, captures, method: method.clone(), limits: self.limits });
                }
                Ok(Some(_)) => allowed.push(entry.method.to_string()),
                Ok(None) => {}
                Err(error) if entry.method.matches(method) => return Err(error),
                Err(_) => {}
            }
        }
        if allowed.is_empty() {
            Err(TranscodeError::NoBinding { path: path.to_owned() })
        } else {
            allowed.dedup();
            Err(TranscodeError::MethodNotAllowed { method: method.to_string(), path: path.to_owned(), allowed })
        }
    }

    /// [`Self::bind`] then [`Bound::call`], for a method the client does not stream to.
    pub fn request(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<UpstreamCall, TranscodeError> {
        self.bind(method, path)?.call(query, headers, body)
    }

    /// The client's response to `call` from the upstream's `response`:
    /// waits for the whole message of a unary call, for the first message
    /// (or the end) of a stream, so that an error before any message is
    /// a real HTTP status. A non-OK gRPC status is a response, not an error.
    pub async fn response<B>(&self, call: &UpstreamCall, response: Response<B>) -> Result<Response<JsonBody<B>>, TranscodeError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = response.into_parts();
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
        let grpc = content_type
            .is_some_and(|content_type| content_type.starts_with("application/grpc") && !content_type.starts_with("application/grpc-web"));
        let trailers_only = GrpcStatus::from_headers(&parts.headers);
        if !grpc || (parts.status != StatusCode::OK && trailers_only.is_none()) {
            return Err(TranscodeError::NotGrpc { status: parts.status.as_u16(), content_type: content_type.map(str::to_owned) });
        }
        let rendering = &call.plan.rendering;
        let mut metadata = HeaderMap::new();
        copy_metadata(&parts.headers, &mut metadata);
        let mut reader = MessageReader::new(body, self.limits.max_response_message, trailers_only);
        if call.plan.kind.server_streams() {
            let stream = match reader.next_event().await {
                Event::Message(message) => {
                    let mut stream = JsonStream::new(reader, rendering.clone(), call.format);
                    stream.push_message(message);
                    stream
                }
                Event::End(status) if status.is_ok() => JsonStream::ended(reader, rendering.clone(), call.format, &status),
                Event::End(status) => return Ok(status_response(&status, rendering, metadata)),
                Event::Failed(error) => return Err(error),
            };
            let mut response = Response::new(JsonBody::Stream(stream));
            *response.headers_mut() = metadata;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(call.format.content_type()));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return Ok(response);
        }
        let message = match reader.next_event().await {
            Event::Message(message) => message,
            Event::End(status) if status.is_ok() => {
                return Err(TranscodeError::MalformedResponse("a unary call ended OK without a message".into()));
            }
            Event::End(status) => return Ok(status_response(&status, rendering, metadata)),
            Event::Failed(error) => return Err(error),
        };
        let status = match reader.next_event().await {
            Event::End(status) => status,
            Event::Message(_) => return Err(TranscodeError::MalformedResponse("a unary call answered more than one message".into())),
            Event::Failed(error) => return Err(error),
        };
        if !status.is_ok() {
            return Ok(status_response(&status, rendering, metadata));
        }
        let json = rendering.response.render(message)?;
        Ok(json_response(StatusCode::OK, json, metadata))
    }
}

/// A request matched to a binding.
#[derive(Debug)]
pub struct Bound<'t> {
    entry: &'t Entry,
    captures: Vec<Capture<'t>>,
    method: Method,
    limits: Limits,
}

impl Bound<'_> {
    pub fn kind(&self) -> StreamingKind {
        self.entry.plan.kind
    }

    /// The call: path variables and `query` set into the message, and,
    /// unless the client streams, `body` (JSON) as the binding says; a
    /// client-streaming call ignores `body` (see [`UpstreamCall::request_stream`]).
    /// `headers`' `Accept` chooses how a server stream is written.
    pub fn call(self, query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<UpstreamCall, TranscodeError> {
        let plan = &self.entry.plan;
        let assignments = plan.request.assignments(&self.captures, query)?;
        let message = if plan.kind.client_streams() {
            None
        } else {
            let message = plan.request.message(body, None, &assignments)?;
            let len = message.encoded_len();
            if len > self.limits.max_request_message {
                return Err(TranscodeError::RequestTooLarge { limit: self.limits.max_request_message });
            }
            let mut framed = BytesMut::with_capacity(frame::HEADER_LEN + len);
            frame::put_header(&mut framed, len);
            message.encode(&mut framed).map_err(|error| TranscodeError::InvalidJson {
                line: None,
                field: None,
                message: error.to_string(),
            })?;
            Some(framed.freeze())
        };
        let idempotent_http = matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);
        Ok(UpstreamCall {
            plan: plan.clone(),
            message,
            idempotent: idempotent_http || plan.method_idempotent,
            format: StreamFormat::from_accept(headers),
            assignments: Arc::new(assignments),
            max_request_message: self.limits.max_request_message,
        })
    }
}

/// What to send upstream, and what [`Transcoder::response`] needs back.
#[derive(Debug)]
pub struct UpstreamCall {
    plan: Arc<Plan>,
    /// The framed request message; `None` when the client streams.
    pub message: Option<Bytes>,
    /// A retry may send it again: an idempotent HTTP method (GET, HEAD,
    /// OPTIONS, PUT, DELETE) or a method declaring an `idempotency_level`.
    pub idempotent: bool,
    /// How a server stream will be written.
    pub format: StreamFormat,
    assignments: Arc<Assignments>,
    max_request_message: usize,
}

impl UpstreamCall {
    /// `/pkg.Service/Method`, the upstream request's path.
    pub fn grpc_path(&self) -> &str {
        &self.plan.grpc_path
    }

    /// `pkg.Service.Method`, for logs and metrics.
    pub fn method_name(&self) -> &str {
        &self.plan.full_name
    }

    /// The binding that matched, `GET /v1/{name}`.
    pub fn rule(&self) -> &str {
        &self.plan.rule
    }

    pub fn kind(&self) -> StreamingKind {
        self.plan.kind
    }

    /// The client's NDJSON body as the request's gRPC frames (client and
    /// bidirectional streaming); its errors are boxed [`TranscodeError`]s
    /// (`400` naming the line, `413`) or the client body's own.
    pub fn request_stream<B>(&self, client_body: B) -> NdjsonFrames<B>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        NdjsonFrames::new(client_body, self.plan.request.clone(), self.assignments.clone(), self.max_request_message)
    }
}

/// Sets the headers a gRPC request needs (`content-type`, `te`, identity encoding only).
pub fn grpc_request_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    headers.remove(header::CONTENT_LENGTH);
}

/// The upstream's response metadata, as response headers: all but the
/// gRPC protocol's own and the connection's.
fn copy_metadata(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let protocol = name.as_str().starts_with("grpc-")
            || matches!(
                *name,
                header::CONTENT_TYPE
                    | header::CONTENT_LENGTH
                    | header::TE
                    | header::TRAILER
                    | header::TRANSFER_ENCODING
                    | header::CONNECTION
            )
            || name.as_str() == "keep-alive";
        if !protocol {
            to.append(name.clone(), value.clone());
        }
    }
}

fn status_response<B>(status: &GrpcStatus, rendering: &StreamRendering, metadata: HeaderMap) -> Response<JsonBody<B>> {
    let json = status.to_json(&rendering.pool, rendering.response.serialize_options()).to_string();
    json_response(status.http_status(), json.into_bytes(), metadata)
}

fn json_response<B>(status: StatusCode, json: Vec<u8>, metadata: HeaderMap) -> Response<JsonBody<B>> {
    let mut response = Response::new(JsonBody::Full(Full::new(Bytes::from(json))));
    *response.status_mut() = status;
    *response.headers_mut() = metadata;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The client's response body: one JSON document, or a stream of them.
#[derive(Debug)]
pub enum JsonBody<B> {
    Full(Full<Bytes>),
    Stream(JsonStream<B>),
}

impl<B> Body for JsonBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Full(body) => std::pin::Pin::new(body).poll_frame(cx),
            Self::Stream(stream) => std::pin::Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(body) => body.is_end_stream(),
            Self::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(body) => body.size_hint(),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}
