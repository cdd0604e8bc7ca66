//! Access logs: one JSON line per request, to stdout or a file
//! (`--access-log`). Which requests get a line, how many of the successful
//! ones and which fields it has is the `access-log` policy's say, per
//! route, service or gateway ([`Plan`]). A line is written when the
//! response body has been sent (or abandoned), so it has the bytes sent and
//! the whole time; until then its [`Pending`] rides along with the body.
//! Lines are formatted and written by a thread of their own ([`writer`])
//! behind a bounded queue: a request never waits for the disk, and a line
//! that finds the queue full is dropped and counted
//! (`portico_access_log_dropped_total`).

mod line;
pub mod writer;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode, Uri, Version};
use portico_shared::model::Policy;
use portico_shared::model::policy::access_log::{AccessLogField, AccessLogMode};

use opentelemetry::trace::{TraceContextExt, TraceId};

use crate::runtime::RouteEntry;
pub use writer::{AccessLog, Destination};

/// The `access-log` policy of a route (or of the gateway, for requests no
/// route matched), compiled.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    mode: AccessLogMode,
    /// The share of successful requests logged; `None`: all of them.
    sample: Option<f64>,
    /// The fields of a line, in order; `None`: all of them.
    fields: Option<Arc<[AccessLogField]>>,
}

impl Plan {
    /// The plan of the `access-log` policy among `policies` (the most
    /// specific level's), else the default: every request, every field.
    pub fn compile(policies: &[&Policy]) -> Self {
        let Some(policy) = policies.iter().find_map(|p| match p {
            Policy::AccessLog(policy) => Some(policy),
            _ => None,
        }) else {
            return Self::default();
        };
        Self {
            mode: policy.mode,
            sample: (policy.sample < 1.0).then_some(policy.sample),
            fields: (!policy.fields.is_empty()).then(|| policy.fields.as_slice().into()),
        }
    }

    /// Whether a request answered with `status` gets a line: errors (400 and
    /// above) unless the mode is `off`, successes when it is `all` and the
    /// sample draws them.
    pub fn wants(&self, status: StatusCode) -> bool {
        match self.mode {
            AccessLogMode::Off => false,
            _ if status.as_u16() >= 400 => true,
            AccessLogMode::Errors => false,
            AccessLogMode::All => self.sample.is_none_or(|share| rand::random::<f64>() < share),
        }
    }
}

/// The TLS session a request came over.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The server name the client asked for (SNI), if it sent one.
    pub sni: Option<Arc<str>>,
}

impl TlsInfo {
    pub fn of(connection: &rustls::ServerConnection) -> Self {
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        Self { version, sni: connection.server_name().map(Arc::from) }
    }
}

/// What a rate limit made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOutcome {
    Allowed,
    Refused,
}

/// What the upstream calls of a request did, noted by the proxy backend as
/// it sends (a request whose route logs nothing carries none).
#[derive(Debug, Default)]
pub struct Trail {
    tries: AtomicU32,
    /// The target of the last try, plus one (0: none yet).
    target: AtomicUsize,
    /// Microseconds from the answering try's start to its response head, plus one (0: none).
    upstream_us: AtomicU64,
}

impl Trail {
    /// A try is sent to the target at `index` of the upstream.
    pub fn tried(&self, index: usize) {
        self.tries.fetch_add(1, Ordering::Relaxed);
        self.target.store(index + 1, Ordering::Relaxed);
        self.upstream_us.store(0, Ordering::Relaxed);
    }

    /// The last try's response head came after `elapsed`.
    pub fn answered(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX - 1);
        self.upstream_us.store(micros + 1, Ordering::Relaxed);
    }

    fn target(&self) -> Option<usize> {
        self.target.load(Ordering::Relaxed).checked_sub(1)
    }

    fn upstream(&self) -> Option<Duration> {
        self.upstream_us.load(Ordering::Relaxed).checked_sub(1).map(Duration::from_micros)
    }

    fn retries(&self) -> u32 {
        self.tries.load(Ordering::Relaxed).saturating_sub(1)
    }
}

/// What is known of a request when it arrives, kept while access logs are on.
#[derive(Debug)]
pub struct Arrival {
    time: SystemTime,
    started: Instant,
    method: Method,
    uri: Uri,
    version: Version,
    trace_id: Option<TraceId>,
    bytes_in: Option<u64>,
}

impl Arrival {
    /// The arrival of the request of head `request` and `body`, traced in
    /// `trace` if tracing is on (else in the trace of its `traceparent`, if any).
    pub fn of<B: hyper::body::Body>(
        request: &http::request::Parts,
        body: &B,
        started: Instant,
        trace: Option<&opentelemetry::Context>,
    ) -> Self {
        let trace_id = match trace {
            Some(cx) => Some(cx.span().span_context().trace_id()).filter(|id| *id != TraceId::INVALID),
            None => request.headers.get("traceparent").and_then(line::trace_id),
        };
        Self {
            time: SystemTime::now(),
            started,
            method: request.method.clone(),
            uri: request.uri.clone(),
            version: request.version,
            trace_id,
            bytes_in: body.size_hint().exact(),
        }
    }
}

/// What the pipeline learnt of a request for its line.
#[derive(Debug, Default)]
pub struct Findings {
    pub trail: Option<Trail>,
    /// The caller's consumer's username.
    pub consumer: Option<String>,
    pub rate_limit: Option<LimitOutcome>,
    pub client: Option<IpAddr>,
    pub tls: Option<TlsInfo>,
}

/// How a request was answered.
#[derive(Debug)]
pub struct Answer {
    pub request_id: HeaderValue,
    pub status: StatusCode,
    /// The response's `Cache-Status`.
    pub cache: Option<HeaderValue>,
}

/// One request's line, but for what its response body has yet to tell.
/// Names are resolved when the head is sent, so a line waiting for its
/// body or the writer keeps no config version alive.
#[derive(Debug)]
pub struct Record {
    arrival: Box<Arrival>,
    findings: Findings,
    route: Option<Arc<str>>,
    service: Option<Arc<str>>,
    target: Option<Arc<str>>,
    answer: Answer,
    fields: Option<Arc<[AccessLogField]>>,
    bytes_out: u64,
    duration: Duration,
    completed: bool,
}

/// A logged request whose response body is on its way: counts the bytes
/// sent, and hands the line to the writer when the body ends or is dropped.
#[derive(Debug)]
pub struct Pending {
    log: Arc<AccessLog>,
    record: Box<Record>,
}

impl Pending {
    /// The line of a request to `route` that `plan` wants logged, once its body is sent.
    pub fn new(
        log: Arc<AccessLog>,
        plan: &Plan,
        route: Option<&RouteEntry>,
        arrival: Box<Arrival>,
        findings: Findings,
        answer: Answer,
    ) -> Self {
        let target = route.zip(findings.trail.as_ref().and_then(Trail::target)).and_then(|(route, index)| {
            let url = route.backend.target()?.upstream.target_url(index)?;
            Some(Arc::from(url))
        });
        let record = Record {
            arrival,
            findings,
            route: route.map(|route| route.name.clone()),
            service: route.map(|route| Arc::from(route.backend.label())),
            target,
            answer,
            fields: plan.fields.clone(),
            bytes_out: 0,
            duration: Duration::ZERO,
            completed: false,
        };
        Self { log, record: Box::new(record) }
    }

    /// `bytes` more of the body were sent.
    pub fn sent(&mut self, bytes: usize) {
        self.record.bytes_out += bytes as u64;
    }

    /// The body ended (`completed`: to its end) or was abandoned: the line goes to the writer.
    pub fn finish(mut self, completed: bool) {
        self.record.completed = completed;
        self.record.duration = self.record.arrival.started.elapsed();
        self.log.submit(self.record);
    }
}

/// A logged request not yet answered: if the client leaves before the
/// response head (hyper then drops the pipeline), its line is still
/// written, with status 499 (as nginx has it) and `completed: false`.
#[derive(Debug)]
pub struct Unanswered {
    log: Arc<AccessLog>,
    plan: Plan,
    arrival: Option<Box<Arrival>>,
    request_id: HeaderValue,
    client: IpAddr,
    tls: Option<TlsInfo>,
}

impl Unanswered {
    /// A request `plan` (the gateway's policy) decides the line of, should it go unanswered.
    pub fn new(log: Arc<AccessLog>, plan: Plan, arrival: Arrival, request_id: HeaderValue, client: IpAddr, tls: Option<TlsInfo>) -> Self {
        Self { log, plan, arrival: Some(Box::new(arrival)), request_id, client, tls }
    }

    /// The request is answered: its arrival, for its line.
    pub fn answered(mut self) -> Box<Arrival> {
        self.arrival.take().unwrap_or_else(|| unreachable!("taken once, here"))
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(arrival) = self.arrival.take().filter(|_| self.plan.wants(client_closed())) else { return };
        let findings = Findings { client: Some(self.client), tls: self.tls.take(), ..Findings::default() };
        let answer = Answer { request_id: self.request_id.clone(), status: client_closed(), cache: None };
        let mut pending = Pending::new(self.log.clone(), &self.plan, None, arrival, findings, answer);
        pending.record.duration = pending.record.arrival.started.elapsed();
        self.log.submit(pending.record);
    }
}

/// The status of a request whose client left before it was answered.
fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}
