//! The `Cache-Status` header (RFC 9211) that every answer of a cached
//! route carries: `Portico; hit; ttl=42`, `Portico; fwd=uri-miss;
//! fwd-status=200; stored`, `Portico; fwd=stale; fwd-status=304; stored`,
//! with a `detail` token saying why a response was not stored or why a
//! stale one was served. Written as an RFC 8941 list member: the cache's
//! name as a token, parameters as tokens, integers and booleans.

use std::fmt::Write as _;

use http::HeaderValue;

/// The header's name.
pub const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

/// Why a request went upstream (RFC 9211 §2.2's `fwd` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The route's policy does not handle this request (an upgrade, a
    /// `Range` request, a node that stores nothing).
    Bypass,
    /// Its method is not cached.
    Method,
    /// Nothing stored for the key.
    UriMiss,
    /// Stored variants, none for this request's `Vary` values.
    VaryMiss,
    /// A stored response the request may not use (`Authorization`).
    Request,
    /// A stored response that had to be revalidated.
    Stale,
}

impl Fwd {
    fn token(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Method => "method",
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Request => "request",
            Self::Stale => "stale",
        }
    }
}

/// What the cache did for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    /// Answered from the cache without going upstream.
    pub hit: bool,
    pub fwd: Option<Fwd>,
    /// The upstream's status, when it answered.
    pub fwd_status: Option<u16>,
    /// Seconds of freshness left (negative: stale by that much).
    pub ttl: Option<i64>,
    pub stored: bool,
    /// Answered from another request's upstream fetch.
    pub collapsed: bool,
    /// A token: why not stored, or why stale was served.
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub fn hit(ttl: i64) -> Self {
        Self { hit: true, fwd: None, fwd_status: None, ttl: Some(ttl), stored: false, collapsed: false, detail: None }
    }

    pub fn forwarded(fwd: Fwd) -> Self {
        Self { hit: false, fwd: Some(fwd), fwd_status: None, ttl: None, stored: false, collapsed: false, detail: None }
    }

    /// An answer given before the cache was consulted (a refusal by
    /// authentication or a limit, a preflight, a redirect).
    pub fn not_consulted() -> Self {
        Self { hit: false, fwd: None, fwd_status: None, ttl: None, stored: false, collapsed: false, detail: Some("not-consulted") }
    }

    pub fn detail(self, detail: &'static str) -> Self {
        Self { detail: Some(detail), ..self }
    }

    pub fn value(&self) -> HeaderValue {
        let mut text = String::from("Portico");
        if self.hit {
            text.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(text, "; fwd={}", fwd.token());
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(text, "; fwd-status={status}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(text, "; ttl={ttl}");
        }
        if self.stored {
            text.push_str("; stored");
        }
        if self.collapsed {
            text.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            let _ = write!(text, "; detail={detail}");
        }
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("Portico"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_rfc_9211_says() {
        assert_eq!(CacheStatus::hit(42).value(), "Portico; hit; ttl=42");
        let stored = CacheStatus { fwd_status: Some(200), stored: true, ..CacheStatus::forwarded(Fwd::UriMiss) };
        assert_eq!(stored.value(), "Portico; fwd=uri-miss; fwd-status=200; stored");
        let refused = CacheStatus { fwd_status: Some(200), ..CacheStatus::forwarded(Fwd::VaryMiss) }.detail("set-cookie");
        assert_eq!(refused.value(), "Portico; fwd=vary-miss; fwd-status=200; detail=set-cookie");
        let stale = CacheStatus::hit(-3).detail("stale-while-revalidate");
        assert_eq!(stale.value(), "Portico; hit; ttl=-3; detail=stale-while-revalidate");
        assert_eq!(CacheStatus::not_consulted().value(), "Portico; detail=not-consulted");
    }
}
