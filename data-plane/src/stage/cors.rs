//! The `cors` stage: answers browsers' preflights itself and puts the
//! policy's `Access-Control-*` headers on actual responses, the upstream's
//! and the gateway's own (`401`, `403`, `429`, `5xx`) alike, so that a
//! script can read why it was refused (Kong #1424).
//!
//! What it beats, from other gateways' trackers:
//! - a preflight is answered here, never forwarded: the upstream sees no
//!   `OPTIONS` (Envoy's `forward_not_matching_preflights`), and the caller
//!   places this before authentication (Kong #852, envoyproxy/gateway #2312);
//! - origins match exactly, against the set validation stored in the form
//!   browsers send (`https://example.com.evil.io` is not
//!   `https://example.com`; no unanchored patterns, Kong #3832);
//! - request headers allowed are the configured ones, never the reflected
//!   `Access-Control-Request-Headers`; `Access-Control-Allow-Methods` is
//!   always sent (Envoy #37533);
//! - the upstream's own CORS headers are replaced, so a response carries
//!   exactly one `Access-Control-Allow-Origin` (KrakenD #946);
//! - `Vary: Origin` is appended to the upstream's `Vary`, never written over
//!   it, never twice, and left out with `*` where the answer does not vary
//!   (Kong #4782, PR #8401).
//!
//! A refused preflight (origin, method or a header not allowed) is still
//! answered `204`, only without any `Access-Control-Allow-*` header: the
//! browser then refuses the call exactly as it would for a `403` (a script
//! never sees a failed preflight's status), while the answer stays a
//! success for access logs and error-rate alerts that would otherwise count
//! every foreign page's probe as a client error. Why it was refused goes
//! to the debug log.
//!
//! It does not route, authenticate or decide whether a request is allowed
//! to reach the upstream: CORS only tells browsers what a page may read.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use portico_shared::model::policy::cors::{CorsPolicy, normalize_origin};
use std::collections::HashMap;

use crate::body::ResponseBody;

const PREFLIGHT_VARY: HeaderValue = HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// A `cors` policy compiled for one config version.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    credentials: bool,
    /// Allowed methods, as sent in `Access-Control-Request-Method` (exact, case-sensitive).
    methods: Vec<String>,
    /// Allowed request headers, lowercase.
    headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

#[derive(Debug, Clone)]
enum Origins {
    /// `*` without credentials: the same answer for every origin.
    Any,
    /// Normalized origin → the `Access-Control-Allow-Origin` value echoing it.
    Exact(HashMap<String, HeaderValue>),
}

/// Why a preflight gets no `Access-Control-Allow-*` headers.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("origin not allowed")]
    Origin,
    #[error("method not allowed")]
    Method,
    #[error("request header {0:?} not allowed")]
    Header(String),
}

impl Cors {
    /// Compiles a policy that passed `normalize_and_validate`. A `*` policy
    /// asking for credentials (which validation refuses) compiles without
    /// them, as browsers would treat it: never reflecting any origin.
    pub fn compile(policy: &CorsPolicy) -> Self {
        let origins = if policy.any_origin() {
            Origins::Any
        } else {
            let echo = |origin: &String| Some((origin.clone(), HeaderValue::from_str(origin).ok()?));
            Origins::Exact(policy.origins.iter().filter_map(echo).collect())
        };
        let credentials = policy.credentials && matches!(origins, Origins::Exact(_));
        let list = |items: &[String]| (!items.is_empty()).then(|| HeaderValue::from_str(&items.join(", ")).ok()).flatten();
        Self {
            credentials,
            methods: policy.methods.clone(),
            headers: policy.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            allow_methods: list(&policy.methods).unwrap_or(HeaderValue::from_static("GET, HEAD, POST")),
            allow_headers: list(&policy.headers),
            expose_headers: list(&policy.expose_headers),
            max_age: HeaderValue::from(policy.max_age_s),
            origins,
        }
    }

    /// Strict preflight detection: `OPTIONS` with both `Origin` and
    /// `Access-Control-Request-Method`. Any other `OPTIONS` is an actual
    /// request, routed like the rest.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS && headers.contains_key(ORIGIN) && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The gateway's answer to a preflight: `204` with
    /// `Access-Control-Allow-Origin` (the request's origin, normalized, or
    /// `*`), `-Allow-Methods`, `-Allow-Headers` (the configured ones),
    /// `-Allow-Credentials` when set, `-Max-Age`, and `Vary` on the three
    /// request headers the answer depends on. When the origin, the method
    /// or one of the requested headers is not allowed: `204` with `Vary`
    /// only, which browsers take as a refusal (see the module doc).
    pub fn preflight(&self, headers: &HeaderMap) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::Local(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let answer = response.headers_mut();
        answer.insert(VARY, PREFLIGHT_VARY);
        match self.admit_preflight(headers) {
            Ok(allow_origin) => {
                answer.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
                if self.credentials {
                    answer.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
                }
                answer.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
                if let Some(allow_headers) = &self.allow_headers {
                    answer.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers.clone());
                }
                answer.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
            }
            Err(refusal) => tracing::debug!(%refusal, origin = ?headers.get(ORIGIN), "CORS preflight refused"),
        }
        response
    }

    /// Puts the policy's headers on an actual response (the upstream's or
    /// the gateway's own) to a request that came with `request_origin`.
    /// The upstream's `Access-Control-Allow-Origin`, `-Allow-Credentials`
    /// and `-Expose-Headers` are always removed: the policy alone decides,
    /// so a response carries one `Access-Control-Allow-Origin` at most and
    /// an origin the policy refuses gets none, whatever the upstream said.
    /// With exact origins `Origin` is appended to `Vary` on every response,
    /// even one to a request without `Origin`, so that no shared cache
    /// hands one origin's answer to another; with `*` every response gets
    /// `Access-Control-Allow-Origin: *` and needs no `Vary`.
    pub fn decorate(&self, request_origin: Option<&HeaderValue>, response_headers: &mut HeaderMap) {
        response_headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
        response_headers.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
        response_headers.remove(ACCESS_CONTROL_EXPOSE_HEADERS);
        let allow_origin = match &self.origins {
            Origins::Any => ANY_ORIGIN,
            Origins::Exact(_) => {
                crate::proxy::headers::append_vary(response_headers, &VARY_ORIGIN);
                match request_origin.and_then(|origin| self.allowed_origin(origin)) {
                    Some(echo) => echo,
                    None => return,
                }
            }
        };
        response_headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            response_headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(expose) = &self.expose_headers {
            response_headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`,
    /// `None` when the policy does not allow it.
    fn allowed_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(ANY_ORIGIN),
            Origins::Exact(allowed) => {
                let origin = origin.to_str().ok()?;
                // Browsers send the normalized form; anything else is normalized first.
                allowed.get(origin).or_else(|| allowed.get(&normalize_origin(origin)?)).cloned()
            }
        }
    }

    fn admit_preflight(&self, headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
        let allow_origin = headers.get(ORIGIN).and_then(|origin| self.allowed_origin(origin)).ok_or(Refusal::Origin)?;
        let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD).map(HeaderValue::as_bytes).unwrap_or_default();
        if !self.methods.iter().any(|allowed| allowed.as_bytes() == method) {
            return Err(Refusal::Method);
        }
        for line in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let line = line.to_str().map_err(|_| Refusal::Header(String::from_utf8_lossy(line.as_bytes()).into_owned()))?;
            for name in line.split(',').map(str::trim).filter(|name| !name.is_empty()) {
                if !self.headers.iter().any(|allowed| allowed.eq_ignore_ascii_case(name)) {
                    return Err(Refusal::Header(name.to_owned()));
                }
            }
        }
        Ok(allow_origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use portico_shared::validate::Validate;

    const APP: &str = "https://app.example.com";

    fn cors(json: serde_json::Value) -> Cors {
        let mut policy: CorsPolicy = serde_json::from_value(json).unwrap();
        policy.normalize_and_validate().unwrap();
        Cors::compile(&policy)
    }

    /// Origins `https://app.example.com` and `http://localhost:3000`, credentials, `x-api-key`.
    fn app() -> Cors {
        cors(serde_json::json!({
            "origins": [APP, "http://localhost:3000"],
            "methods": ["GET", "POST", "DELETE"],
            "headers": ["X-Api-Key", "content-type"],
            "expose_headers": ["x-request-id"],
            "credentials": true,
            "max_age_s": 300,
        }))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn all<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        map.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }

    fn allow_headers_of(map: &HeaderMap) -> Vec<&str> {
        map.keys().map(http::HeaderName::as_str).filter(|name| name.starts_with("access-control-allow")).collect()
    }

    #[test]
    fn a_preflight_is_options_with_origin_and_request_method() {
        let full = headers(&[("origin", APP), ("access-control-request-method", "GET")]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &full));
        assert!(!Cors::is_preflight(&Method::GET, &full));
        assert!(!Cors::is_preflight(&Method::OPTIONS, &headers(&[("origin", APP)])), "an actual OPTIONS request");
        assert!(!Cors::is_preflight(&Method::OPTIONS, &headers(&[("access-control-request-method", "GET")])));
        assert!(!Cors::is_preflight(&Method::OPTIONS, &HeaderMap::new()));
    }

    #[tokio::test]
    async fn an_allowed_preflight_gets_204_with_every_allow_header() {
        let request = headers(&[
            ("origin", APP),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "content-type,x-api-key"),
        ]);
        let response = app().preflight(&request);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let h = response.headers();
        assert_eq!(all(h, "access-control-allow-origin"), [APP]);
        assert_eq!(all(h, "access-control-allow-credentials"), ["true"]);
        assert_eq!(all(h, "access-control-allow-methods"), ["GET, POST, DELETE"]);
        assert_eq!(all(h, "access-control-allow-headers"), ["x-api-key, content-type"]);
        assert_eq!(all(h, "access-control-max-age"), ["300"]);
        assert_eq!(all(h, "vary"), ["Origin, Access-Control-Request-Method, Access-Control-Request-Headers"]);
        assert!(h.get("access-control-expose-headers").is_none(), "exposing is for actual responses");
        assert!(response.into_body().collect().await.unwrap().to_bytes().is_empty());
    }

    #[test]
    fn a_preflight_echoes_the_origin_as_browsers_write_it() {
        let request = headers(&[("origin", "HTTPS://App.Example.com:443"), ("access-control-request-method", "GET")]);
        assert_eq!(all(app().preflight(&request).headers(), "access-control-allow-origin"), [APP]);
        let local = headers(&[("origin", "http://localhost:3000"), ("access-control-request-method", "GET")]);
        assert_eq!(all(app().preflight(&local).headers(), "access-control-allow-origin"), ["http://localhost:3000"]);
    }

    #[test]
    fn a_preflight_without_requested_headers_or_with_any_spelling_of_allowed_ones_passes() {
        let cases: [&[(&str, &str)]; 3] = [
            &[],
            &[("access-control-request-headers", " X-API-KEY ,, Content-Type ")],
            &[("access-control-request-headers", "x-api-key"), ("access-control-request-headers", "content-type")],
        ];
        for extra in cases {
            let mut request = headers(&[("origin", APP), ("access-control-request-method", "POST")]);
            request.extend(headers(extra));
            assert_eq!(all(app().preflight(&request).headers(), "access-control-allow-origin"), [APP], "{extra:?}");
        }
    }

    #[test]
    fn a_refused_preflight_gets_204_without_any_allow_header() {
        let cases: [&[(&str, &str)]; 9] = [
            &[("origin", "https://evil.example"), ("access-control-request-method", "GET")],
            &[("origin", "https://app.example.com.evil.io"), ("access-control-request-method", "GET")],
            &[("origin", "https://evil-app.example.com"), ("access-control-request-method", "GET")],
            &[("origin", "http://app.example.com"), ("access-control-request-method", "GET")],
            &[("origin", "null"), ("access-control-request-method", "GET")],
            &[("origin", APP), ("access-control-request-method", "PUT")],
            &[("origin", APP), ("access-control-request-method", "get")],
            &[("origin", APP), ("access-control-request-method", "GET"), ("access-control-request-headers", "x-api-key,x-other")],
            &[("origin", APP), ("access-control-request-method", "GET"), ("access-control-request-headers", "authorization")],
        ];
        for request in cases {
            let response = app().preflight(&headers(request));
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{request:?}");
            assert_eq!(allow_headers_of(response.headers()), Vec::<&str>::new(), "{request:?}");
            assert!(response.headers().get("access-control-max-age").is_none(), "{request:?}");
            assert_eq!(all(response.headers(), "vary").len(), 1, "{request:?}");
        }
    }

    #[test]
    fn any_origin_answers_star_without_credentials() {
        let any = cors(serde_json::json!({"origins": ["*"]}));
        let request = headers(&[("origin", "https://whoever.example"), ("access-control-request-method", "HEAD")]);
        let response = any.preflight(&request);
        assert_eq!(all(response.headers(), "access-control-allow-origin"), ["*"]);
        assert!(response.headers().get("access-control-allow-credentials").is_none());
        assert!(response.headers().get("access-control-allow-headers").is_none(), "no headers configured, none allowed");
        assert_eq!(all(response.headers(), "access-control-allow-methods"), ["GET, HEAD, POST"]);
        assert_eq!(all(response.headers(), "access-control-max-age"), ["600"]);
    }

    #[test]
    fn star_with_credentials_never_reflects_an_origin() {
        let policy = CorsPolicy {
            origins: vec!["*".to_owned()],
            methods: vec!["GET".to_owned()],
            headers: vec![],
            expose_headers: vec![],
            credentials: true,
            max_age_s: 5,
        };
        let mut response = HeaderMap::new();
        Cors::compile(&policy).decorate(Some(&HeaderValue::from_static("https://evil.example")), &mut response);
        assert_eq!(all(&response, "access-control-allow-origin"), ["*"]);
        assert!(response.get("access-control-allow-credentials").is_none());
    }

    #[test]
    fn an_allowed_origin_gets_the_policys_headers_on_the_actual_response() {
        let mut response = headers(&[("content-type", "application/json")]);
        app().decorate(Some(&HeaderValue::from_static(APP)), &mut response);
        assert_eq!(all(&response, "access-control-allow-origin"), [APP]);
        assert_eq!(all(&response, "access-control-allow-credentials"), ["true"]);
        assert_eq!(all(&response, "access-control-expose-headers"), ["x-request-id"]);
        assert_eq!(all(&response, "vary"), ["Origin"]);
        assert!(response.get("access-control-allow-methods").is_none(), "preflight-only headers stay off");
    }

    #[test]
    fn the_upstreams_cors_headers_are_replaced_by_exactly_one_allow_origin() {
        let mut response = headers(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-origin", "https://other.example"),
            ("access-control-allow-credentials", "false"),
            ("access-control-expose-headers", "x-secret"),
        ]);
        app().decorate(Some(&HeaderValue::from_static(APP)), &mut response);
        assert_eq!(all(&response, "access-control-allow-origin"), [APP]);
        assert_eq!(all(&response, "access-control-allow-credentials"), ["true"]);
        assert_eq!(all(&response, "access-control-expose-headers"), ["x-request-id"]);
    }

    #[test]
    fn a_refused_origin_gets_no_cors_headers_even_the_upstreams() {
        for origin in ["https://app.example.com.evil.io", "https://evil.example", "null"] {
            let mut response = headers(&[("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true")]);
            app().decorate(Some(&HeaderValue::from_static(origin)), &mut response);
            assert!(response.get("access-control-allow-origin").is_none(), "{origin}");
            assert!(response.get("access-control-allow-credentials").is_none(), "{origin}");
            assert!(response.get("access-control-expose-headers").is_none(), "{origin}");
            assert_eq!(all(&response, "vary"), ["Origin"], "{origin}: a cache must not serve it to an allowed origin");
        }
        let mut without_origin = HeaderMap::new();
        app().decorate(None, &mut without_origin);
        assert!(without_origin.get("access-control-allow-origin").is_none());
        assert_eq!(all(&without_origin, "vary"), ["Origin"]);
    }

    #[test]
    fn origin_is_appended_to_the_upstreams_vary_once() {
        let cases: [(&[&str], &[&str]); 6] = [
            (&["Accept-Encoding"], &["Accept-Encoding, Origin"]),
            (&["accept-encoding, accept-language"], &["accept-encoding, accept-language, Origin"]),
            (&["Accept-Encoding", "Accept-Language"], &["Accept-Encoding, Accept-Language, Origin"]),
            (&["Accept-Encoding, origin"], &["Accept-Encoding, origin"]),
            (&["*"], &["*"]),
            (&[""], &["Origin"]),
        ];
        for (upstream, expected) in cases {
            let mut response = HeaderMap::new();
            for value in upstream {
                response.append(VARY, HeaderValue::from_str(value).unwrap());
            }
            app().decorate(Some(&HeaderValue::from_static(APP)), &mut response);
            assert_eq!(all(&response, "vary"), expected, "{upstream:?}");
            app().decorate(Some(&HeaderValue::from_static(APP)), &mut response);
            assert_eq!(all(&response, "vary"), expected, "{upstream:?} decorated twice");
        }
    }

    #[test]
    fn any_origin_needs_no_vary_and_covers_requests_without_origin() {
        let any = cors(serde_json::json!({"origins": ["*"], "expose_headers": ["x-total"]}));
        for origin in [Some(HeaderValue::from_static("https://whoever.example")), None] {
            let mut response = headers(&[("vary", "Accept-Encoding"), ("access-control-allow-origin", "https://upstream.example")]);
            any.decorate(origin.as_ref(), &mut response);
            assert_eq!(all(&response, "access-control-allow-origin"), ["*"], "{origin:?}");
            assert_eq!(all(&response, "access-control-expose-headers"), ["x-total"]);
            assert_eq!(all(&response, "vary"), ["Accept-Encoding"], "left as the upstream sent it");
        }
    }

    #[test]
    fn the_gateways_own_errors_are_decorated_like_upstream_answers() {
        let mut refused = crate::error::json_response(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API key is required");
        app().decorate(Some(&HeaderValue::from_static(APP)), refused.headers_mut());
        assert_eq!(all(refused.headers(), "access-control-allow-origin"), [APP]);
        assert_eq!(all(refused.headers(), "access-control-allow-credentials"), ["true"]);
        assert_eq!(all(refused.headers(), "content-type"), ["application/json"]);
    }

    #[test]
    fn without_credentials_no_allow_credentials_is_sent() {
        let plain = cors(serde_json::json!({"origins": [APP]}));
        let preflight = plain.preflight(&headers(&[("origin", APP), ("access-control-request-method", "GET")]));
        assert_eq!(all(preflight.headers(), "access-control-allow-origin"), [APP]);
        assert!(preflight.headers().get("access-control-allow-credentials").is_none());
        let mut response = HeaderMap::new();
        plain.decorate(Some(&HeaderValue::from_static(APP)), &mut response);
        assert!(response.get("access-control-allow-credentials").is_none());
        assert!(response.get("access-control-expose-headers").is_none());
    }
}
