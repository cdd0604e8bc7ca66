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
#[cfg(test)]
mod fixtures;
pub mod frame;
pub mod json;
pub mod route;
pub mod status;
pub mod stream;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use portico_shared::grpc::bindings::{self, BindingError, MethodMatch, StreamingKind};
use portico_shared::grpc::http_rule::{Capture, PathTemplate};
use prost_reflect::DescriptorPool;

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
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.template.specificity()));
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
            allowed.sort();
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
                    stream.push_message(message)?;
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
            let limit = self.limits.max_request_message;
            Some(frame::encode_message(&message, limit).map_err(|_| TranscodeError::RequestTooLarge { limit })?)
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::fixtures::{self, framed, ok_trailers, trailers, unframe, upstream};
    use super::*;

    fn transcoder(options: JsonOptions) -> Transcoder {
        Transcoder::new(&fixtures::pool(), &["shop.v1.Orders"], options, Limits { max_request_message: 1024, max_response_message: 1024 })
            .unwrap()
    }

    fn call(method: Method, target: &str, body: &str) -> Result<UpstreamCall, TranscodeError> {
        call_with(&transcoder(JsonOptions::default()), method, target, &HeaderMap::new(), body)
    }

    fn call_with(
        transcoder: &Transcoder,
        method: Method,
        target: &str,
        headers: &HeaderMap,
        body: &str,
    ) -> Result<UpstreamCall, TranscodeError> {
        let (path, query) = target.split_once('?').map_or((target, None), |(path, query)| (path, Some(query)));
        transcoder.request(&method, path, query, headers, body.as_bytes())
    }

    /// The method called and its request message as JSON (proto names).
    fn sent(method: Method, target: &str, body: &str) -> (String, serde_json::Value) {
        let call = call(method, target, body).unwrap_or_else(|error| panic!("{target}: {error}"));
        let input = fixtures::pool()
            .get_service_by_name("shop.v1.Orders")
            .unwrap()
            .methods()
            .find(|m| format!("/shop.v1.Orders/{}", m.name()) == call.grpc_path())
            .unwrap()
            .input();
        (call.grpc_path().to_owned(), unframe(input.full_name(), call.message.as_ref().unwrap()))
    }

    fn error(method: Method, target: &str, body: &str) -> (StatusCode, String) {
        let error = call(method, target, body).expect_err(target);
        (error.status(), error.to_string())
    }

    #[test]
    fn path_and_query_fill_the_request_message() {
        let (path, message) = sent(
            Method::GET,
            "/v1/shelves/s%201/orders/7?state=SHIPPED&tags=a&tags=b+c&address.city=Paris&addressXXX=1"
                .replace("&addressXXX=1", "&address.zipCode=75001")
                .as_str(),
            "",
        );
        assert_eq!(path, "/shop.v1.Orders/GetOrder");
        assert_eq!(
            message,
            json!({"name": "shelves/s 1/orders/7", "state": "SHIPPED", "tags": ["a", "b c"], "address": {"city": "Paris", "zip_code": "75001"}})
        );
    }

    #[test]
    fn query_parameters_take_every_kind_of_value() {
        let query = [
            "full=true",
            "minId=9007199254740993",
            "max_big=18446744073709551615",
            "since=2024-01-02T03:04:05.5Z",
            "within=1.5s",
            "read_mask=name,address.city",
            "page=3",
            "token=AQID",
            "states=1&states=PENDING",
            "strict=false",
            "filter=%7B%22a%22%3A1%7D",
            "price=-2.5",
            "state=2",
        ]
        .join("&");
        let (_, message) = sent(Method::GET, &format!("/v1/shelves/1/orders/2?{query}"), "");
        assert_eq!(
            message,
            json!({
                "name": "shelves/1/orders/2",
                "full": true,
                "min_id": "9007199254740993",
                "max_big": "18446744073709551615",
                "since": "2024-01-02T03:04:05.500Z",
                "within": "1.500s",
                "read_mask": "name,address.city",
                "page": 3,
                "token": "AQID",
                "states": ["PENDING", "PENDING"],
                "strict": false,
                "filter": {"a": 1.0},
                "price": -2.5,
                "state": "SHIPPED",
            })
        );
    }

    #[test]
    fn bad_query_values_name_their_parameter() {
        for (query, message) in [
            ("full=yes", "field 'full': 'yes' is not true or false"),
            ("state=LOST", "field 'state'"),
            ("page=x", "field 'page'"),
            ("minId=1.5", "field 'minId'"),
            ("since=yesterday", "field 'since'"),
            ("full=true&full=false", "field 'full': given more than once"),
            ("order=x", "field 'order': is a message; set its fields as 'name.field'"),
            ("labels=x", "field 'labels': a map cannot be set from the query"),
            ("name=x", "field 'name': the path binds 'name'"),
            ("filter=%7Bnope", "field 'filter': not JSON"),
        ] {
            let (status, error) = error(Method::GET, &format!("/v1/shelves/1/orders/2?{query}"), "");
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert!(error.starts_with(message), "{query}: {error}");
        }
    }

    #[test]
    fn unknown_query_parameters_are_refused_unless_ignored() {
        assert_eq!(
            error(Method::GET, "/v1/shelves/1/orders/2?colour=red", ""),
            (StatusCode::BAD_REQUEST, "unknown query parameter 'colour'".into())
        );
        assert_eq!(error(Method::GET, "/v1/shelves/1/orders/2?address.nope=1", "").1, "unknown query parameter 'address.nope'");
        let lenient = transcoder(JsonOptions { ignore_unknown: true, ..JsonOptions::default() });
        let call = call_with(&lenient, Method::GET, "/v1/shelves/1/orders/2?colour=red&full=true", &HeaderMap::new(), "").unwrap();
        assert_eq!(unframe("shop.v1.GetOrderRequest", call.message.as_ref().unwrap()), json!({"name": "shelves/1/orders/2", "full": true}));
    }

    #[test]
    fn body_star_takes_the_whole_message_and_no_query() {
        let body = json!({
            "name": "o1", "id": "9007199254740993", "big": "18446744073709551615", "state": "PENDING",
            "tags": ["x"], "counts": {"a": 1}, "cash": {"currency": "EUR", "units": 5},
            "address": {"city": "Lyon", "zipCode": "69001"}, "blob": "AQID",
            "created": "2024-01-02T03:04:05Z", "ttl": "3s", "mask": "a.b,c", "limit": "7", "flag": true, "note": "n",
            "attrs": {"k": [1, "two", null]}, "extra": "v", "items": [1, {"x": false}],
            "detail": {"@type": "type.googleapis.com/shop.v1.Money", "currency": "USD", "units": "1"},
            "price": 1.25, "gift": true, "history": ["SHIPPED", 1], "ids": [1, "2"], "display_name": "proto name accepted", "delta": -3, "ratio": 0.5
        });
        let (path, message) = sent(Method::POST, "/v1/orders", &body.to_string());
        assert_eq!(path, "/shop.v1.Orders/CreateOrder");
        assert_eq!(message["id"], "9007199254740993");
        assert_eq!(message["big"], "18446744073709551615");
        assert_eq!(message["cash"], json!({"currency": "EUR", "units": "5"}));
        assert_eq!(message["detail"], json!({"@type": "type.googleapis.com/shop.v1.Money", "currency": "USD", "units": "1"}));
        assert_eq!(message["history"], json!(["SHIPPED", "PENDING"]));
        assert_eq!(message["display_name"], "proto name accepted");
        assert_eq!(
            error(Method::POST, "/v1/orders?gift=true", "{}").1,
            "field 'gift': the body carries every field of this method; it cannot be a query parameter"
        );
        assert_eq!(sent(Method::POST, "/v1/orders", "").1, json!({}), "an empty body is an empty message");
    }

    #[test]
    fn json_errors_name_the_field() {
        let (status, message) = error(Method::POST, "/v1/orders", r#"{"address": {"city": "x", "planet": "Mars"}}"#);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("invalid JSON body at 'address': unrecognized field name 'planet'"), "{message}");
        let (_, message) = error(Method::POST, "/v1/orders", r#"{"id": "12x"}"#);
        assert!(message.starts_with("invalid JSON body at 'id'"), "{message}");
        let (_, message) = error(Method::POST, "/v1/orders", r#"{"tags": ["a", 2]}"#);
        assert!(message.starts_with("invalid JSON body at 'tags[1]'"), "{message}");
        let (_, message) = error(Method::POST, "/v1/orders", r#"{"id": 1} trailing"#);
        assert!(message.starts_with("invalid JSON body: trailing characters"), "{message}");
        let (_, message) = error(Method::POST, "/v1/orders", "not json");
        assert!(message.starts_with("invalid JSON body"), "{message}");
        let lenient = transcoder(JsonOptions { ignore_unknown: true, ..JsonOptions::default() });
        let call = call_with(&lenient, Method::POST, "/v1/orders", &HeaderMap::new(), r#"{"planet": "Mars", "name": "x"}"#).unwrap();
        assert_eq!(unframe("shop.v1.Order", call.message.as_ref().unwrap()), json!({"name": "x"}));
    }

    #[test]
    fn body_field_sets_that_field_and_path_must_agree_with_it() {
        let (path, message) = sent(Method::PATCH, "/v1/shelves/1/orders/2?update_mask=state", r#"{"state": "SHIPPED"}"#);
        assert_eq!(path, "/shop.v1.Orders/UpdateOrder");
        assert_eq!(message, json!({"order": {"name": "shelves/1/orders/2", "state": "SHIPPED"}, "update_mask": "state"}));
        let same = sent(Method::PATCH, "/v1/shelves/1/orders/2", r#"{"name": "shelves/1/orders/2"}"#).1;
        assert_eq!(same, json!({"order": {"name": "shelves/1/orders/2"}}));
        assert_eq!(
            error(Method::PATCH, "/v1/shelves/1/orders/2", r#"{"name": "shelves/9/orders/9"}"#),
            (StatusCode::BAD_REQUEST, "field 'order.name': the body gives it a value other than the path's".into())
        );
        assert_eq!(
            error(Method::PATCH, "/v1/shelves/1/orders/2?order.gift=true", "{}").1,
            "field 'order.gift': the body carries this field"
        );
        assert!(
            error(Method::PATCH, "/v1/shelves/1/orders/2", r#"{"state": 1}, "update_mask": "x""#).1.starts_with("invalid JSON body"),
            "one JSON value only"
        );
    }

    #[test]
    fn no_body_rules_refuse_a_body() {
        assert_eq!(
            error(Method::GET, "/v1/shelves/1/orders/2", r#"{"full": true}"#),
            (StatusCode::BAD_REQUEST, "this method takes no request body".into())
        );
        assert!(call(Method::GET, "/v1/shelves/1/orders/2", " \r\n").is_ok(), "whitespace is no body");
    }

    #[test]
    fn literal_segments_beat_variables_and_verbs_beat_none() {
        assert_eq!(sent(Method::GET, "/v1/shelves/special/orders/7", "").0, "/shop.v1.Orders/GetSpecial");
        assert_eq!(sent(Method::GET, "/v1/shelves/other/orders/7", "").0, "/shop.v1.Orders/GetOrder");
        assert_eq!(sent(Method::GET, "/v1/cities/Rome/orders/7", "").1, json!({"name": "7", "address": {"city": "Rome"}}));
        let (path, message) = sent(Method::POST, "/v1/shelves/1/orders/2:cancel", r#"{"reason": "late"}"#);
        assert_eq!((path.as_str(), message), ("/shop.v1.Orders/CancelOrder", json!({"name": "shelves/1/orders/2", "reason": "late"})));
        assert_eq!(sent(Method::GET, "/v1/shelves/1/orders:count", "").0, "/shop.v1.Orders/CountOrders");
        assert_eq!(sent(Method::GET, "/v1/shelves/1/orders", "").0, "/shop.v1.Orders/ListOrders");
        // Without a declared verb, a colon is data (envoy#13920).
        assert_eq!(sent(Method::GET, "/v1/shelves/1/orders/2:cancel", "").1, json!({"name": "shelves/1/orders/2:cancel"}));
    }

    #[test]
    fn double_wildcards_keep_encoded_slashes() {
        assert_eq!(sent(Method::GET, "/v1/files/a/b%2Fc/d%20e", "").1, json!({"name": "a/b%2Fc/d e"}));
    }

    #[test]
    fn methods_without_rules_are_posted_to_their_grpc_path() {
        let (path, message) = sent(Method::POST, "/shop.v1.Orders/Ping", "{}");
        assert_eq!((path.as_str(), message), ("/shop.v1.Orders/Ping", json!({})));
    }

    #[test]
    fn unbound_paths_and_methods_are_404_and_405() {
        assert_eq!(error(Method::GET, "/v2/nothing", ""), (StatusCode::NOT_FOUND, "no gRPC method is bound to /v2/nothing".into()));
        assert_eq!(
            error(Method::DELETE, "/v1/orders", ""),
            (StatusCode::METHOD_NOT_ALLOWED, "DELETE is not bound to /v1/orders; it takes POST".into())
        );
        assert_eq!(
            error(Method::GET, "/v1/shelves/%FF/orders/1", ""),
            (StatusCode::BAD_REQUEST, "field 'name': not valid UTF-8 once percent-decoded".into())
        );
    }

    #[test]
    fn request_messages_over_the_limit_are_413() {
        let body = json!({"name": "x".repeat(2000)}).to_string();
        assert_eq!(
            error(Method::POST, "/v1/orders", &body),
            (StatusCode::PAYLOAD_TOO_LARGE, "the request message exceeds the limit of 1024 bytes".into())
        );
    }

    #[test]
    fn idempotency_comes_from_the_http_method() {
        assert!(call(Method::GET, "/v1/shelves/1/orders/2", "").unwrap().idempotent);
        assert!(!call(Method::POST, "/v1/orders", "{}").unwrap().idempotent);
        let call = call(Method::POST, "/shop.v1.Orders/Ping", "").unwrap();
        assert_eq!(
            (call.method_name(), call.rule(), call.kind()),
            ("shop.v1.Orders.Ping", "POST /shop.v1.Orders/Ping", StreamingKind::Unary)
        );
    }

    #[test]
    fn grpc_request_headers_ask_for_identity_encoding() {
        let mut headers = fixtures::headers(&[("content-length", "12"), ("content-type", "application/json")]);
        grpc_request_headers(&mut headers);
        assert_eq!(
            headers,
            fixtures::headers(&[("content-type", "application/grpc"), ("te", "trailers"), ("grpc-accept-encoding", "identity")])
        );
    }

    async fn respond(
        target: &str,
        accept: Option<&str>,
        response: Response<fixtures::TestBody>,
    ) -> Result<(StatusCode, HeaderMap, String), TranscodeError> {
        let transcoder = transcoder(JsonOptions::default());
        let headers = accept.map(|accept| fixtures::headers(&[("accept", accept)])).unwrap_or_default();
        let call = call_with(&transcoder, Method::GET, target, &headers, "").unwrap();
        let response = transcoder.response(&call, response).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Ok((parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap()))
    }

    const ORDER: &str = "/v1/shelves/1/orders/2";

    #[tokio::test]
    async fn a_unary_answer_is_its_message_as_json_with_metadata_as_headers() {
        let message = framed("shop.v1.Order", json!({"name": "o", "id": "9007199254740993", "state": "SHIPPED"}));
        let response = upstream(&[("x-request-cost", "3"), ("grpc-encoding", "identity")], vec![Frame::data(message), ok_trailers()]);
        let (status, headers, body) = respond(ORDER, None, response).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers, fixtures::headers(&[("x-request-cost", "3"), ("content-type", "application/json")]));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!({"name": "o", "id": "9007199254740993", "state": "SHIPPED"})
        );
    }

    #[tokio::test]
    async fn a_message_split_across_frames_is_reassembled() {
        let message = framed("shop.v1.Order", json!({"name": "split"}));
        let frames = message.iter().map(|byte| Frame::data(Bytes::copy_from_slice(&[*byte]))).chain([ok_trailers()]).collect();
        let (_, _, body) = respond(ORDER, None, upstream(&[], frames)).await.unwrap();
        assert_eq!(body, r#"{"name":"split"}"#);
    }

    #[tokio::test]
    async fn error_statuses_become_http_statuses_with_a_status_body() {
        for (code, http) in [("3", 400), ("5", 404), ("7", 403), ("8", 429), ("14", 503), ("16", 401), ("4", 504), ("1", 499), ("12", 501)]
        {
            let in_trailers = upstream(&[], vec![trailers(&[("grpc-status", code), ("grpc-message", "went%20wrong")])]);
            let trailers_only = upstream(&[("grpc-status", code), ("grpc-message", "went%20wrong")], vec![]);
            for response in [in_trailers, trailers_only] {
                let (status, headers, body) = respond(ORDER, None, response).await.unwrap();
                assert_eq!(status.as_u16(), http, "{code}");
                assert_eq!(headers[header::CONTENT_TYPE], "application/json");
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body, json!({"code": code.parse::<i32>().unwrap(), "message": "went wrong", "details": []}));
            }
        }
        let message_then_error =
            upstream(&[], vec![Frame::data(framed("shop.v1.Order", json!({"name": "o"}))), trailers(&[("grpc-status", "13")])]);
        assert_eq!(respond(ORDER, None, message_then_error).await.unwrap().0, StatusCode::INTERNAL_SERVER_ERROR);
        let no_status = upstream(&[], vec![Frame::data(framed("shop.v1.Order", json!({"name": "o"})))]);
        let (status, _, body) = respond(ORDER, None, no_status).await.unwrap();
        assert_eq!((status, body.contains("without a grpc-status")), (StatusCode::INTERNAL_SERVER_ERROR, true));
    }

    #[tokio::test]
    async fn upstreams_that_are_not_grpc_or_send_garbage_are_502() {
        let mut html = upstream(&[], vec![Frame::data(Bytes::from_static(b"<html>"))]);
        html.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let mut not_ok = upstream(&[], vec![]);
        *not_ok.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let cases = [
            (html, "the upstream did not answer gRPC (HTTP 200, content-type Some(\"text/html\"))"),
            (not_ok, "the upstream did not answer gRPC (HTTP 503, content-type Some(\"application/grpc\"))"),
            (
                upstream(&[], vec![Frame::data(Bytes::from_static(b"garbage!")), ok_trailers()]),
                "the upstream sent a malformed gRPC response: invalid message flag 0x67",
            ),
            (
                upstream(&[], vec![Frame::data(frame::encode(b"\xff\xff")), ok_trailers()]),
                "the upstream sent a malformed gRPC response: not a shop.v1.Order message",
            ),
            (
                upstream(&[], vec![Frame::data(Bytes::from_static(b"\0\0\0\0\x09abc")), ok_trailers()]),
                "the upstream sent a malformed gRPC response: the body ended inside a message (8 bytes left over)",
            ),
            (upstream(&[], vec![ok_trailers()]), "the upstream sent a malformed gRPC response: a unary call ended OK without a message"),
            (
                upstream(&[], vec![Frame::data(frame::encode(&[])), Frame::data(frame::encode(&[])), ok_trailers()]),
                "the upstream sent a malformed gRPC response: a unary call answered more than one message",
            ),
            (
                upstream(&[], vec![Frame::data(framed("shop.v1.Order", json!({"name": "x".repeat(2000)})))]),
                "the upstream sent a message over the limit of 1024 bytes",
            ),
        ];
        for (response, expected) in cases {
            let error = respond(ORDER, None, response).await.unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY, "{expected}");
            assert!(error.to_string().starts_with(expected), "{error}");
        }
    }

    #[tokio::test]
    async fn response_body_selects_one_field() {
        let list = framed("shop.v1.ListOrdersResponse", json!({"orders": [{"name": "a"}, {"name": "b"}], "total": "2"}));
        let (_, _, body) =
            respond("/v1/shelves/1/orders", None, upstream(&[], vec![Frame::data(list.clone()), ok_trailers()])).await.unwrap();
        assert_eq!(body, r#"[{"name":"a"},{"name":"b"}]"#);
        let (_, _, body) =
            respond("/v1/shelves/1/orders:count", None, upstream(&[], vec![Frame::data(list), ok_trailers()])).await.unwrap();
        assert_eq!(body, r#""2""#, "int64 stays a string");
        let empty = framed("shop.v1.ListOrdersResponse", json!({}));
        let (_, _, body) =
            respond("/v1/shelves/1/orders:count", None, upstream(&[], vec![Frame::data(empty), ok_trailers()])).await.unwrap();
        assert_eq!(body, r#""0""#, "a default value is still written");
    }

    fn watch(messages: &[&str], end: Frame<Bytes>) -> Response<fixtures::TestBody> {
        let frames = messages.iter().map(|name| Frame::data(framed("shop.v1.Order", json!({"name": name})))).chain([end]).collect();
        upstream(&[], frames)
    }

    const WATCH: &str = "/v1/shelves/1/orders:watch";

    #[tokio::test]
    async fn server_streams_are_ndjson_by_default_one_chunk_per_message() {
        let transcoder = transcoder(JsonOptions::default());
        let call = call_with(&transcoder, Method::GET, WATCH, &HeaderMap::new(), "").unwrap();
        let response = transcoder.response(&call, watch(&["a", "b"], ok_trailers())).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/x-ndjson");
        let mut body = response.into_body();
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            chunks.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(chunks, [&b"{\"name\":\"a\"}\n"[..], b"{\"name\":\"b\"}\n"]);
    }

    #[tokio::test]
    async fn server_streams_as_sse_or_a_json_array() {
        let (_, headers, body) = respond(WATCH, Some("text/event-stream"), watch(&["a", "b"], ok_trailers())).await.unwrap();
        assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(body, "data: {\"name\":\"a\"}\n\ndata: {\"name\":\"b\"}\n\n");
        let (_, headers, body) = respond(WATCH, Some("application/json"), watch(&["a", "b"], ok_trailers())).await.unwrap();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, r#"[{"name":"a"},{"name":"b"}]"#);
        let (status, _, body) = respond(WATCH, Some("application/json"), watch(&[], ok_trailers())).await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
        let (_, _, body) = respond(WATCH, None, upstream(&[("grpc-status", "0")], vec![])).await.unwrap();
        assert_eq!(body, "", "a trailers-only OK stream is empty");
    }

    /// The JSON documents of a streamed body: its lines, its events' data, or its array's elements.
    fn documents(format: StreamFormat, body: &str) -> Vec<serde_json::Value> {
        match format {
            StreamFormat::Ndjson => body.lines().map(|line| serde_json::from_str(line).unwrap()).collect(),
            StreamFormat::Sse => body
                .split("\n\n")
                .filter(|event| !event.is_empty())
                .map(|event| serde_json::from_str(event.lines().find_map(|line| line.strip_prefix("data: ")).unwrap()).unwrap())
                .collect(),
            StreamFormat::JsonArray => serde_json::from_str::<Vec<serde_json::Value>>(body).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_stream_error_after_messages_ends_with_an_error_object() {
        let failed = || trailers(&[("grpc-status", "14"), ("grpc-message", "gone")]);
        let error = json!({"code": 14, "message": "gone", "details": []});
        let (status, _, body) = respond(WATCH, None, watch(&["a"], failed())).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.ends_with('\n'));
        assert_eq!(documents(StreamFormat::Ndjson, &body), [json!({"name": "a"}), json!({"error": error})]);
        let (_, _, body) = respond(WATCH, Some("text/event-stream"), watch(&["a"], failed())).await.unwrap();
        assert!(body.ends_with("\n\n") && body.contains("\n\nevent: error\ndata: {"), "{body}");
        assert_eq!(documents(StreamFormat::Sse, &body), [json!({"name": "a"}), json!({"error": error})]);
        let (_, _, body) = respond(WATCH, Some("application/json"), watch(&["a"], failed())).await.unwrap();
        assert_eq!(documents(StreamFormat::JsonArray, &body), [json!({"name": "a"}), json!({"error": error})]);
        let mut garbage = watch(&["a"], ok_trailers());
        *garbage.body_mut() = http_body_util::StreamBody::new(futures::stream::iter(vec![
            Ok(Frame::data(framed("shop.v1.Order", json!({"name": "a"})))),
            Ok(Frame::data(Bytes::from_static(b"\x05junk"))),
        ]));
        let (_, _, body) = respond(WATCH, None, garbage).await.unwrap();
        let malformed =
            json!({"code": 13, "message": "the upstream sent a malformed gRPC response: invalid message flag 0x05", "details": []});
        assert_eq!(documents(StreamFormat::Ndjson, &body), [json!({"name": "a"}), json!({"error": malformed})]);
    }

    #[tokio::test]
    async fn a_stream_error_before_any_message_is_an_http_status() {
        let (status, headers, body) =
            respond(WATCH, None, watch(&[], trailers(&[("grpc-status", "5"), ("grpc-message", "no shelf")]))).await.unwrap();
        assert_eq!((status, &headers[header::CONTENT_TYPE]), (StatusCode::NOT_FOUND, &HeaderValue::from_static("application/json")));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), json!({"code": 5, "message": "no shelf", "details": []}));
        let garbage = upstream(&[], vec![Frame::data(Bytes::from_static(b"\x07"))]);
        assert_eq!(respond(WATCH, None, garbage).await.unwrap_err().status(), StatusCode::BAD_GATEWAY);
        let undecodable = upstream(&[], vec![Frame::data(frame::encode(b"\xff")), ok_trailers()]);
        assert_eq!(respond(WATCH, None, undecodable).await.unwrap_err().status(), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn client_streams_read_ndjson_lines_as_messages() {
        let transcoder = transcoder(JsonOptions::default());
        let bound = transcoder.bind(&Method::POST, "/v1/shelves/9/orders:import").unwrap();
        assert_eq!(bound.kind(), StreamingKind::ClientStreaming);
        let call = bound.call(None, &HeaderMap::new(), b"ignored").unwrap();
        assert!(call.message.is_none());
        let chunks = ["{\"id\": 1}\n\n{\"id\"", ": \"2\", \"name\": \"shelves/9\"}\r\n  \n", "{\"id\": 3}"];
        let client = http_body_util::StreamBody::new(futures::stream::iter(
            chunks.map(|chunk| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk)))),
        ));
        let framed = call.request_stream(client).collect().await.unwrap().to_bytes();
        let mut decoder = frame::FrameDecoder::new(1024);
        decoder.push(&framed);
        let mut messages = Vec::new();
        while let Some(message) = decoder.next_message().unwrap() {
            messages.push(unframe("shop.v1.Order", &frame::encode(&message)));
        }
        assert_eq!(
            messages,
            [json!({"name": "shelves/9", "id": "1"}), json!({"name": "shelves/9", "id": "2"}), json!({"name": "shelves/9", "id": "3"})]
        );
    }

    #[tokio::test]
    async fn client_stream_errors_name_the_line() {
        let transcoder = transcoder(JsonOptions::default());
        let call = transcoder.request(&Method::POST, "/v1/shelves/9/orders:import", None, &HeaderMap::new(), b"").unwrap();
        let body = |text: &'static str| {
            http_body_util::StreamBody::new(futures::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(
                text.as_bytes(),
            )))]))
        };
        let error = call.request_stream(body("{}\n\n{\"id\": \"x\"}\n")).collect().await.unwrap_err();
        let error = error.downcast::<TranscodeError>().unwrap();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(error.to_string().starts_with("invalid JSON body on line 3 at 'id'"), "{error}");
        let long = Box::leak(format!("{{\"note\": \"{}\"}}", "x".repeat(2000)).into_boxed_str());
        let error = call.request_stream(body(long)).collect().await.unwrap_err().downcast::<TranscodeError>().unwrap();
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn bidirectional_streams_take_ndjson_and_answer_a_stream() {
        let transcoder = transcoder(JsonOptions::default());
        let call = transcoder.request(&Method::POST, "/v1/chat", None, &HeaderMap::new(), b"").unwrap();
        assert_eq!(call.kind(), StreamingKind::Bidi);
        let client = http_body_util::Full::new(Bytes::from_static(b"{\"reason\": \"hi\"}\n{\"name\": \"n\"}\n"));
        let framed = call.request_stream(client).collect().await.unwrap().to_bytes();
        let first_len = 5 + u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(unframe("shop.v1.CancelRequest", &framed[..first_len]), json!({"reason": "hi"}));
        assert_eq!(unframe("shop.v1.CancelRequest", &framed[first_len..]), json!({"name": "n"}));
        let response = transcoder.response(&call, watch(&["a", "b"], ok_trailers())).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/x-ndjson");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"name\":\"a\"}\n{\"name\":\"b\"}\n");
    }
}
