//! Services: where traffic goes. A named group of upstream targets with
//! how requests are spread over them (load balancing), how long they may
//! take (timeouts), how their health is learnt (active checks, passive
//! outlier detection, a circuit breaker), when a try is repeated (retries),
//! and TLS towards them. A service of protocol `amqp`/`amqps` is a set of
//! RabbitMQ brokers instead ([`super::amqp`]): its targets are tried in
//! the order listed, and it logs in with its write-only `credentials`.
//! What the data plane does with these is
//! `portico_dp::upstream`; references to a service from routes are checked
//! in [`crate::validate`].

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Policy;
use super::amqp::{AmqpTarget, BrokerCredentials};
use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::rules::{MAX_PATH_LEN, Result, Validate, bounded, in_range, is_token_byte, name, tags};

const MAX_TARGETS: usize = 1_000;
const MAX_WEIGHT: u32 = 1_000;
/// How an AMQP service uses its targets, for error messages.
const AMQP_FAILOVER: &str = "the connection goes to the first target (of weight above 0) that answers, in the order listed";

/// Where traffic goes: a named group of upstream targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Assigned by the control plane; may be given on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// `[a-z0-9._-]`, 1 to 64 characters, starting with a letter or digit.
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// At least one; each `scheme://host[:port]` with the service's
    /// protocol (`amqp://host[:port][/vhost]` for AMQP).
    pub targets: Vec<Target>,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// With `consistent_hash`: what requests are hashed on, `ip`,
    /// `consumer`, `header:<name>` or `cookie:<name>` (a request without it
    /// hashes on `ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Active checks and passive outlier detection of the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// With `https`, `grpcs` or `amqps`: how targets are verified, and the
    /// client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// With `amqp` or `amqps` (and required there): the broker login. Its
    /// `password` is write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<BrokerCredentials>,
    /// A circuit breaker per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Retries for the routes of this service (a route's own win). Absent:
    /// the defaults of [`Retries`] (idempotent requests get a second try on
    /// another target when a connection cannot be made); `{"attempts": 0}`
    /// turns retries off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default)]
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Upstream protocol of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Http,
    /// TLS to the targets, verified against the system roots or `tls.ca_bundle`.
    Https,
    /// gRPC over cleartext HTTP/2 (h2c, prior knowledge): targets
    /// `grpc://host:port`.
    Grpc,
    /// gRPC over TLS (ALPN `h2`), verified as `https`: targets
    /// `grpcs://host:port`.
    Grpcs,
    /// AMQP 0-9-1 (RabbitMQ): targets `amqp://host[:port][/vhost]` (port
    /// 5672 by default), tried in the order listed.
    Amqp,
    /// AMQP over TLS, verified as `https`: targets
    /// `amqps://host[:port][/vhost]` (port 5671 by default).
    Amqps,
}

impl Protocol {
    /// The scheme of the service's target URLs.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Grpc => "grpc",
            Self::Grpcs => "grpcs",
            Self::Amqp => "amqp",
            Self::Amqps => "amqps",
        }
    }

    /// Targets are reached over TLS (and take `tls` settings).
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Grpcs | Self::Amqps)
    }

    /// Targets speak gRPC (over HTTP/2).
    pub fn is_grpc(self) -> bool {
        matches!(self, Self::Grpc | Self::Grpcs)
    }

    /// Targets are AMQP brokers (no HTTP at all).
    pub fn is_amqp(self) -> bool {
        matches!(self, Self::Amqp | Self::Amqps)
    }
}

/// TLS towards an `https` service's targets. The target's certificate is
/// always verified (for the host name of the target URL, which is also the
/// SNI sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA certificates to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// PEM certificate (chain) the gateway presents to the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`. Write-only: the admin API never
    /// returns it (a write without it keeps the stored one for the same
    /// `client_cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

/// One upstream address of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://host:port` (no path, query or credentials), with the
    /// service's scheme; for `amqp`/`amqps`, `amqp://host[:port][/vhost]`.
    pub url: String,
    /// Relative share of traffic, 0 to 1000; 0 takes a target out of rotation.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

/// How a service spreads requests over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Weighted round robin (smooth, as nginx's).
    #[default]
    RoundRobin,
    /// Power of two choices: of two targets drawn by weight, the one with
    /// fewer requests in flight.
    LeastRequests,
    /// A hash ring with points per target in proportion to its weight: a
    /// request goes where its `hash_on` value falls, and a target joining or
    /// leaving moves only its share of the values.
    ConsistentHash,
}

/// How a service learns which targets are healthy. Unhealthy targets get
/// no traffic; with none healthy, requests get `503` at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
}

/// Each data plane sends `GET <path>` to every target every `interval_ms`;
/// a 2xx or 3xx answer within `timeout_ms` is a success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthCheck {
    /// Default `/health`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// 100 to 3,600,000 (default 5000).
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u32,
    /// 1 to 60,000 and below `interval_ms` (default 1000).
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u32,
    /// Successes in a row that bring an unhealthy target back (default 2).
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failures in a row that take a healthy target out (default 3).
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_health_path() -> String {
    "/health".to_owned()
}
fn default_health_interval_ms() -> u32 {
    5_000
}
fn default_health_timeout_ms() -> u32 {
    1_000
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Outlier detection on live traffic: `consecutive_failures` connect
/// failures, timeouts or 5xx answers in a row eject a target for
/// `base_ejection_ms`, doubled with each ejection up to `max_ejection_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// 1 to 1000 (default 5).
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// 100 to 3,600,000 (default 30,000).
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u32,
    /// At least `base_ejection_ms`, at most 3,600,000 (default 300,000).
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u32,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection_ms() -> u32 {
    30_000
}
fn default_max_ejection_ms() -> u32 {
    300_000
}

/// A circuit breaker per target: closed, it opens when, over the last
/// `window_ms`, at least `min_requests` requests saw `failure_rate_percent`
/// or more failures (connect failures, timeouts, 5xx), or when
/// `max_failures` (if set) failed. Open, the target gets no traffic for
/// `open_ms` (with every target open: `503` with `Retry-After`). Then
/// half-open: up to `half_open_probes` requests go through; that many
/// successes close it, one failure opens it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// 1 to 100 (default 50).
    #[serde(default = "default_failure_rate_percent")]
    pub failure_rate_percent: u32,
    /// 1 to 100,000 (default 20).
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Optional: this many failures in the window open the circuit whatever the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// 100 to 3,600,000 (default 10,000).
    #[serde(default = "default_breaker_window_ms")]
    pub window_ms: u32,
    /// 100 to 3,600,000 (default 30,000).
    #[serde(default = "default_open_ms")]
    pub open_ms: u32,
    /// 1 to 1000 (default 3).
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
}

fn default_failure_rate_percent() -> u32 {
    50
}
fn default_min_requests() -> u32 {
    20
}
fn default_breaker_window_ms() -> u32 {
    10_000
}
fn default_open_ms() -> u32 {
    30_000
}
fn default_half_open_probes() -> u32 {
    3
}

/// When and how often a request is tried again, on another target when
/// there is one. Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE,
/// TRACE) are retried unless `non_idempotent` is set, and only requests
/// whose body is empty or small enough to keep (64 KiB): a streamed body is
/// never sent twice. A route or service without `retries` gets two tries on
/// a connect failure only (nothing reached the target, so a second try
/// cannot repeat work), within the default budget.
///
/// The budget is Finagle's retry budget: over a sliding window of 10 s,
/// retries may add `budget_percent` of the route's requests plus
/// `budget_min_per_second` per second, so a quiet route still gets its
/// retries and a failing fleet is not hit by a retry storm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Tries in all, the first included: 0 to 10 (default 2); 0 (or 1)
    /// turns retries off.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// What is retried (default: connect-failure, reset and 503; a route
    /// or service without `retries` at all retries connect failures only).
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// Time each try may take to the response headers (default: the
    /// service's `request_ms`, which also bounds all tries together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u32>,
    /// Retries may add this share of the route's requests over the last
    /// 10 s (0 to 100, default 20)...
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// ...plus this many retries per second (0 to 1000, default 10), so a
    /// route with little traffic is not starved of them.
    #[serde(default = "default_budget_min_per_second", skip_serializing_if = "is_default_budget_min_per_second")]
    pub budget_min_per_second: u32,
    /// Retry POST and PATCH too (only for requests that are safe to repeat).
    #[serde(default)]
    pub non_idempotent: bool,
}

impl Retries {
    /// What a route and service without `retries` get: a second try on a
    /// connect failure only (nothing reached the target, so it cannot repeat
    /// work), within the default budget. A `retries` block that leaves out
    /// `on` keeps the broader default list.
    pub fn when_absent() -> Self {
        Self { on: vec![RetryOn::ConnectFailure], ..Self::default() }
    }
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            on: default_retry_on(),
            per_try_timeout_ms: None,
            budget_percent: default_budget_percent(),
            budget_min_per_second: default_budget_min_per_second(),
            non_idempotent: false,
        }
    }
}

fn default_attempts() -> u32 {
    2
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Status503]
}
fn default_budget_percent() -> u32 {
    20
}
fn default_budget_min_per_second() -> u32 {
    10
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_default_budget_min_per_second(value: &u32) -> bool {
    *value == default_budget_min_per_second()
}

/// A condition that makes a try worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum RetryOn {
    /// The connection to the target could not be made.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The connection broke before a response came.
    #[serde(rename = "reset")]
    Reset,
    /// The try took longer than `per_try_timeout_ms`.
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "502")]
    Status502,
    #[serde(rename = "503")]
    Status503,
    #[serde(rename = "504")]
    Status504,
}

/// What `consistent_hash` hashes, parsed from `hash_on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Ip,
    Consumer,
    /// A request header (lowercase name).
    Header(String),
    Cookie(String),
}

impl HashOn {
    /// Parses `ip|consumer|header:<name>|cookie:<name>`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ip" => Some(Self::Ip),
            "consumer" => Some(Self::Consumer),
            _ => match value.split_once(':')? {
                ("header", name) if !name.is_empty() => Some(Self::Header(name.to_ascii_lowercase())),
                ("cookie", name) if !name.is_empty() => Some(Self::Cookie(name.to_owned())),
                _ => None,
            },
        }
    }
}

/// Upstream timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Time to establish the upstream connection, 1 to 60000 (default 2000).
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u32,
    /// Time from sending the request until the upstream's response headers
    /// arrive, 1 to 3600000 (default 30000); the body then streams.
    #[serde(default = "default_request_ms")]
    pub request_ms: u32,
    /// Longest silence of an upstream connection, 1 to 3600000 (default
    /// 60000): while a response body streams (the response is cut), and
    /// idle in the connection pool (the connection is closed).
    #[serde(default = "default_idle_ms", skip_serializing_if = "is_default_idle_ms")]
    pub idle_ms: u32,
}

fn default_idle_ms() -> u32 {
    60_000
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_default_idle_ms(idle_ms: &u32) -> bool {
    *idle_ms == default_idle_ms()
}

fn default_connect_ms() -> u32 {
    2_000
}

fn default_request_ms() -> u32 {
    30_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect_ms: default_connect_ms(), request_ms: default_request_ms(), idle_ms: default_idle_ms() }
    }
}

entity!(Service, crate::model::EntityKind::Service, services, name, secrets = (redact_secrets, keep_secrets));

// `tls.client_key` and `credentials.password` are write-only: never shown
// by the admin API. A write that leaves one out keeps the stored one: the
// key for the same `client_cert`; the password for the same `username`
// while every target was already one (a new broker must be given it).

fn redact_secrets(service: &mut Service) {
    if let Some(tls) = &mut service.tls {
        tls.client_key = None;
    }
    if let Some(credentials) = &mut service.credentials {
        credentials.password = None;
    }
}

fn keep_secrets(service: &mut Service, previous: &Service) {
    if let (Some(tls), Some(old)) = (&mut service.tls, &previous.tls)
        && tls.client_key.is_none()
        && tls.client_cert.is_some()
        && tls.client_cert == old.client_cert
    {
        tls.client_key.clone_from(&old.client_key);
    }
    let canonical = |s: &Service| -> Vec<Option<String>> { s.targets.iter().map(|t| target_url("", &t.url, s.protocol).ok()).collect() };
    let known_targets = canonical(previous);
    let same_brokers = canonical(service).iter().all(|url| url.is_some() && known_targets.contains(url));
    // The trust in the brokers must stay too: a new CA could vouch for a broker of anyone's.
    let same_trust = service.protocol == previous.protocol
        && service.tls.as_ref().and_then(|t| t.ca_bundle.as_ref()) == previous.tls.as_ref().and_then(|t| t.ca_bundle.as_ref());
    if let (Some(credentials), Some(old)) = (&mut service.credentials, &previous.credentials)
        && credentials.password.is_none()
        && credentials.username == old.username
        && same_brokers
        && same_trust
    {
        credentials.password.clone_from(&old.password);
    }
}

impl Validate for Service {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(name("name", &self.name));
        self.check_targets(&mut errors);
        errors.check(self.check_hash_on());
        if let Some(health) = &mut self.health_check {
            errors.check_within("health_check", health.normalize_and_validate());
        }
        if let Some(tls) = &self.tls {
            if self.protocol.is_tls() {
                errors.check(crate::tls::upstream_tls(tls));
            } else {
                errors.add(ConfigError::invalid("tls", "only an https, grpcs or amqps service takes tls settings"));
            }
        }
        match (&mut self.credentials, self.protocol.is_amqp()) {
            (Some(credentials), true) => {
                errors.check_within("credentials", credentials.normalize_and_validate());
            }
            (None, true) => errors.add(ConfigError::invalid(
                "credentials",
                "an amqp or amqps service needs credentials: {\"username\", \"password\"} (there are no default ones)",
            )),
            (Some(_), false) => errors.add(ConfigError::invalid("credentials", "only an amqp or amqps service takes credentials")),
            (None, false) => {}
        }
        if self.protocol.is_amqp() {
            self.check_amqp_fits(&mut errors);
        }
        if let Some(breaker) = &mut self.circuit_breaker {
            errors.check_within("circuit_breaker", breaker.normalize_and_validate());
        }
        if let Some(retries) = &mut self.retries {
            errors.check_within("retries", retries.normalize_and_validate());
        }
        errors.check_within("timeouts", self.timeouts.normalize_and_validate());
        errors.check(super::policy::validate_list("policies", &mut self.policies));
        errors.check(tags(&self.tags));
        errors.finish()
    }
}

impl Service {
    /// At least one target, each URL in canonical form and listed once.
    fn check_targets(&mut self, errors: &mut Errors) {
        if self.targets.is_empty() {
            return errors.add(ConfigError::invalid("targets", "at least one target is required"));
        }
        if errors.check(bounded("targets", self.targets.len(), MAX_TARGETS)).is_none() {
            return;
        }
        let mut seen = HashSet::new();
        for (i, target) in self.targets.iter_mut().enumerate() {
            let field = format!("targets[{i}]");
            if let Some(url) = errors.check(target_url(&format!("{field}.url"), &target.url, self.protocol)) {
                target.url = url;
                if !seen.insert(target.url.clone()) {
                    errors.add(ConfigError::invalid(format!("{field}.url"), format!("'{}' is listed twice", target.url)));
                }
            }
            if target.weight > MAX_WEIGHT {
                errors.add(ConfigError::invalid(format!("{field}.weight"), format!("must be 0 to {MAX_WEIGHT}")));
            }
        }
        if self.targets.iter().all(|t| t.weight == 0) {
            errors.add(ConfigError::invalid("targets", "at least one target needs a weight above 0"));
        }
    }

    /// What an AMQP service cannot use: its targets are brokers tried in
    /// the order listed (balancing, HTTP health checks, circuit breakers
    /// and HTTP retries do not apply).
    fn check_amqp_fits(&self, errors: &mut Errors) {
        let refuse = |field: &str, what: &str| ConfigError::invalid(field, format!("an amqp service takes no {what}: {AMQP_FAILOVER}"));
        if self.load_balancing != LoadBalancing::RoundRobin {
            errors.add(refuse("load_balancing", "load balancing"));
        }
        if self.health_check.is_some() {
            errors.add(refuse("health_check", "HTTP health checks"));
        }
        if self.circuit_breaker.is_some() {
            errors.add(refuse("circuit_breaker", "circuit breaker"));
        }
        if self.retries.is_some() {
            errors.add(refuse("retries", "retries"));
        }
    }

    /// `hash_on` with `consistent_hash` only, and one it knows.
    fn check_hash_on(&mut self) -> Result {
        match (self.load_balancing, self.hash_on.as_deref().map(|h| (h, HashOn::parse(h)))) {
            (LoadBalancing::ConsistentHash, None) => {
                return Err(ConfigError::invalid("hash_on", "consistent_hash needs hash_on: ip, consumer, header:<name> or cookie:<name>"));
            }
            (LoadBalancing::ConsistentHash, Some((_, Some(HashOn::Header(name))))) => {
                if name.len() > 128 || !name.bytes().all(is_token_byte) {
                    return Err(ConfigError::invalid("hash_on", "header:<name> needs a valid header name"));
                }
                self.hash_on = Some(format!("header:{name}"));
            }
            (LoadBalancing::ConsistentHash, Some((_, Some(HashOn::Cookie(name)))))
                if !name.bytes().all(is_token_byte) || name.len() > 128 =>
            {
                return Err(ConfigError::invalid("hash_on", "cookie:<name> needs a valid cookie name"));
            }
            (LoadBalancing::ConsistentHash, Some((value, None))) => {
                return Err(ConfigError::invalid("hash_on", format!("'{value}' is not ip, consumer, header:<name> or cookie:<name>")));
            }
            (LoadBalancing::RoundRobin | LoadBalancing::LeastRequests, Some(_)) => {
                return Err(ConfigError::invalid("hash_on", "only consistent_hash takes hash_on"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A target URL in canonical form: `scheme://host[:port]`, or
/// `amqp://host:port/vhost` ([`AmqpTarget::url`]).
fn target_url(field: &str, url: &str, protocol: Protocol) -> Result<String> {
    let scheme = protocol.scheme();
    let invalid = |message: String| ConfigError::invalid(field, message);
    if protocol.is_amqp() {
        return AmqpTarget::parse(url, protocol).map(|target| target.url()).map_err(invalid);
    }
    let uri: http::Uri = url.parse().map_err(|e| invalid(format!("'{url}' is not a valid URL: {e}")))?;
    let (Some(given), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(invalid(format!("'{url}' must be an absolute URL such as {scheme}://10.0.0.5:8000")));
    };
    if given != scheme {
        return Err(invalid(format!("scheme '{given}' does not match the service's protocol '{scheme}'")));
    }
    if authority.as_str().contains('@') {
        return Err(invalid("must not contain credentials".to_owned()));
    }
    if authority.host().is_empty() {
        return Err(invalid("needs a host".to_owned()));
    }
    let has_port = authority.as_str() != authority.host();
    let bad_port = has_port && authority.port_u16().is_none_or(|p| p == 0);
    if bad_port {
        return Err(invalid("the port must be 1 to 65535".to_owned()));
    }
    if protocol.is_grpc() && !has_port {
        return Err(invalid(format!("a {scheme} target needs a port ({scheme} has no default one)")));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("must be scheme://host[:port], without a path or query".to_owned()));
    }
    Ok(format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

impl Validate for Retries {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(in_range("attempts", self.attempts, 0, 10));
        if let Some(per_try) = self.per_try_timeout_ms {
            errors.check(in_range("per_try_timeout_ms", per_try, 1, 3_600_000));
        }
        errors.check(in_range("budget_percent", self.budget_percent, 0, 100));
        errors.check(in_range("budget_min_per_second", self.budget_min_per_second, 0, 1_000));
        self.on.sort_by_key(|on| format!("{on:?}"));
        self.on.dedup();
        errors.finish()
    }
}

impl Validate for HealthCheck {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if let Some(active) = &self.active {
            let path = &active.path;
            if !path.starts_with('/') || path.len() > MAX_PATH_LEN || !path.bytes().all(|b| b.is_ascii_graphic()) {
                errors.add(ConfigError::invalid("active.path", "must start with '/' and be at most 1024 visible ASCII characters"));
            }
            errors.check(in_range("active.interval_ms", active.interval_ms, 100, 3_600_000));
            if errors.check(in_range("active.timeout_ms", active.timeout_ms, 1, 60_000)).is_some()
                && active.timeout_ms >= active.interval_ms
            {
                let rule = format!("must be below interval_ms ({})", active.interval_ms);
                errors.add(ConfigError::invalid(
                    "active.timeout_ms",
                    beside_default(rule, "timeout_ms", active.timeout_ms, default_health_timeout_ms()),
                ));
            }
            errors.check(in_range("active.healthy_threshold", active.healthy_threshold, 1, 100));
            errors.check(in_range("active.unhealthy_threshold", active.unhealthy_threshold, 1, 100));
        }
        if let Some(passive) = &self.passive {
            errors.check(in_range("passive.consecutive_failures", passive.consecutive_failures, 1, 1_000));
            let base_ok = errors.check(in_range("passive.base_ejection_ms", passive.base_ejection_ms, 100, 3_600_000)).is_some();
            if errors.check(in_range("passive.max_ejection_ms", passive.max_ejection_ms, 100, 3_600_000)).is_some()
                && base_ok
                && passive.max_ejection_ms < passive.base_ejection_ms
            {
                let rule = format!("must be at least base_ejection_ms ({})", passive.base_ejection_ms);
                let message = beside_default(rule, "max_ejection_ms", passive.max_ejection_ms, default_max_ejection_ms());
                errors.add(ConfigError::invalid("passive.max_ejection_ms", message));
            }
        }
        errors.finish()
    }
}

/// The message for a `field` whose `value` breaks `rule` set by another
/// field: when the value is the field's default, it says so, since the user
/// most likely never set the field the error names.
fn beside_default(rule: String, field: &str, value: u32, default: u32) -> String {
    if value == default {
        format!("{rule}, got {value}, which is the default when {field} is not set: set {field} as well")
    } else {
        format!("{rule}, got {value}")
    }
}

impl Validate for CircuitBreaker {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(in_range("failure_rate_percent", self.failure_rate_percent, 1, 100));
        errors.check(in_range("min_requests", self.min_requests, 1, 100_000));
        if let Some(max) = self.max_failures {
            errors.check(in_range("max_failures", max, 1, 100_000));
        }
        errors.check(in_range("window_ms", self.window_ms, 100, 3_600_000));
        errors.check(in_range("open_ms", self.open_ms, 100, 3_600_000));
        errors.check(in_range("half_open_probes", self.half_open_probes, 1, 1_000));
        errors.finish()
    }
}

impl Validate for Timeouts {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(in_range("connect_ms", self.connect_ms, 1, 60_000));
        errors.check(in_range("request_ms", self.request_ms, 1, 3_600_000));
        errors.check(in_range("idle_ms", self.idle_ms, 1, 3_600_000));
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    fn service(json: &str) -> Service {
        from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn rejects_service_without_targets() {
        let mut s = service(r#"{"name":"users","targets":[]}"#);
        assert_eq!(s.normalize_and_validate().unwrap_err().first().field(), "targets");
    }

    #[test]
    fn rejects_bad_target_urls_naming_the_index() {
        for url in [
            "not a url",
            "ftp://x:1",
            "http://",
            "http://a/path",
            "http://u:p@host",
            "https://a:1",
            "/relative",
            "http://a:99999",
            "http://a:",
            "http://a:0",
        ] {
            let mut s = service(&format!(r#"{{"name":"users","targets":[{{"url":"http://ok:1"}},{{"url":"{url}"}}]}}"#));
            assert_eq!(s.normalize_and_validate().unwrap_err().first().field(), "targets[1].url", "{url}");
        }
    }

    #[test]
    fn canonicalizes_target_urls() {
        let mut s = service(r#"{"name":"users","targets":[{"url":"http://Users.Internal:8000/"}]}"#);
        s.normalize_and_validate().unwrap();
        assert_eq!(s.targets[0].url, "http://users.internal:8000");
        assert_eq!(s.targets[0].weight, 100);
    }

    #[test]
    fn consistent_hash_needs_a_known_hash_on_and_only_it_takes_one() {
        let with = |extra: &str| service(&format!(r#"{{"name":"s","targets":[{{"url":"http://a:1"}}]{extra}}}"#));
        for bad in [
            r#","load_balancing":"consistent_hash""#,
            r#","load_balancing":"consistent_hash","hash_on":"body""#,
            r#","load_balancing":"least_requests","hash_on":"ip""#,
            r#","load_balancing":"consistent_hash","hash_on":"header:a b""#,
        ] {
            assert_eq!(with(bad).normalize_and_validate().unwrap_err().first().field(), "hash_on", "{bad}");
        }
        let mut ok = with(r#","load_balancing":"consistent_hash","hash_on":"header:X-User""#);
        ok.normalize_and_validate().unwrap();
        assert_eq!(ok.hash_on.as_deref(), Some("header:x-user"));
    }

    #[test]
    fn reports_every_wrong_field_of_a_service() {
        let mut s = service(
            r#"{"name":"Bad","targets":[{"url":"http://a:1","weight":2000}],"timeouts":{"connect_ms":0},
                "circuit_breaker":{"open_ms":1},"retries":{"attempts":11},"health_check":{"active":{"path":"x"}}}"#,
        );
        let errors = s.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(
            fields,
            ["name", "targets[0].weight", "health_check.active.path", "circuit_breaker.open_ms", "retries.attempts", "timeouts.connect_ms"]
        );
    }

    #[test]
    fn health_check_errors_explain_the_default_behind_a_field_never_set() {
        let check = |health: &str| {
            let mut s = service(&format!(r#"{{"name":"s","targets":[{{"url":"http://a:1"}}],"health_check":{health}}}"#));
            let errors = s.normalize_and_validate().unwrap_err();
            (errors.first().field().to_owned(), errors.first().message().to_owned())
        };
        let (field, message) = check(r#"{"active":{"interval_ms":500}}"#);
        assert_eq!(field, "health_check.active.timeout_ms");
        assert_eq!(
            message,
            "must be below interval_ms (500), got 1000, which is the default when timeout_ms is not set: set timeout_ms as well"
        );
        let (field, message) = check(r#"{"passive":{"base_ejection_ms":600000}}"#);
        assert_eq!(field, "health_check.passive.max_ejection_ms");
        assert!(
            message.starts_with("must be at least base_ejection_ms (600000), got 300000, which is the default when max_ejection_ms"),
            "{message}"
        );
        let (field, message) = check(r#"{"active":{"interval_ms":500,"timeout_ms":700}}"#);
        assert_eq!((field.as_str(), message.as_str()), ("health_check.active.timeout_ms", "must be below interval_ms (500), got 700"));
        let mut fine =
            service(r#"{"name":"s","targets":[{"url":"http://a:1"}],"health_check":{"active":{"interval_ms":500,"timeout_ms":400}}}"#);
        fine.normalize_and_validate().unwrap();
    }

    #[test]
    fn retries_default_to_a_second_try_on_connect_failure_and_zero_attempts_is_allowed() {
        let mut s = service(r#"{"name":"s","targets":[{"url":"http://a:1"}],"retries":{}}"#);
        s.normalize_and_validate().unwrap();
        assert_eq!(s.retries, Some(Retries::default()));
        // A block without `on` means what it meant before retries were on by default.
        assert_eq!(Retries::default().on, vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Status503]);
        assert_eq!((Retries::when_absent().attempts, Retries::when_absent().on), (2, vec![RetryOn::ConnectFailure]));
        let json = serde_json::to_string(&Retries::default()).unwrap();
        assert!(!json.contains("budget_min_per_second"), "the default is left out, so stored snapshots keep their bytes: {json}");
        let mut off = service(r#"{"name":"s","targets":[{"url":"http://a:1"}],"retries":{"attempts":0}}"#);
        off.normalize_and_validate().unwrap();
        let mut bad = service(r#"{"name":"s","targets":[{"url":"http://a:1"}],"retries":{"budget_min_per_second":5000}}"#);
        assert_eq!(bad.normalize_and_validate().unwrap_err().first().field(), "retries.budget_min_per_second");
    }

    fn broker(extra: &str) -> Service {
        service(&format!(
            r#"{{"name":"events","protocol":"amqp","targets":[{{"url":"amqp://Rabbit-1"}},{{"url":"amqp://rabbit-2:5673/orders"}}]{extra}}}"#
        ))
    }

    #[test]
    fn an_amqp_service_has_canonical_broker_urls_and_needs_credentials() {
        let mut s = broker(r#","credentials":{"username":"app","password":"pw"}"#);
        s.normalize_and_validate().unwrap();
        let urls: Vec<&str> = s.targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["amqp://rabbit-1:5672/%2F", "amqp://rabbit-2:5673/orders"]);
        assert!(Protocol::Amqp.is_amqp() && Protocol::Amqps.is_amqp() && Protocol::Amqps.is_tls() && !Protocol::Amqp.is_tls());
        let mut twice = broker(r#","credentials":{"username":"app"}"#);
        twice.targets.push(Target { url: "amqp://rabbit-1:5672/%2f".into(), weight: 1 });
        let error = twice.normalize_and_validate().unwrap_err().first().clone();
        assert_eq!(error.field(), "targets[2].url", "the same broker and vhost, spelt otherwise: {error}");
        for (extra, field) in [
            ("", "credentials"),
            (r#","credentials":{"username":""}"#, "credentials.username"),
            (r#","credentials":{"username":"a"},"tls":{}"#, "tls"),
            (r#","credentials":{"username":"a"},"load_balancing":"least_requests""#, "load_balancing"),
            (r#","credentials":{"username":"a"},"health_check":{"passive":{}}"#, "health_check"),
            (r#","credentials":{"username":"a"},"circuit_breaker":{}"#, "circuit_breaker"),
            (r#","credentials":{"username":"a"},"retries":{}"#, "retries"),
        ] {
            assert_eq!(broker(extra).normalize_and_validate().unwrap_err().first().field(), field, "{extra}");
        }
        let mut http = service(r#"{"name":"s","targets":[{"url":"http://a:1"}],"credentials":{"username":"a","password":"b"}}"#);
        assert_eq!(http.normalize_and_validate().unwrap_err().first().field(), "credentials");
        let mut tls = service(
            r#"{"name":"s","protocol":"amqps","targets":[{"url":"amqps://a"}],"credentials":{"username":"a"},"tls":{"ca_bundle":"junk"}}"#,
        );
        assert_eq!(tls.normalize_and_validate().unwrap_err().first().field(), "tls.ca_bundle", "amqps takes tls settings");
    }

    #[test]
    fn the_broker_password_is_never_shown_and_kept_only_for_the_same_login_and_brokers() {
        use crate::model::Entity;
        let stored = broker(r#","credentials":{"username":"app","password":"s3cret"}"#);
        let shown = serde_json::to_string(&stored.shown()).unwrap();
        assert!(!shown.contains("s3cret") && !shown.contains("password") && shown.contains(r#""username":"app""#), "{shown}");
        let password_after = |written: Service| {
            let mut written = written;
            written.keep_secrets_of(&stored);
            written.credentials.and_then(|c| c.password)
        };
        assert_eq!(password_after(stored.shown()), Some("s3cret".to_owned()), "a write of what was read keeps it");
        let respelt = service(
            r#"{"name":"events","protocol":"amqp","targets":[{"url":"amqp://rabbit-2:5673/orders","weight":5}],"credentials":{"username":"app"}}"#,
        );
        assert_eq!(password_after(respelt), Some("s3cret".to_owned()), "fewer targets, spelt otherwise, reweighted");
        assert_eq!(password_after(broker(r#","credentials":{"username":"other"}"#)), None, "another login needs its password");
        let mut moved = stored.shown();
        moved.targets.push(Target { url: "amqp://elsewhere".into(), weight: 100 });
        assert_eq!(password_after(moved), None, "a new broker is never sent the stored password unasked");
        let mut trusting = stored.shown();
        trusting.tls = Some(UpstreamTls { ca_bundle: Some("-----BEGIN CERTIFICATE-----".into()), client_cert: None, client_key: None });
        assert_eq!(password_after(trusting), None, "a new CA could vouch for anyone's broker: the password is asked again");
        assert_eq!(password_after(broker(r#","credentials":{"username":"app","password":"new"}"#)), Some("new".to_owned()));
        let error = crate::snapshot::Snapshot::compile(crate::model::GatewayConfig {
            services: vec![broker(r#","credentials":{"username":"app"}"#)],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(error.first().field(), "services[0].credentials.password", "{error}");
    }

    #[test]
    fn names_the_client_certificate_fields_of_upstream_tls() {
        let mut s = service(
            r#"{"name":"s","protocol":"https","targets":[{"url":"https://a:1"}],"tls":{"client_cert":"junk","client_key":"junk"}}"#,
        );
        assert_eq!(s.normalize_and_validate().unwrap_err().first().field(), "tls.client_cert");
    }
}
