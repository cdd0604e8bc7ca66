//! Traces over OpenTelemetry's OTLP (`--otlp-endpoint`, gRPC or
//! HTTP/protobuf; off by default). A request gets a server span, child of
//! the client's W3C `traceparent` (`tracestate` kept) or the root of a new
//! trace; each upstream try, aggregate call, AMQP call and Redis rate-limit
//! call is a client span under it, and the try's context goes upstream in
//! `traceparent`. New traces are sampled at `--otlp-sampling`; a client's
//! sampled or unsampled parent is followed, except at `0`, which sends
//! nothing at all. An unsampled request costs a context and no span export.
//!
//! The tracer is process-wide, like the metrics recorder: the pipeline's
//! future carries the request's context ([`FutureExt::with_context`]), so
//! the stages below it start their spans from [`Context::current`] without
//! it being passed down. Spans are exported in batches by the SDK's own
//! thread; the exporters need the Tokio runtime, so their calls are run on
//! it ([`OnRuntime`]).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData};

pub use opentelemetry::context::FutureExt;

/// How spans reach the collector (`--otlp-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (the collector's port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, `/v1/traces`).
    Http,
}

/// Longest wait for the collector to take a batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static TRACING: OnceLock<Tracing> = OnceLock::new();

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// Where and how to send spans, and what the spans say of this node.
#[derive(Debug)]
pub struct TraceSettings<'a> {
    pub endpoint: &'a str,
    pub protocol: OtlpProtocol,
    /// The share of new traces sampled, 0 to 1.
    pub sampling: f64,
    pub service: &'static str,
    pub node_id: &'a str,
    pub gateway: &'a str,
}

/// Starts exporting spans; call once, inside the Tokio runtime.
pub fn start(settings: &TraceSettings<'_>) -> Result<(), String> {
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => SpanExporter::builder().with_tonic().with_endpoint(settings.endpoint).with_timeout(EXPORT_TIMEOUT).build(),
        OtlpProtocol::Http => {
            let endpoint = match settings.endpoint.trim_end_matches('/') {
                url if url.ends_with("/v1/traces") => url.to_owned(),
                url => format!("{url}/v1/traces"),
            };
            SpanExporter::builder().with_http().with_endpoint(endpoint).with_timeout(EXPORT_TIMEOUT).build()
        }
    }
    .map_err(|e| format!("--otlp-endpoint: {e}"))?;
    let sampler = if settings.sampling <= 0.0 {
        Sampler::AlwaysOff
    } else {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling)))
    };
    let resource = Resource::builder()
        .with_service_name(settings.service)
        .with_attributes([
            KeyValue::new("service.instance.id", settings.node_id.to_owned()),
            KeyValue::new("portico.node_id", settings.node_id.to_owned()),
            KeyValue::new("portico.gateway", settings.gateway.to_owned()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(OnRuntime::new(exporter))
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(settings.service);
    TRACING.set(Tracing { provider, tracer, propagator: TraceContextPropagator::new() }).map_err(|_| "tracing is started already".to_owned())
}

/// Sends the spans still waiting (at shutdown). Blocks the calling thread.
pub fn shutdown() {
    if let Some(tracing) = TRACING.get()
        && let Err(e) = tracing.provider.shutdown()
    {
        tracing::warn!(error = %e, "spans not exported at shutdown");
    }
}

/// Whether spans are exported at all.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// A `method` request's server span, child of the trace its `headers`
/// carry, in a context for the pipeline to run in; `None` while tracing is off.
pub fn server_span(headers: &HeaderMap, method: &http::Method, path: &str) -> Option<Context> {
    let tracing = TRACING.get()?;
    let parent = tracing.propagator.extract(&Headers(headers));
    let span = tracing.tracer.span_builder(method.to_string()).with_kind(SpanKind::Server).start_with_context(&tracing.tracer, &parent);
    let cx = parent.with_span(span);
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("http.request.method", method.to_string()));
        span.set_attribute(KeyValue::new("url.path", path.to_owned()));
    }
    Some(cx)
}

/// Names a server span by its route and notes the answer (`status`; 5xx
/// is an error, as OpenTelemetry's HTTP conventions have it).
pub fn answered(cx: &Context, method: &http::Method, gateway: &str, version: Option<u64>, route: Option<&str>, status: http::StatusCode) {
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    if let Some(route) = route {
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new("portico.route", route.to_owned()));
    }
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    span.set_attribute(KeyValue::new("portico.gateway", gateway.to_owned()));
    if let Some(version) = version {
        span.set_attribute(KeyValue::new("portico.config_version", i64::try_from(version).unwrap_or(i64::MAX)));
    }
    if status.is_server_error() {
        span.set_status(Status::error(format!("answered {status}")));
    }
}


/// A client span under the current context's span, named by `name`, with
/// `attributes`, when that span is sampled (an unsampled request gets no
/// spans below its own).
pub fn client_span<N, A>(name: N, attributes: A) -> Option<Context>
where
    N: FnOnce() -> String,
    A: FnOnce() -> Vec<KeyValue>,
{
    let tracing = TRACING.get()?;
    let parent = Context::current();
    if !parent.span().span_context().is_sampled() {
        return None;
    }
    let span = tracing
        .tracer
        .span_builder(Cow::Owned(name()))
        .with_kind(SpanKind::Client)
        .with_attributes(attributes())
        .start_with_context(&tracing.tracer, &parent);
    Some(parent.with_span(span))
}

/// The span of one upstream try (see [`client_span`]), its context written
/// into the try's `headers` (`traceparent`, `tracestate`): the try's own
/// when sampled, else the request's, so the upstream joins the trace either way.
pub fn upstream_try<N, A>(headers: &mut HeaderMap, name: N, attributes: A) -> Option<Context>
where
    N: FnOnce() -> String,
    A: FnOnce() -> Vec<KeyValue>,
{
    let tracing = TRACING.get()?;
    let span = client_span(name, attributes);
    let current;
    let cx = match &span {
        Some(cx) => cx,
        None => {
            current = Context::current();
            &current
        }
    };
    if cx.span().span_context().is_valid() {
        tracing.propagator.inject_context(cx, &mut HeadersMut(headers));
    }
    span
}

/// The context of the span requests are traced in now, to carry into a
/// task of their own (`None` while tracing is off).
pub fn current() -> Option<Context> {
    enabled().then(Context::current).filter(|cx| cx.span().span_context().is_sampled())
}

/// Ends `cx`'s span, failed with `error` if there was one.
pub fn end(cx: &Context, error: Option<&dyn std::fmt::Display>) {
    let span = cx.span();
    if let Some(error) = error {
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

/// Ends a client span whose call was answered with `status` (5xx: failed).
pub fn end_answered(cx: &Context, status: http::StatusCode) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    let failed = status.is_server_error().then(|| format!("answered {status}"));
    end(cx, failed.as_ref().map(|f| f as &dyn std::fmt::Display));
}

/// The hex trace id of `cx`, when it is in a trace.
pub fn trace_id(cx: &Context) -> Option<String> {
    let context = cx.span().span_context().clone();
    context.is_valid().then(|| context.trace_id().to_string())
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// An exporter whose calls run on the Tokio runtime it was made on: the
/// SDK's batch thread polls them outside of it, and the OTLP clients
/// (tonic, hyper) need its timers and tasks.
#[derive(Debug)]
struct OnRuntime<E> {
    exporter: Arc<E>,
    runtime: tokio::runtime::Handle,
}

impl<E> OnRuntime<E> {
    fn new(exporter: E) -> Self {
        Self { exporter: Arc::new(exporter), runtime: tokio::runtime::Handle::current() }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter + 'static> opentelemetry_sdk::trace::SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let exporter = self.exporter.clone();
        let export = self.runtime.spawn(async move { exporter.export(batch).await });
        async move {
            export.await.unwrap_or_else(|e| Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(format!("export task: {e}"))))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(exporter) = Arc::get_mut(&mut self.exporter) {
            exporter.set_resource(resource);
        }
    }
}
