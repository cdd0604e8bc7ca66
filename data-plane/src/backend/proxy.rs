//! The proxy backend: sending a prepared request upstream: pick a target (another one on a
//! retry when there is one), set its `Host` and address, send with the
//! try's timeout, record the outcome for health checks and the circuit
//! breaker, and try again while the route's retry plan allows it.
//!
//! A gRPC upstream answers `200` whatever happened: the outcome is its
//! `grpc-status`, read at once from the headers of a trailers-only
//! response, else from the trailers when the body ends ([`GrpcCall`], left
//! in the response's extensions for whoever reads the body). A gRPC call is
//! retried (when idempotent) only if it was never processed (connect
//! failure, `REFUSED_STREAM`) or answered `UNAVAILABLE` at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};

use super::retry::{MAX_KEPT_BODY, Outcome, RetryPlan};
use crate::backend::aggregate::AggregateInput;
use crate::body::{ClientBodyError, ClientWait, RequestBody, UpstreamBody};
use crate::error::ProxyError;
use crate::proxy::headers::Forwarding;
use crate::telemetry;
use crate::upstream::{self, Lease, Picked, SendError, Unavailable, Upstream, grpc};
use bytes::Bytes;
use opentelemetry::KeyValue;

/// Where requests go: a service's upstream, with the retries and request
/// body limit of the route (or aggregate call) that sends them.
#[derive(Debug)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// The route's retries, else its service's, else the defaults; none
    /// when they ask for a single try (the budget is kept across versions
    /// while the route and its retry settings stay).
    pub retry: Option<Arc<RetryPlan>>,
    /// Largest request body sent.
    pub max_body_bytes: u64,
}

/// A request ready to go, but for its target.
pub struct Prepared<'a> {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    /// The `Host` to send instead of the target's (`preserve_host`).
    pub host: Option<HeaderValue>,
    /// What a `consistent_hash` upstream hashes.
    pub hash_value: Option<&'a [u8]>,
    /// The request asks for an upgrade (never retried: the tunnel is one).
    pub upgrading: bool,
    /// Whether sending it twice does no harm, so a retry plan may retry it
    /// (the pipeline: the method is idempotent; a transcoded call: its rule says so).
    pub idempotent: bool,
    /// Where the access log's line learns the tries' target and timing
    /// (a request whose route logs nothing has none).
    pub trail: Option<&'a crate::access_log::Trail>,
    /// How long to wait for the response instead of the service's request
    /// timeout: a gRPC client's shorter `grpc-timeout`, a transcoded route's deadline.
    pub timeout: Option<Duration>,
    /// `timeout` is the client's own deadline (its `grpc-timeout`), not the
    /// gateway's: running out of it, or the target answering
    /// `DEADLINE_EXCEEDED` within it, is not the target failing.
    pub deadline_is_clients: bool,
    /// What an aggregate's calls, or an `amqp` route's routing key, take
    /// from the request (none for a proxied one).
    pub aggregate: Option<Box<AggregateInput>>,
    /// The gateway's forwarding fields, for each try to send (else they
    /// are in `headers` already, or the request has none).
    pub forwarding: Option<Forwarding<'a>>,
}

/// The request body as the pipeline hands it on: the client's, or one a
/// transform rewrote (whole, so any try may send it).
pub enum ClientBody {
    Stream(RequestBody),
    Whole(Bytes),
    /// Readied for the upstream already (translated as it streams): sent once, never retried.
    Once(UpstreamBody),
}

impl ClientBody {
    /// The whole body, at most `max_body_bytes` (else `413`).
    pub async fn read_whole(self, max_body_bytes: u64) -> Result<Bytes, ProxyError> {
        let limit = usize::try_from(max_body_bytes).unwrap_or(usize::MAX);
        match self {
            Self::Whole(bytes) => Ok(bytes),
            Self::Stream(body) => collect_limited(body, limit, max_body_bytes).await,
            Self::Once(body) => collect_limited(body, limit, max_body_bytes).await,
        }
    }
}

/// Reads a request body whole, at most `limit` bytes: past it a `413`
/// naming `max_body` (the route's limit), a body that breaks a `400`.
pub async fn collect_limited<B>(body: B, limit: usize, max_body: u64) -> Result<Bytes, ProxyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    let collected = Limited::new(body, limit).collect().await.map_err(|error| {
        if error.is::<http_body_util::LengthLimitError>() {
            ProxyError::BodyTooLarge { limit: max_body }
        } else {
            ProxyError::BadRequest("the request body could not be read")
        }
    })?;
    Ok(collected.to_bytes())
}

/// Sends `prepared` with `body` to `target`'s upstream. Not an `async fn`,
/// whose future would hold `prepared` twice (as taken, and as the body's
/// own binding): the block's future holds it once.
#[expect(clippy::manual_async_fn, reason = "an async fn's future holds its arguments twice")]
pub fn send<'a>(
    target: &'a Target,
    prepared: Prepared<'a>,
    body: ClientBody,
) -> impl Future<Output = Result<(Response<upstream::Incoming>, Lease), ProxyError>> + Send + 'a {
    async move {
        let upstream = &target.upstream;
        let deadline = Instant::now() + prepared.timeout.unwrap_or(upstream.request_timeout);
        let clients_deadline = prepared.deadline_is_clients;
        let limit = usize::try_from(target.max_body_bytes).unwrap_or(usize::MAX);
        let plan = target.retry.as_deref().filter(|plan| !prepared.upgrading && plan.allows(prepared.idempotent));
        let (plan, mut body) = match (plan, body) {
            // A body a transform rewrote is whole already: every try may send it.
            (plan, ClientBody::Whole(bytes)) => {
                plan.inspect(|plan| plan.deposit());
                (plan, Body::Kept(bytes))
            }
            // A plan that retries only connect failures streams the body: a
            // connect failure hands back the request unsent, body and all.
            (Some(plan), ClientBody::Stream(body)) if !plan.retries_sent_requests() => {
                plan.deposit();
                (Some(plan), Body::Once(Some(UpstreamBody::streamed(body, limit))))
            }
            (Some(plan), ClientBody::Stream(body)) => {
                plan.deposit();
                // Reading a kept body counts against the request's time too.
                // Boxed: only a plan that retries sent requests keeps a streamed body.
                let kept = Box::pin(tokio::time::timeout_at(deadline.into(), keep(body, limit, target.max_body_bytes)))
                    .await
                    .map_err(|_| ProxyError::ClientTimeout)??;
                match kept {
                    Kept::Whole(bytes) => (Some(plan), Body::Kept(bytes)),
                    Kept::TooLarge(body) => (None, Body::Once(Some(body))),
                }
            }
            (None, ClientBody::Stream(body)) => (None, Body::Once(Some(UpstreamBody::streamed(body, limit)))),
            (_, ClientBody::Once(body)) => (None, Body::Once(Some(body))),
        };
        let attempts = plan.map_or(1, RetryPlan::attempts);
        // Headers are copied for a try only when a retry may follow one that
        // went out; a connect failure hands them back, with the body (the
        // default plan's case).
        let copy_headers = plan.is_some_and(RetryPlan::retries_sent_requests);
        let client_wait = body.client_wait();
        // The targets tried before this try (recorded only once a retry
        // comes, so a request answered at once allocates nothing for them).
        let mut tried = Vec::new();
        let mut previous = None;
        let mut headers = Some(prepared.headers);
        for attempt in 1..=attempts {
            let last = attempt == attempts;
            tried.extend(previous.take());
            let picked =
                upstream.pick_avoiding(prepared.hash_value, &tried).map_err(|unavailable| unavailable_error(upstream, unavailable))?;
            previous = Some(picked.index());
            let mut request_headers = if last || !copy_headers { headers.take() } else { headers.clone() }.unwrap_or_default();
            // A gRPC call's span is named by its method (`pkg.Service/Method`), as OpenTelemetry's RPC conventions have it.
            let grpc_method = upstream.is_grpc().then(|| prepared.path_and_query.path().trim_start_matches('/'));
            let traced = telemetry::upstream_try(
                &mut request_headers,
                || grpc_method.map_or_else(|| format!("{} {}", prepared.method, upstream.name()), str::to_owned),
                || {
                    let target = upstream.target_url(picked.index()).unwrap_or_default().to_owned();
                    let mut attributes = vec![KeyValue::new("server.address", target), KeyValue::new("portico.try", i64::from(attempt))];
                    if let Some(method) = grpc_method {
                        attributes.extend([KeyValue::new("rpc.system", "grpc"), KeyValue::new("rpc.method", method.to_owned())]);
                    }
                    attributes
                },
            );
            let request =
                request(&picked, &prepared.method, &prepared.path_and_query, request_headers, prepared.host.as_ref(), body.next());
            if let Some(trail) = prepared.trail {
                trail.tried(picked.index());
            }
            let sent_at = prepared.trail.map(|_| Instant::now());
            // A try ends at the request's deadline, or sooner by a per-try
            // limit (only then is the clock read here). The wait that may run
            // out is the client's when the try ends at its deadline.
            let try_deadline = match plan.and_then(RetryPlan::per_try_timeout) {
                None => deadline,
                Some(per_try) => Instant::now().checked_add(per_try).map_or(deadline, |ends| ends.min(deadline)),
            };
            let clients_wait = clients_deadline && try_deadline == deadline;
            // Boxed, as each level of the pipeline (see `proxy::handle`).
            let sent =
                tokio::time::timeout_at(try_deadline.into(), Box::pin(upstream.send(&picked, request, prepared.forwarding.as_ref()))).await;
            if let Some(span) = traced {
                match &sent {
                    Ok(Ok((response, _))) => span.end_answered(response.status()),
                    Ok(Err(error)) => span.end(Some(error)),
                    Err(_) => span.end(Some(&"no answer in time")),
                }
            }
            let outcome = match sent {
                Ok(Ok((mut response, lease))) => {
                    let status = response.status();
                    upstream.answered(&picked);
                    if let (Some(trail), Some(sent_at)) = (prepared.trail, sent_at) {
                        trail.answered(sent_at.elapsed());
                    }
                    let outcome = if upstream.is_grpc() {
                        grpc_outcome(target, &picked, &mut response, clients_deadline, client_wait.clone())
                    } else {
                        upstream.record(&picked, !status.is_server_error());
                        Outcome::Status(status.as_u16())
                    };
                    if !last && headers.is_some() && Instant::now() < deadline && plan.is_some_and(|p| p.retry(outcome)) {
                        tracing::debug!(attempt, %status, ?outcome, "retrying");
                        continue;
                    }
                    return Ok((response, lease));
                }
                Ok(Err(error)) => {
                    if let Some(fault) = client_fault(&error, target.max_body_bytes) {
                        return Err(fault); // the client's doing, not the target's: not recorded, not retried
                    }
                    if client_wait.as_ref().is_some_and(|wait| wait.has_failed()) {
                        // Over HTTP/2 the stream was reset for the body's error, which the answer does not carry.
                        return Err(ProxyError::BadRequest("the request body is malformed or was cut short"));
                    }
                    upstream.record(&picked, false);
                    let classified = classify(upstream.name(), &error);
                    let refused = refused_stream(&error);
                    match error.into_unsent() {
                        Some(unsent) => {
                            upstream.connect_failed(&picked);
                            let (parts, unsent_body) = unsent.into_parts();
                            headers.get_or_insert(parts.headers);
                            body.give_back(unsent_body);
                            (Outcome::ConnectFailure, classified)
                        }
                        None if refused => (Outcome::RefusedStream, classified),
                        // Anything else a gRPC target may have begun to process.
                        None if upstream.is_grpc() => return Err(classified),
                        None => (Outcome::Reset, classified),
                    }
                }
                Err(_) if client_wait.as_ref().is_some_and(|wait| wait.is_waiting()) => {
                    return Err(ProxyError::ClientTimeout); // the upload stalled: the client's doing too
                }
                Err(_) => {
                    if !clients_wait {
                        upstream.record(&picked, false);
                    }
                    let error = ProxyError::UpstreamTimeout { upstream: upstream.name().to_owned() };
                    if upstream.is_grpc() {
                        return Err(error);
                    }
                    (Outcome::Timeout, error)
                }
            };
            let (outcome, error) = outcome;
            let time_left = Instant::now() < deadline;
            if last || !time_left || headers.is_none() || !plan.is_some_and(|p| p.retry(outcome)) {
                return Err(error);
            }
            tracing::debug!(attempt, ?outcome, "retrying");
        }
        Err(ProxyError::UpstreamTimeout { upstream: upstream.name().to_owned() })
    }
}

/// How a gRPC call ends for the target it went to: its `grpc-status`,
/// recorded for passive health and the circuit breaker. A trailers-only
/// response has it in its headers (recorded at once); otherwise this is in
/// the response's extensions, for whoever reads the body to the trailers to
/// call [`GrpcCall::ended`] (a call whose reader goes away first, the
/// client having left, is not recorded).
#[derive(Debug, Clone)]
pub struct GrpcCall {
    upstream: Arc<Upstream>,
    index: usize,
    /// The call's deadline is the client's ([`Prepared::deadline_is_clients`]).
    clients_deadline: bool,
    /// The client's upload: a call cut short because its body failed is not the target's failure.
    client: Option<Arc<ClientWait>>,
}

impl GrpcCall {
    /// The body ended with `trailers` (none: cut short, or no trailers: a failure).
    pub fn ended(self, trailers: Option<&HeaderMap>) {
        if trailers.is_none() && self.client.as_ref().is_some_and(|client| client.has_failed()) {
            return;
        }
        let success = trailers.and_then(grpc::status_of).is_some_and(|code| !target_failed(code, self.clients_deadline));
        self.upstream.record_at(self.index, success);
    }
}

/// Whether a call ending with `code` says the target is failing; a
/// `DEADLINE_EXCEEDED` under a deadline the client chose does not.
fn target_failed(code: u32, clients_deadline: bool) -> bool {
    grpc::is_failure(code) && !(clients_deadline && code == grpc::code::DEADLINE_EXCEEDED)
}

/// Records a gRPC answer's outcome now when its headers hold it (a
/// trailers-only response, or no gRPC at all), else leaves a [`GrpcCall`]
/// in the response; what it means for a retry.
fn grpc_outcome(
    target: &Target,
    picked: &Picked<'_>,
    response: &mut Response<upstream::Incoming>,
    clients_deadline: bool,
    client: Option<Arc<ClientWait>>,
) -> Outcome {
    let upstream = &target.upstream;
    if !response.status().is_success() {
        upstream.record(picked, !response.status().is_server_error());
        return Outcome::Status(response.status().as_u16());
    }
    match grpc::status_of(response.headers()) {
        Some(code) => {
            upstream.record(picked, !target_failed(code, clients_deadline));
            if code == grpc::code::UNAVAILABLE { Outcome::GrpcUnavailable } else { Outcome::Status(200) }
        }
        None => {
            response.extensions_mut().insert(GrpcCall { upstream: upstream.clone(), index: picked.index(), clients_deadline, client });
            Outcome::Status(200)
        }
    }
}

/// Whether an HTTP/2 target turned the request's stream away unprocessed:
/// it refused it, or was going away (a graceful `GOAWAY` reaches the
/// streams it will not process; a retry still needs an idempotent request).
fn refused_stream(error: &SendError) -> bool {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| e.source())
        .filter_map(|e| e.downcast_ref::<h2::Error>())
        .any(|e| {
            e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR))
        })
}

/// The request body for each try.
enum Body {
    /// Kept whole: every try sends it.
    Kept(bytes::Bytes),
    /// Streamed: only one try can send it.
    Once(Option<UpstreamBody>),
}

impl Body {
    fn client_wait(&self) -> Option<Arc<ClientWait>> {
        match self {
            Self::Kept(_) => None,
            Self::Once(body) => body.as_ref().and_then(UpstreamBody::client_wait),
        }
    }

    /// Takes back the body of a request that never went out, for the next try.
    fn give_back(&mut self, unsent: UpstreamBody) {
        if let Self::Once(slot @ None) = self {
            *slot = Some(unsent);
        }
    }

    fn next(&mut self) -> UpstreamBody {
        match self {
            Self::Kept(bytes) => UpstreamBody::Kept(Full::new(bytes.clone())),
            Self::Once(body) => body.take().unwrap_or_default(),
        }
    }
}

enum Kept {
    Whole(bytes::Bytes),
    TooLarge(UpstreamBody),
}

/// Keeps a body that declares at most [`MAX_KEPT_BODY`] bytes (or is
/// empty); a larger or undeclared one streams (and is not retried).
async fn keep(body: RequestBody, limit: usize, max_body: u64) -> Result<Kept, ProxyError> {
    use hyper::body::Body as _;
    let declared = body.size_hint().exact();
    if !body.is_end_stream() && declared.is_none_or(|length| length > MAX_KEPT_BODY) {
        return Ok(Kept::TooLarge(UpstreamBody::streamed(body, limit)));
    }
    Ok(Kept::Whole(collect_limited(body, limit, max_body).await?))
}

/// The client's fault when a try failed because reading its request body
/// failed, not because of the target: too large (`413`), malformed on the
/// wire (a bad chunk), or cut short (the client went away mid-upload): `400`.
fn client_fault(error: &SendError, max_body: u64) -> Option<ProxyError> {
    let mut chain = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| e.source());
    if !chain.any(|e| e.is::<ClientBodyError>()) {
        return None;
    }
    for e in chain {
        if e.is::<http_body_util::LengthLimitError>() {
            return Some(ProxyError::BodyTooLarge { limit: max_body });
        }
        if let Some(violation) = crate::http1::violation(e) {
            return Some(ProxyError::Malformed(violation));
        }
    }
    Some(ProxyError::BadRequest("the request body is malformed or was cut short"))
}

fn request(
    picked: &Picked<'_>,
    method: &Method,
    path_and_query: &PathAndQuery,
    mut headers: HeaderMap,
    host: Option<&HeaderValue>,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    headers.insert(header::HOST, host.unwrap_or(&picked.target.host).clone());
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = Uri::from(path_and_query.clone());
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

fn unavailable_error(upstream: &Upstream, unavailable: Unavailable) -> ProxyError {
    let upstream = upstream.name().to_owned();
    match unavailable {
        Unavailable::NoHealthyTarget => ProxyError::NoHealthyTarget { upstream },
        Unavailable::CircuitOpen { retry_after_ms } => {
            ProxyError::CircuitOpen { upstream, retry_after_s: retry_after_ms.div_ceil(1000).max(1) }
        }
    }
}

/// What a try's failure that was not the client's says about the upstream.
fn classify(upstream: &str, error: &crate::upstream::SendError) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut timed_out = false;
    while let Some(e) = source {
        if let Some(violation) = crate::http1::violation(e) {
            return ProxyError::UpstreamMalformed { upstream: upstream.to_owned(), violation };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = e.source();
    }
    if timed_out {
        return ProxyError::UpstreamTimeout { upstream: upstream.to_owned() };
    }
    let reason =
        std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source()).last().map(ToString::to_string).unwrap_or_default();
    ProxyError::UpstreamUnavailable { upstream: upstream.to_owned(), reason }
}
