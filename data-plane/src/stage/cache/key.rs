//! The cache key: what tells two requests apart. Every part is written
//! with its length in front (and absent parts marked as absent) before
//! the whole is hashed with SHA-256, so no path, query or header value,
//! however crafted, can spell another request's key (APISIX's key
//! injection, fixed by its PR #13831, grew from joined parts). The query
//! is taken as the policy says; with `sorted`, `none` or an allow-list the
//! upstream is sent the same normalized query, so an entry never holds
//! an answer to a query its key does not.

use std::borrow::Cow;

use portico_shared::model::policy::cache::QueryKey;
use sha2::{Digest, Sha256};

/// A stored resource's identity: the SHA-256 of its key's parts.
pub type Key = [u8; 32];

/// The parts of one request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts<'a> {
    /// The route and its cache policy ([`super::CacheStage`]'s scope).
    pub scope: &'a [u8; 32],
    pub method: &'a str,
    /// The host the client asked for, as routes see it.
    pub host: &'a str,
    /// The client's normalized path.
    pub path: &'a str,
    /// The query as the policy takes it ([`normalize_query`]).
    pub query: Option<&'a str>,
    /// The upstream target, when a request transform rewrote it; for an
    /// aggregate, the request values its calls read.
    pub target: Option<&'a str>,
    /// Chosen request headers, by name, with every line's value (none when absent).
    pub headers: Vec<(&'a str, Vec<&'a [u8]>)>,
    /// The authenticated consumer, when the key is per consumer.
    pub consumer: Option<&'a str>,
    /// The request-transform profile that shaped the upstream request.
    pub profile: Option<usize>,
}

impl KeyParts<'_> {
    /// The key's unambiguous byte form: each part length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(self.scope);
        for part in [Some(self.method.as_bytes()), Some(self.host.as_bytes()), Some(self.path.as_bytes())] {
            optional(&mut out, part);
        }
        optional(&mut out, self.query.map(str::as_bytes));
        optional(&mut out, self.target.map(str::as_bytes));
        length(&mut out, self.headers.len());
        for (name, values) in &self.headers {
            bytes(&mut out, name.as_bytes());
            length(&mut out, values.len());
            for value in values {
                bytes(&mut out, value);
            }
        }
        optional(&mut out, self.consumer.map(str::as_bytes));
        let profile = self.profile.map(|index| u64::try_from(index).unwrap_or(u64::MAX).to_be_bytes());
        optional(&mut out, profile.as_ref().map(|index| &index[..]));
        out
    }

    pub fn digest(&self) -> Key {
        Sha256::digest(self.encode()).into()
    }
}

fn length(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u64::try_from(len).unwrap_or(u64::MAX).to_be_bytes());
}

fn bytes(out: &mut Vec<u8>, part: &[u8]) {
    length(out, part.len());
    out.extend_from_slice(part);
}

fn optional(out: &mut Vec<u8>, part: Option<&[u8]>) {
    match part {
        None => out.push(0),
        Some(part) => {
            out.push(1);
            bytes(out, part);
        }
    }
}

/// The query as `rule` takes it: `all` as sent; `sorted` with parameters
/// ordered by name (parameters of one name keep their order, which can
/// matter upstream); `none` dropped; an allow-list with only the listed
/// names (compared decoded, so `pa%67e` is `page`), ordered like `sorted`.
/// `None` when nothing is left.
pub fn normalize_query<'q>(rule: &QueryKey, query: Option<&'q str>) -> Option<Cow<'q, str>> {
    let query = query?;
    let keep = |pair: &&str| -> bool {
        match rule {
            QueryKey::Allow(names) => names.binary_search_by(|name| name.as_str().cmp(&decoded_name(pair))).is_ok(),
            _ => !pair.is_empty(),
        }
    };
    match rule {
        QueryKey::All => Some(Cow::Borrowed(query)),
        QueryKey::None => None,
        QueryKey::Sorted | QueryKey::Allow(_) => {
            let mut pairs: Vec<&str> = query.split('&').filter(keep).collect();
            if pairs.is_empty() {
                return None;
            }
            pairs.sort_by(|a, b| raw_name(a).cmp(raw_name(b)));
            Some(Cow::Owned(pairs.join("&")))
        }
    }
}

fn raw_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

/// A parameter's name as frameworks read it (`+` is a space, `%xx` decoded).
fn decoded_name(pair: &str) -> Cow<'_, str> {
    let name = raw_name(pair);
    if !name.contains(['%', '+']) {
        return Cow::Borrowed(name);
    }
    let spaced = name.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SCOPE: [u8; 32] = [7; 32];

    #[test]
    fn queries_are_taken_as_the_policy_says() {
        let q = Some("b=2&a=1&b=1&&c");
        assert_eq!(normalize_query(&QueryKey::All, q).as_deref(), q);
        assert_eq!(normalize_query(&QueryKey::Sorted, q).as_deref(), Some("a=1&b=2&b=1&c"), "same names keep their order");
        assert_eq!(normalize_query(&QueryKey::None, q), None);
        let allow = QueryKey::Allow(vec!["b".into(), "page".into()]);
        assert_eq!(normalize_query(&allow, q).as_deref(), Some("b=2&b=1"));
        assert_eq!(normalize_query(&allow, Some("pa%67e=3&x=1")).as_deref(), Some("pa%67e=3"), "names compare decoded");
        assert_eq!(normalize_query(&allow, Some("x=1")), None);
        assert_eq!(normalize_query(&QueryKey::Sorted, None), None);
    }

    #[test]
    fn joined_parts_that_read_alike_are_different_keys() {
        let base = KeyParts {
            scope: &SCOPE,
            method: "GET",
            host: "h",
            path: "/a",
            query: Some("x=1"),
            target: None,
            headers: vec![],
            consumer: None,
            profile: None,
        };
        let shifted = KeyParts { path: "/a?x=1", query: None, ..base.clone() };
        let header_split = KeyParts { headers: vec![("accept", vec![b"a, b"])], ..base.clone() };
        let header_lines = KeyParts { headers: vec![("accept", vec![b"a", b" b"])], ..base.clone() };
        let consumer = KeyParts { consumer: Some(""), ..base.clone() };
        let profile = KeyParts { profile: Some(0), ..base.clone() };
        let keys = [&base, &shifted, &header_split, &header_lines, &consumer, &profile].map(KeyParts::digest);
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    fn text() -> impl Strategy<Value = String> {
        // Few, delimiter-rich characters, so that naive joins would collide often.
        proptest::string::string_regex("[a/=&:?\\x00 ,]{0,4}").unwrap()
    }

    /// Host, path, query, target, headers and consumer of a request.
    type Owned = (String, String, Option<String>, Option<String>, Vec<(String, Vec<String>)>, Option<String>);

    fn parts() -> impl Strategy<Value = Owned> {
        (
            text(),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::collection::vec((text(), proptest::collection::vec(text(), 0..3)), 0..3),
            proptest::option::of(text()),
        )
    }

    fn key(p: &Owned) -> Vec<u8> {
        KeyParts {
            scope: &SCOPE,
            method: "GET",
            host: &p.0,
            path: &p.1,
            query: p.2.as_deref(),
            target: p.3.as_deref(),
            headers: p.4.iter().map(|(n, v)| (n.as_str(), v.iter().map(String::as_bytes).collect())).collect(),
            consumer: p.5.as_deref(),
            profile: None,
        }
        .encode()
    }

    proptest! {
        #[test]
        fn no_two_distinct_requests_share_a_key(a in parts(), b in parts()) {
            prop_assert_eq!(key(&a) == key(&b), a == b);
        }

        #[test]
        fn sorting_never_merges_queries_with_different_parameters(a in "[ab=&]{0,8}", b in "[ab=&]{0,8}") {
            let (na, nb) = (normalize_query(&QueryKey::Sorted, Some(&a)), normalize_query(&QueryKey::Sorted, Some(&b)));
            fn multiset(q: &str) -> Vec<&str> {
                let mut pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
                pairs.sort_unstable();
                pairs
            }
            if na == nb {
                prop_assert_eq!(multiset(&a), multiset(&b));
            }
        }
    }
}
