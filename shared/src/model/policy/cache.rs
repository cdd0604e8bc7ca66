//! The `cache` policy as users write it, and the purge command that goes
//! with it. The policy says what the data plane's shared cache may keep of
//! a route's responses: RFC 9111's shared-cache rules decide by default
//! (the response's own `Cache-Control`, `Expires`, `Vary`, `Set-Cookie`,
//! and `Authorization` on the request); the policy narrows methods and
//! statuses, supplies a TTL where the response gives none, chooses the key,
//! and bounds what one entry may hold. Storing and serving is the data
//! plane's (`stage::cache`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::Validate;
use crate::validate::rules::{Result, bounded, in_range, is_token_byte};

/// Longest TTL or stale window a policy may set: a year (RFC 9111 §5.3).
pub const MAX_TTL_S: u32 = 31_536_000;
/// Largest response one entry may hold.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;
/// Most headers in the key, and most query parameters in an allow-list.
pub const MAX_KEY_ENTRIES: usize = 32;
/// Most requests that may wait on one upstream fetch.
pub const MAX_WAITERS: u32 = 100_000;

/// Fields of the `cache` policy. Every field has a default, so
/// `{"type": "cache"}` caches `GET` and `HEAD` answers for as long as their
/// `Cache-Control` says, per consumer on an authenticating route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// Methods whose answers are cached: `GET`, `HEAD` or both (default both).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Statuses that may be stored (default 200, 203, 204, 300, 301, 308,
    /// 404, 405, 410, 414: RFC 9110's cacheable ones without 206 and 5xx).
    /// Listing 206 adds `Range` to the key.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// Freshness, in seconds, of a response that gives none of its own
    /// (`s-maxage`, `max-age`, `Expires`); unset, such a response is not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u32>,
    /// `ttl_s` for particular statuses (`{"404": 10}`; keys are statuses
    /// listed in `statuses`); the response's own freshness still wins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status_ttl_s: BTreeMap<String, u32>,
    /// Heuristic freshness (RFC 9111 §4.2.2) for responses with
    /// `Last-Modified` and no freshness of their own: a tenth of their age,
    /// at most a day. Off by default.
    #[serde(default)]
    pub heuristic: bool,
    /// How long after expiry a stale response is still served while one
    /// background request refreshes it, when the response does not say
    /// (`stale-while-revalidate`). Default 0.
    #[serde(default)]
    pub stale_while_revalidate_s: u32,
    /// How long after expiry a stale response stands in for an upstream
    /// error (5xx, timeout, refusal), when the response does not say
    /// (`stale-if-error`). Default 0.
    #[serde(default)]
    pub stale_if_error_s: u32,
    /// What tells requests apart.
    #[serde(default)]
    pub key: CacheKeyPolicy,
    /// Largest response stored, in bytes (default 1 MiB, at most 64 MiB); a
    /// larger one streams to the client and is not kept.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// The response header whose comma- or space-separated values tag an
    /// entry for purging by tag (default `cache-tag`; `surrogate-key` is the
    /// other common one). The header is not passed on to clients.
    #[serde(default = "default_tag_header")]
    pub tag_header: String,
    /// Concurrent misses for one key wait for a single upstream request.
    #[serde(default)]
    pub coalesce: CoalescePolicy,
}

/// What the cache key holds besides method, host and path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheKeyPolicy {
    /// The query: `all` (as sent, the default), `sorted` (parameters in
    /// order, so `?b=1&a=2` and `?a=2&b=1` share an entry), `none`, or
    /// `{"allow": [names]}` (only those parameters, sorted).
    #[serde(default)]
    pub query: QueryKey,
    /// Request headers whose values are part of the key (lowercase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// On a route that authenticates, each consumer has entries of its own
    /// (default `true`); `false` shares entries between consumers.
    #[serde(default = "yes")]
    pub consumer: bool,
}

/// How the query string takes part in the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryKey {
    #[default]
    All,
    Sorted,
    None,
    Allow(Vec<String>),
}

/// Request coalescing: one upstream request for concurrent misses of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoalescePolicy {
    /// Most requests waiting on one fetch (default 1,000; 0 turns
    /// coalescing off); more go upstream on their own.
    #[serde(default = "default_max_waiters")]
    pub max_waiters: u32,
    /// How long a request waits before going upstream on its own
    /// (default 5,000 ms).
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u32,
}

impl Default for CacheKeyPolicy {
    fn default() -> Self {
        Self { query: QueryKey::All, headers: Vec::new(), consumer: true }
    }
}

impl Default for CoalescePolicy {
    fn default() -> Self {
        Self { max_waiters: default_max_waiters(), wait_ms: default_wait_ms() }
    }
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

fn default_statuses() -> Vec<u16> {
    vec![200, 203, 204, 300, 301, 308, 404, 405, 410, 414]
}

fn default_max_entry_bytes() -> u64 {
    1024 * 1024
}

fn default_tag_header() -> String {
    "cache-tag".into()
}

fn default_max_waiters() -> u32 {
    1_000
}

fn default_wait_ms() -> u32 {
    5_000
}

fn yes() -> bool {
    true
}

impl Validate for CachePolicy {
    /// Puts the policy in canonical form (uppercase methods, lowercase
    /// header names, sorted statuses and allow-list) and checks every
    /// field, reporting every error.
    fn normalize_and_validate(&mut self) -> std::result::Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if self.methods.is_empty() {
            errors.add(ConfigError::invalid("methods", "name GET, HEAD or both"));
        }
        for (i, method) in self.methods.iter_mut().enumerate() {
            method.make_ascii_uppercase();
            if method != "GET" && method != "HEAD" {
                errors.add(ConfigError::invalid(format!("methods[{i}]"), format!("'{method}' cannot be cached: only GET and HEAD")));
            }
        }
        self.methods.sort();
        self.methods.dedup();
        if self.statuses.is_empty() {
            errors.add(ConfigError::invalid("statuses", "name at least one status to store"));
        }
        for (i, status) in self.statuses.iter().enumerate() {
            errors.check(in_range(&format!("statuses[{i}]"), *status, 200, 599));
        }
        self.statuses.sort_unstable();
        self.statuses.dedup();
        for (status, ttl) in &self.status_ttl_s {
            let field = format!("status_ttl_s.{status}");
            match status.parse::<u16>() {
                Ok(code) if self.statuses.contains(&code) => {
                    errors.check(in_range(&field, *ttl, 1, MAX_TTL_S));
                }
                Ok(_) => errors.add(ConfigError::invalid(field, format!("{status} is not in statuses, so it is never stored"))),
                Err(_) => errors.add(ConfigError::invalid(field, format!("'{status}' is not a status code"))),
            }
        }
        if let Some(ttl) = self.ttl_s {
            errors.check(in_range("ttl_s", ttl, 1, MAX_TTL_S));
        }
        errors.check(in_range("stale_while_revalidate_s", self.stale_while_revalidate_s, 0, MAX_TTL_S));
        errors.check(in_range("stale_if_error_s", self.stale_if_error_s, 0, MAX_TTL_S));
        errors.check(in_range("max_entry_bytes", self.max_entry_bytes, 1, MAX_ENTRY_BYTES));
        if let Some(name) = errors.check(header_name("tag_header", &self.tag_header)) {
            self.tag_header = name;
        }
        errors.check_within("key", self.key.normalize_and_validate());
        errors.check(in_range("coalesce.max_waiters", self.coalesce.max_waiters, 0, MAX_WAITERS));
        errors.check(in_range("coalesce.wait_ms", self.coalesce.wait_ms, 1, 60_000));
        errors.finish()
    }
}

impl Validate for CacheKeyPolicy {
    fn normalize_and_validate(&mut self) -> std::result::Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if errors.check(bounded("headers", self.headers.len(), MAX_KEY_ENTRIES)).is_some() {
            for (i, name) in self.headers.iter_mut().enumerate() {
                if let Some(lower) = errors.check(header_name(&format!("headers[{i}]"), name)) {
                    *name = lower;
                }
            }
            self.headers.sort();
            self.headers.dedup();
        }
        if let QueryKey::Allow(names) = &mut self.query {
            if names.is_empty() {
                errors.add(ConfigError::invalid("query.allow", "name at least one parameter (or use \"none\")"));
            }
            if errors.check(bounded("query.allow", names.len(), MAX_KEY_ENTRIES)).is_some() {
                for (i, name) in names.iter().enumerate() {
                    if name.is_empty() || name.len() > 128 || name.bytes().any(|b| b.is_ascii_control() || b"&=#".contains(&b)) {
                        errors.add(ConfigError::invalid(format!("query.allow[{i}]"), format!("'{name}' is not a query parameter name")));
                    }
                }
                names.sort();
                names.dedup();
            }
        }
        errors.finish()
    }
}

/// A header name, lowercased.
fn header_name(field: &str, name: &str) -> Result<String> {
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 128 || !lower.bytes().all(is_token_byte) {
        return Err(ConfigError::invalid(field, format!("'{name}' is not a valid header name")));
    }
    Ok(lower)
}

/// What a purge removes from every data plane's cache of a gateway: every
/// stored variant (all methods, `Vary` variants and consumers) of a `url`,
/// of every URL under a `prefix`, or of every response tagged `tag`. A
/// `url` or `prefix` is a path (`/users/7?x=1`, any host) or an absolute
/// `http`/`https` URL (that host only); a `url`'s query is compared the
/// way each route's key takes it (sorted, allow-listed, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CachePurge {
    Url(String),
    Prefix(String),
    Tag(String),
}

/// Longest `url`, `prefix` or `tag` of a purge.
pub const MAX_PURGE_LEN: usize = 8_192;

/// A purge's URL or prefix taken apart: host (lowercase, no port) when it
/// was absolute, path, and query (of a URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeTarget {
    pub host: Option<String>,
    pub path: String,
    pub query: Option<String>,
}

impl CachePurge {
    /// The field a purge is written under (`url`, `prefix`, `tag`).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Url(_) => "url",
            Self::Prefix(_) => "prefix",
            Self::Tag(_) => "tag",
        }
    }

    /// What was written: the URL, prefix or tag.
    pub fn value(&self) -> &str {
        match self {
            Self::Url(v) | Self::Prefix(v) | Self::Tag(v) => v,
        }
    }

    /// Checks the purge, naming its field when it is wrong.
    pub fn validate(&self) -> Result {
        let (field, value) = (self.field(), self.value());
        if value.is_empty() || value.len() > MAX_PURGE_LEN {
            return Err(ConfigError::invalid(field, format!("must be 1 to {MAX_PURGE_LEN} characters")));
        }
        match self {
            Self::Tag(tag) if tag.bytes().any(|b| !b.is_ascii_graphic() || b == b',') => {
                Err(ConfigError::invalid(field, "a tag is visible ASCII without spaces or commas"))
            }
            Self::Tag(_) => Ok(()),
            Self::Url(_) | Self::Prefix(_) => self.target().map(|_| ()),
        }
    }

    /// The URL or prefix taken apart; `None` for a tag.
    pub fn target(&self) -> Result<Option<PurgeTarget>> {
        let (field, text) = match self {
            Self::Tag(_) => return Ok(None),
            Self::Url(text) | Self::Prefix(text) => (self.field(), text),
        };
        let wrong = || ConfigError::invalid(field, format!("'{text}' is not a path (/users/7) or an http(s) URL"));
        let uri: http::Uri = text.parse().map_err(|_| wrong())?;
        let host = match (uri.scheme_str(), uri.host()) {
            (None, None) if text.starts_with('/') => None,
            (Some("http" | "https"), Some(host)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
                Some(host.to_ascii_lowercase())
            }
            _ => return Err(wrong()),
        };
        let query = match self {
            Self::Url(_) => uri.query().map(str::to_owned),
            _ if uri.query().is_some() => return Err(ConfigError::invalid(field, "a prefix is a path without a query")),
            _ => None,
        };
        Ok(Some(PurgeTarget { host, path: uri.path().to_owned(), query }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> CachePolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_cache_get_and_head_per_consumer_by_the_responses_own_freshness() {
        let mut p = policy(serde_json::json!({}));
        p.normalize_and_validate().unwrap();
        assert_eq!(p.methods, ["GET", "HEAD"]);
        assert!(!p.statuses.contains(&206) && !p.statuses.iter().any(|s| *s >= 500));
        assert_eq!((p.ttl_s, p.heuristic, p.key.consumer, p.key.query.clone()), (None, false, true, QueryKey::All));
        assert_eq!(p.max_entry_bytes, 1024 * 1024);
    }

    #[test]
    fn every_mistake_is_named_by_its_field() {
        let mut p = policy(serde_json::json!({
            "methods": ["post"], "statuses": [200, 99], "status_ttl_s": {"404": 5}, "ttl_s": 0,
            "max_entry_bytes": 0, "tag_header": "bad header", "key": {"headers": ["x y"], "query": {"allow": []}},
            "coalesce": {"wait_ms": 0}
        }));
        let errors = p.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(
            fields,
            [
                "methods[0]",
                "statuses[1]",
                "status_ttl_s.404",
                "ttl_s",
                "max_entry_bytes",
                "tag_header",
                "key.headers[0]",
                "key.query.allow",
                "coalesce.wait_ms"
            ]
        );
    }

    #[test]
    fn the_query_key_is_written_as_a_word_or_an_allow_list() {
        let mut p = policy(serde_json::json!({"key": {"query": {"allow": ["q", "page", "q"]}, "headers": ["Accept-Language"]}}));
        p.normalize_and_validate().unwrap();
        assert_eq!(p.key.query, QueryKey::Allow(vec!["page".into(), "q".into()]));
        assert_eq!(p.key.headers, ["accept-language"]);
        assert_eq!(policy(serde_json::json!({"key": {"query": "sorted"}})).key.query, QueryKey::Sorted);
        assert!(serde_json::from_value::<CachePolicy>(serde_json::json!({"key": {"query": "some"}})).is_err());
    }

    #[test]
    fn purges_are_paths_or_absolute_urls() {
        let url: CachePurge = serde_json::from_str(r#"{"url": "https://API.example.com/users/7?b=1&a=2"}"#).unwrap();
        assert_eq!(
            url.target().unwrap().unwrap(),
            PurgeTarget { host: Some("api.example.com".into()), path: "/users/7".into(), query: Some("b=1&a=2".into()) }
        );
        let prefix = CachePurge::Prefix("/users".into());
        assert_eq!(prefix.target().unwrap().unwrap(), PurgeTarget { host: None, path: "/users".into(), query: None });
        for (bad, field) in [
            (CachePurge::Url("users/7".into()), "url"),
            (CachePurge::Url("ftp://h/x".into()), "url"),
            (CachePurge::Prefix("/users?x=1".into()), "prefix"),
            (CachePurge::Tag("a b".into()), "tag"),
            (CachePurge::Tag(String::new()), "tag"),
        ] {
            assert_eq!(bad.validate().unwrap_err().field(), field, "{bad:?}");
        }
        assert!(serde_json::from_str::<CachePurge>(r#"{"url": "/a", "tag": "b"}"#).is_err(), "one of url, prefix or tag");
    }
}
