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
use opentelemetry::propagation::Extractor;
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
    /// The config version this process serves (0: none yet), sent as the
    /// resource attribute `portico.config_version` of each batch.
    pub config_version: Option<&'static AtomicU64>,
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
    let exporter = OnRuntime::new(exporter, settings.config_version);
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_sampler(sampler).with_resource(resource).build())
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

/// An exporter whose calls run on the Tokio runtime it was made on, and
/// whose resource follows the config version (a batch carries the version
/// served when it is sent; each span has its own as `portico.config_version`).
#[derive(Debug)]
struct OnRuntime<E> {
    /// Locked by one export at a time (the SDK never runs two at once).
    exporter: Arc<tokio::sync::Mutex<E>>,
    runtime: tokio::runtime::Handle,
    /// The provider's resource, and the version last added to it.
    resource: Resource,
    config_version: Option<&'static AtomicU64>,
    sent_version: AtomicU64,
}

impl<E> OnRuntime<E> {
    fn new(exporter: E, config_version: Option<&'static AtomicU64>) -> Self {
        Self {
            exporter: Arc::new(tokio::sync::Mutex::new(exporter)),
            runtime: tokio::runtime::Handle::current(),
            resource: Resource::builder_empty().build(),
            config_version,
            sent_version: AtomicU64::new(0),
        }
    }

    /// The resource with the version served now, if that changed since the last batch.
    fn new_resource(&self) -> Option<Resource> {
        let version = self.config_version?.load(Ordering::Relaxed);
        if version == 0 || self.sent_version.swap(version, Ordering::Relaxed) == version {
            return None;
        }
        let attributes = self.resource.iter().map(|(key, value)| KeyValue::new(key.clone(), value.clone()));
        let version = KeyValue::new("portico.config_version", i64::try_from(version).unwrap_or(i64::MAX));
        Some(Resource::builder_empty().with_attributes(attributes.chain([version])).build())
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter + 'static> opentelemetry_sdk::trace::SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let exporter = self.exporter.clone();
        let spans = batch.len();
        let resource = self.new_resource();
        let export = self.runtime.spawn(async move {
            let mut exporter = exporter.lock().await;
            if let Some(resource) = resource {
                exporter.set_resource(&resource);
            }
            exporter.export(batch).await
        });
        async move {
            let exported = export.await.unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(format!("export task: {e}"))));
            if let Err(e) = &exported {
                warn_export_failed(spans, e);
            }
            exported
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Called by the SDK's thread once the last export is done.
        match self.exporter.try_lock() {
            Ok(exporter) => exporter.shutdown_with_timeout(timeout),
            Err(_) => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
        if let Some(exporter) = Arc::get_mut(&mut self.exporter) {
            exporter.get_mut().set_resource(resource);
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
