//! The response cache (the `cache` policy): RFC 9111 shared-cache storage
//! and reuse of upstream responses, keyed so that requests that differ in
//! what the key holds never meet ([`key`]), with `Vary` variants stored
//! apart, concurrent misses coalesced ([`flight`]), stale responses served
//! while one background request refreshes them or when the upstream fails,
//! revalidation with `If-None-Match`/`If-Modified-Since`, and purges from
//! the control plane ([`ResponseCache::purge`]). The store is the node's,
//! bounded in bytes; each route compiles its policy into a [`CacheStage`]
//! that sits between the request transforms and the upstream call, so a
//! hit still goes through the response transforms (which pick their
//! profile per request).

pub mod flight;
pub mod freshness;
pub mod key;
mod metrics;
pub mod record;
pub mod status;
pub mod store;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use portico_shared::model::policy::cache::{CachePolicy, QueryKey};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use self::flight::{Flights, Joined};
use self::freshness::{Defaults, Directives, Freshness, Refusal, Standing, assess};
use self::key::{KeyParts, normalize_query};
use self::metrics::CacheMetrics;
use self::record::{Pending, Recording};
use self::status::{CACHE_STATUS, CacheStatus, Fwd};
pub use self::store::ResponseCache;
use self::store::{Found, Resource, UrlId, Variant, VaryValues, tags, vary_names, vary_value};
use crate::backend::aggregate::AggregateInput;
use crate::backend::proxy::{ClientBody, Prepared};
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::runtime::{RouteEntry, Runtime};

/// A route's `cache` policy, compiled.
#[derive(Debug)]
pub struct CacheStage {
    /// The route and its policy: entries of an unchanged scope outlive config versions.
    scope: [u8; 32],
    methods: Vec<Method>,
    statuses: Vec<u16>,
    defaults: Defaults,
    status_ttl: Vec<(u16, Duration)>,
    query: Arc<QueryKey>,
    /// The policy's key headers, and `Range` when partial responses are stored.
    key_headers: Vec<HeaderName>,
    per_consumer: bool,
    ranges: bool,
    max_entry_bytes: usize,
    tag_header: HeaderName,
    max_waiters: u32,
    wait: Duration,
    metrics: Arc<CacheMetrics>,
}

/// A cached request that failed upstream, with the `Cache-Status` its
/// error answer carries.
pub struct Failed {
    pub error: ProxyError,
    pub status: HeaderValue,
}

/// What the cache needs of a request besides the prepared upstream request.
pub struct CacheRequest<'a> {
    /// The host the client asked for, as routes see it.
    pub host: &'a str,
    /// The client's normalized path and query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// A request transform rewrote the upstream target (it is then part of the key, as is).
    pub rewritten: bool,
    /// The authenticated consumer, when the route authenticates.
    pub consumer: Option<&'a str>,
    /// The client sent `Authorization`.
    pub authorized: bool,
    /// The request-transform profile that shaped the upstream request.
    pub profile: Option<Profile<'a>>,
}

/// A request-transform profile as the key takes it: which one of the
/// route's it is, and the headers it writes (their values, as the
/// upstream gets them, are part of the key: they may come from claims or
/// other headers).
#[derive(Clone, Copy)]
pub struct Profile<'a> {
    pub index: usize,
    pub written: &'a [HeaderName],
}

impl CacheStage {
    /// Compiles `policy` for route `route`.
    pub fn compile(route: &Arc<str>, policy: &CachePolicy) -> Result<Self, String> {
        let canonical = serde_json::to_vec(policy).map_err(|e| format!("cache policy: {e}"))?;
        let scope = Sha256::new().chain_update(route.as_bytes()).chain_update([0]).chain_update(&canonical).finalize().into();
        let ranges = policy.statuses.contains(&206);
        let mut key_headers: Vec<HeaderName> = policy
            .key
            .headers
            .iter()
            .map(String::as_str)
            .chain(ranges.then_some("range"))
            .filter(|name| !name.is_empty())
            .map(|name| HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| format!("cache key header '{name}'")))
            .collect::<Result<_, _>>()?;
        key_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        key_headers.dedup();
        let seconds = |s: u32| Duration::from_secs(u64::from(s));
        Ok(Self {
            scope,
            methods: policy.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect(),
            statuses: policy.statuses.clone(),
            defaults: Defaults {
                ttl: policy.ttl_s.map(seconds),
                heuristic: policy.heuristic,
                stale_while_revalidate: seconds(policy.stale_while_revalidate_s),
                stale_if_error: seconds(policy.stale_if_error_s),
            },
            status_ttl: policy.status_ttl_s.iter().filter_map(|(status, ttl)| Some((status.parse().ok()?, seconds(*ttl)))).collect(),
            query: Arc::new(policy.key.query.clone()),
            key_headers,
            per_consumer: policy.key.consumer,
            ranges,
            max_entry_bytes: usize::try_from(policy.max_entry_bytes).unwrap_or(usize::MAX),
            tag_header: HeaderName::from_bytes(policy.tag_header.as_bytes())
                .map_err(|_| format!("cache tag header '{}'", policy.tag_header))?,
            max_waiters: policy.coalesce.max_waiters,
            wait: Duration::from_millis(u64::from(policy.coalesce.wait_ms)),
            metrics: Arc::new(CacheMetrics::new(route)),
        })
    }

    /// The scope this route's entries are stored under.
    pub fn scope(&self) -> [u8; 32] {
        self.scope
    }

    /// Answers `prepared` from the cache, or sends it upstream (through
    /// [`crate::proxy::fetch`]) and stores what may be stored. Every
    /// answer carries `Cache-Status`, and so does a failure's.
    pub async fn serve(
        &self,
        cache: &Arc<ResponseCache>,
        runtime: &Arc<Runtime>,
        route: &RouteEntry,
        request: CacheRequest<'_>,
        prepared: Prepared<'_>,
        body: ClientBody,
    ) -> Result<Response<ResponseBody>, Failed> {
        let mut forwarded = None;
        self.answer_or_fetch(cache, runtime, route, request, prepared, body, &mut forwarded).await.map_err(|error| {
            let status = forwarded.map_or_else(CacheStatus::not_consulted, |fwd| CacheStatus::forwarded(fwd).detail("upstream-error"));
            Failed { error, status: status.value() }
        })
    }

    /// [`Self::serve`], noting in `forwarded` why the request went upstream.
    #[allow(clippy::too_many_arguments)]
    async fn answer_or_fetch(
        &self,
        cache: &Arc<ResponseCache>,
        runtime: &Arc<Runtime>,
        route: &RouteEntry,
        request: CacheRequest<'_>,
        mut prepared: Prepared<'_>,
        body: ClientBody,
        forwarded: &mut Option<Fwd>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let query = normalize_query(&self.query, request.query);
        let bypass = !cache.stores() || (!self.ranges && prepared.headers.contains_key(header::RANGE));
        if bypass || !self.methods.contains(&prepared.method) {
            let fwd = *forwarded.insert(if bypass { Fwd::Bypass } else { Fwd::Method });
            let unsafe_method = !prepared.method.is_safe();
            let response = crate::proxy::fetch(route, prepared, body).await?;
            if unsafe_method && !response.status().is_client_error() && !response.status().is_server_error() {
                // RFC 9111 §4.4: a change through an unsafe method invalidates what is stored of the URL.
                cache.invalidate_url(&self.url_id(&request, query.as_deref()));
            }
            return Ok(self.passed(response, fwd));
        }
        if !request.rewritten && query.as_deref() != request.query {
            // The upstream is sent the query the key holds.
            let target = match &query {
                Some(query) => format!("{}?{query}", prepared.path_and_query.path()),
                None => prepared.path_and_query.path().to_owned(),
            };
            prepared.path_and_query = target.parse().map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))?;
        }
        let key = self.key_parts(&request, query.as_deref(), &prepared).digest();
        // Kept in the request: on a miss the upstream may answer them with `304`.
        let conditional = Conditional::read(&prepared.headers);
        let head = prepared.method == Method::HEAD;
        let (fwd, stale) = match cache.find(&key, &prepared.headers, request.authorized) {
            Found::Variant(variant) => match variant.freshness.standing(variant.age(Instant::now())) {
                Standing::Fresh(ttl) => {
                    self.metrics.hits.increment(1);
                    return Ok(answer(&variant, CacheStatus::hit(seconds(ttl)), &conditional, head));
                }
                Standing::ServeWhileRevalidating(stale) => {
                    if let Some(guard) = Flights::lead(cache, key) {
                        let refresh = Refresh::new(runtime, route, &request, &prepared, key, variant.clone(), guard);
                        let span = tracing::debug_span!("cache_refresh", route = %route.name);
                        tokio::spawn(refresh.run(cache.clone()).instrument(span));
                    }
                    self.metrics.stale.increment(1);
                    let status = CacheStatus::hit(-stale_seconds(stale)).detail("stale-while-revalidate");
                    return Ok(answer(&variant, status, &conditional, head));
                }
                Standing::Stale(_) => (Fwd::Stale, Some(variant)),
            },
            Found::VaryMiss => (Fwd::VaryMiss, None),
            Found::NotForRequest => (Fwd::Request, None),
            Found::UriMiss => (Fwd::UriMiss, None),
        };
        *forwarded = Some(fwd);
        let guard = match Flights::join(cache, key, self.max_waiters) {
            Joined::Leader(guard) => {
                // Another leader may have stored it between the lookup and now.
                if let Some((variant, ttl)) = fresh(cache, &key, &prepared.headers, request.authorized) {
                    self.metrics.hits.increment(1);
                    return Ok(answer(&variant, CacheStatus::hit(ttl), &conditional, head));
                }
                Some(guard)
            }
            Joined::Waiter(waiting) => {
                self.metrics.coalesced.increment(1);
                if waiting.landed(self.wait).await
                    && let Some((variant, ttl)) = fresh(cache, &key, &prepared.headers, request.authorized)
                {
                    let status = CacheStatus {
                        fwd_status: Some(variant.status.as_u16()),
                        ttl: Some(ttl),
                        collapsed: true,
                        ..CacheStatus::forwarded(fwd)
                    };
                    return Ok(answer(&variant, status, &conditional, head));
                }
                None
            }
            Joined::Alone => None,
        };
        self.metrics.misses.increment(1);
        let upstream = Upstream { cache, route, key, fwd, authorized: request.authorized, guard };
        let resource = self.resource(&request, query.as_deref());
        self.fetch(upstream, resource, prepared, body, stale, &conditional).await
    }

    /// Sends the request upstream (conditionally, when a stale variant has
    /// validators) and answers: stale for an error it covers, the stored
    /// body refreshed by a `304`, or the response, stored as it streams
    /// when it may be.
    async fn fetch(
        &self,
        upstream: Upstream<'_>,
        resource: Resource,
        mut prepared: Prepared<'_>,
        body: ClientBody,
        stale: Option<Arc<Variant>>,
        conditional: &Conditional,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let began = upstream.cache.generation();
        if stale.is_some() {
            // The cache revalidates with its own validators; the client's are answered from the result.
            Conditional::remove(&mut prepared.headers);
        }
        let request_headers = prepared.headers.clone();
        if let Some(stale) = &stale {
            for (validator, condition) in [(header::ETAG, header::IF_NONE_MATCH), (header::LAST_MODIFIED, header::IF_MODIFIED_SINCE)] {
                if let Some(value) = stale.headers.get(&validator) {
                    prepared.headers.insert(condition, value.clone());
                }
            }
        }
        let head = prepared.method == Method::HEAD;
        let requested = SystemTime::now();
        let result = crate::proxy::fetch(upstream.route, prepared, body).await;
        let received = SystemTime::now();
        let standing_in = || {
            let stale = stale.as_ref()?;
            let by = stale.age(Instant::now()).saturating_sub(stale.freshness.lifetime);
            stale.freshness.covers_error(by).then_some((stale, by))
        };
        let failed = result.as_ref().map_or(true, |response| response.status().is_server_error());
        if let Some((stale, by)) = standing_in().filter(|_| failed) {
            self.metrics.stale.increment(1);
            let status = CacheStatus {
                fwd_status: result.ok().map(|r| r.status().as_u16()),
                ttl: Some(-stale_seconds(by)),
                ..CacheStatus::forwarded(Fwd::Stale)
            };
            return Ok(answer(stale, status.detail("stale-if-error"), conditional, head));
        }
        let mut response = result?;
        let status = response.status();
        let mut cache_status = CacheStatus { fwd_status: Some(status.as_u16()), ..CacheStatus::forwarded(upstream.fwd) };
        if let (StatusCode::NOT_MODIFIED, Some(stale)) = (status, &stale) {
            let headers = merge_304(&stale.headers, response.headers(), &self.tag_header);
            let defaults = self.defaults_for(stale.status.as_u16());
            return Ok(match assess(&headers, upstream.authorized, &defaults, requested, received) {
                Ok(freshness) => {
                    let ttl = seconds(freshness.lifetime) - seconds(freshness.initial_age);
                    let refreshed =
                        upstream.cache.refresh(&upstream.key, stale, headers, freshness, began).unwrap_or_else(|| stale.clone());
                    answer(&refreshed, CacheStatus { stored: true, ttl: Some(ttl), ..cache_status }, conditional, head)
                }
                Err(refusal) => answer(stale, cache_status.detail(refusal), conditional, head),
            });
        }
        let tags = tags(response.headers(), &self.tag_header);
        response.headers_mut().remove(&self.tag_header);
        match self.storable(&response, &request_headers, upstream.authorized, requested, received) {
            Ok((freshness, vary)) => {
                cache_status.stored = true;
                cache_status.ttl = Some(seconds(freshness.lifetime) - seconds(freshness.initial_age));
                let variant = Variant {
                    status,
                    headers: response.headers().clone(),
                    body: Bytes::new(),
                    vary,
                    tags,
                    freshness,
                    stored_at: Instant::now(),
                };
                let pending =
                    Pending::new(upstream.cache.clone(), upstream.key, (resource, variant), self.max_entry_bytes, began, upstream.guard);
                response = response.map(|body| ResponseBody::Recorded(Box::new(Recording::new(body, pending))));
            }
            // Not stored: the guard goes now, and every waiter with it.
            Err(refusal) => cache_status = cache_status.detail(refusal),
        }
        response.headers_mut().append(CACHE_STATUS, cache_status.value());
        Ok(response)
    }

    /// How a response may be stored: its freshness and its `Vary` values
    /// (from `request`, the headers it answered); why not otherwise.
    fn storable(
        &self,
        response: &Response<ResponseBody>,
        request: &HeaderMap,
        authorized: bool,
        requested: SystemTime,
        received: SystemTime,
    ) -> Result<(Freshness, VaryValues), Refusal> {
        let status = response.status().as_u16();
        if !self.statuses.contains(&status) {
            return Err("status");
        }
        if Directives::parse(request).no_store {
            // RFC 9111 §5.2.1.5: nothing of a request with `no-store` is stored.
            return Err("request-no-store");
        }
        let names = vary_names(response.headers()).map_err(|_| "vary-star")?;
        let length = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if length.is_some_and(|length| length > self.max_entry_bytes) {
            return Err("too-large");
        }
        let freshness = assess(response.headers(), authorized, &self.defaults_for(status), requested, received)?;
        let vary = names.into_iter().map(|name| (name.clone(), vary_value(request, &name))).collect();
        Ok((freshness, vary))
    }

    /// A response that went upstream untouched by the cache, saying why
    /// (its tags, which are for the cache, removed as always).
    fn passed(&self, mut response: Response<ResponseBody>, fwd: Fwd) -> Response<ResponseBody> {
        let status = CacheStatus { fwd_status: Some(response.status().as_u16()), ..CacheStatus::forwarded(fwd) };
        response.headers_mut().remove(&self.tag_header);
        response.headers_mut().append(CACHE_STATUS, status.value());
        response
    }

    fn defaults_for(&self, status: u16) -> Defaults {
        let ttl = self.status_ttl.iter().find(|(s, _)| *s == status).map(|(_, ttl)| *ttl).or(self.defaults.ttl);
        Defaults { ttl, ..self.defaults.clone() }
    }

    fn key_parts<'a>(&'a self, request: &'a CacheRequest<'_>, query: Option<&'a str>, prepared: &'a Prepared<'_>) -> KeyParts<'a> {
        let written = request.profile.map_or(&[][..], |profile| profile.written);
        KeyParts {
            scope: &self.scope,
            method: prepared.method.as_str(),
            host: request.host,
            path: request.path,
            query,
            target: request.rewritten.then(|| prepared.path_and_query.as_str()).or(prepared.aggregate.as_deref().map(AggregateInput::key)),
            headers: self
                .key_headers
                .iter()
                .chain(written)
                .map(|name| (name.as_str(), prepared.headers.get_all(name).iter().map(HeaderValue::as_bytes).collect()))
                .collect(),
            consumer: request.consumer.filter(|_| self.per_consumer),
            profile: request.profile.map(|profile| profile.index),
        }
    }

    /// The URL a request names, as the route's entries are filed under it.
    fn url_id(&self, request: &CacheRequest<'_>, query: Option<&str>) -> UrlId {
        KeyParts {
            scope: &self.scope,
            method: "",
            host: request.host,
            path: request.path,
            query,
            target: None,
            headers: Vec::new(),
            consumer: None,
            profile: None,
        }
        .digest()
    }

    fn resource(&self, request: &CacheRequest<'_>, query: Option<&str>) -> Resource {
        Resource {
            scope: self.scope,
            url: self.url_id(request, query),
            host: request.host.into(),
            path: request.path.into(),
            query: query.map(Into::into),
            query_rule: self.query.clone(),
            metrics: self.metrics.clone(),
            variants: Vec::new(),
        }
    }
}

/// Where a fetch's response goes.
struct Upstream<'a> {
    cache: &'a Arc<ResponseCache>,
    route: &'a RouteEntry,
    key: key::Key,
    fwd: Fwd,
    authorized: bool,
    /// Held while fetching for waiters (released when stored or refused).
    guard: Option<flight::FlightGuard>,
}

/// A fresh variant of `key` for the request, with its seconds to live.
fn fresh(cache: &ResponseCache, key: &key::Key, headers: &HeaderMap, authorized: bool) -> Option<(Arc<Variant>, i64)> {
    let Found::Variant(variant) = cache.find(key, headers, authorized) else { return None };
    match variant.freshness.standing(variant.age(Instant::now())) {
        Standing::Fresh(ttl) => Some((variant, seconds(ttl))),
        Standing::ServeWhileRevalidating(_) | Standing::Stale(_) => None,
    }
}

/// Whole seconds left of a freshness (rounded down).
fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Whole seconds a response is stale by (rounded up, so a response stale
/// by a moment shows `ttl=-1`, never `0`).
fn stale_seconds(duration: Duration) -> i64 {
    seconds(duration.saturating_add(Duration::from_nanos(999_999_999)))
}

/// A stored variant as the client gets it: with its `Age`, `Cache-Status`,
/// and `304` when the client's own conditional holds.
fn answer(variant: &Variant, status: CacheStatus, conditional: &Conditional, head: bool) -> Response<ResponseBody> {
    let not_modified = conditional.holds_for(variant);
    let body = if head || not_modified { Bytes::new() } else { variant.body.clone() };
    let mut response = Response::new(ResponseBody::Local(Full::new(body)));
    *response.status_mut() = if not_modified { StatusCode::NOT_MODIFIED } else { variant.status };
    let headers = response.headers_mut();
    *headers = variant.headers.clone();
    if not_modified {
        headers.remove(header::CONTENT_LENGTH);
    }
    headers.insert(header::AGE, HeaderValue::from(variant.age(Instant::now()).as_secs()));
    headers.append(CACHE_STATUS, status.value());
    response
}

/// The stored headers updated by a `304`'s (RFC 9111 §3.2), less framing.
fn merge_304(stored: &HeaderMap, fresh: &HeaderMap, tag_header: &HeaderName) -> HeaderMap {
    let mut merged = stored.clone();
    for name in fresh.keys() {
        let framing = [header::CONTENT_LENGTH, header::CONTENT_ENCODING, header::TRANSFER_ENCODING, CACHE_STATUS].contains(name);
        if framing || name == tag_header {
            continue;
        }
        merged.remove(name);
        for value in fresh.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

/// The client's own validators: answered from a stored response; sent
/// upstream on a miss, not when the cache revalidates with its own.
#[derive(Debug, Default)]
struct Conditional {
    if_none_match: Option<HeaderValue>,
    if_modified_since: Option<HeaderValue>,
}

impl Conditional {
    fn read(headers: &HeaderMap) -> Self {
        Self {
            if_none_match: headers.get(header::IF_NONE_MATCH).cloned(),
            if_modified_since: headers.get(header::IF_MODIFIED_SINCE).cloned(),
        }
    }

    fn remove(headers: &mut HeaderMap) {
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
    }

    /// Whether `variant` answers the client with `304` (RFC 9110 §13.1.2,
    /// §13.1.3: `If-None-Match` by weak comparison, else `If-Modified-Since`).
    fn holds_for(&self, variant: &Variant) -> bool {
        if variant.status != StatusCode::OK {
            return false;
        }
        if let Some(wanted) = &self.if_none_match {
            let Some(etag) = variant.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else { return false };
            let weak = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
            return wanted.to_str().is_ok_and(|list| list.split(',').any(|tag| tag.trim() == "*" || weak(tag) == weak(etag)));
        }
        let date = |value: Option<&HeaderValue>| httpdate::parse_http_date(value?.to_str().ok()?).ok();
        match (date(self.if_modified_since.as_ref()), date(variant.headers.get(header::LAST_MODIFIED))) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }
}

/// A background refresh of a variant served stale (`stale-while-revalidate`):
/// one request, owning what it needs, holding the key's flight so no
/// other refresh of it starts meanwhile.
struct Refresh {
    runtime: Arc<Runtime>,
    route: usize,
    key: key::Key,
    host: String,
    path: String,
    query: Option<String>,
    rewritten: bool,
    consumer: Option<String>,
    authorized: bool,
    method: Method,
    path_and_query: http::uri::PathAndQuery,
    headers: HeaderMap,
    host_header: Option<HeaderValue>,
    hash_value: Option<Vec<u8>>,
    aggregate: Option<Box<AggregateInput>>,
    stale: Arc<Variant>,
    guard: flight::FlightGuard,
}

impl Refresh {
    fn new(
        runtime: &Arc<Runtime>,
        route: &RouteEntry,
        request: &CacheRequest<'_>,
        prepared: &Prepared<'_>,
        key: key::Key,
        stale: Arc<Variant>,
        guard: flight::FlightGuard,
    ) -> Self {
        Self {
            runtime: runtime.clone(),
            route: route.index,
            key,
            host: request.host.to_owned(),
            path: request.path.to_owned(),
            query: request.query.map(str::to_owned),
            rewritten: request.rewritten,
            consumer: request.consumer.map(str::to_owned),
            authorized: request.authorized,
            method: prepared.method.clone(),
            path_and_query: prepared.path_and_query.clone(),
            headers: prepared.headers.clone(),
            host_header: prepared.host.clone(),
            hash_value: prepared.hash_value.map(<[u8]>::to_vec),
            aggregate: prepared.aggregate.clone(),
            stale,
            guard,
        }
    }

    async fn run(self, cache: Arc<ResponseCache>) {
        let route = self.runtime.route_at(self.route);
        let Some(stage) = &route.stages.cache else { return };
        let request = CacheRequest {
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            rewritten: self.rewritten,
            consumer: self.consumer.as_deref(),
            authorized: self.authorized,
            // The key is made already.
            profile: None,
        };
        let query: Option<Cow<'_, str>> = normalize_query(&stage.query, request.query);
        let prepared = Prepared {
            idempotent: self.method.is_idempotent(),
            method: self.method,
            path_and_query: self.path_and_query,
            headers: self.headers,
            host: self.host_header,
            hash_value: self.hash_value.as_deref(),
            upgrading: false,
            timeout: None,
            deadline_is_clients: false,
            aggregate: self.aggregate,
            trail: None,
            // A cached route's request has them in its headers.
            forwarding: None,
        };
        let upstream =
            Upstream { cache: &cache, route, key: self.key, fwd: Fwd::Stale, authorized: self.authorized, guard: Some(self.guard) };
        let resource = stage.resource(&request, query.as_deref());
        let body = ClientBody::Whole(Bytes::new());
        match stage.fetch(upstream, resource, prepared, body, Some(self.stale), &Conditional::default()).await {
            // Reading the body to its end stores it.
            Ok(response) => {
                if let Err(error) = http_body_util::BodyExt::collect(response.into_body()).await {
                    tracing::debug!(route = %route.name, error = %error, "background refresh cut short");
                }
            }
            Err(error) => tracing::debug!(route = %route.name, error = %error, "background refresh failed"),
        }
    }
}
