//! The request pipeline: request id → route match → size limit →
//! authentication and scopes → rate limits → header rewriting (identity headers in) →
//! upstream call (`send`: target choice, timeouts, retries) → response headers, with
//! metrics and one span per request. The span is debug-level
//! (`RUST_LOG=portico_dp=debug` shows it with each request's events): at the
//! default `info` a per-request span cost a fifth of the throughput and
//! printed nothing. Bodies stream in both directions; upgrades (WebSocket)
//! are tunnelled once both sides agree.

pub mod headers;
pub mod retry;
mod send;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use self::headers::Peer;
use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::http1::{Verdict, Violation};
use crate::metrics::RouteMetrics;
use crate::ratelimit::{self, RequestFacts};
use crate::router::normalize_path;
use crate::runtime::RouteEntry;
use crate::state::NodeState;

/// Handles one request from `peer`. Never fails: errors become responses.
/// `secure`: the request came over TLS. `verdict`: what the HTTP/1 wire
/// guard ([`crate::http1`]) found of its head: a request that broke a rule
/// is answered here, and it or an upgrade request that gets no `101` (past
/// which the guard checks nothing) closes the connection, so no byte sent
/// after it is read as a request.
pub async fn handle(
    node: Arc<NodeState>,
    request: Request<Incoming>,
    peer: &Peer,
    secure: bool,
    verdict: Verdict,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let refused = match verdict {
        Verdict::Refuse(violation) => Some(violation),
        Verdict::Pass | Verdict::Upgrade => None,
    };
    let request_id = headers::request_id(request.headers());
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = ?request_id,
        route = tracing::field::Empty,
        upstream = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let (mut response, route) = async {
        match forward(&node, request, peer, secure, &request_id, refused).await {
            Ok((response, route)) => (response, Some(route)),
            Err((error, route)) => {
                tracing::debug!(error = %error, source = ?error.source(), retryable = error.retryable(), "request failed");
                (error.response(), route)
            }
        }
    }
    .instrument(span.clone())
    .await;
    response.headers_mut().insert(headers::REQUEST_ID, request_id);
    let status = response.status();
    if verdict != Verdict::Pass && status != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    span.record("status", status.as_u16());
    route.as_deref().unwrap_or(RouteMetrics::unmatched()).request_done(status, started.elapsed());
    response
}

type Failure = (ProxyError, Option<Arc<RouteMetrics>>);

async fn forward(
    node: &Arc<NodeState>,
    request: Request<Incoming>,
    peer: &Peer,
    secure: bool,
    request_id: &HeaderValue,
    refused: Option<Violation>,
) -> Result<(Response<ResponseBody>, Arc<RouteMetrics>), Failure> {
    if let Some(violation) = refused {
        return Err((ProxyError::Malformed(violation), None));
    }
    let runtime = node.runtime().ok_or((ProxyError::NoConfig, None))?;
    if let Err(error) = headers::check_limits(request.headers()) {
        return Err((error, None));
    }
    let uri = request.uri().clone();
    let path = normalize_path(uri.path()).map_err(|e| (ProxyError::BadRequest(e.message()), None))?;
    let original_host = original_host(&request);
    let Some((route, matched)) = runtime.route(&host_name(original_host.as_ref()), &path, request.method(), request.headers()) else {
        return Err((ProxyError::NoRoute { method: request.method().to_string(), path: path.into_owned() }, None));
    };
    tracing::Span::current().record("route", &*route.name).record("upstream", route.upstream.name());
    let fail = |error: ProxyError| (error, Some(route.metrics.clone()));
    if route.https_only && !secure {
        return https_redirect(original_host.as_ref(), &uri).map(|response| (response, route.metrics.clone())).map_err(fail);
    }

    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > route.max_body_bytes) {
        return Err(fail(ProxyError::BodyTooLarge { limit: route.max_body_bytes }));
    }

    let (mut parts, body) = request.into_parts();
    let client_ip = headers::client_ip(peer.addr.ip(), &parts.headers, &runtime.trusted_proxies);
    let limited_before = ratelimit::check(&route.limits_before_auth, &facts(route, &parts, client_ip, None)).await.map_err(fail)?;
    let identity = match runtime.auth.authenticate(&route.auth, &mut parts).await {
        Ok(identity) => identity,
        Err(error) => {
            crate::metrics::auth_refused(route.name.clone(), error.status());
            return Err(fail(error));
        }
    };
    let limited_after =
        ratelimit::check(&route.limits_after_auth, &facts(route, &parts, client_ip, identity.as_ref())).await.map_err(fail)?;
    let limited = ratelimit::tighter(limited_before, limited_after);
    let hash_value = route.upstream.hash_on().map(|on| {
        let consumer = identity.as_ref().filter(|i| !i.is_anonymous()).map(Identity::consumer_id);
        crate::upstream::hash_value(on, &parts.headers, client_ip, consumer)
    });
    let path_and_query = forwarded_target(&parts.uri, &path, matched.matched_len, route.strip_path).map_err(fail)?;
    let upgrade = headers::upgrade_protocol(&parts.headers);
    let client_upgrade = upgrade.as_ref().and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let host = original_host.as_ref().filter(|_| route.preserve_host).cloned();
    prepare_headers(&mut parts.headers, (peer, client_ip), secure, request_id, original_host, upgrade);
    if let Some(identity) = &identity {
        runtime.auth.add_identity_headers(identity, &mut parts.headers);
    }
    let prepared = send::Prepared {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        host,
        hash_value: hash_value.as_deref().map(str::as_bytes),
        upgrading: client_upgrade.is_some(),
    };
    let (mut response, lease) = send::send(route, prepared, body).await.map_err(fail)?;

    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded && let Some(client_upgrade) = client_upgrade {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
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
    headers::remove_hop_by_hop(response.headers_mut(), keep_upgrade);
    if let Some(decision) = &limited {
        ratelimit::add_headers(response.headers_mut(), decision);
    }
    let idle = route.upstream.idle_timeout;
    Ok((response.map(|body| ResponseBody::upstream(body, idle, lease)), route.metrics.clone()))
}

/// What a rate limit may key a request of `route` on.
fn facts<'a>(
    route: &'a RouteEntry,
    parts: &'a http::request::Parts,
    client_ip: IpAddr,
    identity: Option<&'a Identity>,
) -> RequestFacts<'a> {
    RequestFacts { client_ip, headers: &parts.headers, identity, route: &route.name, service: route.upstream.name() }
}

/// The upstream request's headers but `Host` (set per target when sent).
fn prepare_headers(
    headers: &mut http::HeaderMap,
    (peer, client): (&Peer, IpAddr),
    secure: bool,
    request_id: &HeaderValue,
    original_host: Option<HeaderValue>,
    upgrade: Option<HeaderValue>,
) {
    headers::remove_hop_by_hop(headers, upgrade);
    headers::strip_spoofed(headers);
    headers::add_forwarded(headers, peer, client, if secure { "https" } else { "http" }, original_host.as_ref());
    headers.insert(headers::REQUEST_ID, request_id.clone());
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
fn original_host(request: &Request<Incoming>) -> Option<HeaderValue> {
    request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()).or_else(|| request.headers().get(header::HOST).cloned())
}

/// A host as routes name it: without port or trailing dot, lowercase
/// (`API.example.com.:80` gives `api.example.com`, `[::1]:80` gives `::1`).
fn host_name(host: Option<&HeaderValue>) -> std::borrow::Cow<'_, str> {
    let raw = host.and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => raw.split(':').next().unwrap_or(""),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
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

/// Copies bytes both ways between an upgraded client and upstream connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
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
