//! Routes: which requests a route takes (paths, methods, hosts, headers)
//! and which service they go to. Routes that would shadow each other and
//! references to missing services are checked across the config in
//! [`crate::validate`]; matching a request is `portico_dp::router`.
//!
//! What serves a route is its backend ([`RouteBackend`]): a service it
//! proxies to, an [`Aggregate`] of calls to several, a gRPC service it
//! transcodes HTTP/JSON for ([`GrpcBackend`]), or an AMQP broker it
//! publishes requests to ([`AmqpBackend`]). The JSON stays flat and untagged (`{"name", "service",
//! "paths", …}`, byte for byte what earlier versions wrote): the contract
//! tells backends apart by which of their keys are present. Decoding goes
//! through [`FlatRoute`], the document's flat shape, for the reasons given
//! in [`super::credential`]: serde cannot refuse unknown fields next to a
//! flattened one, nor name the field of a wrong value inside it.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Aggregate, AmqpBackend, GrpcBackend, Policy, Retries, default_true};
use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::rules::{MAX_LIST, MAX_PATH_LEN, Result, Validate, bounded, host_pattern, is_token_byte, name, tags, unique};

const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];

/// What traffic a route takes, and which service it goes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "FlatRoute")]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub name: String,
    /// What serves this route (its keys, flattened into the route).
    #[serde(flatten)]
    pub backend: RouteBackend,
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
    /// Retries of this route's requests, instead of its service's (absent:
    /// the service's, else the defaults of [`Retries`]).
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

/// What serves a route, told apart by which keys the route has (no tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RouteBackend {
    /// Proxies the request to a service's targets.
    Proxy {
        /// Name of the service that serves this route.
        service: String,
    },
    /// Answers with the merged JSON of several upstream calls.
    Aggregate { aggregate: Aggregate },
    /// Transcodes HTTP/JSON requests to calls of a gRPC service.
    Grpc {
        /// Name of the service (of protocol `grpc` or `grpcs`) called.
        service: String,
        grpc: GrpcBackend,
    },
    /// Publishes each request as a message to an AMQP broker.
    Amqp {
        /// Name of the service (of protocol `amqp` or `amqps`) published to.
        service: String,
        amqp: AmqpBackend,
    },
}

impl RouteBackend {
    /// The one service the route sends requests to (proxied or
    /// transcoded), if its backend has one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Self::Proxy { service } | Self::Grpc { service, .. } | Self::Amqp { service, .. } => Some(service),
            Self::Aggregate { .. } => None,
        }
    }

    /// Every service the backend calls.
    pub fn services(&self) -> Vec<&str> {
        match self {
            Self::Proxy { service } | Self::Grpc { service, .. } | Self::Amqp { service, .. } => vec![service],
            Self::Aggregate { aggregate } => aggregate.services().collect(),
        }
    }

    /// The aggregate, if the backend is one.
    pub fn aggregate(&self) -> Option<&Aggregate> {
        match self {
            Self::Aggregate { aggregate } => Some(aggregate),
            Self::Proxy { .. } | Self::Grpc { .. } | Self::Amqp { .. } => None,
        }
    }

    /// The gRPC transcoding, if the backend is one.
    pub fn grpc(&self) -> Option<&GrpcBackend> {
        match self {
            Self::Grpc { grpc, .. } => Some(grpc),
            Self::Proxy { .. } | Self::Aggregate { .. } | Self::Amqp { .. } => None,
        }
    }

    /// The AMQP publishing, if the backend is one.
    pub fn amqp(&self) -> Option<&AmqpBackend> {
        match self {
            Self::Amqp { amqp, .. } => Some(amqp),
            Self::Proxy { .. } | Self::Aggregate { .. } | Self::Grpc { .. } => None,
        }
    }
}

/// A route as written: the fields of every backend side by side, all
/// optional; what decoding reads before deciding the backend (see the
/// module doc).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatRoute {
    #[serde(default)]
    id: Option<Uuid>,
    name: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    aggregate: Option<Aggregate>,
    #[serde(default)]
    grpc: Option<GrpcBackend>,
    #[serde(default)]
    amqp: Option<AmqpBackend>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_true")]
    strip_path: bool,
    #[serde(default)]
    preserve_host: bool,
    #[serde(default)]
    https_only: bool,
    #[serde(default)]
    retries: Option<Retries>,
    #[serde(default)]
    policies: Vec<Policy>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

impl TryFrom<FlatRoute> for Route {
    /// serde's wording, which [`crate::parse`] reads the field from.
    type Error = String;

    fn try_from(flat: FlatRoute) -> std::result::Result<Self, String> {
        let backend = match (flat.service, flat.aggregate, flat.grpc, flat.amqp) {
            (Some(service), None, None, None) => RouteBackend::Proxy { service },
            (Some(service), None, Some(grpc), None) => RouteBackend::Grpc { service, grpc },
            (Some(service), None, None, Some(amqp)) => RouteBackend::Amqp { service, amqp },
            (None, Some(aggregate), None, None) => RouteBackend::Aggregate { aggregate },
            (_, _, Some(_), Some(_)) => {
                return Err("conflicting field `amqp`: a route has either `grpc` or `amqp`, not both".to_owned());
            }
            (_, Some(_), None, Some(_)) => {
                return Err("conflicting field `amqp`: a route has either `aggregate` or `amqp`, not both".to_owned());
            }
            (_, Some(_), Some(_), None) => {
                return Err("conflicting field `grpc`: a route has either `aggregate` or `grpc`, not both".to_owned());
            }
            (Some(_), Some(_), None, None) => {
                return Err("conflicting field `aggregate`: a route has either `service` or `aggregate`, not both".to_owned());
            }
            (None, None, Some(_), None) => {
                return Err("missing field `service`: a `grpc` block calls a service of protocol grpc or grpcs".to_owned());
            }
            (None, None, None, Some(_)) => {
                return Err("missing field `service`: an `amqp` block publishes to a service of protocol amqp or amqps".to_owned());
            }
            (None, None, None, None) => return Err("missing field `service`".to_owned()),
        };
        Ok(Self {
            id: flat.id,
            name: flat.name,
            backend,
            paths: flat.paths,
            methods: flat.methods,
            hosts: flat.hosts,
            headers: flat.headers,
            strip_path: flat.strip_path,
            preserve_host: flat.preserve_host,
            https_only: flat.https_only,
            retries: flat.retries,
            policies: flat.policies,
            tags: flat.tags,
            created_at: flat.created_at,
            updated_at: flat.updated_at,
        })
    }
}

entity!(Route, crate::model::EntityKind::Route, routes, name);

impl Validate for Route {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(name("name", &self.name));
        match &mut self.backend {
            RouteBackend::Proxy { service } => {
                errors.check(name("service", service));
            }
            RouteBackend::Grpc { service, grpc } => {
                errors.check(name("service", service));
                errors.check_within("grpc", grpc.normalize_and_validate());
                // Retries stay: the data plane retries gRPC calls only on
                // UNAVAILABLE, and only idempotent ones.
                if self.preserve_host {
                    errors.add(ConfigError::invalid(
                        "preserve_host",
                        "a grpc route's calls go to the service's targets by their own authority",
                    ));
                }
            }
            RouteBackend::Amqp { service, amqp } => {
                errors.check(name("service", service));
                errors.check_within("amqp", amqp.normalize_and_validate());
                if self.retries.is_some() {
                    errors.add(ConfigError::invalid(
                        "retries",
                        "an amqp route publishes once (a second try could publish twice); a failure is answered for the client to retry",
                    ));
                }
                if self.preserve_host {
                    errors.add(ConfigError::invalid("preserve_host", "an amqp route sends no HTTP request to keep the Host of"));
                }
            }
            RouteBackend::Aggregate { aggregate } => {
                errors.check_within("aggregate", aggregate.normalize_and_validate());
                if self.retries.is_some() {
                    errors.add(ConfigError::invalid(
                        "retries",
                        "an aggregate route's calls retry as their services say; set retries on the services",
                    ));
                }
                if self.preserve_host {
                    errors.add(ConfigError::invalid(
                        "preserve_host",
                        "an aggregate route sends no request of the client's to keep the Host of",
                    ));
                }
            }
        }
        if errors.check(bounded("paths", self.paths.len(), MAX_LIST)).is_some() {
            let before = errors.count();
            for (i, path) in self.paths.iter_mut().enumerate() {
                if let Some(canonical) = errors.check(route_path(&format!("paths[{i}]"), path)) {
                    *path = canonical;
                }
            }
            if errors.count() == before && errors.check(unique("paths", &self.paths)).is_some() {
                let shapes: Vec<String> = self.paths.iter().map(|p| crate::route_path::shape(p)).collect();
                if let Some(i) = (1..shapes.len()).find(|&i| shapes[..i].contains(&shapes[i])) {
                    let message = format!("'{}' differs from another path of this route only in parameter names", self.paths[i]);
                    errors.add(ConfigError::invalid(format!("paths[{i}]"), message));
                }
            }
        }
        let before = errors.count();
        for (i, method) in self.methods.iter_mut().enumerate() {
            method.make_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                errors.add(ConfigError::invalid(format!("methods[{i}]"), format!("must be one of {}", METHODS.join(", "))));
            }
        }
        if errors.count() == before {
            errors.check(unique("methods", &self.methods));
        }
        if errors.check(bounded("hosts", self.hosts.len(), MAX_LIST)).is_some() {
            let before = errors.count();
            for (i, host) in self.hosts.iter_mut().enumerate() {
                host.make_ascii_lowercase();
                errors.check(host_pattern(&format!("hosts[{i}]"), host));
            }
            if errors.count() == before {
                errors.check(unique("hosts", &self.hosts));
            }
        }
        if errors.check(bounded("headers", self.headers.len(), MAX_LIST)).is_some() {
            self.check_headers(&mut errors);
        }
        if self.paths.is_empty() && self.hosts.is_empty() && self.methods.is_empty() && self.headers.is_empty() {
            errors.add(ConfigError::invalid(
                "paths",
                "a route needs at least one of paths, hosts, methods or headers (use \"/\" to take every path)",
            ));
        }
        if let Some(retries) = &mut self.retries {
            errors.check_within("retries", retries.normalize_and_validate());
        }
        errors.check(super::policy::validate_list("policies", &mut self.policies));
        errors.check(tags(&self.tags));
        errors.finish()
    }
}

impl Route {
    /// The one service the route sends requests to (proxied or
    /// transcoded), if its backend has one.
    pub fn service(&self) -> Option<&str> {
        self.backend.service()
    }

    /// Header names are tokens, listed once whatever their case (and
    /// lowercased); each has 1 to 64 values of visible ASCII.
    fn check_headers(&mut self, errors: &mut Errors) {
        let mut lowercase = HashSet::new();
        for (header, values) in &self.headers {
            let field = format!("headers.{header}");
            if !lowercase.insert(header.to_ascii_lowercase()) {
                errors.add(ConfigError::invalid(field, "is listed twice (header names are case-insensitive)"));
                continue;
            }
            if header.is_empty() || !header.bytes().all(is_token_byte) {
                errors.add(ConfigError::invalid(field.as_str(), "is not a valid header name"));
            }
            if values.is_empty() || values.len() > MAX_LIST {
                errors.add(ConfigError::invalid(field, format!("needs 1 to {MAX_LIST} values")));
                continue;
            }
            for (i, value) in values.iter().enumerate() {
                if value.is_empty() || value.len() > 1_024 || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    errors.add(ConfigError::invalid(format!("{field}[{i}]"), "must be 1 to 1024 visible ASCII characters"));
                }
            }
        }
        self.headers = std::mem::take(&mut self.headers).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    }
}

/// A route path prefix in canonical form (no trailing slash but for `/`,
/// escapes in upper case), with `{name}` parameters as whole segments.
fn route_path(field: &str, path: &str) -> Result<String> {
    let invalid = |message: &str| Err(ConfigError::invalid(field, format!("'{path}' {message}")));
    if !path.starts_with('/') {
        return invalid("must start with '/'");
    }
    if path.len() > MAX_PATH_LEN {
        return invalid("is longer than 1024 characters");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%{}".contains(&b);
    if !path.bytes().all(allowed) {
        return invalid("may only contain URL path characters (no spaces, '?' or '#')");
    }
    let trimmed = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    if trimmed.is_empty() || trimmed.contains("//") {
        return invalid("must not contain empty segments ('//')");
    }
    if trimmed.split('/').any(|segment| segment == "." || segment == "..") {
        return invalid("must not contain '.' or '..' segments");
    }
    // `{name}` parameters and percent-escapes: see `route_path::check`.
    crate::route_path::check(trimmed).or_else(|message| invalid(&message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    fn route(json: &str) -> Route {
        from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn encodes_a_proxy_route_flat_as_before() {
        for json in [
            r#"{"name":"r","service":"s","paths":["/a"],"methods":[],"hosts":[],"headers":{},"strip_path":true,"preserve_host":false,"policies":[],"tags":[]}"#,
            r#"{"id":"7f1c2a58-3a4e-4d55-8a4c-2f36a1d4b3e1","name":"r","service":"users","paths":[],"methods":["GET"],"hosts":["a.example.com"],"headers":{"x-v":["2"]},"strip_path":false,"preserve_host":true,"https_only":true,"policies":[],"tags":["t"],"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#,
        ] {
            let parsed = route(json);
            assert_eq!(parsed.backend, RouteBackend::Proxy { service: parsed.service().unwrap().to_owned() });
            assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
        }
        assert_eq!(route(r#"{"name":"r","service":"users"}"#).service(), Some("users"));
    }

    #[test]
    fn refuses_unknown_fields_next_to_the_backend_naming_them() {
        for (json, field, message) in [
            (r#"{"name":"r","service":"s","servise":"t"}"#, "servise", "unknown field `servise`"),
            (r#"{"name":"r","paths":["/"]}"#, "service", "missing field `service`"),
            (r#"{"name":"r","service":5}"#, "service", "invalid type"),
            (r#"{"service":"s"}"#, "name", "missing field `name`"),
        ] {
            let error = from_json::<Route>(json.as_bytes()).unwrap_err();
            assert_eq!(error.field(), field, "{json}: {error}");
            assert!(error.message().starts_with(message), "{json}: {error}");
        }
        let error = from_json::<crate::model::GatewayConfig>(br#"{"routes":[{"name":"r","service":"s","colour":"red"}]}"#).unwrap_err();
        assert_eq!(error.field(), "routes[0].colour");
    }

    #[test]
    fn an_aggregate_route_has_no_service_and_checks_its_calls() {
        let json = r#"{"name":"r","aggregate":{"timeout_ms":800,"merge":"namespaced","max_body_bytes":1048576,"calls":[{"name":"a","service":"s","method":"GET","path":"/a","required":true}]},"paths":["/a"],"methods":[],"hosts":[],"headers":{},"strip_path":true,"preserve_host":false,"policies":[],"tags":[]}"#;
        let mut parsed = route(json);
        parsed.normalize_and_validate().unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), json, "encoded flat, like a proxy route");
        assert_eq!((parsed.service(), parsed.backend.services()), (None, vec!["s"]));
        let error = from_json::<Route>(br#"{"name":"r","service":"s","aggregate":{"calls":[]}}"#).unwrap_err();
        assert_eq!(
            (error.field(), error.message()),
            ("aggregate", "conflicting field `aggregate`: a route has either `service` or `aggregate`, not both")
        );
        let mut bad = route(
            r#"{"name":"r","paths":["/"],"retries":{"attempts":2},"aggregate":{"calls":[{"name":"a","service":"s","path":"/a/{b.x}"}]}}"#,
        );
        let fields: Vec<String> = bad.normalize_and_validate().unwrap_err().iter().map(|e| e.field().to_owned()).collect();
        assert_eq!(fields, ["aggregate.calls[0].path", "retries"]);
    }

    #[test]
    fn a_grpc_route_has_its_service_beside_the_grpc_block() {
        let json = r#"{"name":"r","service":"orders-grpc","grpc":{"proto":"shop","services":["shop.Orders"],"names":"json","emit_defaults":false,"enums_as_ints":false,"ignore_unknown":false,"max_request_message_bytes":4194304,"max_response_message_bytes":4194304},"paths":["/v1"],"methods":[],"hosts":[],"headers":{},"strip_path":true,"preserve_host":false,"policies":[],"tags":[]}"#;
        let mut parsed = route(json);
        parsed.normalize_and_validate().unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), json, "encoded flat: `service` and `grpc` side by side");
        assert_eq!((parsed.service(), parsed.backend.services()), (Some("orders-grpc"), vec!["orders-grpc"]));
        assert_eq!(parsed.backend.grpc().map(|g| g.proto.as_str()), Some("shop"));
        for (json, field, message) in [
            (r#"{"name":"r","grpc":{"proto":"p","services":["a.B"]}}"#, "service", "missing field `service`: a `grpc` block"),
            (
                r#"{"name":"r","aggregate":{"calls":[]},"grpc":{"proto":"p","services":["a.B"]}}"#,
                "grpc",
                "conflicting field `grpc`: a route has either `aggregate` or `grpc`",
            ),
            (r#"{"name":"r","service":"s","grpc":{"proto":"p","services":["a.B"],"colour":1}}"#, "grpc.colour", "unknown field `colour`"),
        ] {
            let error = from_json::<Route>(json.as_bytes()).unwrap_err();
            assert_eq!(error.field(), field, "{json}: {error}");
            assert!(error.message().starts_with(message), "{json}: {error}");
        }
        let mut bad = route(
            r#"{"name":"r","service":"s","paths":["/"],"preserve_host":true,"retries":{"attempts":2},"grpc":{"proto":"p","services":[]}}"#,
        );
        let fields: Vec<String> = bad.normalize_and_validate().unwrap_err().iter().map(|e| e.field().to_owned()).collect();
        assert_eq!(fields, ["grpc.services", "preserve_host"], "retries are allowed (gRPC-aware in the data plane)");
    }

    #[test]
    fn an_amqp_route_has_its_service_beside_the_amqp_block() {
        let json = r#"{"name":"r","service":"events","amqp":{"exchange":"orders","routing_key":"order.{path.kind}","mode":"publish","persistent":true,"mandatory":true,"timeout_ms":5000},"paths":["/events/{kind}"],"methods":["POST"],"hosts":[],"headers":{},"strip_path":true,"preserve_host":false,"policies":[],"tags":[]}"#;
        let mut parsed = route(json);
        parsed.normalize_and_validate().unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), json, "encoded flat: `service` and `amqp` side by side");
        assert_eq!((parsed.service(), parsed.backend.services()), (Some("events"), vec!["events"]));
        assert_eq!(parsed.backend.amqp().map(|a| a.exchange.as_str()), Some("orders"));
        let amqp = r#""amqp":{"exchange":"","routing_key":"k"}"#;
        for (json, field, message) in [
            (format!(r#"{{"name":"r",{amqp}}}"#), "service", "missing field `service`: an `amqp` block"),
            (
                format!(r#"{{"name":"r","service":"s","grpc":{{"proto":"p","services":["a.B"]}},{amqp}}}"#),
                "amqp",
                "conflicting field `amqp`",
            ),
            (
                format!(r#"{{"name":"r","aggregate":{{"calls":[]}},{amqp}}}"#),
                "amqp",
                "conflicting field `amqp`: a route has either `aggregate`",
            ),
            (
                r#"{"name":"r","service":"s","amqp":{"exchange":"","routing_key":"k","queue":"q"}}"#.to_owned(),
                "amqp.queue",
                "unknown field `queue`",
            ),
        ] {
            let error = from_json::<Route>(json.as_bytes()).unwrap_err();
            assert_eq!(error.field(), field, "{json}: {error}");
            assert!(error.message().starts_with(message), "{json}: {error}");
        }
        let mut bad = route(
            r#"{"name":"r","service":"s","paths":["/"],"preserve_host":true,"retries":{},"amqp":{"exchange":"a b","routing_key":"k"}}"#,
        );
        let fields: Vec<String> = bad.normalize_and_validate().unwrap_err().iter().map(|e| e.field().to_owned()).collect();
        assert_eq!(fields, ["amqp.exchange", "retries", "preserve_host"]);
    }

    #[test]
    fn rejects_duplicate_paths_on_one_route() {
        let mut r = route(r#"{"name":"r","service":"s","paths":["/users","/users/"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().first().field(), "paths[1]");
    }

    #[test]
    fn normalizes_methods_hosts_and_paths() {
        let mut r = route(
            r#"{"name":"r","service":"s","paths":["/a/"],"methods":["get"],"hosts":["*.Example.com"],"headers":{"X-Version":["2"]}}"#,
        );
        r.normalize_and_validate().unwrap();
        assert_eq!(r.paths, ["/a"]);
        assert_eq!(r.methods, ["GET"]);
        assert_eq!(r.hosts, ["*.example.com"]);
        assert!(r.headers.contains_key("x-version"));
    }

    #[test]
    fn rejects_unsafe_paths() {
        for path in ["users", "/a//b", "/a/../b", "/a?b", "/a b", "/./"] {
            let mut r = route(&format!(r#"{{"name":"r","service":"s","paths":["{path}"]}}"#));
            assert_eq!(r.normalize_and_validate().unwrap_err().first().field(), "paths[0]", "{path}");
        }
    }

    #[test]
    fn rejects_unknown_methods_and_bad_hosts() {
        let mut r = route(r#"{"name":"r","service":"s","methods":["GTE"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().first().field(), "methods[0]");
        let mut r = route(r#"{"name":"r","service":"s","hosts":["bad_host"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().first().field(), "hosts[0]");
        let mut r = route(r#"{"name":"r","service":"s","headers":{"X-A":["1"],"x-a":["2"]}}"#);
        assert!(r.normalize_and_validate().unwrap_err().first().field().starts_with("headers."));
    }

    #[test]
    fn reports_every_wrong_field_of_a_route_but_duplicates_only_among_valid_entries() {
        let mut r = route(r#"{"name":"r","service":"S","paths":["x","/ok","/ok/"],"methods":["GTE"],"hosts":["bad_host"],"tags":["a b"]}"#);
        let errors = r.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["service", "paths[0]", "methods[0]", "hosts[0]", "tags[0]"]);
    }

    #[test]
    fn accepts_parameters_as_whole_segments() {
        let mut r = route(r#"{"name":"r","service":"s","paths":["/users/{id}/orders/{order_id}/"]}"#);
        r.normalize_and_validate().unwrap();
        assert_eq!(r.paths, ["/users/{id}/orders/{order_id}"]);
    }

    #[test]
    fn rejects_misplaced_braces_and_bad_parameters_naming_the_path() {
        let cases = [
            ("/users/{id", "only around a whole segment"),
            ("/users/x{id}", "only around a whole segment"),
            ("/users/{1d}", "a name is 1 to 64"),
            ("/users/{id}/x/{id}", "names the parameter '{id}' twice"),
        ];
        for (path, expected) in cases {
            let mut r = route(&format!(r#"{{"name":"r","service":"s","paths":["/ok","{path}"]}}"#));
            let error = r.normalize_and_validate().unwrap_err().first().clone();
            assert_eq!(error.field(), "paths[1]", "{path}");
            assert!(error.message().starts_with(&format!("'{path}' ")) && error.message().contains(expected), "{path}: {error}");
        }
        let many: String = (0..17).map(|i| format!("/{{p{i}}}")).collect();
        let mut r = route(&format!(r#"{{"name":"r","service":"s","paths":["{many}"]}}"#));
        assert!(r.normalize_and_validate().unwrap_err().first().message().contains("at most 16"));
    }

    #[test]
    fn rejects_escapes_that_could_never_match_and_uppercases_the_rest() {
        let mut r = route(r#"{"name":"r","service":"s","paths":["/%61dmin"]}"#);
        let error = r.normalize_and_validate().unwrap_err().first().clone();
        assert_eq!(error.field(), "paths[0]");
        assert!(error.message().contains("request paths are matched with escaped letters, digits and '-._~' decoded"), "{error}");
        for path in ["/a%2Fb", "/a%", "/a%zz", "/%2e%2e"] {
            let mut r = route(&format!(r#"{{"name":"r","service":"s","paths":["{path}"]}}"#));
            assert_eq!(r.normalize_and_validate().unwrap_err().first().field(), "paths[0]", "{path}");
        }
        let mut r = route(r#"{"name":"r","service":"s","paths":["/caf%c3%a9"]}"#);
        r.normalize_and_validate().unwrap();
        assert_eq!(r.paths, ["/caf%C3%A9"], "as normalized request paths carry it");
    }

    #[test]
    fn rejects_paths_differing_only_in_parameter_names() {
        let mut r = route(r#"{"name":"r","service":"s","paths":["/users/{id}","/users/{user}"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().first().field(), "paths[1]");
        let mut config: crate::model::GatewayConfig = crate::parse::from_yaml(
            br#"
services: [{name: s, targets: [{url: "http://127.0.0.1:1"}]}]
routes:
  - {name: a, service: s, paths: ["/users/{id}"]}
  - {name: b, service: s, paths: ["/users/{user}"]}
"#,
        )
        .unwrap();
        let error = crate::validate::config(&mut config).unwrap_err().first().clone();
        assert_eq!(error.field(), "routes[1].paths[0]", "{error}");
    }
}
