//! The entities of a gateway's config, as users write them and as data
//! planes receive them. Each entity carries `id`, `created_at` and
//! `updated_at`, assigned by the control plane; a declarative document may
//! leave them out (the control plane keeps them stable by name).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;
use uuid::Uuid;

/// The whole config of one gateway: what a data plane serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// Empty lists are left out of the encoding, so snapshots made before
    /// credentials existed keep their canonical bytes and hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// TLS certificates the data planes serve, chosen by SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// Policies for every route of the gateway; a route's or service's own
    /// policy of the same type takes precedence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    /// Proxies (CIDRs) in front of the gateway whose `X-Forwarded-For`
    /// entries are believed when finding a client's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

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
    /// At least one; each `scheme://host[:port]` with the service's protocol.
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
    /// With `https`: how targets are verified, and the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// A circuit breaker per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Retries for the routes of this service (a route's own win).
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
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
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
    /// `http://host:port` (no path, query or credentials).
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
/// never sent twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Tries in all, the first included: 1 to 10 (default 2).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// What is retried (default connect-failure, reset, 503).
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// Time each try may take to the response headers (default: the
    /// service's `request_ms`, which also bounds all tries together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u32>,
    /// Retries may add at most this share of the route's requests (0 to
    /// 100, default 20), beyond a reserve of 10, so a failing fleet is not
    /// hit by a retry storm.
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retry POST and PATCH too (only for requests that are safe to repeat).
    #[serde(default)]
    pub non_idempotent: bool,
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

/// What traffic a route takes, and which service it goes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub name: String,
    /// Name of the service that serves this route.
    pub service: String,
    /// Path prefixes, matched on segment boundaries (`/users` takes
    /// `/users/7`, not `/usersx`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Host names, exact or `*.example.com`; empty means any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Request headers that must be present with one of the listed values.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Remove the matched path prefix before calling the upstream.
    #[serde(default = "default_true")]
    pub strip_path: bool,
    /// Send the client's `Host` header upstream instead of the target's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Answer plain-HTTP requests with `308` to the same URL over HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_only: bool,
    /// Retries of this route's requests (instead of its service's).
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

fn default_true() -> bool {
    true
}

/// Who calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// 1 to 128 characters of `[A-Za-z0-9._@+-]`, unique in the gateway.
    pub username: String,
    /// The caller's id in your own systems; unique in the gateway when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// Scopes granted to this consumer when it authenticates with an API key
    /// (or is the anonymous consumer); JWT callers get their token's scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// How a consumer proves who it is. Managed under
/// `/consumers/{c}/credentials`; in a declarative document, a top-level
/// list whose entries name their `consumer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Unique in the gateway; derived from the credential when left out
    /// (`key-…` from the key's hash, `jwt-…` from issuer and key id).
    #[serde(default)]
    pub name: String,
    /// The owning consumer's username (taken from the URL under
    /// `/consumers/{c}/credentials`).
    #[serde(default)]
    pub consumer: String,
    #[serde(rename = "type")]
    pub kind: CredentialType,
    /// `key-auth`: the API key, 16 to 256 visible ASCII characters. Write
    /// only: the control plane keeps and ships only `key_hash`, and answers
    /// with the key once, in the response of the write that set it. Left out
    /// on create (with no `key_hash`), a random 256-bit key is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `key-auth`: lowercase hex HMAC-SHA256 of the key, keyed from the
    /// cluster token; what exports contain and imports accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    /// `jwt`: the `iss` claim of this consumer's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `jwt`: the only algorithm accepted (a token's `alg` header never
    /// chooses the key type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<JwtAlgorithm>,
    /// `jwt`, HS*: the shared secret, at least 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `jwt`, RS*/ES*/EdDSA: the public key in PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// `jwt`, RS*/ES*/EdDSA: where data planes fetch the issuer's keys (JWKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// `jwt` with `secret` or `public_key`: the `kid` this key answers to,
    /// needed when several credentials share an issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A TLS certificate the data planes serve on `--tls-listen`, chosen by the
/// client's SNI; managed at `/api/v1/gateways/{gw}/certificates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub name: String,
    /// PEM: the certificate, then the intermediates of its chain.
    pub cert: String,
    /// PEM private key of the certificate. Write-only: the admin API never
    /// returns it (a write without it keeps the stored one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Server names it is served for, exact or `*.example.com`; empty: the
    /// DNS names of the certificate (read again whenever it changes).
    #[serde(default)]
    pub snis: Vec<String>,
    /// Served to clients whose SNI matches no certificate (one at most).
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The kind of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialType {
    KeyAuth,
    Jwt,
}

/// JWT signature algorithms a credential may name (`none` never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// Whether the algorithm verifies with a shared secret (HMAC).
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// A policy on a route, a service or the whole gateway, chosen by `type`.
/// Only policy types that data planes enforce are accepted; the others are
/// refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Policy {
    /// Refuse request bodies larger than `max_bytes` with `413`.
    RequestSizeLimit {
        /// 1 byte to 1 GiB.
        max_bytes: u64,
    },
    /// Callers present an API key of a consumer's `key-auth` credential.
    KeyAuth(KeyAuthPolicy),
    /// Callers present `Authorization: Bearer <JWT>` signed for a consumer's
    /// `jwt` credential.
    Jwt(JwtPolicy),
    /// The authenticated caller must hold these scopes (`403` otherwise).
    Scopes(ScopesPolicy),
    /// At most `limit` requests per `window_s` per key (`429` beyond).
    RateLimit(RateLimitPolicy),
    /// Cross-origin browser calls: preflights answered by the gateway, CORS
    /// headers on every answer to an allowed origin.
    Cors(crate::cors::CorsPolicy),
    /// Clients inside `deny`, or outside a non-empty `allow`, get `403`.
    IpRestriction(crate::ip_restriction::IpRestrictionPolicy),
    /// Rewrites the request's headers, query and path before it goes upstream.
    RequestTransform(crate::transform::RequestTransformPolicy),
    /// Rewrites the response's headers (and JSON body) for a client profile.
    ResponseTransform(crate::transform::ResponseTransformPolicy),
}

/// Fields of the `key-auth` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthPolicy {
    /// Request header carrying the key.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Query parameter carrying the key; `null` turns query keys off.
    #[serde(default = "default_key_query")]
    pub query: Option<String>,
    /// Remove the key from the request before it goes upstream.
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
    /// Username of the consumer that calls without any credential become.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

fn default_key_header() -> String {
    "x-api-key".to_owned()
}

#[allow(clippy::unnecessary_wraps)]
fn default_key_query() -> Option<String> {
    Some("apikey".to_owned())
}

/// Fields of the `jwt` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtPolicy {
    /// Accepted `aud` values; the token's `aud` must name one of them.
    /// Empty: `aud` is not checked.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Claims every token must carry.
    #[serde(default = "default_required_claims")]
    pub required_claims: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, 0 to 600 seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Remove `Authorization` before the request goes upstream.
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
    /// Username of the consumer that calls without any credential become.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

fn default_required_claims() -> Vec<String> {
    vec!["exp".to_owned()]
}

fn default_leeway_s() -> u64 {
    30
}

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
    /// `deny` (`429`) or `local` (each node limits to `limit` divided by its
    /// `--expected-nodes`).
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

/// Fields of the `scopes` policy; at least one list must be non-empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesPolicy {
    /// The caller must hold every one of these.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// The caller must hold at least one of these.
    #[serde(default)]
    pub any_of: Vec<String>,
}

impl Policy {
    /// The policy's `type`, as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::RequestSizeLimit { .. } => "request-size-limit",
            Self::KeyAuth(_) => "key-auth",
            Self::Jwt(_) => "jwt",
            Self::Scopes(_) => "scopes",
            Self::RateLimit(_) => "rate-limit",
            Self::Cors(_) => "cors",
            Self::IpRestriction(_) => "ip-restriction",
            Self::RequestTransform(_) => "request-transform",
            Self::ResponseTransform(_) => "response-transform",
        }
    }

    /// Whether one level (route, service, gateway) may hold several
    /// policies of this type, one per client profile (`when`); the most
    /// specific level that has the type still wins, with all of its profiles.
    pub fn profiled(&self) -> bool {
        matches!(self, Self::RequestTransform(_) | Self::ResponseTransform(_))
    }

    /// Whether policies of this type add up (every one applies, from every
    /// level) rather than the most specific one winning.
    pub fn accumulates(&self) -> bool {
        matches!(self, Self::RequestSizeLimit { .. } | Self::RateLimit(_))
    }

    /// Whether the policy authenticates callers.
    pub fn authenticates(&self) -> bool {
        matches!(self, Self::KeyAuth(_) | Self::Jwt(_))
    }

    /// The consumer an authentication policy lets anonymous calls through as.
    pub fn anonymous(&self) -> Option<&str> {
        match self {
            Self::KeyAuth(p) => p.anonymous.as_deref(),
            Self::Jwt(p) => p.anonymous.as_deref(),
            Self::RequestSizeLimit { .. }
            | Self::Scopes(_)
            | Self::RateLimit(_)
            | Self::Cors(_)
            | Self::IpRestriction(_)
            | Self::RequestTransform(_)
            | Self::ResponseTransform(_) => None,
        }
    }
}

/// The policies that apply to `route` (served by `service`) in a gateway
/// with `gateway` policies. Limits (`request-size-limit`, `rate-limit`)
/// apply from every level; for the other types the most specific level that
/// has the type wins (with every profile of a transform at that level): the
/// route's, else the service's, else the gateway's.
pub fn effective_policies<'a>(route: &'a Route, service: &'a Service, gateway: &'a [Policy]) -> Vec<&'a Policy> {
    let mut chosen: Vec<&Policy> = Vec::new();
    for level in [route.policies.as_slice(), service.policies.as_slice(), gateway] {
        let before = chosen.len();
        for policy in level {
            if policy.accumulates() || !chosen[..before].iter().any(|p| p.type_name() == policy.type_name()) {
                chosen.push(policy);
            }
        }
    }
    chosen
}

/// The kinds of entity a gateway's config holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Service,
    Route,
    Consumer,
    Credential,
    Certificate,
    /// The gateway's own settings (its `policies`), in a diff.
    Gateway,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Route => "route",
            Self::Consumer => "consumer",
            Self::Credential => "credential",
            Self::Certificate => "certificate",
            Self::Gateway => "gateway",
        }
    }
}

/// What every entity of a config has in common; the admin API, the
/// declarative merge and the diff are written once against it.
pub trait Entity: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: EntityKind;
    /// The field that names the entity (`name`, or `username` for consumers).
    const NAME_FIELD: &'static str;
    /// The key of this entity's list in a [`GatewayConfig`].
    const COLLECTION: &'static str;

    fn name(&self) -> &str;
    fn id(&self) -> Option<Uuid>;
    fn collection(config: &GatewayConfig) -> &Vec<Self>;
    fn collection_mut(config: &mut GatewayConfig) -> &mut Vec<Self>;
    /// The entity's own fields, with the server-assigned ones set.
    fn set_meta(&mut self, id: Option<Uuid>, created_at: Option<DateTime<Utc>>, updated_at: Option<DateTime<Utc>>);
    fn created_at(&self) -> Option<DateTime<Utc>>;
    fn updated_at(&self) -> Option<DateTime<Utc>>;
    /// The name of the entity this one belongs to (a credential's consumer).
    fn owner(&self) -> Option<&str> {
        None
    }

    /// The entity as the admin API shows it: without write-only secrets
    /// (a certificate's private key).
    fn shown(&self) -> Self {
        self.clone()
    }

    /// Takes the write-only secrets a write left out from the entity it replaces.
    fn keep_secrets_of(&mut self, _previous: &Self) {}

    /// The entity as a user would write it: without server-assigned fields.
    fn declarative(&self) -> Self {
        let mut copy = self.clone();
        copy.set_meta(None, None, None);
        copy
    }
}

macro_rules! entity {
    ($type:ty, $kind:expr, $collection:ident, $name:ident $(, owner = $owner:ident)? $(, secrets = ($redact:path, $keep:path))?) => {
        impl Entity for $type {
            const KIND: EntityKind = $kind;
            const NAME_FIELD: &'static str = stringify!($name);
            const COLLECTION: &'static str = stringify!($collection);

            fn name(&self) -> &str {
                &self.$name
            }
            fn id(&self) -> Option<Uuid> {
                self.id
            }
            fn collection(config: &GatewayConfig) -> &Vec<Self> {
                &config.$collection
            }
            fn collection_mut(config: &mut GatewayConfig) -> &mut Vec<Self> {
                &mut config.$collection
            }
            fn set_meta(&mut self, id: Option<Uuid>, created_at: Option<DateTime<Utc>>, updated_at: Option<DateTime<Utc>>) {
                self.id = id;
                self.created_at = created_at;
                self.updated_at = updated_at;
            }
            fn created_at(&self) -> Option<DateTime<Utc>> {
                self.created_at
            }
            fn updated_at(&self) -> Option<DateTime<Utc>> {
                self.updated_at
            }
            $(
                fn owner(&self) -> Option<&str> {
                    Some(&self.$owner)
                }
            )?
            $(
                fn shown(&self) -> Self {
                    let mut shown = self.clone();
                    $redact(&mut shown);
                    shown
                }
                fn keep_secrets_of(&mut self, previous: &Self) {
                    $keep(self, previous);
                }
            )?
        }
    };
}

entity!(Service, EntityKind::Service, services, name, secrets = (redact_client_key, keep_client_key));
entity!(Route, EntityKind::Route, routes, name);
entity!(Consumer, EntityKind::Consumer, consumers, username);
entity!(Credential, EntityKind::Credential, credentials, name, owner = consumer);
entity!(Certificate, EntityKind::Certificate, certificates, name, secrets = (redact_private_key, keep_private_key));

// Write-only secrets: never shown by the admin API; a write that leaves one
// out keeps the stored one.

fn redact_private_key(certificate: &mut Certificate) {
    certificate.key = None;
}

fn keep_private_key(certificate: &mut Certificate, previous: &Certificate) {
    if certificate.key.is_none() {
        certificate.key.clone_from(&previous.key);
    }
}

fn redact_client_key(service: &mut Service) {
    if let Some(tls) = &mut service.tls {
        tls.client_key = None;
    }
}

fn keep_client_key(service: &mut Service, previous: &Service) {
    if let (Some(tls), Some(old)) = (&mut service.tls, &previous.tls)
        && tls.client_key.is_none()
        && tls.client_cert.is_some()
        && tls.client_cert == old.client_cert
    {
        tls.client_key.clone_from(&old.client_key);
    }
}

impl GatewayConfig {
    /// The config as a user would write it: entities without
    /// server-assigned fields, in name order.
    pub fn declarative(&self) -> Self {
        Self {
            services: self.services.iter().map(Entity::declarative).collect(),
            routes: self.routes.iter().map(Entity::declarative).collect(),
            consumers: self.consumers.iter().map(Entity::declarative).collect(),
            credentials: self.credentials.iter().map(Entity::declarative).collect(),
            certificates: self.certificates.iter().map(Entity::declarative).collect(),
            policies: self.policies.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// The config as the admin API shows it: without write-only secrets.
    pub fn shown(&self) -> Self {
        Self {
            services: self.services.iter().map(Entity::shown).collect(),
            certificates: self.certificates.iter().map(Entity::shown).collect(),
            ..self.clone()
        }
    }

    /// Sort every collection by name: the canonical order of a snapshot.
    pub fn sort(&mut self) {
        self.services.sort_by(|a, b| a.name.cmp(&b.name));
        self.routes.sort_by(|a, b| a.name.cmp(&b.name));
        self.consumers.sort_by(|a, b| a.username.cmp(&b.username));
        self.credentials.sort_by(|a, b| a.name.cmp(&b.name));
        self.certificates.sort_by(|a, b| a.name.cmp(&b.name));
    }
}
