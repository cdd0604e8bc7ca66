//! The data plane's traces (the pipeline is [`portico_shared::telemetry`]'s):
//! a request gets a server span, child of the client's W3C `traceparent`
//! (`tracestate` kept) or the root of a new trace; each upstream try,
//! aggregate call, AMQP call and Redis rate-limit call is a client span
//! under it, and the try's context goes upstream in `traceparent` (the
//! request's own when it is not sampled, so the upstream joins the trace
//! either way). An unsampled request costs a context, no span export.
//!
//! The tracer is process-wide, like the metrics recorder: the pipeline's
//! future carries the request's context ([`FutureExt::with_context`]), so
//! the stages below it start their spans from [`Context::current`] without
//! it being passed down.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use portico_shared::telemetry::{Headers, TraceSettings};

pub use opentelemetry::context::FutureExt;
pub use portico_shared::telemetry::OtlpProtocol;

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// The config version this node serves (0: none yet), for the spans' resource.
pub static CONFIG_VERSION: AtomicU64 = AtomicU64::new(0);

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    /// `--otlp-sampling` is above 0: spans are made at all.
    sampling: bool,
}

/// Starts exporting spans; call once, inside the Tokio runtime.
pub fn start(settings: TraceSettings<'_>) -> Result<(), String> {
    let (service, sampling) = (settings.service, settings.sampling > 0.0);
    let provider = portico_shared::telemetry::provider(settings)?;
    let tracer = provider.tracer(service);
    TRACING
        .set(Tracing { provider, tracer, propagator: TraceContextPropagator::new(), sampling })
        .map_err(|_| "tracing is started already".to_owned())
}

/// Sends the spans still waiting (at shutdown). Blocks the calling thread.
pub fn shutdown() {
    if let Some(tracing) = TRACING.get()
        && let Err(e) = tracing.provider.shutdown()
    {
        tracing::warn!(error = %e, "spans not exported at shutdown");
    }
}

/// A span this process started, in its context: ended once, by
/// [`Span::end`], or when dropped unended (its work was cancelled: the
/// client left, a deadline passed) as failed with `cancelled`.
#[derive(Debug)]
pub struct Span {
    cx: Context,
    cancelled: &'static str,
    ended: bool,
}

impl Span {
    /// The context to run the span's work in, and to start its children from.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Ends the span, failed with `error` if there was one.
    pub fn end(mut self, error: Option<&dyn Display>) {
        self.ended = true;
        let span = self.cx.span();
        if let Some(error) = error {
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
    }

    /// Ends a client span whose call was answered with `status` (5xx: failed).
    pub fn end_answered(self, status: http::StatusCode) {
        self.cx.span().set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        let failed = status.is_server_error().then(|| format!("answered {status}"));
        self.end(failed.as_ref().map(|failed| failed as &dyn Display));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let span = self.cx.span();
        if !self.ended && span.is_recording() {
            span.set_status(Status::error(self.cancelled));
            span.end();
        }
    }
}

/// A `method` request's server span, child of the trace its `headers`
/// carry; `None` while tracing is off. At sampling 0 no span is made: the
/// client's trace context is passed on as it came.
pub fn server_span(headers: &HeaderMap, method: &http::Method, path: &str) -> Option<Span> {
    let tracing = TRACING.get()?;
    let parent = tracing.propagator.extract(&Headers(headers));
    let cancelled = "the client left before the answer";
    if !tracing.sampling {
        return parent.span().span_context().is_valid().then(|| Span { cx: parent, cancelled, ended: true });
    }
    let span = tracing
        .tracer
        .span_builder(Cow::Borrowed(method_name(method)))
        .with_kind(SpanKind::Server)
        .start_with_context(&tracing.tracer, &parent);
    let cx = parent.with_span(span);
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("http.request.method", method_name(method)));
        span.set_attribute(KeyValue::new("url.path", path.to_owned()));
    }
    Some(Span { cx, cancelled, ended: false })
}

/// A method's name in span names and attributes: one of HTTP's own, else
/// `_OTHER` (OpenTelemetry's convention), so clients cannot invent names.
fn method_name(method: &http::Method) -> &'static str {
    use http::Method;
    [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS, Method::CONNECT, Method::TRACE]
        .iter()
        .zip(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"])
        .find_map(|(known, name)| (known == method).then_some(name))
        .unwrap_or("_OTHER")
}

/// Names a server span by its route and notes the answer (`status`; 5xx
/// is an error, as OpenTelemetry's HTTP conventions have it).
pub fn answered(span: &Span, method: &http::Method, gateway: &str, version: Option<u64>, route: Option<&str>, status: http::StatusCode) {
    let span = span.cx.span();
    if !span.is_recording() {
        return;
    }
    if let Some(route) = route {
        span.update_name(format!("{} {route}", method_name(method)));
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
pub fn client_span<N, A>(name: N, attributes: A) -> Option<Span>
where
    N: FnOnce() -> String,
    A: FnOnce() -> Vec<KeyValue>,
{
    let tracing = TRACING.get().filter(|tracing| tracing.sampling)?;
    if !Context::map_current(|parent| parent.span().span_context().is_sampled()) {
        return None;
    }
    let parent = Context::current();
    let span = tracing
        .tracer
        .span_builder(Cow::Owned(name()))
        .with_kind(SpanKind::Client)
        .with_attributes(attributes())
        .start_with_context(&tracing.tracer, &parent);
    Some(Span { cx: parent.with_span(span), cancelled: "cancelled", ended: false })
}

/// The span of one upstream try (see [`client_span`]), its context written
/// into the try's `headers` (`traceparent`, `tracestate`): the try's own
/// when sampled, else the request's, so the upstream joins the trace either way.
pub fn upstream_try<N, A>(headers: &mut HeaderMap, name: N, attributes: A) -> Option<Span>
where
    N: FnOnce() -> String,
    A: FnOnce() -> Vec<KeyValue>,
{
    TRACING.get()?;
    let span = client_span(name, attributes);
    match &span {
        Some(span) => inject(span.cx.span().span_context(), headers),
        None => Context::map_current(|cx| inject(cx.span().span_context(), headers)),
    }
    span
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Writes `context` into `headers` as W3C `traceparent` and `tracestate`
/// (left out when empty, as W3C asks), when it is valid. Written here
/// rather than by the SDK's propagator, whose `format!`s and header
/// parsing cost a tenth of an unsampled request's instructions.
fn inject(context: &SpanContext, headers: &mut HeaderMap) {
    if !context.is_valid() {
        return;
    }
    let mut traceparent = [0u8; 55];
    let mut at = 0;
    let mut put = |bytes: &[u8], hex: bool| {
        for byte in bytes {
            if hex {
                traceparent[at] = HEX[usize::from(byte >> 4)];
                traceparent[at + 1] = HEX[usize::from(byte & 0xf)];
                at += 2;
            } else {
                traceparent[at] = *byte;
                at += 1;
            }
        }
    };
    put(b"00-", false);
    put(&context.trace_id().to_bytes(), true);
    put(b"-", false);
    put(&context.span_id().to_bytes(), true);
    put(b"-", false);
    put(&[context.trace_flags().to_u8()], true);
    // Lowercase hex digits and dashes: a valid header value.
    if let Ok(value) = HeaderValue::from_bytes(&traceparent) {
        headers.insert(TRACEPARENT, value);
    }
    let state = context.trace_state().header();
    match HeaderValue::try_from(state) {
        Ok(value) if !value.is_empty() => {
            headers.insert(TRACESTATE, value);
        }
        _ => {
            headers.remove(TRACESTATE);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn inject_writes_what_the_sdks_propagator_writes() {
        for (flags, state) in [(TraceFlags::SAMPLED, "vendor=kept,other=1"), (TraceFlags::default(), "")] {
            let context = SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                true,
                state.parse::<TraceState>().unwrap(),
            );
            let mut ours = HeaderMap::new();
            ours.insert(TRACESTATE, HeaderValue::from_static("client=old"));
            inject(&context, &mut ours);
            let mut theirs = std::collections::HashMap::new();
            TraceContextPropagator::new().inject_context(&Context::new().with_remote_span_context(context), &mut theirs);
            assert_eq!(ours[&TRACEPARENT].to_str().unwrap(), theirs["traceparent"]);
            assert_eq!(
                ours.get(&TRACESTATE).map(|v| v.to_str().unwrap()),
                Some(state).filter(|s| !s.is_empty()),
                "an empty tracestate is left out"
            );
        }
    }
}
