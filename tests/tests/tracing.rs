//! Traces end to end: a real data plane exports over OTLP (gRPC and
//! HTTP/protobuf) to an independent receiver (Python, `opentelemetry-proto`
//! and grpcio); the spans of a request through the gateway, their links
//! and attributes, and the `traceparent` the upstream got all match. The
//! control plane's admin requests are traced too.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::Duration;

use portico_test_support::otlp::{OtlpReceiver, ReceivedSpan, Transport};
use portico_test_support::{ControlPlane, TestDb, TestUpstream, refusing_url, serve_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A config whose route `/echo` retries a dead target once before the live one.
fn config(upstream: &TestUpstream, dead: &str) -> Value {
    json!({
        "services": [{"name": "echo", "targets": [{"url": dead, "weight": 1000}, {"url": upstream.url(), "weight": 1}],
                      "load_balancing": "round_robin", "retries": {"attempts": 3, "on": ["connect-failure"]}}],
        "routes": [{"name": "echo-route", "service": "echo", "paths": ["/echo"]}],
    })
}

/// A config whose route `route` takes every path to `upstream`.
fn echo(upstream: &TestUpstream, route: &str) -> Value {
    json!({"services": [{"name": "echo", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": route, "service": "echo", "paths": ["/"]}]})
}

fn by_kind<'a>(spans: &'a [ReceivedSpan], kind: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.kind == kind).collect()
}

async fn traced_request(transport: Transport) {
    let receiver = OtlpReceiver::start().await;
    let upstream = TestUpstream::start("echo").await;
    let dead = refusing_url();
    let (endpoint, protocol) = match transport {
        Transport::Grpc => (receiver.grpc_endpoint(), "grpc"),
        Transport::Http => (receiver.http_endpoint(), "http"),
    };
    let flags = ["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol];
    let (_db, _cp, dp) = serve_config(&config(&upstream, &dead), &flags).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let response = client()
        .get(format!("{}/echo/x", dp.proxy_url))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .header("tracestate", "vendor=kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed: Value = response.json().await.unwrap();

    let spans = receiver
        .wait_for_spans(DEADLINE, |spans| by_kind(spans, "SPAN_KIND_SERVER").len() == 1 && by_kind(spans, "SPAN_KIND_CLIENT").len() >= 2)
        .await;
    assert!(spans.iter().all(|span| span.transport == transport && span.trace_id == trace), "one trace, the client's: {spans:#?}");
    let server = by_kind(&spans, "SPAN_KIND_SERVER")[0];
    assert_eq!(server.parent_span_id.as_deref(), Some(parent), "the server span is the client's span's child");
    assert_eq!(server.name, "GET echo-route");
    assert_eq!(server.trace_state, "vendor=kept");
    assert_eq!(server.attributes["http.request.method"], "GET");
    assert_eq!(server.attributes["url.path"], "/echo/x");
    assert_eq!(server.attributes["http.response.status_code"], 200);
    assert_eq!(server.attributes["portico.route"], "echo-route");
    assert_eq!(server.attributes["portico.gateway"], "default");
    assert!(server.attributes["portico.config_version"].as_i64().unwrap() >= 1);
    assert_eq!(server.resource_attributes["service.name"], "portico-dp");
    assert_eq!(server.resource_attributes["portico.node_id"], "dp");
    assert_eq!(server.resource_attributes["portico.gateway"], "default");
    assert_eq!(server.resource_attributes["portico.config_version"], server.attributes["portico.config_version"]);

    let mut tries = by_kind(&spans, "SPAN_KIND_CLIENT");
    tries.sort_by_key(|span| span.attributes["portico.try"].as_i64());
    assert_eq!(tries.len(), 2, "a refused try and the one that answered: {tries:#?}");
    for (n, try_span) in tries.iter().enumerate() {
        assert_eq!(try_span.parent_span_id.as_deref(), Some(server.span_id.as_str()), "each try is the server span's child");
        assert_eq!(try_span.name, "GET echo");
        assert_eq!(try_span.attributes["portico.try"], json!(n + 1));
        assert!(try_span.start_time_unix_nano >= server.start_time_unix_nano && try_span.end_time_unix_nano <= server.end_time_unix_nano);
    }
    assert_eq!(tries[0].attributes["server.address"], dead.as_str());
    assert_eq!(tries[0].status_code, "STATUS_CODE_ERROR", "the refused connection");
    assert_eq!(tries[1].attributes["server.address"], upstream.url().as_str());
    assert_eq!(tries[1].attributes["http.response.status_code"], 200);

    let sent = echoed["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(sent, format!("00-{trace}-{}-01", tries[1].span_id), "the upstream joined the trace under the try that reached it");
    assert_eq!(echoed["headers"]["tracestate"], "vendor=kept");
}

#[tokio::test]
async fn a_request_is_a_server_span_with_a_client_span_per_try_over_otlp_grpc() {
    traced_request(Transport::Grpc).await;
}

#[tokio::test]
async fn spans_go_over_otlp_http_protobuf_too() {
    traced_request(Transport::Http).await;
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_trace_the_upstream_joins() {
    let receiver = OtlpReceiver::start().await;
    let upstream = TestUpstream::start("echo").await;
    let config = echo(&upstream, "r");
    let (_db, _cp, dp) = serve_config(&config, &["--otlp-endpoint", &receiver.grpc_endpoint()]).await;
    let echoed: Value = client().get(format!("{}/new", dp.proxy_url)).send().await.unwrap().json().await.unwrap();
    let sent = echoed["headers"]["traceparent"].as_str().expect("a traceparent went upstream").to_owned();
    let spans = receiver.wait_for_spans(DEADLINE, |spans| spans.len() >= 2).await;
    let server = by_kind(&spans, "SPAN_KIND_SERVER")[0];
    assert_eq!(server.parent_span_id, None, "a root span");
    assert!(sent.starts_with(&format!("00-{}-", server.trace_id)) && sent.ends_with("-01"), "{sent} in trace {}", server.trace_id);
}

#[tokio::test]
async fn sampling_zero_sends_nothing_but_the_trace_still_goes_upstream() {
    let receiver = OtlpReceiver::start().await;
    let upstream = TestUpstream::start("echo").await;
    let config = echo(&upstream, "r");
    let flags = ["--otlp-endpoint", &receiver.grpc_endpoint(), "--otlp-sampling", "0"];
    let (_db, _cp, mut dp) = serve_config(&config, &flags).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    for sampled in ["01", "00"] {
        let response = client()
            .get(format!("{}/quiet", dp.proxy_url))
            .header("traceparent", format!("00-{trace}-b7ad6b7169203331-{sampled}"))
            .send()
            .await
            .unwrap();
        let echoed: Value = response.json().await.unwrap();
        let sent = echoed["headers"]["traceparent"].as_str().unwrap();
        assert_eq!(sent, format!("00-{trace}-b7ad6b7169203331-{sampled}"), "the client's trace context goes upstream as it came");
    }
    // Spans are exported in batches; a stopped node flushes what it has.
    dp.signal_term();
    dp.wait();
    assert!(receiver.spans().await.is_empty(), "sampling 0 exports nothing");
}

#[tokio::test]
async fn with_tracing_off_the_clients_trace_context_goes_upstream_untouched() {
    let upstream = TestUpstream::start("echo").await;
    let config = echo(&upstream, "r");
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = client()
        .get(format!("{}/plain", dp.proxy_url))
        .header("traceparent", traceparent)
        .header("tracestate", "a=1")
        .send()
        .await
        .unwrap();
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["headers"]["traceparent"], traceparent);
    assert_eq!(echoed["headers"]["tracestate"], "a=1");
}

/// Parses OpenMetrics `text` with prometheus-client's parser (an
/// independent one); the exemplars of its samples as `(name, labels, trace_id)`.
fn openmetrics_exemplars(text: &str) -> Vec<(String, Value, String)> {
    use std::io::Write;
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
found = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        if sample.exemplar:
            found.append([sample.name, sample.labels, sample.exemplar.labels["trace_id"]])
print(json.dumps(found))
"#;
    let mut parser = std::process::Command::new(portico_test_support::grpc_peer::python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    parser.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(output.status.success(), "not valid OpenMetrics: {}\n{text}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn latency_buckets_carry_the_sampled_trace_as_an_exemplar_in_openmetrics() {
    let receiver = OtlpReceiver::start().await;
    let upstream = TestUpstream::start("echo").await;
    let config = echo(&upstream, "exemplary");
    let (_db, _cp, dp) = serve_config(&config, &["--otlp-endpoint", &receiver.grpc_endpoint()]).await;
    let echoed: Value = client().get(format!("{}/x", dp.proxy_url)).send().await.unwrap().json().await.unwrap();
    let trace_id = echoed["headers"]["traceparent"].as_str().unwrap().split('-').nth(1).unwrap().to_owned();

    let metrics = client()
        .get(format!("{}/metrics", dp.status_url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    let exemplars = openmetrics_exemplars(&text);
    let ours: Vec<_> = exemplars.iter().filter(|(_, labels, _)| labels["route"] == "exemplary").collect();
    assert_eq!(ours.len(), 1, "one request, one bucket with its exemplar: {exemplars:?}");
    assert_eq!(ours[0].0, "portico_request_duration_seconds_bucket");
    assert_eq!(ours[0].2, trace_id, "the exemplar is the request's trace");

    let plain = client().get(format!("{}/metrics", dp.status_url)).send().await.unwrap().text().await.unwrap();
    assert!(!plain.contains("trace_id") && !plain.contains("# EOF"), "the Prometheus text format has no exemplars");
}

#[tokio::test]
async fn the_control_plane_traces_admin_requests() {
    let receiver = OtlpReceiver::start().await;
    let db = TestDb::sqlite();
    let cp = ControlPlane::start_with_flags(&db.url, &["--otlp-endpoint", &receiver.grpc_endpoint()]).await;
    let trace = "5b8efff798038103d269b633813fc60c";
    let response = cp
        .admin(reqwest::Method::POST, "/api/v1/gateways/default/services")
        .header("traceparent", format!("00-{trace}-eee19b7ec3c1b174-01"))
        .json(&json!({"name": "users", "targets": [{"url": "http://10.0.0.5:8000"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let ours = |spans: &[ReceivedSpan], kind: &str| spans.iter().any(|span| span.trace_id == trace && span.kind == kind);
    let spans = receiver.wait_for_spans(DEADLINE, |spans| ours(spans, "SPAN_KIND_SERVER") && ours(spans, "SPAN_KIND_INTERNAL")).await;
    let request = spans.iter().find(|span| span.trace_id == trace && span.kind == "SPAN_KIND_SERVER").unwrap();
    assert_eq!(request.parent_span_id.as_deref(), Some("eee19b7ec3c1b174"));
    assert_eq!(request.name, "POST /api/v1/gateways/{gw}/services");
    assert_eq!(request.attributes["http.response.status_code"], 201);
    assert_eq!(request.resource_attributes["service.name"], "portico-cp");
    let publish = spans.iter().find(|span| span.trace_id == trace && span.kind == "SPAN_KIND_INTERNAL").unwrap();
    assert_eq!(publish.name, "publish");
    assert_eq!(publish.parent_span_id.as_deref(), Some(request.span_id.as_str()), "the publish is within the request");
    // Nothing but admin requests and publishes is sent: not the config
    // streams, not the exporter's own calls. Once a later request's span is
    // in, so is anything exported before it.
    let later = "6c8efff798038103d269b633813fc60d";
    let listed = cp
        .admin(reqwest::Method::GET, "/api/v1/gateways")
        .header("traceparent", format!("00-{later}-eee19b7ec3c1b174-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let all = receiver.wait_for_spans(DEADLINE, |spans| spans.iter().any(|span| span.trace_id == later)).await;
    assert!(all.iter().all(|span| span.name == "publish" || span.kind == "SPAN_KIND_SERVER"), "{all:#?}");
}

#[tokio::test]
async fn a_grpc_call_through_the_gateway_is_a_span_named_by_its_method() {
    use portico_test_support::GrpcUpstream;
    use portico_test_support::grpc::echo::SayRequest;
    use portico_test_support::grpc::echo::echo_client::EchoClient;

    let receiver = OtlpReceiver::start().await;
    let echo = GrpcUpstream::start().await;
    let config = json!({"services": [{"name": "echo", "protocol": "grpc", "targets": [{"url": echo.url()}]}],
        "routes": [{"name": "grpc", "service": "echo", "paths": ["/echo.v1.Echo"], "strip_path": false}]});
    let (_db, _cp, dp) = serve_config(&config, &["--otlp-endpoint", &receiver.grpc_endpoint()]).await;
    let channel = tonic::transport::Endpoint::from_shared(dp.proxy_url.clone()).unwrap().connect().await.unwrap();
    let reply = EchoClient::new(channel).say(SayRequest { text: "traced".into(), delay_ms: 0 }).await.unwrap();
    assert_eq!(reply.into_inner().text, "traced");
    let spans = receiver.wait_for_spans(DEADLINE, |spans| spans.len() >= 2).await;
    let call = by_kind(&spans, "SPAN_KIND_CLIENT")[0];
    assert_eq!(call.name, "echo.v1.Echo/Say");
    assert_eq!(call.attributes["rpc.system"], "grpc");
    assert_eq!(call.attributes["rpc.method"], "echo.v1.Echo/Say");
    assert_eq!(call.parent_span_id.as_deref(), Some(by_kind(&spans, "SPAN_KIND_SERVER")[0].span_id.as_str()));
}
