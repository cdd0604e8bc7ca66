//! Prometheus metrics of the data plane: names, help texts and the few
//! recording helpers the pipeline and config client call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Histogram, SharedString, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;

/// Installs the recorder (shared with the control plane, see
/// [`portico_shared::metrics`]) and describes every metric; call once.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = portico_shared::metrics::install()?;
    describe_counter!("portico_requests_total", "Requests answered, by route and status");
    describe_histogram!("portico_request_duration_seconds", metrics::Unit::Seconds, "Time to the response headers, by route");
    describe_gauge!("portico_config_version", "Config version this node serves");
    describe_counter!("portico_config_swaps_total", "Config versions applied");
    describe_counter!("portico_config_nacks_total", "Config versions rejected");
    describe_gauge!("portico_config_routes", "Routes in the config this node serves");
    describe_histogram!("portico_config_compile_seconds", metrics::Unit::Seconds, "Time to verify and compile a config version");
    describe_counter!(
        "portico_grpc_requests_total",
        "Calls on routes whose service speaks gRPC, by route, method (pkg.Service/Method, or other) and gRPC status code name"
    );
    describe_counter!(
        "portico_transform_skipped_total",
        "Responses a response-transform left untouched, by route and reason (not_json, too_large, invalid_json, encoding, no_transform)"
    );
    describe_counter!("portico_auth_refusals_total", "Requests refused by authentication (401) or scopes (403), by route");
    describe_counter!("portico_jwks_fetches_total", "JWKS documents fetched, by outcome (ok or error)");
    describe_counter!("portico_rate_limited_total", "Requests refused by a rate limit (429), by route");
    describe_counter!(
        "portico_rate_limit_backend_failures_total",
        "Rate-limit decisions Redis could not make in time (on_backend_failure decided)"
    );
    describe_gauge!(
        "portico_rate_limit_fleet_nodes",
        "Data planes sharing this node's Redis-backed limits, as last counted in Redis (the fewest of any limit); the local fallback admits limit / this"
    );
    describe_gauge!(
        "portico_upstream_target_healthy",
        "1 when a target may take traffic, by service and target (kept by active health checks)"
    );
    describe_counter!("portico_upstream_ejections_total", "Targets ejected by passive health checks, by service and target");
    describe_gauge!("portico_upstream_circuit_open", "1 while a target's circuit breaker is open or half-open, by service and target");
    describe_counter!("portico_retry_budget_exhausted_total", "Retries not made because the route's retry budget was spent");
    describe_counter!(
        "portico_upstream_connect_failures_total",
        "Connections to a target that could not be made (refused, timed out, TLS failed), by service and target"
    );
    describe_counter!("portico_cache_hits_total", "Requests answered from the response cache with a fresh response, by route");
    describe_counter!(
        "portico_cache_misses_total",
        "Requests of a cached route that went upstream (not stored, vary miss, stale needing revalidation), by route"
    );
    describe_counter!("portico_cache_stale_served_total", "Stale responses served (stale-while-revalidate, stale-if-error), by route");
    describe_counter!(
        "portico_cache_coalesced_total",
        "Requests that waited for another request's upstream fetch of the same key, by route"
    );
    describe_gauge!("portico_cache_stored_bytes", metrics::Unit::Bytes, "Bytes of responses stored, by route");
    describe_counter!(
        "portico_cache_evictions_total",
        "Stored responses dropped, by route and cause (size: for room; expired: of no more use)"
    );
    describe_histogram!(
        "portico_aggregate_call_duration_seconds",
        metrics::Unit::Seconds,
        "Time of each aggregate call, by route, call and outcome (ok, error, timeout, not_made)"
    );
    describe_counter!("portico_aggregate_answers_total", "Aggregate answers, by route and result (complete, partial, failed)");
    describe_counter!(
        "portico_aggregate_merge_collisions_total",
        "Keys a later call overwrote in a deep merge, by route and overwriting call"
    );
    describe_counter!(
        "portico_consumer_requests_total",
        "Requests of authenticated consumers, by route, consumer and status (only with --metrics-consumers)"
    );
    describe_counter!("portico_access_log_lines_total", "Access log lines written");
    describe_counter!(
        "portico_access_log_dropped_total",
        "Access log lines dropped, by reason (queue_full: the writer fell behind; write_failed: the file could not be written)"
    );
    crate::backend::amqp::metrics::describe();
    // Counters alerts watch exist from 0, so `increase()` sees their first
    // event (a series born at 1 shows none).
    counter!("portico_config_nacks_total").increment(0);
    counter!("portico_rate_limit_backend_failures_total").increment(0);
    Ok(handle)
}

/// The request metrics of one route. Their handles are kept after first
/// use: looking a labelled metric up in the registry cost more than
/// recording it, on every request. They are made at the route's first
/// request: a route nobody calls holds a name it shares and an empty cell.
#[derive(Debug)]
pub struct RouteMetrics {
    route: SharedString,
    handles: OnceLock<Box<Handles>>,
}

/// The registry's handles of a route's metrics.
#[derive(Debug)]
struct Handles {
    duration: Histogram,
    answered: RwLock<Vec<(StatusCode, Counter)>>,
}

impl RouteMetrics {
    /// The metrics of `route` (`""`: requests no route matched).
    pub fn new(route: Arc<str>) -> Self {
        Self { route: SharedString::from_shared(route), handles: OnceLock::new() }
    }

    /// Those of requests no route matched.
    pub fn unmatched() -> &'static Self {
        static UNMATCHED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new(Arc::from("")));
        &UNMATCHED
    }

    /// Counts a request answered with `status`, its headers sent after
    /// `elapsed`; a sampled request's `trace` is kept as an exemplar.
    pub fn request_done(&self, status: StatusCode, elapsed: Duration, trace: Option<opentelemetry::trace::TraceId>) {
        let route = &self.route;
        let handles = self.handles.get_or_init(|| {
            Box::new(Handles {
                duration: histogram!("portico_request_duration_seconds", "route" => route.clone()),
                answered: RwLock::default(),
            })
        });
        handles.duration.record(elapsed.as_secs_f64());
        if let Some(trace_id) = trace {
            crate::openmetrics::record(route, elapsed.as_secs_f64(), trace_id);
        }
        let answered = handles.answered.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = answered.iter().find(|(seen, _)| *seen == status) {
            counter.increment(1);
            return;
        }
        drop(answered);
        let counter = counter!("portico_requests_total", "route" => route.clone(), "status" => status.as_u16().to_string());
        counter.increment(1);
        let mut answered = handles.answered.write().unwrap_or_else(PoisonError::into_inner);
        if !answered.iter().any(|(seen, _)| *seen == status) {
            answered.push((status, counter));
        }
    }
}

/// Whether requests are also counted by consumer (`--metrics-consumers`):
/// a label with one value per consumer, so only when asked for.
static BY_CONSUMER: AtomicBool = AtomicBool::new(false);

pub fn count_by_consumer(on: bool) {
    BY_CONSUMER.store(on, Ordering::Relaxed);
}

pub fn by_consumer() -> bool {
    BY_CONSUMER.load(Ordering::Relaxed)
}

/// A request of `consumer` on `route` answered with `status`.
pub fn consumer_request(route: Arc<str>, consumer: String, status: StatusCode) {
    counter!("portico_consumer_requests_total", "route" => SharedString::from_shared(route), "consumer" => consumer, "status" => status.as_u16().to_string())
        .increment(1);
}

pub fn config_applied(version: u64, routes: usize) {
    gauge!("portico_config_version").set(version as f64);
    gauge!("portico_config_routes").set(routes as f64);
    counter!("portico_config_swaps_total").increment(1);
}

pub fn config_compiled(elapsed: Duration) {
    histogram!("portico_config_compile_seconds").record(elapsed.as_secs_f64());
}

pub fn config_rejected() {
    counter!("portico_config_nacks_total").increment(1);
}

pub fn auth_refused(route: Arc<str>, status: StatusCode) {
    counter!("portico_auth_refusals_total", "route" => SharedString::from_shared(route), "status" => status.as_u16().to_string())
        .increment(1);
}

/// A response a `response-transform` left untouched, and why (`not_json`,
/// `too_large`, `invalid_json`, `encoding`, `no_transform`).
pub fn transform_skipped(route: Arc<str>, reason: &'static str) {
    counter!("portico_transform_skipped_total", "route" => SharedString::from_shared(route), "reason" => reason).increment(1);
}

/// A gRPC call on `route` to `method` ended with the status named `code`.
pub fn grpc_call(route: Arc<str>, method: String, code: &'static str) {
    counter!("portico_grpc_requests_total", "route" => SharedString::from_shared(route), "method" => method, "code" => code).increment(1);
}

pub fn jwks_fetched(ok: bool) {
    counter!("portico_jwks_fetches_total", "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn rate_limited(route: Arc<str>) {
    counter!("portico_rate_limited_total", "route" => SharedString::from_shared(route)).increment(1);
}

pub fn rate_limit_backend_failed() {
    counter!("portico_rate_limit_backend_failures_total").increment(1);
}

pub fn rate_limit_fleet_nodes(nodes: u64) {
    gauge!("portico_rate_limit_fleet_nodes").set(nodes as f64);
}

pub fn target_health(service: &str, target: &str, healthy: bool) {
    gauge!("portico_upstream_target_healthy", "service" => service.to_owned(), "target" => target.to_owned()).set(if healthy {
        1.0
    } else {
        0.0
    });
}

pub fn target_ejected(service: &str, target: &str) {
    counter!("portico_upstream_ejections_total", "service" => service.to_owned(), "target" => target.to_owned()).increment(1);
}

pub fn circuit_changed(service: &str, target: &str, open: bool) {
    gauge!("portico_upstream_circuit_open", "service" => service.to_owned(), "target" => target.to_owned()).set(if open {
        1.0
    } else {
        0.0
    });
}

pub fn connect_failed(service: &str, target: &str) {
    counter!("portico_upstream_connect_failures_total", "service" => service.to_owned(), "target" => target.to_owned()).increment(1);
}

pub fn access_log_written(lines: u64) {
    counter!("portico_access_log_lines_total").increment(lines);
}

pub fn access_log_dropped(reason: &'static str, lines: u64) {
    counter!("portico_access_log_dropped_total", "reason" => reason).increment(lines);
}

pub fn retry_budget_exhausted() {
    counter!("portico_retry_budget_exhausted_total").increment(1);
}

/// How an aggregate call ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Error,
    Timeout,
    NotMade,
    /// A required call's failure ended the request while it ran.
    Cancelled,
}

impl CallOutcome {
    /// Its place among a call's histograms, and its label.
    fn slot(self) -> (usize, &'static str) {
        match self {
            Self::Ok => (0, "ok"),
            Self::Error => (1, "error"),
            Self::Timeout => (2, "timeout"),
            Self::NotMade => (3, "not_made"),
            Self::Cancelled => (4, "cancelled"),
        }
    }
}

/// The duration histograms of one aggregate call, by outcome, kept after
/// first use (as [`RouteMetrics`] keeps its handles).
#[derive(Debug)]
pub struct CallMetrics {
    route: SharedString,
    call: SharedString,
    /// By [`CallOutcome`], in its order.
    durations: [OnceLock<Histogram>; 5],
}

impl CallMetrics {
    pub fn new(route: Arc<str>, call: Arc<str>) -> Self {
        Self { route: SharedString::from_shared(route), call: SharedString::from_shared(call), durations: Default::default() }
    }

    /// The call ended with `outcome` after `elapsed`.
    pub fn record(&self, outcome: CallOutcome, elapsed: Duration) {
        let (index, label) = outcome.slot();
        self.durations[index]
            .get_or_init(|| {
                histogram!("portico_aggregate_call_duration_seconds", "route" => self.route.clone(), "call" => self.call.clone(), "outcome" => label)
            })
            .record(elapsed.as_secs_f64());
    }
}

/// How an aggregate answer ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerResult {
    Complete,
    Partial,
    /// No answer: a required call failed, or the request lacked a value.
    Failed,
}

/// How aggregate answers of one route ended, kept after first use.
#[derive(Debug)]
pub struct AnswerMetrics {
    route: SharedString,
    /// By [`AnswerResult`], in its order.
    counters: [OnceLock<Counter>; 3],
}

impl AnswerMetrics {
    pub fn new(route: Arc<str>) -> Self {
        Self { route: SharedString::from_shared(route), counters: Default::default() }
    }

    pub fn answered(&self, result: AnswerResult) {
        let (index, label) = match result {
            AnswerResult::Complete => (0, "complete"),
            AnswerResult::Partial => (1, "partial"),
            AnswerResult::Failed => (2, "failed"),
        };
        self.counters[index]
            .get_or_init(|| counter!("portico_aggregate_answers_total", "route" => self.route.clone(), "result" => label))
            .increment(1);
    }
}

/// `count` keys of a deep merge overwritten by `call`.
pub fn aggregate_collisions(route: &str, call: &str, count: u64) {
    counter!("portico_aggregate_merge_collisions_total", "route" => route.to_owned(), "call" => call.to_owned()).increment(count);
}
