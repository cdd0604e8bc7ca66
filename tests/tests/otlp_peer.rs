//! The OTLP trace receiver (`tests/otlp/receiver.py`) on its own, without
//! the gateway: spans exported to it over OTLP/gRPC by a tonic client and
//! over OTLP/HTTP protobuf (plain and gzip) by reqwest come back from
//! [`OtlpReceiver::spans`] with every field decoded; what OTLP/HTTP does not
//! take is refused; a stopped receiver refuses connections. prost encodes
//! the messages from the types below, written from the OTLP `.proto` field
//! numbers, independently of the receiver's Python.

use std::io::Write as _;
use std::time::Duration;

use portico_test_support::OtlpReceiver;
use portico_test_support::otlp::{ReceivedSpan, Transport};
use prost::Message as _;
use serde_json::json;

// The OTLP trace messages that the tests send, with the field numbers of
// `opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto`
// (the fields left out are ones the tests do not set).

#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<ExportTracePartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InstrumentationScope {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    /// `SpanKind`: 2 server, 3 client.
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(string, tag = "2")]
    message: String,
    /// `StatusCode`: 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5")]
    value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Value {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(message, tag = "5")]
    Array(ArrayValue),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    values: Vec<AnyValue>,
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SERVER_SPAN_ID: &str = "00f067aa0ba902b7";
const CLIENT_SPAN_ID: &str = "b7ad6b7169203331";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const PROTOBUF: &str = "application/x-protobuf";

fn hex(digits: &str) -> Vec<u8> {
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digits")).collect()
}

/// `value`, a JSON object literal, as a map.
fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(object) => object,
        other => panic!("{other} is not an object"),
    }
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

/// One span of `service` under the `portico` scope, in a request of its own.
fn export_request(service: &str, span: Span) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![attribute("service.name", Value::String(service.to_owned()))] }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "portico".to_owned(), version: "0.1.0".to_owned() }),
                spans: vec![span],
            }],
        }],
    }
}

/// A server span (a root) with attributes of every scalar type and an array.
fn server_span() -> Span {
    Span {
        trace_id: hex(TRACE_ID),
        span_id: hex(SERVER_SPAN_ID),
        trace_state: "portico=1".to_owned(),
        name: "GET /orders/{id}".to_owned(),
        kind: 2,
        start_time_unix_nano: 1_767_225_600_000_000_001,
        end_time_unix_nano: 1_767_225_600_250_000_000,
        attributes: vec![
            attribute("http.request.method", Value::String("GET".to_owned())),
            attribute("http.response.status_code", Value::Int(200)),
            attribute("portico.cache.hit", Value::Bool(false)),
            attribute("portico.weight", Value::Double(0.5)),
            attribute(
                "portico.upstreams",
                Value::Array(ArrayValue {
                    values: ["a", "b"].map(|name| AnyValue { value: Some(Value::String(name.to_owned())) }).to_vec(),
                }),
            ),
        ],
        status: Some(Status { message: String::new(), code: 1 }),
        flags: 1,
        ..Span::default()
    }
}

/// A client span, child of the server span, that failed.
fn client_span(name: &str) -> Span {
    Span {
        trace_id: hex(TRACE_ID),
        span_id: hex(CLIENT_SPAN_ID),
        parent_span_id: hex(SERVER_SPAN_ID),
        name: name.to_owned(),
        kind: 3,
        start_time_unix_nano: 1_767_225_600_100_000_000,
        end_time_unix_nano: 1_767_225_600_200_000_000,
        attributes: vec![attribute("server.address", Value::String("orders.internal".to_owned()))],
        status: Some(Status { message: "upstream timed out".to_owned(), code: 2 }),
        ..Span::default()
    }
}

fn received_client_span(name: &str) -> ReceivedSpan {
    ReceivedSpan {
        transport: Transport::Http,
        trace_id: TRACE_ID.to_owned(),
        span_id: CLIENT_SPAN_ID.to_owned(),
        parent_span_id: Some(SERVER_SPAN_ID.to_owned()),
        trace_state: String::new(),
        flags: 0,
        name: name.to_owned(),
        kind: "SPAN_KIND_CLIENT".to_owned(),
        start_time_unix_nano: 1_767_225_600_100_000_000,
        end_time_unix_nano: 1_767_225_600_200_000_000,
        status_code: "STATUS_CODE_ERROR".to_owned(),
        status_message: "upstream timed out".to_owned(),
        attributes: object(json!({"server.address": "orders.internal"})),
        resource_attributes: object(json!({"service.name": "orders"})),
        scope_name: "portico".to_owned(),
        scope_version: "0.1.0".to_owned(),
    }
}

/// Exports `request` with a tonic client over h2c, as an OTLP/gRPC exporter does.
async fn export_over_grpc(receiver: &OtlpReceiver, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse {
    let channel = tonic::transport::Endpoint::from_shared(receiver.grpc_endpoint())
        .expect("the receiver's gRPC endpoint")
        .connect()
        .await
        .expect("connect to the receiver over gRPC");
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("the gRPC channel is ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
    let codec = tonic_prost::ProstCodec::default();
    let response = client.unary(tonic::Request::new(request), path, codec).await;
    response.unwrap_or_else(|status| panic!("Export over gRPC failed: {status:?}; the receiver's log:\n{}", receiver.logs())).into_inner()
}

/// POSTs `body` to the receiver's `/v1/traces` with `content_type` and
/// `content_encoding`, as an OTLP/HTTP exporter does.
async fn post_traces(receiver: &OtlpReceiver, content_type: &str, content_encoding: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let client = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
    let mut request = client.post(receiver.http_traces_url()).header("content-type", content_type).body(body);
    if let Some(encoding) = content_encoding {
        request = request.header("content-encoding", encoding);
    }
    request.send().await.expect("POST /v1/traces")
}

async fn assert_exported(response: reqwest::Response) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], PROTOBUF);
    let body = response.bytes().await.expect("the export's answer");
    let answer = ExportTraceServiceResponse::decode(body).expect("an ExportTraceServiceResponse");
    assert_eq!(answer, ExportTraceServiceResponse::default(), "no partial success: every span taken");
}

#[tokio::test]
async fn spans_exported_over_grpc_and_http_come_back_decoded() {
    let receiver = OtlpReceiver::start().await;
    assert!(receiver.spans().await.is_empty(), "a fresh receiver has no spans");

    let answer = export_over_grpc(&receiver, export_request("gateway", server_span())).await;
    assert_eq!(answer, ExportTraceServiceResponse::default(), "no partial success: every span taken");
    let plain = export_request("orders", client_span("GET orders")).encode_to_vec();
    assert_exported(post_traces(&receiver, PROTOBUF, None, plain).await).await;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&export_request("orders", client_span("GET orders (gzip)")).encode_to_vec()).expect("gzip the request");
    let compressed = gzip.finish().expect("gzip the request");
    assert_exported(post_traces(&receiver, &format!("{PROTOBUF}; charset=binary"), Some("gzip"), compressed).await).await;

    // Each export was answered after its spans were recorded: no waiting needed.
    let spans = receiver.spans().await;
    let server = ReceivedSpan {
        transport: Transport::Grpc,
        trace_id: TRACE_ID.to_owned(),
        span_id: SERVER_SPAN_ID.to_owned(),
        parent_span_id: None,
        trace_state: "portico=1".to_owned(),
        flags: 1,
        name: "GET /orders/{id}".to_owned(),
        kind: "SPAN_KIND_SERVER".to_owned(),
        start_time_unix_nano: 1_767_225_600_000_000_001,
        end_time_unix_nano: 1_767_225_600_250_000_000,
        status_code: "STATUS_CODE_OK".to_owned(),
        status_message: String::new(),
        attributes: object(json!({
            "http.request.method": "GET", "http.response.status_code": 200, "portico.cache.hit": false,
            "portico.weight": 0.5, "portico.upstreams": ["a", "b"],
        })),
        resource_attributes: object(json!({"service.name": "gateway"})),
        scope_name: "portico".to_owned(),
        scope_version: "0.1.0".to_owned(),
    };
    assert_eq!(spans, [server, received_client_span("GET orders"), received_client_span("GET orders (gzip)")]);
}

#[tokio::test]
async fn wait_for_spans_returns_once_the_spans_arrive() {
    let receiver = OtlpReceiver::start().await;
    let exporter = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_exported(post_traces(&receiver, PROTOBUF, None, export_request("orders", client_span("late")).encode_to_vec()).await).await;
    };
    let waiter = receiver.wait_for_spans(Duration::from_secs(10), |spans| spans.iter().any(|span| span.name == "late"));
    let ((), spans) = tokio::join!(exporter, waiter);
    assert_eq!(spans, [received_client_span("late")]);
}

#[tokio::test]
async fn http_refuses_what_is_not_an_otlp_protobuf_export() {
    let receiver = OtlpReceiver::start().await;
    let json = post_traces(&receiver, "application/json", None, br#"{"resourceSpans": []}"#.to_vec()).await;
    assert_eq!(json.status(), 415, "OTLP/JSON is not taken");
    let garbage = post_traces(&receiver, PROTOBUF, None, b"\xff\xff\xff".to_vec()).await;
    assert_eq!(garbage.status(), 400, "bytes that are no ExportTraceServiceRequest");
    let not_gzip = post_traces(&receiver, PROTOBUF, Some("gzip"), b"plain".to_vec()).await;
    assert_eq!(not_gzip.status(), 400, "a body that does not gunzip");
    assert!(receiver.spans().await.is_empty(), "nothing refused was recorded");
}

#[tokio::test]
async fn a_stopped_receiver_refuses_connections() {
    let mut receiver = OtlpReceiver::start().await;
    receiver.stop().await;
    let client = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
    for url in [receiver.grpc_endpoint(), receiver.http_traces_url()] {
        let refused = client.post(&url).send().await.expect_err("nothing listens any more");
        assert!(refused.is_connect(), "{url}: {refused:?}");
    }
}
