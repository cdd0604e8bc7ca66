//! Rate limiting. Each `rate-limit` policy that applies to a route becomes
//! a [`Limiter`]: its algorithm (`algorithm.rs`), its key (who is counted
//! apart) and its backend, in process memory (`local`) or shared by the
//! fleet through Redis (`redis.rs`). A request passes only if every limit
//! of its route admits it; the tightest one's `RateLimit-*` headers go on
//! the response. Limiters are identified by where the policy sits and what
//! it says, and carried across config versions, so editing unrelated
//! entities keeps counters while changing a limit starts it afresh. A
//! Redis-backed limit's local fallback admits its share of the fleet that
//! shares it, as counted in Redis (`fleet.rs`).

pub mod algorithm;
pub mod batch;
pub mod fleet;
mod local;
pub mod redis;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::Either;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use portico_shared::model::{BackendFailure, RateLimitBackend, RateLimitKey, RateLimitPolicy};
use sha2::{Digest, Sha256};

use self::algorithm::{Decision, Params};
use self::fleet::FleetCount;
use self::local::States;
use self::redis::RedisBackend;
use crate::auth::Identity;
use crate::error::ProxyError;

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Most keys a local limiter remembers (least recently used go first).
const MAX_LOCAL_KEYS: usize = 1_000_000;
/// Longest a local key's state is kept while idle.
const MAX_IDLE_S: f64 = 30.0 * 86_400.0;
/// Longest key material kept as is; longer values (headers, claims) are
/// counted under their hash, so keys stay small whatever a client sends.
const MAX_KEY_BYTES: usize = 64;

/// What limits need from the node.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// The shared backend, when `--redis-url` is set.
    pub redis: Option<Arc<RedisBackend>>,
    /// Prefix of this gateway's Redis keys.
    pub gateway: String,
}

/// In-memory state per key.
struct LocalCounters {
    params: Params,
    states: States,
}

impl LocalCounters {
    fn new(params: Params) -> Self {
        // A key idle this long is back to its initial state and can go: a
        // bucket refills (or a queue drains) in (burst + 1) / rate, and a
        // sliding counter looks back two windows. Capped at 30 days.
        let refill = params.window * (params.burst as f64 + 1.0) / params.limit as f64;
        let idle = (refill.max(2.0 * params.window) + 1.0).min(MAX_IDLE_S);
        Self { params, states: States::new(MAX_LOCAL_KEYS, idle) }
    }

    fn decide(&self, key: &str) -> Decision {
        self.decide_with(&self.params, key)
    }

    /// A decision with `params` instead of its own: the same algorithm at
    /// another size, on the same counts.
    fn decide_with(&self, params: &Params, key: &str) -> Decision {
        self.states.decide(key, params, now())
    }
}

/// Where a limit counts.
enum Backend {
    Local(LocalCounters),
    Redis { redis: Arc<RedisBackend>, prefix: String, fallback: Fallback },
}

/// The local counters a Redis-backed limit falls back to, sized for the
/// nodes sharing the limit as last counted. A new count (Redis answered
/// again in between) changes the share on the same counts: it never hands
/// out a fresh allowance, however often Redis comes and goes.
struct Fallback {
    fleet: Arc<FleetCount>,
    counters: LocalCounters,
}

impl Fallback {
    fn new(params: Params, fleet: Arc<FleetCount>) -> Self {
        let counters = LocalCounters::new(params.divided(fleet.nodes()));
        Self { fleet, counters }
    }

    fn decide(&self, params: Params, key: &str) -> Decision {
        self.counters.decide_with(&params.divided(self.fleet.nodes()), key)
    }
}

/// One `rate-limit` policy where it applies.
pub struct Limiter {
    /// Identity: the policy and where it sits.
    fingerprint: String,
    params: Params,
    key: RateLimitKey,
    on_failure: BackendFailure,
    backend: Backend,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("fingerprint", &self.fingerprint).field("params", &self.params).finish_non_exhaustive()
    }
}

/// What a request's limit key may be made of.
pub struct RequestFacts<'a> {
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    pub identity: Option<&'a Identity>,
    pub route: &'a str,
    pub service: &'a str,
}

impl Limiter {
    /// What identifies the limit of `policy` at `scope` (`route:<id>`,
    /// `service:<id>` or `gateway`): routes that share the scope share the
    /// limiter, and a version with the same limit there keeps it.
    pub fn fingerprint_of(policy: &RateLimitPolicy, scope: &str) -> String {
        let identity = format!("{scope}\n{}", serde_json::to_string(policy).unwrap_or_default());
        hex::encode(&Sha256::digest(identity.as_bytes())[..12])
    }

    /// A new limiter (fresh counters) for `policy`.
    pub fn new(policy: &RateLimitPolicy, fingerprint: String, settings: &LimitSettings) -> Result<Self, String> {
        let key = RateLimitKey::parse(&policy.key).ok_or_else(|| format!("rate-limit key '{}' is not understood", policy.key))?;
        let params = Params::of(policy);
        let backend = match policy.backend {
            RateLimitBackend::Local => Backend::Local(LocalCounters::new(params)),
            RateLimitBackend::Redis => {
                let redis = settings.redis.clone().ok_or("a redis rate limit needs --redis-url (PORTICO_REDIS_URL) on this data plane")?;
                let prefix = format!("portico:rl:{}:{fingerprint}:", settings.gateway);
                // Limit keys are `<kind>:<value>`, so `nodes` is never one.
                let fleet = redis.fleet().join(format!("{prefix}nodes"));
                Backend::Redis { redis, prefix, fallback: Fallback::new(params, fleet) }
            }
        };
        Ok(Self { fingerprint, params, key, on_failure: policy.on_backend_failure, backend })
    }

    /// Whether the key needs to know the caller (`consumer`, `claim:`):
    /// such limits are checked after authentication, the others before it,
    /// so refused logins count too.
    pub fn needs_identity(&self) -> bool {
        matches!(self.key, RateLimitKey::Consumer | RateLimitKey::Claim(_))
    }

    /// The value this request is counted under, `<kind>:<value>` (written
    /// without `format!`: this runs for every limited request).
    fn key_of(&self, facts: &RequestFacts<'_>) -> String {
        let by_ip = || ip_key(facts.client_ip);
        match &self.key {
            RateLimitKey::Ip => by_ip(),
            RateLimitKey::Route => ["route:", facts.route].concat(),
            RateLimitKey::Service => ["service:", facts.service].concat(),
            RateLimitKey::Consumer => {
                facts.identity.filter(|i| !i.is_anonymous()).map_or_else(by_ip, |i| ["consumer:", i.consumer_id()].concat())
            }
            RateLimitKey::Header(name) => {
                facts.headers.get(name.as_str()).and_then(|v| v.to_str().ok()).map_or_else(by_ip, |v| ["header:", &bounded(v)].concat())
            }
            RateLimitKey::Claim(name) => {
                facts.identity.and_then(|i| i.claim(name)).map_or_else(by_ip, |v| ["claim:", &bounded(&v)].concat())
            }
        }
    }

    /// Decides one request.
    async fn decide(&self, facts: &RequestFacts<'_>) -> Option<Decision> {
        let key = self.key_of(facts);
        let (redis, prefix, fallback) = match &self.backend {
            Backend::Local(counters) => return Some(counters.decide(&key)),
            Backend::Redis { redis, prefix, fallback } => (redis, prefix, fallback),
        };
        // Boxed: a round trip to Redis dwarfs the allocation, and its future
        // would otherwise enlarge every limited request's.
        match Box::pin(redis.decide(&self.params, &[prefix.as_str(), key.as_str()].concat())).await {
            Ok(decision) => Some(decision),
            Err(reason) => {
                tracing::warn!(%reason, on_failure = ?self.on_failure, "rate-limit backend unavailable");
                crate::metrics::rate_limit_backend_failed();
                match self.on_failure {
                    BackendFailure::Allow => None,
                    BackendFailure::Deny => {
                        Some(Decision { allowed: false, limit: self.params.limit, remaining: 0, reset: 1.0, retry_after: 1.0, delay: 0.0 })
                    }
                    BackendFailure::Local => Some(fallback.decide(self.params, &key)),
                }
            }
        }
    }
}

/// `ip:<address>`.
fn ip_key(ip: IpAddr) -> String {
    let mut key = String::with_capacity(3 + 39);
    key.push_str("ip:");
    crate::proxy::headers::push_ip(&mut key, ip);
    key
}

/// `value`, or its hash when it is longer than [`MAX_KEY_BYTES`].
fn bounded(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_KEY_BYTES {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(format!("sha256:{}", hex::encode(Sha256::digest(value.as_bytes()))))
    }
}

/// Checks `limiters`, counting a refusal for `route`. The tightest admitting
/// decision (for the response headers), or the `429` of the first refusing
/// one. A leaky bucket's delay is waited out here. Without limiters, `None`
/// at once: only a limited route gets the check's future, boxed, so that it
/// does not enlarge every request's.
pub fn check<'a>(
    limiters: &'a [Arc<Limiter>],
    facts: RequestFacts<'a>,
) -> impl Future<Output = Result<Option<Decision>, ProxyError>> + Send + 'a {
    match limiters {
        [] => Either::Left(std::future::ready(Ok(None))),
        limiters => Either::Right(Box::pin(check_all(limiters, facts))),
    }
}

async fn check_all(limiters: &[Arc<Limiter>], facts: RequestFacts<'_>) -> Result<Option<Decision>, ProxyError> {
    let facts = &facts;
    let refused = |error| {
        crate::metrics::rate_limited(Arc::from(facts.route));
        error
    };
    let mut tightest: Option<Decision> = None;
    let mut delay = 0.0_f64;
    for limiter in limiters {
        let Some(decision) = limiter.decide(facts).await else { continue };
        if !decision.allowed {
            return Err(refused(ProxyError::RateLimited { window_s: limiter.params.window as u64, decision }));
        }
        delay = delay.max(decision.delay);
        tightest = tighter(tightest, Some(decision));
    }
    if delay > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay)).await;
    }
    Ok(tightest)
}

/// Of two decisions, the one with fewer requests remaining.
pub fn tighter(a: Option<Decision>, b: Option<Decision>) -> Option<Decision> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
/// (whole seconds) from `decision`.
pub fn add_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATELIMIT_LIMIT, number(decision.limit));
    headers.insert(RATELIMIT_REMAINING, number(decision.remaining));
    headers.insert(RATELIMIT_RESET, number(decision.reset.ceil() as u64));
}

/// The decimal forms of 0 to 999 one after another (`0123…99100101…999`),
/// so that most limits' header values need no allocation ([`number`]).
static SMALL_NUMBERS: [u8; 2890] = small_numbers();

const fn small_numbers() -> [u8; 2890] {
    let (mut out, mut n, mut at) = ([0u8; 2890], 0u16, 0);
    while n < 1000 {
        if n >= 100 {
            out[at] = b'0' + (n / 100) as u8;
            at += 1;
        }
        if n >= 10 {
            out[at] = b'0' + (n / 10 % 10) as u8;
            at += 1;
        }
        out[at] = b'0' + (n % 10) as u8;
        at += 1;
        n += 1;
    }
    out
}

/// `n` as a header value: below 1,000 a slice of [`SMALL_NUMBERS`].
fn number(n: u64) -> HeaderValue {
    let (start, len) = match n {
        0..=9 => (n, 1),
        10..=99 => (10 + 2 * (n - 10), 2),
        100..=999 => (190 + 3 * (n - 100), 3),
        _ => return HeaderValue::from(n),
    };
    let start = usize::try_from(start).unwrap_or(0);
    match std::str::from_utf8(&SMALL_NUMBERS[start..start + len]) {
        Ok(digits) => HeaderValue::from_static(digits),
        Err(_) => HeaderValue::from(n),
    }
}

/// Seconds since the epoch, read once and then advanced by the monotonic
/// clock: windows align to wall-clock time as Redis's do, and a clock step
/// never moves a local limit backwards.
fn now() -> f64 {
    static START: OnceLock<(Instant, f64)> = OnceLock::new();
    let (instant, epoch) =
        START.get_or_init(|| (Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())));
    epoch + instant.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use portico_shared::model::RateLimitAlgorithm;

    use super::*;

    #[test]
    fn small_numbers_are_the_header_values_of_their_decimal_forms() {
        for n in 0..2_000 {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn ip_keys_are_written_as_display_writes_addresses() {
        for ip in ["0.0.0.0", "1.2.3.4", "10.20.30.40", "100.200.255.9", "127.0.0.1", "::1", "2001:db8::8a2e:370:7334"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_key(ip), format!("ip:{ip}"));
        }
    }

    #[test]
    fn a_new_fleet_count_changes_the_fallbacks_share_without_a_fresh_allowance() {
        let membership = fleet::Membership::new(2);
        let count = membership.join("portico:rl:test:nodes".to_owned());
        let params = Params { algorithm: RateLimitAlgorithm::FixedWindow, limit: 6, window: 3600.0, burst: 6 };
        let fallback = Fallback::new(params, Arc::clone(&count));
        let admitted = |n: usize| (0..n).filter(|_| fallback.decide(params, "k").allowed).count();
        assert_eq!(admitted(5), 3, "two nodes: this one's share is 3 of 6");
        count.nodes.store(3, Ordering::Relaxed);
        assert_eq!(admitted(5), 0, "three nodes: a share of 2, already used; the counts are not started afresh");
        count.nodes.store(1, Ordering::Relaxed);
        assert_eq!(admitted(5), 3, "alone: the whole 6, of which 3 were used");
    }
}
