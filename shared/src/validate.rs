//! Validation of entities and of a whole config, with errors naming the
//! field. Entities are first normalized (method case, host case, trailing
//! slashes) so that equal meaning has one spelling and one hash.

use std::collections::{HashMap, HashSet};

use crate::error::ConfigError;
use crate::model::{Consumer, Entity, EntityKind, GatewayConfig, Policy, Route, Service};

/// Longest entity or gateway name.
pub const MAX_NAME_LEN: usize = 64;
const MAX_LIST: usize = 64;
const MAX_TARGETS: usize = 1_000;
const MAX_WEIGHT: u32 = 1_000;
const MAX_PATH_LEN: usize = 1_024;
const MAX_TAGS: usize = 32;
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];

type Result<T = ()> = std::result::Result<T, ConfigError>;

/// Checks a gateway or entity name: 1 to 64 of `[a-z0-9._-]`, starting with
/// a letter or digit (so it is safe in a URL path and never `.` or `..`).
pub fn name(field: &str, value: &str) -> Result {
    let valid_chars = value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let starts_well = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if value.is_empty() || value.len() > MAX_NAME_LEN || !valid_chars || !starts_well {
        return Err(ConfigError::invalid(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// An entity that can check itself, with fields relative to the entity.
pub trait Validate {
    /// Puts the entity in canonical form, then checks every field.
    fn normalize_and_validate(&mut self) -> Result;
}

impl Validate for Service {
    fn normalize_and_validate(&mut self) -> Result {
        name("name", &self.name)?;
        if self.targets.is_empty() {
            return Err(ConfigError::invalid("targets", "at least one target is required"));
        }
        bounded("targets", self.targets.len(), MAX_TARGETS)?;
        let mut seen = HashSet::new();
        for (i, target) in self.targets.iter_mut().enumerate() {
            let field = format!("targets[{i}]");
            target.url = target_url(&format!("{field}.url"), &target.url, self.protocol.scheme())?;
            if target.weight > MAX_WEIGHT {
                return Err(ConfigError::invalid(format!("{field}.weight"), format!("must be 0 to {MAX_WEIGHT}")));
            }
            if !seen.insert(target.url.clone()) {
                return Err(ConfigError::invalid(format!("{field}.url"), format!("'{}' is listed twice", target.url)));
            }
        }
        if self.targets.iter().all(|t| t.weight == 0) {
            return Err(ConfigError::invalid("targets", "at least one target needs a weight above 0"));
        }
        in_range("timeouts.connect_ms", self.timeouts.connect_ms, 1, 60_000)?;
        in_range("timeouts.request_ms", self.timeouts.request_ms, 1, 3_600_000)?;
        policies(&self.policies)?;
        tags(&self.tags)
    }
}

impl Validate for Route {
    fn normalize_and_validate(&mut self) -> Result {
        name("name", &self.name)?;
        name("service", &self.service)?;
        bounded("paths", self.paths.len(), MAX_LIST)?;
        bounded("hosts", self.hosts.len(), MAX_LIST)?;
        bounded("headers", self.headers.len(), MAX_LIST)?;
        for (i, path) in self.paths.iter_mut().enumerate() {
            *path = route_path(&format!("paths[{i}]"), path)?;
        }
        unique("paths", &self.paths)?;
        for (i, method) in self.methods.iter_mut().enumerate() {
            method.make_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(ConfigError::invalid(format!("methods[{i}]"), format!("must be one of {}", METHODS.join(", "))));
            }
        }
        unique("methods", &self.methods)?;
        for (i, host) in self.hosts.iter_mut().enumerate() {
            host.make_ascii_lowercase();
            host_pattern(&format!("hosts[{i}]"), host)?;
        }
        unique("hosts", &self.hosts)?;
        let mut headers = std::mem::take(&mut self.headers);
        let mut lowercase = HashSet::new();
        for (header, values) in &headers {
            if !lowercase.insert(header.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(format!("headers.{header}"), "is listed twice (header names are case-insensitive)"));
            }
            let field = format!("headers.{header}");
            if header.is_empty() || !header.bytes().all(is_token_byte) {
                return Err(ConfigError::invalid(field, "is not a valid header name"));
            }
            if values.is_empty() || values.len() > MAX_LIST {
                return Err(ConfigError::invalid(field, format!("needs 1 to {MAX_LIST} values")));
            }
            for (i, value) in values.iter().enumerate() {
                if value.is_empty() || value.len() > 1_024 || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(ConfigError::invalid(format!("{field}[{i}]"), "must be 1 to 1024 visible ASCII characters"));
                }
            }
        }
        self.headers = std::mem::take(&mut headers).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        if self.paths.is_empty() && self.hosts.is_empty() && self.methods.is_empty() && self.headers.is_empty() {
            return Err(ConfigError::invalid(
                "paths",
                "a route needs at least one of paths, hosts, methods or headers (use \"/\" to take every path)",
            ));
        }
        policies(&self.policies)?;
        tags(&self.tags)
    }
}

impl Validate for Consumer {
    fn normalize_and_validate(&mut self) -> Result {
        let valid = self.username.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
        if self.username.is_empty() || self.username.len() > 128 || !valid {
            return Err(ConfigError::invalid("username", "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', '@', '+', '-'"));
        }
        if let Some(custom_id) = &self.custom_id
            && (custom_id.is_empty() || custom_id.len() > 256 || custom_id.chars().any(char::is_control))
        {
            return Err(ConfigError::invalid("custom_id", "must be 1 to 256 characters without control characters"));
        }
        tags(&self.tags)
    }
}

/// Normalizes and checks a whole config: every entity, unique names and
/// ids, references between entities, and routes that would shadow each
/// other exactly. Error fields index the lists as given; on success the
/// collections end up in name order.
pub fn config(config: &mut GatewayConfig) -> Result {
    entities(&mut config.services)?;
    entities(&mut config.routes)?;
    entities(&mut config.consumers)?;
    unique_by(&config.consumers, "custom_id", |c| c.custom_id.clone())?;
    let services: HashSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    for (i, route) in config.routes.iter().enumerate() {
        if !services.contains(route.service.as_str()) {
            return Err(ConfigError::invalid(
                format!("routes[{i}].service"),
                format!("route '{}' refers to service '{}', which does not exist", route.name, route.service),
            ));
        }
    }
    identical_routes(&config.routes)?;
    config.sort();
    Ok(())
}

/// The entities that refer to the `kind` entity named `name`, as
/// `(kind, name)`: while there are any, it can be neither deleted nor renamed.
pub fn referrers<'a>(config: &'a GatewayConfig, kind: EntityKind, name: &str) -> Vec<(EntityKind, &'a str)> {
    match kind {
        EntityKind::Service => config.routes.iter().filter(|r| r.service == name).map(|r| (EntityKind::Route, r.name.as_str())).collect(),
        EntityKind::Route | EntityKind::Consumer => Vec::new(),
    }
}

fn entities<E: Entity + Validate>(list: &mut [E]) -> Result {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for (i, entity) in list.iter_mut().enumerate() {
        let prefix = format!("{}[{i}]", E::COLLECTION);
        entity.normalize_and_validate().map_err(|e| e.within(&prefix))?;
        if !names.insert(entity.name().to_owned()) {
            return Err(ConfigError::conflict(
                format!("{prefix}.{}", E::NAME_FIELD),
                format!("a {} named '{}' already exists", E::KIND.as_str(), entity.name()),
            ));
        }
        if let Some(id) = entity.id()
            && !ids.insert(id)
        {
            return Err(ConfigError::conflict(format!("{prefix}.id"), format!("id {id} is used twice")));
        }
    }
    Ok(())
}

fn unique_by<E: Entity>(list: &[E], field: &str, key: impl Fn(&E) -> Option<String>) -> Result {
    let mut seen = HashMap::new();
    for (i, entity) in list.iter().enumerate() {
        if let Some(value) = key(entity)
            && let Some(other) = seen.insert(value.clone(), entity.name())
        {
            return Err(ConfigError::conflict(
                format!("{}[{i}].{field}", E::COLLECTION),
                format!("{field} '{value}' is already used by {} '{other}'", E::KIND.as_str()),
            ));
        }
    }
    Ok(())
}

/// Two routes with the same path, hosts, methods and headers: the second
/// could never be chosen.
fn identical_routes(routes: &[Route]) -> Result {
    /// Path, sorted hosts, sorted methods, headers.
    type MatchKey = (String, Vec<String>, Vec<String>, String);
    let mut seen: HashMap<MatchKey, &str> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let mut hosts = route.hosts.clone();
        hosts.sort();
        let mut methods = route.methods.clone();
        methods.sort();
        let headers = format!("{:?}", route.headers);
        let paths = if route.paths.is_empty() { vec!["/".to_owned()] } else { route.paths.clone() };
        for (p, path) in paths.into_iter().enumerate() {
            let key = (path.clone(), hosts.clone(), methods.clone(), headers.clone());
            if let Some(other) = seen.insert(key, &route.name) {
                return Err(ConfigError::conflict(
                    format!("routes[{i}].paths[{p}]"),
                    format!(
                        "route '{}' matches exactly what route '{other}' matches ({path}); one of them could never be chosen",
                        route.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A target URL in canonical form: `scheme://host[:port]`.
fn target_url(field: &str, url: &str, scheme: &str) -> Result<String> {
    let invalid = |message: String| ConfigError::invalid(field, message);
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
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("must be scheme://host[:port], without a path or query".to_owned()));
    }
    Ok(format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

/// A route path prefix in canonical form (no trailing slash but for `/`).
fn route_path(field: &str, path: &str) -> Result<String> {
    let invalid = |message: &str| Err(ConfigError::invalid(field, format!("'{path}' {message}")));
    if !path.starts_with('/') {
        return invalid("must start with '/'");
    }
    if path.len() > MAX_PATH_LEN {
        return invalid("is longer than 1024 characters");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b);
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
    Ok(trimmed.to_owned())
}

fn host_pattern(field: &str, host: &str) -> Result {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || host.len() > 253 || !name.split('.').all(label_ok) {
        return Err(ConfigError::invalid(field, format!("'{host}' is not a host name or a '*.example.com' pattern")));
    }
    Ok(())
}

fn policies(list: &[Policy]) -> Result {
    bounded("policies", list.len(), MAX_LIST)?;
    for (i, policy) in list.iter().enumerate() {
        match policy {
            Policy::RequestSizeLimit { max_bytes } => {
                in_range(&format!("policies[{i}].max_bytes"), *max_bytes, 1, 1 << 30)?;
            }
        }
    }
    Ok(())
}

fn tags(list: &[String]) -> Result {
    bounded("tags", list.len(), MAX_TAGS)?;
    for (i, tag) in list.iter().enumerate() {
        let valid = tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/=-".contains(&b));
        if tag.is_empty() || tag.len() > 128 || !valid {
            return Err(ConfigError::invalid(
                format!("tags[{i}]"),
                "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '/', '=', '-'",
            ));
        }
    }
    unique("tags", list)
}

fn unique(field: &str, list: &[String]) -> Result {
    let mut seen = HashSet::new();
    for (i, item) in list.iter().enumerate() {
        if !seen.insert(item) {
            return Err(ConfigError::invalid(format!("{field}[{i}]"), format!("'{item}' is listed twice")));
        }
    }
    Ok(())
}

fn bounded(field: &str, len: usize, max: usize) -> Result {
    if len > max {
        return Err(ConfigError::invalid(field, format!("at most {max} entries are allowed")));
    }
    Ok(())
}

fn in_range<T: PartialOrd + std::fmt::Display>(field: &str, value: T, min: T, max: T) -> Result {
    if value < min || value > max {
        return Err(ConfigError::invalid(field, format!("must be {min} to {max}, got {value}")));
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    fn service(json: &str) -> Service {
        from_json(json.as_bytes()).unwrap()
    }

    fn route(json: &str) -> Route {
        from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn accepts_names_in_the_documented_alphabet() {
        for ok in ["default", "users-api", "a", "v1.2_beta", &"a".repeat(64)] {
            assert!(name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Users", "-x", ".", "..", "a b", "ü", "a/b", &"a".repeat(65)] {
            assert_eq!(name("name", bad).unwrap_err().field(), "name", "{bad}");
        }
    }

    #[test]
    fn rejects_service_without_targets() {
        let mut s = service(r#"{"name":"users","targets":[]}"#);
        assert_eq!(s.normalize_and_validate().unwrap_err().field(), "targets");
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
            assert_eq!(s.normalize_and_validate().unwrap_err().field(), "targets[1].url", "{url}");
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
    fn rejects_duplicate_paths_on_one_route() {
        let mut r = route(r#"{"name":"r","service":"s","paths":["/users","/users/"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().field(), "paths[1]");
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
            assert_eq!(r.normalize_and_validate().unwrap_err().field(), "paths[0]", "{path}");
        }
    }

    #[test]
    fn rejects_unknown_methods_and_bad_hosts() {
        let mut r = route(r#"{"name":"r","service":"s","methods":["GTE"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().field(), "methods[0]");
        let mut r = route(r#"{"name":"r","service":"s","hosts":["bad_host"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().field(), "hosts[0]");
        let mut r = route(r#"{"name":"r","service":"s","headers":{"X-A":["1"],"x-a":["2"]}}"#);
        assert!(r.normalize_and_validate().unwrap_err().field().starts_with("headers."));
    }

    #[test]
    fn config_rejects_routes_to_missing_services() {
        let mut c: GatewayConfig = from_json(br#"{"routes":[{"name":"r","service":"nope","paths":["/"]}]}"#).unwrap();
        let err = config(&mut c).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }));
        assert_eq!(err.field(), "routes[0].service");
    }

    #[test]
    fn config_rejects_duplicate_names_as_conflict() {
        let mut c: GatewayConfig =
            from_json(br#"{"services":[{"name":"s","targets":[{"url":"http://a:1"}]},{"name":"s","targets":[{"url":"http://b:1"}]}]}"#)
                .unwrap();
        let err = config(&mut c).unwrap_err();
        assert!(matches!(err, ConfigError::Conflict { .. }));
        assert_eq!(err.field(), "services[1].name");
    }

    #[test]
    fn config_rejects_routes_that_shadow_each_other() {
        let mut c: GatewayConfig = from_json(
            br#"{"services":[{"name":"s","targets":[{"url":"http://a:1"}]}],
                 "routes":[{"name":"a","service":"s","paths":["/x"],"methods":["GET"]},
                           {"name":"b","service":"s","paths":["/x/"],"methods":["get"]}]}"#,
        )
        .unwrap();
        assert!(matches!(config(&mut c).unwrap_err(), ConfigError::Conflict { .. }));
    }
}
