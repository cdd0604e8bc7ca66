//! The `cors` policy as users write it, and its validation: which browser
//! origins may call a route, with which methods and request headers, which
//! response headers their scripts may read, and whether cookies and
//! `Authorization` go along (`credentials`).
//!
//! Origins are exact (`https://app.example.com`, `http://127.0.0.1:8080`) or
//! the single entry `*`. They are stored in the form browsers send in
//! `Origin` (lowercase scheme and host, no default port), so that matching
//! at request time is a set lookup: no pattern, no suffix match (the
//! unanchored-regex bypass of Kong #3832 has nothing to grow on), no
//! wildcard subdomains. `*` with `credentials` is refused, as browsers
//! refuse it; so is `null`, which any page can produce from a sandboxed
//! iframe. Only `http` and `https` origins are accepted. This module does
//! not answer requests: the data plane's `stage::cors` compiles a policy
//! into the headers it sends.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::Validate;
use crate::validate::rules::bounded;

/// Most entries in each of the policy's lists.
pub const MAX_ENTRIES: usize = 64;
/// Longest preflight caching a policy may ask of browsers (a day; Chromium
/// caps it at two hours anyway).
pub const MAX_AGE_S: u32 = 86_400;
/// Methods a `cors` policy may allow. `CONNECT`, `TRACE` and `TRACK` are
/// forbidden to scripts by the Fetch standard, so allowing them means nothing.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const FORBIDDEN_METHODS: [&str; 3] = ["CONNECT", "TRACE", "TRACK"];
const MAX_HEADER_NAME: usize = 128;
const MAX_ORIGIN: usize = 512;

/// Fields of the `cors` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins allowed to read responses: exact `scheme://host[:port]`
    /// (`https://app.example.com`, `http://localhost:3000`), or the single
    /// entry `*` (any origin, without credentials). Stored as browsers send
    /// them: lowercase, without the default port.
    pub origins: Vec<String>,
    /// Methods allowed on cross-origin requests (default `GET`, `HEAD`,
    /// `POST`); stored uppercase.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Request headers scripts may send (stored lowercase). Anything a
    /// preflight asks for that is not listed is refused; browsers ask for
    /// `content-type` when it is not a form type such as `application/json`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers scripts may read beyond the safelisted ones
    /// (`Cache-Control`, `Content-Type`, …); stored lowercase.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Let requests carry cookies and `Authorization`, and their responses
    /// be read (`Access-Control-Allow-Credentials: true`). Not with `*`.
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers may cache a preflight's answer, 0 to 86,400 seconds
    /// (default 600).
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u32,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(str::to_owned).to_vec()
}

fn default_max_age_s() -> u32 {
    600
}

impl CorsPolicy {
    /// Whether any origin may call (`origins` is `["*"]`).
    pub fn any_origin(&self) -> bool {
        self.origins.iter().any(|origin| origin == "*")
    }
}

impl Validate for CorsPolicy {
    /// Puts the policy in canonical form (normalized origins, uppercase
    /// methods, lowercase header names), then checks every field, reporting
    /// every error. Fields in errors are relative to the policy (`origins[1]`).
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        self.check_origins(&mut errors);
        self.check_methods(&mut errors);
        header_names("headers", &mut self.headers, &mut errors);
        header_names("expose_headers", &mut self.expose_headers, &mut errors);
        if self.max_age_s > MAX_AGE_S {
            errors.add(ConfigError::invalid("max_age_s", format!("must be 0 to {MAX_AGE_S}, got {}", self.max_age_s)));
        }
        errors.finish()
    }
}

impl CorsPolicy {
    fn check_origins(&mut self, errors: &mut Errors) {
        if self.origins.is_empty() {
            errors.add(ConfigError::invalid(
                "origins",
                "at least one origin is required (an exact origin such as https://app.example.com, or \"*\")",
            ));
            return;
        }
        if errors.check(bounded("origins", self.origins.len(), MAX_ENTRIES)).is_none() {
            return;
        }
        if let Some(i) = self.origins.iter().position(|origin| origin == "*") {
            // The other entries are not checked: with `*` they have no place.
            if self.origins.len() > 1 {
                errors.add(ConfigError::invalid(format!("origins[{i}]"), "\"*\" allows every origin and must be the only entry"));
            }
            if self.credentials {
                errors.add(ConfigError::invalid(
                    "credentials",
                    "browsers refuse credentialed responses allowed for any origin (\"*\"): list the origins that may send credentials",
                ));
            }
            return;
        }
        let mut seen = HashSet::new();
        for (i, origin) in self.origins.iter_mut().enumerate() {
            let field = format!("origins[{i}]");
            let Some(normalized) = normalize_origin(origin) else {
                errors.add(ConfigError::invalid(field, origin_problem(origin)));
                continue;
            };
            if !seen.insert(normalized.clone()) {
                errors.add(ConfigError::invalid(field, format!("'{origin}' is listed twice (as {normalized})")));
                continue;
            }
            *origin = normalized;
        }
    }

    fn check_methods(&mut self, errors: &mut Errors) {
        if errors.check(bounded("methods", self.methods.len(), MAX_ENTRIES)).is_none() {
            return;
        }
        if self.methods.is_empty() {
            errors.add(ConfigError::invalid("methods", "at least one method is required (leave the field out for GET, HEAD, POST)"));
            return;
        }
        let mut seen = HashSet::new();
        for (i, method) in self.methods.iter_mut().enumerate() {
            method.make_ascii_uppercase();
            let field = format!("methods[{i}]");
            if FORBIDDEN_METHODS.contains(&method.as_str()) {
                errors.add(ConfigError::invalid(
                    field,
                    format!("browsers never let scripts send {method} (a forbidden method in the Fetch standard)"),
                ));
            } else if !METHODS.contains(&method.as_str()) {
                errors.add(ConfigError::invalid(field, format!("must be one of {}", METHODS.join(", "))));
            } else if !seen.insert(method.clone()) {
                errors.add(ConfigError::invalid(field, format!("'{method}' is listed twice")));
            }
        }
    }
}

/// What is wrong with an origin that does not normalize, in words.
fn origin_problem(origin: &str) -> String {
    let expected = "expected an exact origin https://host[:port] (scheme, host and port only)";
    if origin.eq_ignore_ascii_case("null") {
        format!("'null' is not accepted: sandboxed iframes, file: pages and redirects all send it, so any site can; {expected}")
    } else if origin.contains('*') {
        format!("'{origin}': wildcard subdomains are not supported, list each origin; {expected}")
    } else if origin.len() > MAX_ORIGIN {
        format!("is longer than {MAX_ORIGIN} characters; {expected}")
    } else {
        format!("'{origin}' is not an origin: {expected}, without path, query, user or trailing slash")
    }
}

/// The origin in the form browsers send it (`https://example.com`,
/// `http://127.0.0.1:8080`, `http://[::1]:3000`): lowercase scheme and
/// host, the default port (80 for http, 443 for https) left out, IPv6 in
/// brackets in its shortest form. `None` for `null`, another scheme, a
/// path, query, fragment, user info, trailing slash, an internationalized
/// (non-ASCII) host, or anything else malformed.
pub fn normalize_origin(origin: &str) -> Option<String> {
    if origin.len() > MAX_ORIGIN {
        return None;
    }
    let (scheme, authority) = origin.split_once("://")?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => ("http", 80),
        "https" => ("https", 443),
        _ => return None,
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (address, rest) = bracketed.split_once(']')?;
        let address: Ipv6Addr = address.parse().ok()?;
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':')?),
        };
        (format!("[{}]", ipv6_serialized(address)), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        (domain_or_ipv4(host)?, port)
    };
    let port = match port {
        None => None,
        Some(digits) if !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().ok().filter(|port| *port != 0)?)
        }
        Some(_) => return None,
    };
    Some(match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// A lowercase DNS name (labels of letters, digits, `-`, `_`) or a dotted
/// IPv4 address; a host ending in a numeric label must be a whole IPv4
/// address (browsers would read `1.2.3` as one).
fn domain_or_ipv4(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    let labels_valid = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if !labels_valid {
        return None;
    }
    let last = host.rsplit('.').next()?;
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        return host.parse::<Ipv4Addr>().ok().map(|address| address.to_string());
    }
    Some(host)
}

/// An IPv6 address as the URL standard serializes it: lowercase hex
/// pieces, the first longest run of two or more zero pieces as `::`, and no
/// dotted IPv4 tail (unlike `Ipv6Addr`'s `Display` for mapped addresses).
fn ipv6_serialized(address: Ipv6Addr) -> String {
    let pieces = address.segments();
    let (mut best, mut run) = (None::<(usize, usize)>, None::<(usize, usize)>);
    for (i, piece) in pieces.iter().enumerate() {
        run = match (*piece == 0, run) {
            (true, Some((start, len))) => Some((start, len + 1)),
            (true, None) => Some((i, 1)),
            (false, _) => None,
        };
        if let Some((start, len)) = run
            && len >= 2
            && best.is_none_or(|(_, best_len)| len > best_len)
        {
            best = Some((start, len));
        }
    }
    let hex = |range: &[u16]| range.iter().map(|p| format!("{p:x}")).collect::<Vec<_>>().join(":");
    match best {
        Some((start, len)) => format!("{}::{}", hex(&pieces[..start]), hex(&pieces[start + len..])),
        None => hex(&pieces),
    }
}

/// Checks header names and stores them lowercase: valid tokens, no `*`
/// (scripts must be given names), no repeats.
fn header_names(field: &str, names: &mut [String], errors: &mut Errors) {
    if errors.check(bounded(field, names.len(), MAX_ENTRIES)).is_none() {
        return;
    }
    let mut seen = HashSet::new();
    for (i, name) in names.iter_mut().enumerate() {
        if name == "*" {
            errors.add(ConfigError::invalid(format!("{field}[{i}]"), "list the header names: a wildcard is not supported"));
        } else if name.is_empty() || name.len() > MAX_HEADER_NAME || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.add(ConfigError::invalid(format!("{field}[{i}]"), format!("'{name}' is not a valid header name")));
        } else {
            name.make_ascii_lowercase();
            if !seen.insert(name.clone()) {
                errors.add(ConfigError::invalid(format!("{field}[{i}]"), format!("'{name}' is listed twice")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> CorsPolicy {
        serde_json::from_value(json).unwrap()
    }

    /// The field and message of the error `json` gets.
    fn refused(json: serde_json::Value) -> (String, String) {
        let errors = policy(json.clone()).normalize_and_validate().expect_err(&json.to_string());
        assert_eq!(errors.as_slice().len(), 1, "{json}: one mistake, one error: {errors}");
        (errors.first().field().to_owned(), errors.first().message().to_owned())
    }

    #[test]
    fn origins_normalize_to_what_browsers_send() {
        let cases = [
            ("HTTPS://Example.COM:443", "https://example.com"),
            ("https://example.com", "https://example.com"),
            ("http://example.com:80", "http://example.com"),
            ("http://example.com:443", "http://example.com:443"),
            ("https://example.com:80", "https://example.com:80"),
            ("https://example.com:8443", "https://example.com:8443"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("https://[2001:DB8:0:0:0:0:0:1]", "https://[2001:db8::1]"),
            ("http://[0:0:0:0:0:ffff:c000:280]", "http://[::ffff:c000:280]"),
            ("https://my_host.internal", "https://my_host.internal"),
        ];
        for (written, sent) in cases {
            assert_eq!(normalize_origin(written).as_deref(), Some(sent), "{written}");
        }
    }

    #[test]
    fn origins_that_look_alike_stay_different() {
        let example = normalize_origin("https://example.com");
        for other in ["https://example.com.evil.io", "https://evil-example.com", "http://example.com", "https://example.com:8443"] {
            assert_ne!(normalize_origin(other), example, "{other}");
        }
    }

    #[test]
    fn anything_but_scheme_host_and_port_is_not_an_origin() {
        let malformed = [
            "null",
            "example.com",
            "https://example.com/",
            "https://example.com/app",
            "https://example.com?x=1",
            "https://example.com#top",
            "https://user@example.com",
            "https://user:pass@example.com",
            "https://example.com:",
            "https://example.com:0",
            "https://example.com:65536",
            "https://example.com:+80",
            "https://example.com.",
            "https://exa mple.com",
            "https://-example.com",
            "https://*.example.com",
            "https://bücher.example",
            "ftp://example.com",
            "file://",
            "https://",
            "https://1.2.3",
            "https://[::1",
            "https://[::1]x",
            "https://[not-v6]",
            "https://256.0.0.1",
        ];
        for origin in malformed {
            assert_eq!(normalize_origin(origin), None, "{origin}");
        }
    }

    #[test]
    fn fills_defaults_and_stores_the_canonical_form() {
        let mut p = policy(serde_json::json!({
            "origins": ["HTTPS://App.Example.com:443", "http://localhost:3000"],
            "headers": ["X-Api-Key", "Content-Type"],
            "expose_headers": ["X-Request-Id"],
            "methods": ["get", "Put"],
        }));
        p.normalize_and_validate().unwrap();
        assert_eq!(p.origins, ["https://app.example.com", "http://localhost:3000"]);
        assert_eq!(p.methods, ["GET", "PUT"]);
        assert_eq!(p.headers, ["x-api-key", "content-type"]);
        assert_eq!(p.expose_headers, ["x-request-id"]);
        let defaults = policy(serde_json::json!({"origins": ["*"]}));
        assert_eq!(defaults.methods, ["GET", "HEAD", "POST"]);
        assert_eq!((defaults.max_age_s, defaults.credentials), (600, false));
        let mut any = defaults.clone();
        any.normalize_and_validate().unwrap();
        assert!(any.any_origin());
    }

    #[test]
    fn refuses_unknown_fields() {
        assert!(serde_json::from_value::<CorsPolicy>(serde_json::json!({"origins": ["*"], "origin": "x"})).is_err());
        assert!(serde_json::from_value::<CorsPolicy>(serde_json::json!({"methods": ["GET"]})).is_err(), "origins is required");
    }

    #[test]
    fn each_refusal_names_its_field() {
        use serde_json::json;
        let many: Vec<String> = (0..65).map(|i| format!("https://a{i}.example.com")).collect();
        let cases = [
            (json!({"origins": []}), "origins", "at least one origin"),
            (json!({"origins": many}), "origins", "at most 64"),
            (json!({"origins": ["https://a.example.com", "*"]}), "origins[1]", "must be the only entry"),
            (json!({"origins": ["*", "https://a.example.com"]}), "origins[0]", "must be the only entry"),
            (json!({"origins": ["*"], "credentials": true}), "credentials", "browsers refuse"),
            (json!({"origins": ["https://a.example.com", "https://*.example.com"]}), "origins[1]", "wildcard subdomains are not supported"),
            (json!({"origins": ["https://a.example.com/app"]}), "origins[0]", "https://host[:port]"),
            (json!({"origins": ["https://a.example.com/"]}), "origins[0]", "'https://a.example.com/'"),
            (json!({"origins": ["https://user@a.example.com"]}), "origins[0]", "https://host[:port]"),
            (json!({"origins": ["null"]}), "origins[0]", "any site can"),
            (json!({"origins": ["https://a.example.com", "HTTPS://A.example.com:443"]}), "origins[1]", "listed twice"),
            (json!({"origins": ["*"], "methods": []}), "methods", "at least one method"),
            (json!({"origins": ["*"], "methods": ["GET", "FETCH"]}), "methods[1]", "must be one of"),
            (json!({"origins": ["*"], "methods": ["trace"]}), "methods[0]", "forbidden method"),
            (json!({"origins": ["*"], "methods": ["GET", "get"]}), "methods[1]", "listed twice"),
            (json!({"origins": ["*"], "headers": ["x-ok", "bad header"]}), "headers[1]", "not a valid header name"),
            (json!({"origins": ["*"], "headers": ["*"]}), "headers[0]", "wildcard"),
            (json!({"origins": ["*"], "headers": ["X-Key", "x-key"]}), "headers[1]", "listed twice"),
            (json!({"origins": ["*"], "expose_headers": ["x:y"]}), "expose_headers[0]", "not a valid header name"),
            (json!({"origins": ["*"], "max_age_s": 86_401}), "max_age_s", "0 to 86400"),
        ];
        for (json, field, words) in cases {
            let (got_field, message) = refused(json.clone());
            assert_eq!(got_field, field, "{json}: {message}");
            assert!(message.contains(words), "{json}: '{message}' should say '{words}'");
        }
        let (_, message) = refused(json!({"origins": ["https://a.example.com/app"]}));
        assert!(message.contains("'https://a.example.com/app'"), "names the origin: {message}");
    }

    proptest::proptest! {
        /// A normalized origin normalizes to itself, and neither case nor an
        /// explicit default port changes it: matching a request's `Origin`
        /// against stored ones is then plain string equality.
        #[test]
        fn normalizing_is_idempotent_and_case_and_default_port_blind(
            scheme in "(?i)https?",
            host in "[a-zA-Z0-9]{1,8}(\\.[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?",
            port in proptest::option::of(1u16..),
        ) {
            let written = match port {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            };
            let normalized = normalize_origin(&written);
            if let Some(normalized) = &normalized {
                proptest::prop_assert_eq!(normalize_origin(normalized), Some(normalized.clone()));
                proptest::prop_assert_eq!(normalized.clone(), normalized.to_ascii_lowercase());
            }
            let default_port = if scheme.eq_ignore_ascii_case("http") { 80 } else { 443 };
            let explicit = format!("{}://{}:{default_port}", scheme.to_ascii_uppercase(), host.to_ascii_uppercase());
            proptest::prop_assert_eq!(normalize_origin(&explicit), normalize_origin(&format!("{scheme}://{host}")));
        }

        #[test]
        fn never_panics_on_any_input(origin in "\\PC{0,60}") {
            let _ = normalize_origin(&origin);
        }
    }

    #[test]
    fn reports_every_independent_mistake_at_once() {
        let errors = policy(serde_json::json!({
            "origins": ["https://a.example.com/app", "https://b.example.com", "HTTPS://B.example.com:443", "null"],
            "methods": ["get", "TRACE", "fetch", "GET"],
            "headers": ["*", "X-Key", "x-key"],
            "expose_headers": ["x:y"],
            "max_age_s": 100_000,
        }))
        .normalize_and_validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(
            fields,
            [
                "origins[0]",
                "origins[2]",
                "origins[3]",
                "methods[1]",
                "methods[2]",
                "methods[3]",
                "headers[0]",
                "headers[2]",
                "expose_headers[0]",
                "max_age_s"
            ]
        );
        assert!(errors.as_slice()[1].message().contains("listed twice (as https://b.example.com)"), "{errors}");
        assert!(errors.as_slice()[5].message().contains("'GET' is listed twice"), "{errors}");
    }

    #[test]
    fn a_lone_wildcard_with_credentials_and_another_origin_gets_both_errors() {
        let errors = policy(serde_json::json!({"origins": ["*", "https://a.example.com"], "credentials": true}))
            .normalize_and_validate()
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["origins[0]", "credentials"]);
    }

    #[test]
    fn allows_a_day_of_preflight_caching_at_most() {
        let mut p = policy(serde_json::json!({"origins": ["*"], "max_age_s": 86_400}));
        assert_eq!(p.normalize_and_validate(), Ok(()));
        let mut p = policy(serde_json::json!({"origins": ["*"], "max_age_s": 0}));
        assert_eq!(p.normalize_and_validate(), Ok(()));
    }
}
