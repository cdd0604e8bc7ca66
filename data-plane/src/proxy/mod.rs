//! The request pipeline, as ARCHITECTURE draws it: request id → route
//! match (path parameters; a CORS preflight matches by the method it asks
//! for) → CORS preflight → `https_only` → ip-restriction → size limit →
//! limits (identity-free) → authentication and scopes → limits (identity) →
//! request-transform → cache ([`crate::stage::cache`]: a hit answers here)
//! → backend (the upstream call, [`crate::backend`]) → response-transform → CORS headers (on the gateway's own errors too) →
//! rate-limit headers, with metrics and one span per request. Each stage is
//! compiled once per config version ([`crate::stage`]); a route without a
//! stage pays one `Option` check for it. The span is debug-level
//! (`RUST_LOG=portico_dp=debug` shows it with each request's events): at the
//! default `info` a per-request span cost a fifth of the throughput and
//! printed nothing. Bodies stream in both directions unless a transform
//! shapes them; upgrades (WebSocket) are tunnelled once both sides agree.
//! Routes whose service speaks gRPC also serve gRPC and gRPC-Web clients
//! ([`grpc`]): errors in gRPC's form, `grpc-timeout`, metrics by method.

pub mod grpc;
pub mod headers;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use self::grpc::{CallMetric, GrpcClient};
use self::headers::Peer;
use crate::access_log::{self, Answer, Arrival, Findings, LimitOutcome, Pending, Trail, Unanswered};
use crate::auth::Identity;
use crate::backend::Backend;
use crate::backend::aggregate::AggregateInput;
use crate::backend::proxy::{self as backend, ClientBody, Target};
use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::http1::Verdict;
use crate::metrics::RouteMetrics;
use crate::ratelimit::algorithm::Decision;
use crate::ratelimit::{self, RequestFacts};
use crate::router::normalize_path;
use crate::runtime::{RouteEntry, Runtime};
use crate::stage::cache::status::{CACHE_STATUS, CacheStatus, Fwd};
use crate::stage::cache::{CacheRequest, Profile};
use crate::stage::cors::Cors;
use crate::stage::transform::ResponseRewrite;
use crate::stage::values::RequestValues;
use crate::state::NodeState;
use crate::telemetry::{self, FutureExt as _};
use opentelemetry::trace::TraceContextExt as _;

/// Handles one request from `peer`. Never fails: errors become responses;
/// with them comes the request's access log line when it is to have one,
/// for the response body to finish. `verdict`: what the HTTP/1 wire
/// guard ([`crate::http1`]) found of its head: a request that broke a rule
/// is answered here, and it or an upgrade request that gets no `101` (past
/// which the guard checks nothing) closes the connection, so no byte sent
/// after it is read as a request (of head `request` and `body`). Not an
/// `async fn`, whose future would hold the request twice (as taken, and as
/// the body's own binding).
#[expect(clippy::manual_async_fn, reason = "an async fn's future holds its arguments twice")]
pub fn handle(
    node: Arc<NodeState>,
    mut request: http::request::Parts,
    body: RequestBody,
    peer: &Peer,
    verdict: Verdict,
) -> impl Future<Output = (Response<ResponseBody>, Epilogue)> + Send + '_ {
    async move {
        let started = Instant::now();
        let trace = telemetry::server_span(&request.headers, &request.method, request.uri.path());
        let traced_method = trace.as_ref().map(|_| request.method.clone());
        let head_request = request.method == Method::HEAD;
        let refused = match verdict {
            Verdict::Refuse(violation) => Some(violation),
            Verdict::Pass | Verdict::Upgrade => None,
        };
        let request_id = headers::request_id(&request.headers);
        let runtime = node.runtime();
        let unanswered = node.access_log.as_ref().map(|log| {
            let arrival = Arrival::of(&request, &body, started, trace.as_ref().map(telemetry::Span::context));
            // The route is not known yet: the gateway's policy decides.
            let plan = runtime.as_ref().map(|runtime| runtime.access_log.clone()).unwrap_or_default();
            Unanswered::new(log.clone(), plan, arrival, request_id.clone(), peer.addr.ip(), peer.tls.clone())
        });
        let span = tracing::debug_span!(
            "request",
            method = %request.method,
            path = %request.uri.path(),
            request_id = ?request_id,
            route = tracing::field::Empty,
            upstream = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let mut served = Served { findings: unanswered.as_ref().map(|_| Box::default()), ..Served::default() };
        // Boxed, the forwarding future in it, so that this future stays
        // under 1 KiB (the size mimalloc serves from its fast path). The
        // request's head stays here, lent to the pipeline: a future keeps
        // what it captures for all its life, so each owner would hold a copy.
        let pipeline = Box::pin(async {
            let outcome = match (refused, &runtime) {
                (Some(violation), _) => Err(ProxyError::Malformed(violation)),
                (None, None) => {
                    served.grpc = GrpcClient::of(&request.headers).map(Box::new);
                    Err(ProxyError::NoConfig)
                }
                (None, Some(runtime)) => forward(&node, runtime, &mut request, body, peer, &request_id, &mut served).await,
            };
            let response = outcome.unwrap_or_else(|error| {
                tracing::debug!(error = %error, source = ?error.source(), retryable = error.retryable(), "request failed");
                error.response_to(served.grpc.as_deref())
            });
            match served.grpc_metric.take() {
                Some(metric) => grpc::respond(response, served.grpc.as_deref(), *metric),
                None => response,
            }
        })
        .instrument(span.clone());
        // Stages below start their spans from the request's context.
        let mut response = match &trace {
            Some(span) => pipeline.with_context(span.context().clone()).await,
            None => pipeline.await,
        };
        if let Some(stages) = served.route.map(|route| &route.stages) {
            // Every answer of a route with header-picked profiles depends on those headers.
            for vary in [stages.request.vary(), stages.response.vary()].into_iter().flatten() {
                headers::append_vary(response.headers_mut(), vary);
            }
            if let Some(cors) = &stages.cors {
                cors.decorate(served.origin.as_ref(), response.headers_mut());
            }
            // Answers the cache never saw (refusals before it, upstream failures) say so too.
            if stages.cache.is_some() && !response.headers().contains_key(CACHE_STATUS) {
                let status = served.cache_status.take().unwrap_or_else(|| CacheStatus::not_consulted().value());
                response.headers_mut().append(CACHE_STATUS, status);
            }
        }
        let status = response.status();
        let logged = node.access_log.as_ref().zip(unanswered).and_then(|(log, unanswered)| {
            let arrival = unanswered.answered();
            let gateway_plan = runtime.as_ref().map(|runtime| &runtime.access_log);
            let fallback = access_log::Plan::default();
            let plan = served.route.map(|route| &route.stages.access_log).or(gateway_plan).unwrap_or(&fallback);
            if !plan.wants(status) {
                return None;
            }
            let mut findings = served.findings.take().map(|findings| *findings).unwrap_or_default();
            findings.client.get_or_insert(peer.addr.ip());
            findings.tls.clone_from(&peer.tls);
            let answer = Answer { request_id: request_id.clone(), status, cache: response.headers().get(CACHE_STATUS).cloned() };
            Some(Pending::new(log.clone(), plan, served.route, arrival, findings, answer))
        });
        response.headers_mut().insert(headers::REQUEST_ID, request_id);
        if verdict != Verdict::Pass && status != StatusCode::SWITCHING_PROTOCOLS {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        span.record("status", status.as_u16());
        // Only spans this node records and sends are exemplars.
        let exemplar =
            trace.as_ref().map(|span| span.context().span()).filter(|span| span.is_recording()).map(|span| span.span_context().trace_id());
        served.route.map_or(RouteMetrics::unmatched(), |route| &route.metrics).request_done(status, started.elapsed(), exemplar);
        if let (Some(route), Some(consumer)) = (served.route, served.consumer.take()) {
            crate::metrics::consumer_request(route.name.clone(), consumer, status);
        }
        if let (Some(span), Some(method)) = (&trace, &traced_method) {
            let version = runtime.as_ref().map(|runtime| runtime.version);
            telemetry::answered(span, method, &node.gateway, version, served.route.map(|route| &*route.name), status);
        }
        let bodiless = head_request || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        (response, Epilogue { logged, traced: trace, bodiless })
    }
}

/// What is left to do once a response's body is sent (or abandoned): its
/// access log line, and ending its server span.
#[derive(Debug, Default)]
pub struct Epilogue {
    pub logged: Option<Pending>,
    pub traced: Option<telemetry::Span>,
    /// No body follows the head (`HEAD`, `1xx`, `204`, `304`): hyper drops
    /// the body unread, and the answer is complete all the same.
    pub bodiless: bool,
}

/// What the pipeline learnt that the response needs whatever the outcome:
/// the route (for metrics and CORS headers on the gateway's own errors),
/// the request's `Origin`, the `Cache-Status` of a cached request that
/// failed upstream, and for a gRPC client or route, how to answer and count it.
#[derive(Default)]
struct Served<'r> {
    route: Option<&'r RouteEntry>,
    origin: Option<HeaderValue>,
    cache_status: Option<HeaderValue>,
    /// The client speaks gRPC (or gRPC-Web): errors are gRPC's. Boxed, as
    /// the next: this lives in every request's future.
    grpc: Option<Box<GrpcClient>>,
    /// The route's service speaks gRPC: the call is counted by method.
    grpc_metric: Option<Box<CallMetric>>,
    /// What the access log line needs, while access logs are on.
    findings: Option<Box<Findings>>,
    /// The caller's consumer, while requests are counted by consumer.
    consumer: Option<String>,
}

/// The method a request is routed by: a CORS preflight's asks for the
/// method of the request it announces (so a GET-only route answers the
/// preflight of its GETs).
fn routing_method(request: &http::request::Parts) -> Option<Method> {
    if !Cors::is_preflight(&request.method, &request.headers) {
        return None;
    }
    request.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| Method::from_bytes(m.as_bytes()).ok())
}

/// The pipeline past the request id, for a node with a config; the
/// request's head `parts` is lent (its method and map are taken for the
/// upstream). Not an `async fn`, whose future would hold its arguments
/// twice (as taken, and as the body's own bindings).
#[expect(clippy::manual_async_fn, reason = "an async fn's future holds its arguments twice")]
fn forward<'a, 'r: 'a>(
    node: &'a Arc<NodeState>,
    runtime: &'r Arc<Runtime>,
    parts: &'a mut http::request::Parts,
    body: RequestBody,
    peer: &'a Peer,
    request_id: &'a HeaderValue,
    served: &'a mut Served<'r>,
) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + Send + 'a {
    async move {
        let secure = peer.tls.is_some();
        // Refusals before a route is known answer a gRPC client in gRPC's form too.
        let refuse = |served: &mut Served<'_>, headers: &http::HeaderMap, error: ProxyError| {
            served.grpc = GrpcClient::of(headers).map(Box::new);
            error
        };
        headers::check_limits(&parts.headers).map_err(|error| refuse(served, &parts.headers, error))?;
        // The target as the client sent it (authentication may take a key
        // out of its query): `Uri::path` and `Uri::query` are its.
        let target = parts.uri.path_and_query().cloned();
        let path = normalize_path(target.as_ref().map_or("", PathAndQuery::path))
            .map_err(|e| refuse(served, &parts.headers, ProxyError::BadRequest(e.message())))?;
        let original_host = original_host(parts);
        let host = host_name(original_host.as_ref());
        let preflight = routing_method(parts);
        let preflight_route = preflight
            .as_ref()
            .and_then(|method| runtime.route(&host, &path, method, &parts.headers))
            .filter(|(route, _)| route.stages.cors.is_some());
        let Some((route, matched)) = preflight_route.or_else(|| runtime.route(&host, &path, &parts.method, &parts.headers)) else {
            let error = ProxyError::NoRoute { method: parts.method.to_string(), path: path.into_owned() };
            return Err(refuse(served, &parts.headers, error));
        };
        let preflight = preflight.is_some();
        served.route = Some(route);
        if route.backend.upstream().is_some_and(|upstream| upstream.is_grpc()) {
            served.grpc = GrpcClient::of(&parts.headers).map(Box::new);
            served.grpc_metric = Some(Box::new(CallMetric::new(route.name.clone(), &path)));
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::Span::current().record("route", &*route.name).record("upstream", route.backend.label());
        }
        if let Some(cors) = &route.stages.cors {
            served.origin = parts.headers.get(header::ORIGIN).cloned();
            if preflight {
                return Ok(cors.preflight(&parts.headers));
            }
        }
        if route.https_only && !secure {
            return https_redirect(original_host.as_ref(), &parts.uri);
        }
        // Room for the forwarding and identity headers added below, so the
        // map grows once at most.
        parts.headers.reserve(8);
        // As the client sent it (authentication may hide the credentials); only the cache asks.
        let authorized = route.stages.cache.is_some() && parts.headers.contains_key(header::AUTHORIZATION);
        let client_ip = headers::client_ip(peer.addr.ip(), &parts.headers, &runtime.trusted_proxies);
        if let Some(findings) = &mut served.findings {
            findings.client = Some(client_ip);
        }
        if let Some(rule) = &route.stages.ip {
            rule.check(client_ip)?;
        }
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > route.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge { limit: route.max_body_bytes });
        }

        let limited_before = ratelimit::check(&route.limits_before_auth, facts(route, parts, client_ip, None)).await;
        let limited_before = note_limit(served, limited_before)?;
        let identity = runtime.auth.authenticate(&route.auth, parts).await.inspect_err(|error| {
            crate::metrics::auth_refused(route.name.clone(), error.status());
        })?;
        if served.findings.is_some() || crate::metrics::by_consumer() {
            let consumer = identity.as_ref().and_then(|identity| runtime.auth.username(identity)).map(str::to_owned);
            if crate::metrics::by_consumer() {
                served.consumer.clone_from(&consumer);
            }
            if let Some(findings) = &mut served.findings {
                findings.consumer = consumer;
            }
        }
        let limited_after = ratelimit::check(&route.limits_after_auth, facts(route, parts, client_ip, identity.as_ref())).await;
        let limited_after = note_limit(served, limited_after)?;
        let limited = ratelimit::tighter(limited_before, limited_after);
        // Set in the block below, whose other values are not kept in the
        // future across the waits that follow (as the next block's).
        let stages = &route.stages;
        let (
            hash_value,
            path_and_query,
            client_upgrade,
            preserved_host,
            aggregate,
            request_profile,
            response_rewrite,
            body_shaper,
            rewritten,
        );
        {
            let consumer = identity.as_ref().filter(|i| !i.is_anonymous()).map(Identity::consumer_id);
            hash_value = route
                .backend
                .target()
                .and_then(|target| target.upstream.hash_on())
                .map(|on| crate::upstream::hash_value(on, &parts.headers, client_ip, consumer));
            // A transcoded route's rules match the path as the client sent it.
            let strip_path = route.strip_path && !matches!(route.backend, Backend::Grpc(_));
            let forwarded = forwarded_target(&parts.uri, &path, matched.matched_len, strip_path)?;
            // An aggregate answers itself: there is no one connection to tunnel to.
            let upgrade = route.backend.upstream().and_then(|_| headers::upgrade_protocol(&parts.headers));
            client_upgrade = upgrade.as_ref().and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
            preserved_host = original_host.as_ref().filter(|_| route.preserve_host).cloned();
            headers::remove_hop_by_hop(&mut parts.headers, upgrade);
            headers::strip_spoofed(&mut parts.headers);

            // Transforms read the request as the client sent it (less spoofed
            // headers) and write before the gateway's own headers, which so win.
            let values = RequestValues {
                params: &matched.params,
                query: parts.uri.query(),
                headers: &parts.headers,
                identity: identity.as_ref(),
                auth: &runtime.auth,
                request_id,
            };
            request_profile = stages.request.pick_indexed(&parts.headers, identity.as_ref());
            aggregate = match &route.backend {
                Backend::Aggregate(aggregation) => Some(Box::new(AggregateInput::new(
                    values.gather(aggregation.sources()),
                    request_profile.map(|(_, shaper)| shaper.written().to_vec()).unwrap_or_default(),
                    aggregation.hashes(|on| crate::upstream::hash_value(on, &parts.headers, client_ip, consumer)),
                ))),
                Backend::Amqp(amqp) => Some(Box::new(AggregateInput::new(values.gather(amqp.sources()), Vec::new(), Vec::new()))),
                Backend::Proxy(_) | Backend::Grpc(_) => None,
            };
            let request_shaper = request_profile.map(|(_, shaper)| shaper);
            let request_rewrite = request_shaper.map(|shaper| shaper.prepare(forwarded.path(), parts.uri.query(), &values)).transpose()?;
            response_rewrite = stages.response.pick(&parts.headers, identity.as_ref()).map(|shaper| shaper.prepare(&values)).transpose()?;
            (path_and_query, body_shaper, rewritten) = match (request_shaper, request_rewrite) {
                (Some(shaper), Some(mut rewrite)) => {
                    let target = rewrite.target.take();
                    shaper.apply(&mut parts.headers, rewrite);
                    let rewritten = target.is_some();
                    (target.unwrap_or(forwarded), shaper.body.as_ref(), rewritten)
                }
                _ => (forwarded, None, false),
            };
            if response_rewrite.as_ref().is_some_and(|rewrite| rewrite.shaper.body.is_some()) {
                crate::stage::body::ask_for_shapeable(&mut parts.headers);
            }
        }
        let body = match (body_shaper, &served.grpc) {
            // Boxed: the shaping futures would otherwise enlarge every request's future.
            (Some(shaper), _) => Box::pin(shaper.request(&mut parts.headers, body, route.max_body_bytes)).await?,
            (None, Some(client)) => Box::pin(client.upstream_request(&mut parts.headers, body, route.max_body_bytes)).await?,
            (None, None) => ClientBody::Stream(body),
        };
        let head_request = parts.method == Method::HEAD;
        let trail = served.findings.as_ref().map(|_| Trail::default());
        let prepared = {
            let timeout =
                (served.grpc.is_some() || matches!(route.backend, Backend::Grpc(_))).then(|| grpc::timeout(&parts.headers)).flatten();
            // A proxied call waits the service's request timeout at most (a transcoded one its route's deadline, see `Transcoding`).
            let own_timeout = route.backend.upstream().map(|upstream| upstream.request_timeout);
            let timeout = timeout.map(|asked| own_timeout.map_or(asked, |own| asked.min(own)));
            let forwarding = headers::Forwarding::take(&mut parts.headers, peer, client_ip, secure, original_host.as_ref(), request_id);
            // A proxied route without a cache leaves the forwarding fields to its
            // sender; other backends, and the cache's keys, read the map.
            let forwarding = match (&route.backend, &stages.cache) {
                (Backend::Proxy(_), None) => Some(forwarding),
                _ => {
                    forwarding.insert_into(&mut parts.headers);
                    None
                }
            };
            if let Some(identity) = &identity {
                runtime.auth.add_identity_headers(identity, &mut parts.headers);
            }

            backend::Prepared {
                idempotent: parts.method.is_idempotent(),
                method: std::mem::take(&mut parts.method),
                path_and_query,
                headers: std::mem::take(&mut parts.headers),
                host: preserved_host,
                hash_value: hash_value.as_deref().map(str::as_bytes),
                upgrading: client_upgrade.is_some(),
                deadline_is_clients: timeout.is_some_and(|asked| own_timeout.is_none_or(|own| asked < own)),
                timeout,
                aggregate,
                trail: trail.as_ref(),
                forwarding,
            }
        };
        let fetched = match (&stages.cache, client_upgrade) {
            (Some(cache), None) => {
                let request = CacheRequest {
                    host: &host,
                    path: &path,
                    query: target.as_ref().and_then(PathAndQuery::query),
                    rewritten,
                    consumer: identity.as_ref().map(Identity::consumer_id),
                    authorized,
                    profile: request_profile.map(|(index, shaper)| Profile { index, written: shaper.written() }),
                };
                // Boxed: the cache's futures would otherwise enlarge every request's future.
                Box::pin(cache.serve(&node.cache, runtime, route, request, prepared, body)).await.map_err(|failed| {
                    served.cache_status = Some(failed.status);
                    failed.error
                })
            }
            (cache, client_upgrade) => Box::pin(fetch_upgradable(node, route, prepared, body, client_upgrade)).await.map(|mut response| {
                if cache.is_some() {
                    response.headers_mut().append(CACHE_STATUS, CacheStatus::forwarded(Fwd::Bypass).value());
                }
                response
            }),
        };
        if let Some(findings) = &mut served.findings {
            findings.trail = trail;
        }
        // A body transform's wait is boxed: its future would otherwise enlarge
        // every request's (and a response held here beside it would be kept twice).
        let mut response = match response_rewrite {
            Some(rewrite) if rewrite.shaper.body.is_some() => {
                let fetched = fetched?; // not a temporary of the await's statement, kept across it
                Box::pin(reshape(route, fetched, rewrite, head_request)).await?
            }
            Some(rewrite) => rewrite_headers(fetched?, rewrite),
            None => fetched?,
        };
        if let Some(decision) = &limited {
            ratelimit::add_headers(response.headers_mut(), decision);
        }
        Ok(response)
    }
}

/// `response` as `route`'s response transform `rewrite` makes it, its
/// body shaped too.
async fn reshape(
    route: &RouteEntry,
    response: Response<ResponseBody>,
    rewrite: ResponseRewrite<'_>,
    head_request: bool,
) -> Result<Response<ResponseBody>, ProxyError> {
    let shaper = rewrite.shaper; // a copy: `rewrite` stays free to move
    let Some(body) = shaper.body.as_ref().filter(|_| response.status() != StatusCode::SWITCHING_PROTOCOLS) else {
        return Ok(rewrite_headers(response, rewrite));
    };
    let (shaped, skipped) = body.response(response, head_request, route.backend.label()).await?;
    if let Some(reason) = skipped {
        crate::metrics::transform_skipped(route.name.clone(), reason.as_str());
    }
    Ok(rewrite_headers(shaped, rewrite))
}

/// `response` with the headers `rewrite` sets (a `101` is left as it is:
/// what follows it is the tunnel's).
fn rewrite_headers(mut response: Response<ResponseBody>, rewrite: ResponseRewrite<'_>) -> Response<ResponseBody> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        rewrite.apply_headers(response.headers_mut());
    }
    response
}

/// Sends `prepared` upstream; the response as the client gets it, less
/// hop-by-hop headers. A `101` to a request that asked for an upgrade
/// (`client_upgrade`) starts the tunnel between both connections.
async fn fetch_upgradable(
    node: &Arc<NodeState>,
    route: &RouteEntry,
    prepared: backend::Prepared<'_>,
    body: ClientBody,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let target = match &route.backend {
        Backend::Proxy(target) => target,
        // Boxed, as in `fetch`: no aggregate's state in a proxied request's future.
        Backend::Aggregate(aggregation) => return Box::pin(aggregation.answer(prepared, body, route.max_body_bytes)).await,
        Backend::Grpc(transcoding) => return Box::pin(transcoding.answer(prepared, body, route.max_body_bytes)).await,
        Backend::Amqp(amqp) => return Box::pin(amqp.answer(prepared, body, route.max_body_bytes)).await,
    };
    let (mut response, lease) = Box::pin(backend::send(target, prepared, body)).await?;
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded
        && let Some(client_upgrade) = client_upgrade
        && let Some(upstream_upgrade) = response.body_mut().take_upgrade()
    {
        let node = node.clone();
        tokio::spawn(
            async move {
                let _open = node.tunnels.open();
                tunnel(client_upgrade, upstream_upgrade).await;
            }
            .instrument(tracing::Span::current()),
        );
    }
    let keep_upgrade = upgraded.then(|| response.headers().get(header::UPGRADE).cloned()).flatten();
    Ok(client_response(target, response, lease, keep_upgrade))
}

/// Sends `prepared` upstream, runs the route's aggregate or publishes it
/// to its broker (never an upgrade); the response as the client gets it, less hop-by-hop headers.
pub async fn fetch(route: &RouteEntry, prepared: backend::Prepared<'_>, body: ClientBody) -> Result<Response<ResponseBody>, ProxyError> {
    match &route.backend {
        Backend::Proxy(target) => {
            let (response, lease) = Box::pin(backend::send(target, prepared, body)).await?;
            Ok(client_response(target, response, lease, None))
        }
        // Boxed: the aggregate's futures would otherwise enlarge every request's future.
        Backend::Aggregate(aggregation) => Box::pin(aggregation.answer(prepared, body, route.max_body_bytes)).await,
        Backend::Grpc(transcoding) => Box::pin(transcoding.answer(prepared, body, route.max_body_bytes)).await,
        Backend::Amqp(amqp) => Box::pin(amqp.answer(prepared, body, route.max_body_bytes)).await,
    }
}

/// An upstream response readied for the client.
fn client_response(
    target: &Target,
    mut response: Response<crate::upstream::Incoming>,
    lease: crate::upstream::Lease,
    keep_upgrade: Option<HeaderValue>,
) -> Response<ResponseBody> {
    headers::remove_hop_by_hop(response.headers_mut(), keep_upgrade);
    // The version is hop-by-hop too: the client's connection decides it
    // (hyper writes a response with the version it carries, and one marked
    // HTTP/1.0 would end an HTTP/1.1 client's keep-alive connection and
    // lose chunked framing). hyper answers an HTTP/1.0 client in HTTP/1.0
    // whatever this says, and HTTP/2 has no version on the wire.
    *response.version_mut() = Version::HTTP_11;
    let idle = target.upstream.idle_timeout;
    response.map(|body| ResponseBody::upstream(body, idle, lease))
}

/// Notes in the access log's findings what the rate limits made of a
/// request (`checked`: none applied, or their decision).
fn note_limit(served: &mut Served<'_>, checked: Result<Option<Decision>, ProxyError>) -> Result<Option<Decision>, ProxyError> {
    if let Some(findings) = &mut served.findings {
        match &checked {
            Err(ProxyError::RateLimited { .. }) => findings.rate_limit = Some(LimitOutcome::Refused),
            Ok(Some(_)) => findings.rate_limit = findings.rate_limit.or(Some(LimitOutcome::Allowed)),
            Ok(None) | Err(_) => {}
        }
    }
    checked
}

/// What a rate limit may key a request of `route` on.
fn facts<'a>(
    route: &'a RouteEntry,
    parts: &'a http::request::Parts,
    client_ip: IpAddr,
    identity: Option<&'a Identity>,
) -> RequestFacts<'a> {
    RequestFacts { client_ip, headers: &parts.headers, identity, route: &route.name, service: route.backend.label() }
}

/// `308` to the same URL over HTTPS, on the default port. The host must
/// be a plain host name or address (no `@`, `/` or the like): a `Location`
/// is never built from whatever a client put in `Host`.
fn https_redirect(host: Option<&HeaderValue>, uri: &Uri) -> Result<Response<ResponseBody>, ProxyError> {
    let name = host_name(host);
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    if !plain {
        return Err(ProxyError::BadRequest("an https_only route needs a valid Host to redirect to"));
    }
    let authority = if name.contains(':') { format!("[{name}]") } else { name.into_owned() };
    let path = match uri.path_and_query().map(http::uri::PathAndQuery::as_str) {
        Some(path) if path.starts_with('/') && !path.starts_with("//") => path,
        _ => "/",
    };
    let location =
        HeaderValue::from_str(&format!("https://{authority}{path}")).map_err(|_| ProxyError::BadRequest("the URL cannot be redirected"))?;
    let mut response = Response::new(ResponseBody::Local(http_body_util::Full::new(bytes::Bytes::new())));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The host the client asked for: the request target's authority when it
/// has one (absolute-form, HTTP/2 `:authority`; RFC 9112 §3.2.2 makes it
/// win over `Host`), else `Host`.
fn original_host(request: &http::request::Parts) -> Option<HeaderValue> {
    request.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()).or_else(|| request.headers.get(header::HOST).cloned())
}

/// A host as routes name it: without port or trailing dot, lowercase
/// (`API.example.com.:80` gives `api.example.com`, `[::1]:80` gives `::1`).
fn host_name(host: Option<&HeaderValue>) -> std::borrow::Cow<'_, str> {
    // Byte by byte: a `Host` value is visible ASCII (or a tab), or it is
    // refused, as `HeaderValue::to_str` would.
    let raw = host.map_or(&b""[..], HeaderValue::as_bytes);
    if raw.iter().any(|b| *b != b'\t' && !(0x20..0x7f).contains(b)) {
        return std::borrow::Cow::Borrowed("");
    }
    let name = match raw.strip_prefix(b"[") {
        Some(v6) => &v6[..memchr::memchr(b']', v6).unwrap_or(v6.len())],
        None => &raw[..memchr::memchr(b':', raw).unwrap_or(raw.len())],
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    // ASCII, so UTF-8.
    let name = std::str::from_utf8(name).unwrap_or("");
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The request target sent upstream for a request to `uri` whose
/// normalized path `path` matched a route path on its first `matched_len`
/// bytes (`router::Match::matched_len`): `path`, without those when the
/// route strips them, with the client's query. Public for the fuzz target,
/// which checks it against what the router matched.
pub fn forwarded_target(uri: &Uri, path: &str, matched_len: usize, strip_path: bool) -> Result<http::uri::PathAndQuery, ProxyError> {
    upstream_target(uri, if strip_path { strip_prefix(path, matched_len) } else { path })
}

/// The upstream request's target: the client's as it came when the path is
/// unchanged (no copy, no parse), else `path` with the client's query. An
/// absolute-form target with an empty path (`http://h?q`) has a path of
/// `/` but text without it, which HTTP/2's `:path` would carry as is.
fn upstream_target(uri: &Uri, path: &str) -> Result<http::uri::PathAndQuery, ProxyError> {
    if let Some(target) = uri.path_and_query().filter(|target| target.path() == path && target.as_str().starts_with('/')) {
        return Ok(target.clone());
    }
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    target.parse().map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))
}

/// `path` without its first `matched_len` bytes (a segment boundary); `/`
/// when nothing is left.
fn strip_prefix(path: &str, matched_len: usize) -> &str {
    match path.get(matched_len..) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

/// Copies bytes both ways between an upgraded client and upstream connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, mut upstream: crate::upstream::Upgraded) {
    match client.await {
        Ok(client) => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection closed");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_matched_prefix_on_segment_boundaries() {
        assert_eq!(strip_prefix("/users/7", "/users".len()), "/7");
        assert_eq!(strip_prefix("/users", "/users".len()), "/");
        assert_eq!(strip_prefix("/users/", "/users".len()), "/");
        assert_eq!(strip_prefix("/any/path", 0), "/any/path", "the route `/` strips nothing");
    }

    #[test]
    fn forwarded_target_starts_with_a_slash() {
        let uri: Uri = "http://example.com?q=1".parse().unwrap();
        assert_eq!(forwarded_target(&uri, "/", 0, false).unwrap().as_str(), "/?q=1");
        let uri: Uri = "/users/7?q=1".parse().unwrap();
        assert_eq!(forwarded_target(&uri, "/users/7", "/users".len(), true).unwrap().as_str(), "/7?q=1");
    }

    #[test]
    fn host_names_lose_port_and_case() {
        let name = |v: &'static str| host_name(Some(&HeaderValue::from_static(v))).into_owned();
        assert_eq!(name("API.Example.com:8080"), "api.example.com");
        assert_eq!(name("api.example.com."), "api.example.com");
        assert_eq!(name("[::1]:80"), "::1");
        assert_eq!(name("localhost"), "localhost");
        assert_eq!(host_name(None), "");
    }
}
