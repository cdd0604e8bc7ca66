//! The OTLP trace pipeline both planes share: an exporter over gRPC or
//! HTTP/protobuf (`--otlp-endpoint`, `--otlp-protocol`), batched by the
//! OpenTelemetry SDK, with a sampler (`--otlp-sampling`: new traces at that
//! share, a client's `traceparent` followed; `0` sends nothing at all) and
//! the resource naming the process. The SDK's batch thread polls the
//! exporter outside the Tokio runtime that its clients (tonic, hyper)
//! need, so exports run on that runtime ([`OnRuntime`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData};

/// How spans reach the collector (`--otlp-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (the collector's port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, `/v1/traces`).
    Http,
}

/// Longest wait for the collector to take a batch (below the SDK's 5 s for
/// shutting down, so the last batch still goes after one that timed out).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how to send spans, and what the spans say of this process.
#[derive(Debug)]
pub struct TraceSettings<'a> {
    pub endpoint: &'a str,
    pub protocol: OtlpProtocol,
    /// The share of new traces sampled, 0 to 1.
    pub sampling: f64,
    /// `service.name`.
    pub service: &'static str,
    /// More resource attributes (`service.instance.id` first, if any).
    pub resource: Vec<KeyValue>,
}

/// The tracer provider exporting to `settings.endpoint`; call inside the Tokio runtime.
pub fn provider(settings: TraceSettings<'_>) -> Result<SdkTracerProvider, String> {
    if !settings.endpoint.starts_with("http://") {
        return Err(format!(
            "--otlp-endpoint must be an http:// URL (TLS to the collector is not supported yet), got '{}'",
            settings.endpoint
        ));
    }
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
    let resource = Resource::builder().with_service_name(settings.service).with_attributes(settings.resource).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(OnRuntime::new(exporter)).with_sampler(sampler).with_resource(resource).build())
}

/// When an export failure was last logged, in seconds since the epoch.
static LAST_WARNED: AtomicU64 = AtomicU64::new(0);

/// Logs that `spans` spans were lost, at most once a minute (a collector
/// that is down would otherwise fill the log).
fn warn_export_failed(spans: usize, error: &OTelSdkError) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let last = LAST_WARNED.load(Ordering::Relaxed);
    if now >= last + 60 && LAST_WARNED.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(spans, error = %error, "spans not exported to the OTLP collector (logged at most once a minute)");
    }
}

/// An exporter whose calls run on the Tokio runtime it was made on.
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
        let spans = batch.len();
        let export = self.runtime.spawn(async move { exporter.export(batch).await });
        async move {
            let exported = export.await.unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(format!("export task: {e}"))));
            if let Err(e) = &exported {
                warn_export_failed(spans, e);
            }
            exported
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

/// HTTP headers as a carrier a W3C trace context is read from.
#[derive(Debug)]
pub struct Headers<'a>(pub &'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// HTTP headers as a carrier a W3C trace context is written into.
#[derive(Debug)]
pub struct HeadersMut<'a>(pub &'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    /// Sets `key` (an empty value, as an empty `tracestate`, removes it:
    /// W3C asks senders to leave it out).
    fn set(&mut self, key: &str, value: String) {
        let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) else { return };
        match http::HeaderValue::try_from(value) {
            Ok(value) if !value.is_empty() => {
                self.0.insert(name, value);
            }
            _ => {
                self.0.remove(name);
            }
        }
    }
}
