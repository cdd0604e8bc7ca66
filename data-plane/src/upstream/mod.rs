//! Upstreams: one per service, holding its targets, its balancer (weighted
//! round robin, least requests or consistent hashing) and a pool of
//! connections per target, with the service's connect timeout: HTTP/1.1
//! (`h1`, driven in the request's own task) for `http` and `https`
//! services, HTTP/2 (`h2`, over hyper) for `grpc` and `grpcs` ones, whose
//! answers [`grpc`] reads.
//! An upstream whose service is unchanged by a new config version is
//! carried into the new runtime as is, so its connection pool and
//! balancer position survive the swap.

mod balance;
pub mod breaker;
mod dial;
pub mod grpc;
mod h1;
mod h2;
pub mod health;
mod tls;

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use http::Uri;
use http::uri::{Authority, Scheme};
use http_body_util::{BodyExt, Empty, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portico_shared::model::{ActiveHealthCheck, HashOn, LoadBalancing, Protocol, Service};

use self::breaker::Breaker;
use self::dial::Dialer;
use self::h1::Pool;
use self::h2::H2Pool;
use self::health::{ConnectBackoff, TargetHealth, now_ms};

pub use balance::{HashRing, InFlight, LeastRequests, WeightedRoundRobin};
pub use dial::Io;
pub use h1::Upgraded;

use crate::body::{BoxError, UpstreamBody};
use crate::proxy::headers::Forwarding;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (or a new one closed before the request
    /// went out): nothing was sent, and here is the request.
    #[error("cannot connect: {0}")]
    Connect(#[source] BoxError, Box<http::Request<UpstreamBody>>),
    #[error("{0}")]
    Request(#[source] BoxError),
}

impl SendError {
    /// The request, when it never went out.
    pub fn into_unsent(self) -> Option<http::Request<UpstreamBody>> {
        match self {
            Self::Connect(_, request) => Some(*request),
            Self::Request(_) => None,
        }
    }
}

/// What a response needs kept while its body streams: for an HTTP/2
/// stream, its connection counted busy (an HTTP/1.1 connection travels
/// in the body itself).
#[derive(Debug, Default)]
pub struct Lease {
    _in_use: Option<crate::idle::InFlight>,
}

impl Lease {
    /// The lease of one stream of a multiplexed connection.
    fn multiplexed(in_use: crate::idle::InFlight) -> Self {
        Self { _in_use: Some(in_use) }
    }
}

/// An upstream's response body: read by the request's own task over
/// HTTP/1.1, from hyper's connection task over HTTP/2; none after a `101`,
/// whose connection is the new protocol's (until taken, [`Incoming::take_upgrade`]).
#[derive(Debug)]
pub enum Incoming {
    H1(h1::Body),
    H2(hyper::body::Incoming),
    Switched(Option<Upgraded>),
}

impl Incoming {
    /// The target's side of the connection, after a `101`.
    pub fn take_upgrade(&mut self) -> Option<Upgraded> {
        match self {
            Self::Switched(upgraded) => upgraded.take(),
            Self::H1(_) | Self::H2(_) => None,
        }
    }
}

impl hyper::body::Body for Incoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::H1(body) => Pin::new(body).poll_frame(cx),
            Self::H2(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            Self::Switched(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(body) => body.is_end_stream(),
            Self::H2(body) => body.is_end_stream(),
            Self::Switched(_) => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::H1(body) => body.size_hint(),
            Self::H2(body) => body.size_hint(),
            Self::Switched(_) => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// One address of an upstream.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `https` (also for `grpc` and `grpcs` targets: the scheme on the wire).
    pub scheme: Scheme,
    pub authority: Authority,
    /// `Host` for requests to this target.
    pub host: http::HeaderValue,
}

/// The connections of an upstream, a pool per target.
#[derive(Debug)]
enum Connections {
    Http1(Vec<Pool>),
    Http2(Vec<H2Pool>),
}

/// How an upstream picks targets.
#[derive(Debug)]
enum Balancer {
    RoundRobin(WeightedRoundRobin),
    LeastRequests(LeastRequests),
    ConsistentHash(HashRing, HashOn),
}

/// Why no target can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every target is unhealthy.
    NoHealthyTarget,
    /// Every healthy target's circuit is open; one may close in this long.
    CircuitOpen { retry_after_ms: u64 },
}

/// A target chosen for one request; with `least_requests` it counts as in
/// flight until this is dropped (when the response headers are in).
#[derive(Debug)]
pub struct Picked<'a> {
    pub target: &'a Target,
    index: usize,
    _in_flight: Option<InFlight<'a>>,
}

impl Picked<'_> {
    /// The target's position in the service's list.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// A service, ready to take requests.
#[derive(Debug)]
pub struct Upstream {
    /// The service this was built from (for carry-over decisions).
    service: Service,
    targets: Vec<Target>,
    balancer: Balancer,
    /// Per target, when the service has health checks.
    health: Option<Vec<Arc<TargetHealth>>>,
    /// Per target, when the service has a circuit breaker.
    breakers: Option<Vec<Arc<Breaker>>>,
    /// Per target: refused connections put it last for a while.
    backoff: Vec<Arc<ConnectBackoff>>,
    /// Connections, per target.
    connections: Connections,
    /// TLS settings towards the targets (for the active checks too).
    tls: rustls::ClientConfig,
    pub request_timeout: Duration,
    /// Longest silence of a streaming response body (and of a pooled connection).
    pub idle_timeout: Duration,
}

impl Upstream {
    /// Builds an upstream; fails on a target URL it cannot use (validation
    /// in the control plane excludes these). The health of targets that
    /// `previous` (the service's upstream in the last version) also had is
    /// carried over.
    pub fn new(service: &Service, previous: Option<&Upstream>) -> Result<Self, String> {
        if service.protocol.is_amqp() {
            return Err(format!("service '{}': amqp services are not served yet", service.name));
        }
        let targets = service
            .targets
            .iter()
            .map(|t| {
                let uri: http::Uri = t.url.parse().map_err(|e| format!("service '{}': target '{}': {e}", service.name, t.url))?;
                let wire_scheme = |scheme: &Scheme| match service.protocol {
                    Protocol::Grpc => Scheme::HTTP,
                    Protocol::Grpcs => Scheme::HTTPS,
                    Protocol::Http | Protocol::Https | Protocol::Amqp | Protocol::Amqps => scheme.clone(),
                };
                match (uri.scheme(), uri.authority()) {
                    (Some(scheme), Some(authority)) => Ok(Target {
                        scheme: wire_scheme(scheme),
                        authority: authority.clone(),
                        host: http::HeaderValue::from_str(authority.as_str())
                            .map_err(|e| format!("service '{}': target '{}': {e}", service.name, t.url))?,
                    }),
                    _ => Err(format!("service '{}': target '{}' is not absolute", service.name, t.url)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let weights: Vec<u32> = service.targets.iter().map(|t| t.weight).collect();
        if weights.iter().all(|w| *w == 0) {
            return Err(format!("service '{}' has no target with a weight above 0", service.name));
        }
        let tls = tls::client_config(service)?;
        let idle_timeout = Duration::from_millis(u64::from(service.timeouts.idle_ms));
        let connect_timeout = Duration::from_millis(u64::from(service.timeouts.connect_ms));
        let connections = if service.protocol.is_grpc() {
            let dialer = Dialer::new(tls.clone(), b"h2", connect_timeout);
            Connections::Http2(
                targets.iter().map(|t| H2Pool::new(dialer.clone(), t.scheme.clone(), t.authority.clone(), idle_timeout)).collect(),
            )
        } else {
            let dialer = Dialer::new(tls.clone(), b"http/1.1", connect_timeout);
            Connections::Http1(targets.iter().map(|t| Pool::new(dialer.clone(), &t.scheme, t.authority.clone(), idle_timeout)).collect())
        };
        let balancer = match service.load_balancing {
            LoadBalancing::RoundRobin => Balancer::RoundRobin(WeightedRoundRobin::new(&weights)),
            LoadBalancing::LeastRequests => Balancer::LeastRequests(LeastRequests::new(&weights)),
            LoadBalancing::ConsistentHash => {
                let hash_on = service.hash_on.as_deref().and_then(HashOn::parse).unwrap_or(HashOn::Ip);
                let names: Vec<&str> = targets.iter().map(|t| t.authority.as_str()).collect();
                Balancer::ConsistentHash(HashRing::new(&names, &weights), hash_on)
            }
        };
        // Health is carried over for targets whose URL stays, while the
        // health-check settings stay too (an active verdict without the
        // checks that made it could never change again).
        let same_checks = previous.is_some_and(|p| p.service.health_check == service.health_check);
        let health = service.health_check.as_ref().map(|_| {
            service
                .targets
                .iter()
                .map(|t| {
                    let kept = previous.filter(|_| same_checks).and_then(|p| {
                        let index = p.service.targets.iter().position(|old| old.url == t.url)?;
                        p.health.as_ref()?.get(index).cloned()
                    });
                    kept.unwrap_or_default()
                })
                .collect()
        });
        let breakers = service.circuit_breaker.as_ref().map(|config| {
            service
                .targets
                .iter()
                .map(|t| {
                    let same_config = previous.is_some_and(|p| p.service.circuit_breaker.as_ref() == Some(config));
                    let kept = previous.filter(|_| same_config).and_then(|p| {
                        let index = p.service.targets.iter().position(|old| old.url == t.url)?;
                        p.breakers.as_ref()?.get(index).cloned()
                    });
                    kept.unwrap_or_else(|| Arc::new(Breaker::new(config)))
                })
                .collect()
        });
        let backoff = service
            .targets
            .iter()
            .map(|t| {
                let kept =
                    previous.and_then(|p| p.service.targets.iter().position(|old| old.url == t.url).map(|index| p.backoff[index].clone()));
                kept.unwrap_or_default()
            })
            .collect();
        Ok(Self {
            service: service.clone(),
            targets,
            balancer,
            health,
            breakers,
            backoff,
            tls,
            connections,
            request_timeout: Duration::from_millis(u64::from(service.timeouts.request_ms)),
            idle_timeout,
        })
    }

    pub fn name(&self) -> &str {
        &self.service.name
    }

    /// The URL of the target at `index`, as the service lists it.
    pub fn target_url(&self, index: usize) -> Option<&str> {
        self.service.targets.get(index).map(|target| target.url.as_str())
    }

    /// Whether the service speaks gRPC (`grpc` or `grpcs`): its answers'
    /// outcome is their `grpc-status` ([`grpc`]).
    pub fn is_grpc(&self) -> bool {
        self.service.protocol.is_grpc()
    }

    /// Whether this upstream can serve `service` as it is: same entity, and
    /// nothing that shapes traffic changed (tags or policies may have).
    pub fn serves(&self, service: &Service) -> bool {
        let (a, b) = (&self.service, service);
        a.id == b.id
            && a.name == b.name
            && a.protocol == b.protocol
            && a.targets == b.targets
            && a.load_balancing == b.load_balancing
            && a.hash_on == b.hash_on
            && a.timeouts == b.timeouts
            && a.health_check == b.health_check
            && a.circuit_breaker == b.circuit_breaker
            && a.tls == b.tls
    }

    /// What a `consistent_hash` upstream hashes requests on.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.balancer {
            Balancer::ConsistentHash(_, hash_on) => Some(hash_on),
            Balancer::RoundRobin(_) | Balancer::LeastRequests(_) => None,
        }
    }

    /// The target for the next request (`hash_value`: what a
    /// `consistent_hash` upstream hashes), among those that are healthy and
    /// whose circuit lets requests through.
    pub fn pick(&self, hash_value: Option<&[u8]>) -> Result<Picked<'_>, Unavailable> {
        self.pick_avoiding(hash_value, &[])
    }

    /// Like [`Upstream::pick`], preferring targets not in `avoid` (those a
    /// retry already tried) while there are others, and among those, targets
    /// that did not refuse a connection lately ([`ConnectBackoff`]).
    pub fn pick_avoiding(&self, hash_value: Option<&[u8]>, avoid: &[usize]) -> Result<Picked<'_>, Unavailable> {
        // One target that no health check or breaker can rule out, and no
        // in-flight count to take: the picks below would all end on it.
        if let [target] = &self.targets[..]
            && self.health.is_none()
            && self.breakers.is_none()
            && !matches!(self.balancer, Balancer::LeastRequests(_))
        {
            return Ok(Picked { target, index: 0, _in_flight: None });
        }
        let now = now_ms();
        let healthy = |i: usize| self.health.as_ref().is_none_or(|health| health[i].is_healthy(now));
        let available = |i: usize| healthy(i) && self.breakers.as_ref().is_none_or(|breakers| breakers[i].check(now).is_ok());
        let choose = |allowed: &dyn Fn(usize) -> bool| match &self.balancer {
            Balancer::RoundRobin(rr) => rr.pick(allowed).map(|index| (index, None)),
            Balancer::LeastRequests(lr) => lr.pick(allowed).map(|(index, guard)| (index, Some(guard))),
            Balancer::ConsistentHash(ring, _) => ring.pick(hash_value.unwrap_or_default(), allowed).map(|index| (index, None)),
        };
        // A half-open target whose last probe slot went to a concurrent
        // request is ruled out and the pick made again.
        let mut lost: Vec<usize> = Vec::new();
        for _ in 0..=self.targets.len() {
            let usable = |i: usize| available(i) && !lost.contains(&i);
            let untried = |i: usize| usable(i) && !avoid.contains(&i);
            // Each pick moves round robin's rotation (or takes an in-flight
            // slot), so the next choice is only made when the one before found nothing.
            let picked = choose(&|i| untried(i) && !self.backoff[i].is_backing_off(now))
                .or_else(|| if avoid.is_empty() { None } else { choose(&untried) })
                .or_else(|| choose(&usable));
            let Some((index, in_flight)) = picked else { break };
            if self.breakers.as_ref().is_some_and(|breakers| breakers[index].acquire(now).is_err()) {
                lost.push(index);
                continue;
            }
            return Ok(Picked { target: &self.targets[index], index, _in_flight: in_flight });
        }
        Err(self.unavailable(now, healthy))
    }

    /// Why nothing could be picked: open circuits of healthy targets, or none healthy.
    fn unavailable(&self, now: u64, healthy: impl Fn(usize) -> bool) -> Unavailable {
        let soonest = self.breakers.as_ref().and_then(|breakers| {
            (0..breakers.len()).filter(|i| healthy(*i)).filter_map(|i| breakers[i].check(now).err()).map(|open| open.retry_after_ms).min()
        });
        soonest.map_or(Unavailable::NoHealthyTarget, |retry_after_ms| Unavailable::CircuitOpen { retry_after_ms })
    }

    /// Sends `request` (origin-form, `Host` set) to the picked target: over
    /// HTTP/1.1, or for a gRPC service over HTTP/2 (which makes it absolute,
    /// with the `Host` as authority, and adds `te: trailers`).
    pub fn send<'a>(
        &'a self,
        picked: &Picked<'_>,
        request: http::Request<UpstreamBody>,
        forwarding: Option<&'a Forwarding<'a>>,
    ) -> impl Future<Output = Result<(http::Response<Incoming>, Lease), SendError>> + Send + use<'a> {
        self.send_to(picked.index, request, forwarding)
    }

    /// Sends `request` to the target at `index`, with the `forwarding`
    /// fields: written after its head's fields over HTTP/1, set in its map
    /// for HTTP/2. The pool's future itself, with no `async fn` around it
    /// to hold the request again.
    fn send_to<'a>(
        &'a self,
        index: usize,
        mut request: http::Request<UpstreamBody>,
        forwarding: Option<&'a Forwarding<'a>>,
    ) -> impl Future<Output = Result<(http::Response<Incoming>, Lease), SendError>> + Send + use<'a> {
        match &self.connections {
            Connections::Http1(pools) => Either::Left(pools[index].send(request, forwarding)),
            // Boxed: its connect (TLS, HTTP/2 handshake) would otherwise
            // enlarge every request's future, copied as it moves.
            Connections::Http2(pools) => {
                if let Some(forwarding) = forwarding {
                    forwarding.insert_into(request.headers_mut());
                }
                Either::Right(Box::pin(pools[index].send(request)))
            }
        }
    }

    /// `picked` answered (whatever the status): it goes in turn again.
    pub fn answered(&self, picked: &Picked<'_>) {
        self.backoff[picked.index].answered();
    }

    /// A connection to `picked` could not be made: other targets go first
    /// for a while, unless passive health checks (outlier detection as the
    /// service configured it) decide instead.
    pub fn connect_failed(&self, picked: &Picked<'_>) {
        if self.service.health_check.as_ref().is_none_or(|h| h.passive.is_none()) {
            self.backoff[picked.index].failed(now_ms());
        }
        crate::metrics::connect_failed(&self.service.name, &self.service.targets[picked.index].url);
    }

    /// Records how a request to `picked` went, for passive outlier
    /// detection (`success`: an answer below 500, or for gRPC one whose
    /// `grpc-status` is not a failure, [`grpc::is_failure`]).
    pub fn record(&self, picked: &Picked<'_>, success: bool) {
        self.record_at(picked.index, success);
    }

    /// [`Upstream::record`] for the target at `index` (once the request's
    /// target is no longer borrowed: a gRPC call's trailers come with the end of its body).
    pub fn record_at(&self, index: usize, success: bool) {
        let target = &self.service.targets[index].url;
        if let Some(breakers) = &self.breakers
            && let Some(opened) = breakers[index].record(success, now_ms())
        {
            tracing::warn!(service = %self.service.name, %target, opened, "circuit breaker changed state");
            crate::metrics::circuit_changed(&self.service.name, target, opened);
        }
        let (Some(health), Some(passive)) = (&self.health, self.service.health_check.as_ref().and_then(|h| h.passive.as_ref())) else {
            return;
        };
        if health[index].record_traffic(success, passive, now_ms()) {
            tracing::warn!(service = %self.service.name, %target, "target ejected after consecutive failures");
            crate::metrics::target_ejected(&self.service.name, target);
        }
    }

    /// Starts the active health checks, for as long as a runtime uses this upstream.
    pub fn start_checks(self: &Arc<Self>) {
        let Some(active) = self.service.health_check.as_ref().and_then(|h| h.active.clone()) else { return };
        let weak: Weak<Self> = Arc::downgrade(self);
        let connector = tls::connector(self.tls.clone(), health::check_timeout(&active));
        tokio::spawn(async move {
            let client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
            let mut every = tokio::time::interval(Duration::from_millis(u64::from(active.interval_ms)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(upstream) = weak.upgrade() else { return };
                let results = if upstream.is_grpc() {
                    let checks = (0..upstream.targets.len()).map(|index| upstream.grpc_check(index, &active));
                    futures::future::join_all(checks).await
                } else {
                    let checks = upstream.targets.iter().map(|target| check(&client, target, &active));
                    futures::future::join_all(checks).await
                };
                upstream.checked(&results, &active);
            }
        });
    }

    /// Applies one round of active checks.
    fn checked(&self, results: &[bool], active: &ActiveHealthCheck) {
        let Some(health) = &self.health else { return };
        let now = now_ms();
        for (((target, health), backoff), ok) in self.service.targets.iter().zip(health).zip(&self.backoff).zip(results) {
            if *ok {
                backoff.answered();
            }
            if let Some(healthy) = health.record_check(*ok, active) {
                tracing::warn!(service = %self.service.name, target = %target.url, healthy, "active health check changed a target's state");
            }
            crate::metrics::target_health(&self.service.name, &target.url, health.is_healthy(now));
        }
    }
}

impl Upstream {
    /// One active check of a gRPC target: the standard
    /// `grpc.health.v1.Health/Check` for the whole server (no service name),
    /// on the target's connections; an answer `SERVING` with `grpc-status`
    /// 0 in time is a success (the check's `path` is not used).
    async fn grpc_check(&self, index: usize, active: &ActiveHealthCheck) -> bool {
        let target = &self.targets[index];
        let mut request = http::Request::new(UpstreamBody::Kept(Full::new(grpc::health_check_body())));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = Uri::from_static(grpc::HEALTH_CHECK_PATH);
        request.headers_mut().insert(http::header::HOST, target.host.clone());
        grpc::health_check_headers(request.headers_mut());
        let call = async {
            let (response, _lease) = self.send_to(index, request, None).await.ok()?;
            if !response.status().is_success() || grpc::status_of(response.headers()).is_some() {
                return None; // not gRPC, or trailers-only: an error
            }
            let answer = response.into_body().collect().await.ok()?;
            let ok = answer.trailers().and_then(grpc::status_of) == Some(grpc::code::OK);
            Some(ok && grpc::says_serving(&answer.to_bytes()))
        };
        matches!(tokio::time::timeout(health::check_timeout(active), call).await, Ok(Some(true)))
    }
}

/// One active check: `GET <path>` with the target's `Host`; a 2xx or 3xx
/// answer in time is a success.
async fn check(client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>, target: &Target, active: &ActiveHealthCheck) -> bool {
    let uri = format!("{}://{}{}", target.scheme, target.authority, active.path);
    let Ok(request) = http::Request::get(uri).header(http::header::HOST, target.host.clone()).body(Empty::new()) else { return false };
    match tokio::time::timeout(health::check_timeout(active), client.request(request)).await {
        Ok(Ok(response)) => response.status().is_success() || response.status().is_redirection(),
        _ => false,
    }
}

/// The value a `consistent_hash` upstream hashes for a request; a request
/// without the header, cookie or consumer hashes on its client address.
pub fn hash_value(on: &HashOn, headers: &http::HeaderMap, client_ip: std::net::IpAddr, consumer_id: Option<&str>) -> String {
    let found = match on {
        HashOn::Ip => None,
        HashOn::Consumer => consumer_id.map(|id| format!("consumer:{id}")),
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| format!("header:{}", String::from_utf8_lossy(v.as_bytes()))),
        HashOn::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| n == name)
            .map(|(_, value)| format!("cookie:{value}")),
    };
    found.unwrap_or_else(|| format!("ip:{client_ip}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passively_ejected_targets_get_no_traffic() {
        let service: Service = portico_shared::parse::from_json(
            br#"{"name":"s","health_check":{"passive":{"consecutive_failures":2,"base_ejection_ms":60000}},
                "targets":[{"url":"http://127.0.0.1:1"},{"url":"http://127.0.0.1:2"}]}"#,
        )
        .unwrap();
        let upstream = Upstream::new(&service, None).unwrap();
        for _ in 0..4 {
            let picked = upstream.pick(None).unwrap();
            let failing = picked.index == 1;
            upstream.record(&picked, !failing);
        }
        assert!((0..10).all(|_| upstream.pick(None).unwrap().index == 0), "target 1 is ejected");
        let carried = Upstream::new(&service, Some(&upstream)).unwrap();
        assert!((0..10).all(|_| carried.pick(None).unwrap().index == 0), "the ejection survives a new version");
        let mut rechecked = service.clone();
        rechecked.health_check = Some(portico_shared::model::HealthCheck { active: None, passive: None });
        let fresh = Upstream::new(&rechecked, Some(&upstream)).unwrap();
        assert!((0..10).any(|_| fresh.pick(None).unwrap().index == 1), "new health-check settings start from healthy");
    }

    #[test]
    fn a_target_that_refused_a_connection_goes_last_until_it_answers() {
        let service: Service =
            portico_shared::parse::from_json(br#"{"name":"s","targets":[{"url":"http://127.0.0.1:1"},{"url":"http://127.0.0.1:2"}]}"#)
                .unwrap();
        let upstream = Upstream::new(&service, None).unwrap();
        let refused = upstream.pick(None).unwrap();
        upstream.connect_failed(&refused);
        let other = 1 - refused.index;
        assert!((0..10).all(|_| upstream.pick(None).unwrap().index == other), "round robin skips it");
        assert_eq!(upstream.pick_avoiding(None, &[other]).unwrap().index, refused.index, "still there when nothing else is left");
        let carried = Upstream::new(&service, Some(&upstream)).unwrap();
        assert!((0..10).all(|_| carried.pick(None).unwrap().index == other), "a new version remembers it");
        upstream.answered(&refused);
        assert!((0..10).any(|_| upstream.pick(None).unwrap().index == refused.index), "back in turn once it answered");
    }

    #[test]
    fn hash_values_come_from_the_named_part_else_the_client_address() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "u7".parse().unwrap());
        headers.insert(http::header::COOKIE, "a=1; session=s9".parse().unwrap());
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(hash_value(&HashOn::Header("x-user".into()), &headers, ip, None), "header:u7");
        assert_eq!(hash_value(&HashOn::Cookie("session".into()), &headers, ip, None), "cookie:s9");
        assert_eq!(hash_value(&HashOn::Cookie("missing".into()), &headers, ip, None), "ip:192.0.2.1");
        assert_eq!(hash_value(&HashOn::Consumer, &headers, ip, Some("c1")), "consumer:c1");
        assert_eq!(hash_value(&HashOn::Consumer, &headers, ip, None), "ip:192.0.2.1");
    }
}
