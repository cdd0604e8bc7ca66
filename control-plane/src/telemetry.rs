//! The control plane's traces: its `tracing` spans go to the OTLP
//! collector (`--otlp-endpoint`, through `tracing-opentelemetry`). Each
//! admin request is a server span named by its route template, child of
//! the caller's W3C `traceparent`, and a publish is a span within it.

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use portico_shared::telemetry::{Headers, TraceSettings};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::settings::Settings;

/// The tracer provider exporting to `endpoint`, as `settings` say.
pub fn provider(settings: &Settings, endpoint: &str) -> Result<SdkTracerProvider, String> {
    portico_shared::telemetry::provider(TraceSettings {
        endpoint,
        protocol: settings.otlp_protocol,
        sampling: settings.otlp_sampling,
        service: "portico-cp",
        resource: Vec::new(),
        config_version: None,
    })
}

/// The spans sent as traces: admin requests and publishes.
pub fn traced() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target("portico_cp::telemetry", tracing::Level::INFO)
        .with_target("portico_cp::publish", tracing::Level::INFO)
}

/// The span of one admin request (`TraceLayer::make_span_with`).
pub fn admin_span<B>(request: &Request<B>) -> Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "admin request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        http.route = route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(TraceContextPropagator::new().extract(&Headers(request.headers())));
    span
}

/// Notes the answer on the request's span (`TraceLayer::on_response`).
pub fn answered<B>(response: &Response<B>, _latency: std::time::Duration, span: &Span) {
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}
