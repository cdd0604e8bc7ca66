//! RFC 9111 arithmetic: whether a shared cache may store a response
//! (§3, §3.5), how long it stays fresh (§4.2.1: `s-maxage` over `max-age`
//! over `Expires`, then the policy's TTL, then heuristics only when asked),
//! its age (§4.2.3), and how long it may be served stale (RFC 5861's
//! `stale-while-revalidate` and `stale-if-error`: `must-revalidate` and
//! `no-cache` forbid both; `proxy-revalidate` and `s-maxage`, which
//! implies it, let only the response's own windows through, not the
//! policy's). Pure functions over headers and times.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};

/// Longest freshness or stale window honoured (RFC 9111 §1.2.2's 2^31
/// seconds is more than anyone means; a year is the policy's own bound).
const MAX_DELTA: Duration = Duration::from_secs(31_536_000);
/// Longest heuristic freshness.
const MAX_HEURISTIC: Duration = Duration::from_secs(86_400);

/// The `Cache-Control` directives a shared cache acts on, from every
/// `Cache-Control` line of a response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    /// `no-cache`, qualified or not (a qualified one is taken whole: safer).
    pub no_cache: bool,
    /// `private`, qualified or not.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub s_maxage: Option<Duration>,
    pub max_age: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
}

impl Directives {
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut directives = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            for (name, argument) in split_directives(value.as_bytes()) {
                directives.add(&name, argument.as_deref());
            }
        }
        directives
    }

    fn add(&mut self, name: &str, argument: Option<&str>) {
        // An invalid number makes the response stale (§4.2.1); a repeated
        // directive keeps its smallest value.
        let seconds = || Some(argument.and_then(delta_seconds).unwrap_or(Duration::ZERO));
        let least = |current: Option<Duration>, new: Option<Duration>| match (current, new) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "s-maxage" => self.s_maxage = least(self.s_maxage, seconds()),
            "max-age" => self.max_age = least(self.max_age, seconds()),
            "stale-while-revalidate" => self.stale_while_revalidate = least(self.stale_while_revalidate, seconds()),
            "stale-if-error" => self.stale_if_error = least(self.stale_if_error, seconds()),
            _ => {}
        }
    }
}

/// `name[=value]` pairs of one `Cache-Control` line: names lowercase,
/// quoted values unquoted, commas inside quotes kept.
fn split_directives(line: &[u8]) -> Vec<(String, Option<String>)> {
    let mut directives = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let mut quoted = false;
        let end = rest
            .iter()
            .position(|&b| {
                if b == b'"' {
                    quoted = !quoted;
                }
                b == b',' && !quoted
            })
            .unwrap_or(rest.len());
        let item = String::from_utf8_lossy(&rest[..end]);
        rest = rest.get(end + 1..).unwrap_or_default();
        let (name, argument) = match item.split_once('=') {
            Some((name, argument)) => (name, Some(argument.trim().trim_matches('"').to_owned())),
            None => (&*item, None),
        };
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() {
            directives.push((name, argument));
        }
    }
    directives
}

fn delta_seconds(text: &str) -> Option<Duration> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Overflow means "very long" (§1.2.2), which the cap makes a year.
    Some(text.parse::<u64>().map_or(MAX_DELTA, Duration::from_secs).min(MAX_DELTA))
}

/// A date header's time, if it is an HTTP date.
pub fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

/// What the policy says where the response is silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Freshness of a response of this status that gives none.
    pub ttl: Option<Duration>,
    pub heuristic: bool,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// How a stored response ages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// Fresh for this long from age zero.
    pub lifetime: Duration,
    /// Age when stored (§4.2.3's `corrected_initial_age`).
    pub initial_age: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// It may answer a request that carries `Authorization` (§3.5:
    /// `public`, `s-maxage` or `must-revalidate`).
    pub answers_authorized: bool,
}

/// Why a response is not stored (the `detail` of its `Cache-Status`).
pub type Refusal = &'static str;

/// Whether a shared cache may store `headers` (a response to a request
/// sent at `requested` and answered at `received`), and how it then ages.
/// `authorized`: the request carried `Authorization`. `validators`: the
/// response has `ETag` or `Last-Modified`, so an expired copy can still be
/// revalidated.
pub fn assess(
    headers: &HeaderMap,
    authorized: bool,
    defaults: &Defaults,
    requested: SystemTime,
    received: SystemTime,
) -> Result<Freshness, Refusal> {
    let directives = Directives::parse(headers);
    if directives.no_store {
        return Err("no-store");
    }
    if directives.private {
        return Err("private");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    let answers_authorized = directives.public || directives.s_maxage.is_some() || directives.must_revalidate;
    if authorized && !answers_authorized {
        return Err("authorization");
    }
    let date = http_date(headers, header::DATE).unwrap_or(received);
    let explicit = directives.s_maxage.or(directives.max_age).or_else(|| {
        // An invalid `Expires` (such as `0`) means already expired.
        headers
            .get(header::EXPIRES)
            .map(|_| http_date(headers, header::EXPIRES).and_then(|at| at.duration_since(date).ok()).unwrap_or_default())
    });
    let heuristic = || {
        let modified = http_date(headers, header::LAST_MODIFIED)?;
        Some((date.duration_since(modified).ok()? / 10).min(MAX_HEURISTIC))
    };
    let lifetime = if directives.no_cache {
        Some(Duration::ZERO)
    } else {
        explicit.or(defaults.ttl).or_else(|| defaults.heuristic.then(heuristic).flatten())
    };
    let Some(lifetime) = lifetime else { return Err("no-freshness") };
    // The policy's stale windows stand in for the response's own, but not
    // against `proxy-revalidate` or `s-maxage` (which implies it,
    // §5.2.2.10): only the origin's own stale windows then apply.
    let revalidate_when_shared = directives.proxy_revalidate || directives.s_maxage.is_some();
    let policy_stale = |window: Duration| if revalidate_when_shared { Duration::ZERO } else { window };
    let (stale_while_revalidate, stale_if_error) = if directives.must_revalidate || directives.no_cache {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            directives.stale_while_revalidate.unwrap_or_else(|| policy_stale(defaults.stale_while_revalidate)),
            directives.stale_if_error.unwrap_or_else(|| policy_stale(defaults.stale_if_error)),
        )
    };
    let validators = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    if lifetime.is_zero() && stale_while_revalidate.is_zero() && stale_if_error.is_zero() && !validators {
        return Err(if directives.no_cache { "no-cache" } else { "stale" });
    }
    Ok(Freshness {
        lifetime,
        initial_age: initial_age(headers, date, requested, received),
        stale_while_revalidate,
        stale_if_error,
        answers_authorized,
    })
}

/// §4.2.3: the larger of the age the `Date` shows and the `Age` the
/// response carries plus the time it took to arrive.
fn initial_age(headers: &HeaderMap, date: SystemTime, requested: SystemTime, received: SystemTime) -> Duration {
    let apparent = received.duration_since(date).unwrap_or_default();
    let age = headers.get(header::AGE).and_then(|v| delta_seconds(v.to_str().ok()?.trim())).unwrap_or_default();
    let delay = received.duration_since(requested).unwrap_or_default();
    apparent.max(age + delay)
}

/// Where a stored response stands at some age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Fresh for this much longer.
    Fresh(Duration),
    /// Stale by this much, within `stale-while-revalidate`: serve it and
    /// refresh it in the background.
    ServeWhileRevalidating(Duration),
    /// Stale by this much: it needs a conditional request (or may stand
    /// in for an error while within `stale-if-error`).
    Stale(Duration),
}

impl Freshness {
    pub fn standing(&self, age: Duration) -> Standing {
        match age.checked_sub(self.lifetime) {
            None => Standing::Fresh(self.lifetime - age),
            Some(stale) if !stale.is_zero() && stale < self.stale_while_revalidate => Standing::ServeWhileRevalidating(stale),
            Some(stale) => Standing::Stale(stale),
        }
    }

    /// Whether, stale by `stale`, it may stand in for an upstream error.
    pub fn covers_error(&self, stale: Duration) -> bool {
        stale < self.stale_if_error
    }

    /// How long after storing it can still be of use: while fresh, stale
    /// but servable, or (with validators) as long again as it was fresh,
    /// at least a minute, for a conditional request.
    pub fn useful_for(&self, validators: bool) -> Duration {
        let keep = if validators { self.lifetime.clamp(Duration::from_secs(60), MAX_HEURISTIC) } else { Duration::ZERO };
        (self.lifetime + self.stale_while_revalidate.max(self.stale_if_error).max(keep)).saturating_sub(self.initial_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const NONE: Defaults = Defaults { ttl: None, heuristic: false, stale_while_revalidate: Duration::ZERO, stale_if_error: Duration::ZERO };

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(at(seconds))
    }

    fn assess_now(pairs: &[(&'static str, &str)], authorized: bool, defaults: &Defaults) -> Result<Freshness, Refusal> {
        assess(&headers(pairs), authorized, defaults, at(0), at(0))
    }

    #[test]
    fn s_maxage_wins_over_max_age_which_wins_over_expires() {
        let d = date(0);
        let f = assess_now(&[("cache-control", "max-age=60, s-maxage=30"), ("date", &d), ("expires", &date(600))], false, &NONE).unwrap();
        assert_eq!(f.lifetime, Duration::from_secs(30));
        let f = assess_now(&[("cache-control", "max-age=60"), ("date", &d), ("expires", &date(600))], false, &NONE).unwrap();
        assert_eq!(f.lifetime, Duration::from_secs(60));
        let f = assess_now(&[("date", &d), ("expires", &date(600))], false, &NONE).unwrap();
        assert_eq!(f.lifetime, Duration::from_secs(600));
    }

    #[test]
    fn directives_split_over_lines_and_quotes_count_once() {
        let d = Directives::parse(&headers(&[
            ("cache-control", "public, no-cache=\"set-cookie, x-a\""),
            ("cache-control", "MAX-AGE=90, max-age=30"),
        ]));
        assert!(d.public && d.no_cache && !d.private);
        assert_eq!(d.max_age, Some(Duration::from_secs(30)), "the smaller of two");
        assert_eq!(Directives::parse(&headers(&[("cache-control", "max-age=abc")])).max_age, Some(Duration::ZERO));
        assert_eq!(Directives::parse(&headers(&[("cache-control", "max-age=99999999999999999999")])).max_age, Some(MAX_DELTA));
    }

    #[test]
    fn shared_caches_refuse_what_rfc_9111_forbids() {
        for (pairs, why) in [
            (vec![("cache-control", "no-store, max-age=60")], "no-store"),
            (vec![("cache-control", "private, max-age=60")], "private"),
            (vec![("cache-control", "max-age=60"), ("set-cookie", "a=b")], "set-cookie"),
            (vec![("content-type", "text/plain")], "no-freshness"),
            (vec![("cache-control", "no-cache")], "no-cache"),
            (vec![("expires", "0")], "stale"),
        ] {
            assert_eq!(assess_now(&pairs, false, &NONE).unwrap_err(), why, "{pairs:?}");
        }
    }

    #[test]
    fn authorized_requests_need_public_s_maxage_or_must_revalidate() {
        assert_eq!(assess_now(&[("cache-control", "max-age=60")], true, &NONE).unwrap_err(), "authorization");
        for allowing in ["public, max-age=60", "s-maxage=60", "max-age=60, must-revalidate"] {
            assert!(assess_now(&[("cache-control", allowing)], true, &NONE).unwrap().answers_authorized, "{allowing}");
        }
        assert!(!assess_now(&[("cache-control", "max-age=60")], false, &NONE).unwrap().answers_authorized);
        assert_eq!(
            assess_now(&[("cache-control", "max-age=60, proxy-revalidate")], true, &NONE).unwrap_err(),
            "authorization",
            "proxy-revalidate is not in §3.5's list"
        );
    }

    #[test]
    fn the_policy_fills_in_only_where_the_response_is_silent() {
        let policy = Defaults { ttl: Some(Duration::from_secs(5)), ..NONE };
        assert_eq!(assess_now(&[], false, &policy).unwrap().lifetime, Duration::from_secs(5));
        assert_eq!(assess_now(&[("cache-control", "max-age=60")], false, &policy).unwrap().lifetime, Duration::from_secs(60));
        let heuristic = Defaults { heuristic: true, ..NONE };
        let f = assess_now(&[("date", &date(1000)), ("last-modified", &date(0))], false, &heuristic).unwrap();
        assert_eq!(f.lifetime, Duration::from_secs(100), "a tenth of the time since Last-Modified");
        assert_eq!(assess_now(&[("date", &date(1000)), ("last-modified", &date(0))], false, &NONE).unwrap_err(), "no-freshness");
    }

    #[test]
    fn age_is_the_larger_of_date_and_age_header_plus_delay() {
        let f =
            assess(&headers(&[("cache-control", "max-age=60"), ("date", &date(0)), ("age", "10")]), false, &NONE, at(0), at(3)).unwrap();
        assert_eq!(f.initial_age, Duration::from_secs(13), "Age 10 plus 3 s in flight beats a Date 3 s old");
        let f = assess(&headers(&[("cache-control", "max-age=60"), ("date", &date(0))]), false, &NONE, at(19), at(20)).unwrap();
        assert_eq!(f.initial_age, Duration::from_secs(20));
        assert_eq!(f.standing(f.initial_age), Standing::Fresh(Duration::from_secs(40)));
    }

    #[test]
    fn stale_windows_come_from_the_response_then_the_policy_and_must_revalidate_forbids_them() {
        let policy = Defaults { stale_while_revalidate: Duration::from_secs(30), stale_if_error: Duration::from_secs(300), ..NONE };
        let f = assess_now(&[("cache-control", "max-age=10, stale-while-revalidate=5")], false, &policy).unwrap();
        assert_eq!((f.stale_while_revalidate, f.stale_if_error), (Duration::from_secs(5), Duration::from_secs(300)));
        assert_eq!(f.standing(Duration::from_secs(12)), Standing::ServeWhileRevalidating(Duration::from_secs(2)));
        assert_eq!(f.standing(Duration::from_secs(16)), Standing::Stale(Duration::from_secs(6)));
        assert!(f.covers_error(Duration::from_secs(299)) && !f.covers_error(Duration::from_secs(300)));
        let strict = assess_now(&[("cache-control", "max-age=10, must-revalidate, stale-if-error=60")], false, &policy).unwrap();
        assert_eq!((strict.stale_while_revalidate, strict.stale_if_error), (Duration::ZERO, Duration::ZERO));
        for shared in ["s-maxage=10", "max-age=10, proxy-revalidate"] {
            let f = assess_now(&[("cache-control", shared)], false, &policy).unwrap();
            assert_eq!(f.stale_if_error, Duration::ZERO, "{shared} forbids the policy's stale windows");
            let own = assess_now(&[("cache-control", &format!("{shared}, stale-if-error=20"))], false, &policy).unwrap();
            assert_eq!(own.stale_if_error, Duration::from_secs(20), "{shared}: the response's own window stands");
        }
    }

    #[test]
    fn no_cache_with_a_validator_is_stored_but_always_revalidated() {
        let f = assess_now(&[("cache-control", "no-cache"), ("etag", "\"v1\"")], false, &NONE).unwrap();
        assert_eq!(f.standing(Duration::ZERO), Standing::Stale(Duration::ZERO));
        assert_eq!(f.useful_for(true), Duration::from_secs(60));
    }
}
