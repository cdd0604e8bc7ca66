//! The limit policies: `rate-limit` (how many requests per window, per
//! key) and `request-size-limit` (how large a body). Limits add up across
//! levels rather than the most specific one winning.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::rules::{Result, Validate, in_range, is_token_byte};

/// Longest a leaky bucket may make a request wait.
const MAX_QUEUE_WAIT_S: f64 = 600.0;

/// Fields of the `rate-limit` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    pub algorithm: RateLimitAlgorithm,
    /// Requests admitted per window, 1 to 1,000,000,000 (10,000 for
    /// `sliding_window_log`, which keeps a timestamp per admitted request).
    pub limit: u64,
    /// The window, 1 to 86,400 seconds.
    pub window_s: u64,
    /// `token_bucket`: the bucket's size; `leaky_bucket`: how many requests
    /// may wait in the queue (a simultaneous burst gets `burst + 1` through:
    /// one at once, the others spaced). Default `limit`; other algorithms
    /// take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// What is counted apart: `consumer`, `ip`, `route`, `service`,
    /// `header:<name>` or `claim:<name>` (default `ip`). A request without
    /// the key's material (no consumer, no such header or claim) counts by `ip`.
    #[serde(default = "default_rate_limit_key")]
    pub key: String,
    /// `local` (each data plane counts alone) or `redis` (the fleet shares
    /// counters through `--redis-url`).
    #[serde(default)]
    pub backend: RateLimitBackend,
    /// With `redis`, what happens while Redis is slow or down: `allow`,
    /// `deny` (`429`) or `local` (each node limits to `limit` divided by the
    /// data planes sharing the limit, as last counted in Redis).
    #[serde(default)]
    pub on_backend_failure: BackendFailure,
}

fn default_rate_limit_key() -> String {
    "ip".to_owned()
}

/// How a `rate-limit` policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAlgorithm {
    /// A bucket of `burst` tokens refilled at `limit / window_s` per second.
    TokenBucket,
    /// A queue released at `limit / window_s` per second: requests that fit
    /// in the queue (`burst` waiting) wait for their slot; the others get `429`.
    LeakyBucket,
    /// A counter per aligned window.
    FixedWindow,
    /// Exact: a timestamp per admitted request over the last `window_s`.
    SlidingWindowLog,
    /// The previous window's count, weighted by its overlap, plus the current one's.
    SlidingWindowCounter,
}

/// Where a `rate-limit` policy keeps its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBackend {
    #[default]
    Local,
    Redis,
}

/// What a Redis-backed limit does when Redis does not answer in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendFailure {
    Allow,
    Deny,
    #[default]
    Local,
}

/// What a rate limit counts apart, parsed from its `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    Consumer,
    Ip,
    Route,
    Service,
    /// A request header (lowercase name).
    Header(String),
    /// A JWT claim.
    Claim(String),
}

impl RateLimitKey {
    /// Parses `consumer|ip|route|service|header:<name>|claim:<name>`.
    pub fn parse(key: &str) -> Option<Self> {
        match key {
            "consumer" => Some(Self::Consumer),
            "ip" => Some(Self::Ip),
            "route" => Some(Self::Route),
            "service" => Some(Self::Service),
            _ => match key.split_once(':')? {
                ("header", name) if !name.is_empty() => Some(Self::Header(name.to_ascii_lowercase())),
                ("claim", name) if !name.is_empty() => Some(Self::Claim(name.to_owned())),
                _ => None,
            },
        }
    }
}

/// Checks a `request-size-limit`'s `max_bytes`: 1 byte to 1 GiB.
pub(super) fn max_bytes(field: &str, max_bytes: u64) -> Result {
    in_range(field, max_bytes, 1, 1 << 30)
}

impl Validate for RateLimitPolicy {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        let max_limit = if self.algorithm == RateLimitAlgorithm::SlidingWindowLog { 10_000 } else { 1_000_000_000 };
        errors.check(in_range("limit", self.limit, 1, max_limit));
        errors.check(in_range("window_s", self.window_s, 1, 86_400));
        match (self.algorithm, self.burst) {
            (RateLimitAlgorithm::TokenBucket | RateLimitAlgorithm::LeakyBucket, Some(burst)) => {
                errors.check(in_range("burst", burst, 1, 1_000_000_000));
            }
            (_, Some(_)) => errors.add(ConfigError::invalid("burst", "only token_bucket and leaky_bucket take a burst")),
            (_, None) => {}
        }
        // The queue's wait needs a valid limit, window and burst.
        if self.algorithm == RateLimitAlgorithm::LeakyBucket && errors.is_empty() {
            let wait = self.burst.unwrap_or(self.limit) as f64 * self.window_s as f64 / self.limit as f64;
            if wait > MAX_QUEUE_WAIT_S {
                errors.add(ConfigError::invalid(
                    "burst",
                    format!(
                        "a request could wait {wait:.0} s in the queue (burst × window_s / limit); at most {MAX_QUEUE_WAIT_S} s: lower burst"
                    ),
                ));
            }
        }
        errors.check(self.check_key());
        errors.finish()
    }
}

impl RateLimitPolicy {
    /// `key` is one the data plane knows, header names lowercased.
    fn check_key(&mut self) -> Result {
        match RateLimitKey::parse(&self.key) {
            Some(RateLimitKey::Header(name)) => {
                if name.len() > 128 || !name.bytes().all(is_token_byte) {
                    return Err(ConfigError::invalid("key", "header:<name> needs a valid header name"));
                }
                self.key = format!("header:{name}");
            }
            Some(RateLimitKey::Claim(name)) if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ConfigError::invalid("key", "claim:<name> needs 1 to 64 visible ASCII characters"));
            }
            Some(_) => {}
            None => return Err(ConfigError::invalid("key", "must be consumer, ip, route, service, header:<name> or claim:<name>")),
        }
        Ok(())
    }
}
