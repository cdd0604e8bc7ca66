//! Policies: what happens to a route's requests besides being proxied,
//! chosen by `type`, on a route, a service or the whole gateway. This module
//! holds the [`Policy`] enum, which types add up and which one level wins
//! ([`effective_policies`]), and the checks of a list of policies; each
//! family of types lives in its own module with its validation
//! (`auth`, `limit`, `cache`, `cors`, `ip`, `transform`). Enforcing them is the data
//! plane's.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Route, Service};
use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::rules::{MAX_LIST, Result, Validate, bounded};

pub mod access_log;
mod auth;
pub mod cache;
pub mod cors;
pub mod ip;
mod limit;
pub mod transform;

pub use auth::{JwtPolicy, KeyAuthPolicy, ScopesPolicy};
pub use limit::{BackendFailure, RateLimitAlgorithm, RateLimitBackend, RateLimitKey, RateLimitPolicy};

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
    Cors(cors::CorsPolicy),
    /// Clients inside `deny`, or outside a non-empty `allow`, get `403`.
    IpRestriction(ip::IpRestrictionPolicy),
    /// Rewrites the request's headers, query and path before it goes upstream.
    RequestTransform(transform::RequestTransformPolicy),
    /// Rewrites the response's headers (and JSON body) for a client profile.
    ResponseTransform(transform::ResponseTransformPolicy),
    /// Stores responses in the data plane's shared cache (RFC 9111) and
    /// answers later requests from it.
    Cache(cache::CachePolicy),
    /// Which requests get a line in the data plane's access log (`--access-log`).
    AccessLog(access_log::AccessLogPolicy),
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
            Self::Cache(_) => "cache",
            Self::AccessLog(_) => "access-log",
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
            | Self::ResponseTransform(_)
            | Self::Cache(_)
            | Self::AccessLog(_) => None,
        }
    }
}

/// The policies that apply to `route` (served by `service`; none for an
/// aggregate, to which only its own and the gateway's apply) in a gateway
/// with `gateway` policies. Limits (`request-size-limit`, `rate-limit`)
/// apply from every level; for the other types the most specific level that
/// has the type wins (with every profile of a transform at that level): the
/// route's, else the service's, else the gateway's.
pub fn effective_policies<'a>(route: &'a Route, service: Option<&'a Service>, gateway: &'a [Policy]) -> Vec<&'a Policy> {
    let mut chosen: Vec<&Policy> = Vec::new();
    for level in [route.policies.as_slice(), service.map_or(&[][..], |s| s.policies.as_slice()), gateway] {
        let before = chosen.len();
        for policy in level {
            if policy.accumulates() || !chosen[..before].iter().any(|p| p.type_name() == policy.type_name()) {
                chosen.push(policy);
            }
        }
    }
    chosen
}

/// Checks a list of policies: each on its own, and at most one of each type.
pub(crate) fn validate_list(field: &str, list: &mut [Policy]) -> Result<(), ConfigErrors> {
    let mut errors = Errors::default();
    errors.check(bounded(field, list.len(), MAX_LIST));
    let mut types = HashSet::new();
    for (i, policy) in list.iter_mut().enumerate() {
        let profile = match policy {
            Policy::RequestTransform(p) => p.when.as_ref().map(|w| format!("{w:?}")),
            Policy::ResponseTransform(p) => p.when.as_ref().map(|w| format!("{w:?}")),
            _ => None,
        };
        if !policy.accumulates() && !types.insert((policy.type_name(), profile)) {
            let message = if policy.profiled() {
                format!("only one '{}' policy per `when` is allowed here (and one without `when`)", policy.type_name())
            } else {
                format!("only one '{}' policy is allowed here", policy.type_name())
            };
            errors.add(ConfigError::invalid(format!("{field}[{i}]"), message));
        }
        errors.check_within(&format!("{field}[{i}]"), policy.normalize_and_validate());
    }
    errors.finish()
}

impl Validate for Policy {
    /// Checks the policy's own fields (relative to the policy).
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        match self {
            Self::RequestSizeLimit { max_bytes } => Ok(limit::max_bytes("max_bytes", *max_bytes)?),
            Self::KeyAuth(p) => p.normalize_and_validate(),
            Self::Jwt(p) => p.normalize_and_validate(),
            Self::Scopes(p) => p.normalize_and_validate(),
            Self::RateLimit(p) => p.normalize_and_validate(),
            Self::Cors(p) => p.normalize_and_validate(),
            Self::IpRestriction(p) => p.normalize_and_validate(),
            Self::RequestTransform(p) => p.normalize_and_validate(),
            Self::ResponseTransform(p) => p.normalize_and_validate(),
            Self::Cache(p) => p.normalize_and_validate(),
            Self::AccessLog(p) => p.normalize_and_validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;
    use crate::validate::Validate;

    fn route_with(policies: &str) -> Route {
        from_json(format!(r#"{{"name":"r","service":"s","paths":["/"],"policies":{policies}}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn rate_limits_add_up_but_other_policy_types_come_once() {
        let mut r = route_with(
            r#"[{"type":"rate-limit","algorithm":"token_bucket","limit":10,"window_s":1},
                {"type":"rate-limit","algorithm":"fixed_window","limit":1000,"window_s":3600,"key":"header:X-Tenant"}]"#,
        );
        r.normalize_and_validate().unwrap();
        let Policy::RateLimit(second) = &r.policies[1] else { panic!("a rate limit") };
        assert_eq!(second.key, "header:x-tenant");
        let mut twice = route_with(r#"[{"type":"key-auth"},{"type":"key-auth"}]"#);
        assert_eq!(twice.normalize_and_validate().unwrap_err().first().field(), "policies[1]");
    }

    #[test]
    fn rejects_bad_rate_limits_naming_the_field() {
        for (policy, field) in [
            (r#"{"type":"rate-limit","algorithm":"fixed_window","limit":0,"window_s":1}"#, "policies[0].limit"),
            (r#"{"type":"rate-limit","algorithm":"fixed_window","limit":1,"window_s":0}"#, "policies[0].window_s"),
            (r#"{"type":"rate-limit","algorithm":"fixed_window","limit":1,"window_s":1,"burst":5}"#, "policies[0].burst"),
            (r#"{"type":"rate-limit","algorithm":"sliding_window_log","limit":100000,"window_s":1}"#, "policies[0].limit"),
            (r#"{"type":"rate-limit","algorithm":"token_bucket","limit":1,"window_s":1,"key":"cookie:x"}"#, "policies[0].key"),
            (r#"{"type":"rate-limit","algorithm":"token_bucket","limit":1,"window_s":1,"key":"header:"}"#, "policies[0].key"),
            (r#"{"type":"rate-limit","algorithm":"leaky_bucket","limit":10,"window_s":3600}"#, "policies[0].burst"),
        ] {
            let mut r = route_with(&format!("[{policy}]"));
            assert_eq!(r.normalize_and_validate().unwrap_err().first().field(), field, "{policy}");
        }
    }

    #[test]
    fn a_bad_limit_is_not_reported_again_as_a_long_queue() {
        let mut r = route_with(r#"[{"type":"rate-limit","algorithm":"leaky_bucket","limit":0,"window_s":1,"key":"bogus"}]"#);
        let errors = r.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["policies[0].limit", "policies[0].key"]);
    }
}
