//! Validation of entities and of a whole config, with errors naming the
//! field. Entities are first normalized (method case, host case, trailing
//! slashes) so that equal meaning has one spelling and one hash.

use std::collections::{HashMap, HashSet};

use crate::error::ConfigError;
use sha2::{Digest, Sha256};

use crate::model::{
    Certificate, Consumer, Credential, CredentialType, Entity, EntityKind, GatewayConfig, HashOn, JwtAlgorithm, LoadBalancing, Policy,
    Route, Service,
};

/// Longest entity or gateway name.
pub const MAX_NAME_LEN: usize = 64;
const MAX_LIST: usize = 64;
const MAX_TARGETS: usize = 1_000;
const MAX_WEIGHT: u32 = 1_000;
const MAX_PATH_LEN: usize = 1_024;
const MAX_TAGS: usize = 32;
const MAX_SCOPE_LEN: usize = 128;
const MIN_HMAC_SECRET: usize = 32;
/// Longest a leaky bucket may make a request wait.
const MAX_QUEUE_WAIT_S: f64 = 600.0;
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
        match (self.load_balancing, self.hash_on.as_deref().map(|h| (h, HashOn::parse(h)))) {
            (LoadBalancing::ConsistentHash, None) => {
                return Err(ConfigError::invalid("hash_on", "consistent_hash needs hash_on: ip, consumer, header:<name> or cookie:<name>"));
            }
            (LoadBalancing::ConsistentHash, Some((_, Some(HashOn::Header(name))))) => {
                if name.len() > 128 || !name.bytes().all(is_token_byte) {
                    return Err(ConfigError::invalid("hash_on", "header:<name> needs a valid header name"));
                }
                self.hash_on = Some(format!("header:{name}"));
            }
            (LoadBalancing::ConsistentHash, Some((_, Some(HashOn::Cookie(name)))))
                if !name.bytes().all(is_token_byte) || name.len() > 128 =>
            {
                return Err(ConfigError::invalid("hash_on", "cookie:<name> needs a valid cookie name"));
            }
            (LoadBalancing::ConsistentHash, Some((value, None))) => {
                return Err(ConfigError::invalid("hash_on", format!("'{value}' is not ip, consumer, header:<name> or cookie:<name>")));
            }
            (LoadBalancing::RoundRobin | LoadBalancing::LeastRequests, Some(_)) => {
                return Err(ConfigError::invalid("hash_on", "only consistent_hash takes hash_on"));
            }
            _ => {}
        }
        if let Some(health) = &self.health_check {
            health_check(health)?;
        }
        if let Some(tls) = &self.tls {
            if self.protocol != crate::model::Protocol::Https {
                return Err(ConfigError::invalid("tls", "only an https service takes tls settings"));
            }
            crate::tls::upstream_tls(tls)?;
        }
        if let Some(breaker) = &self.circuit_breaker {
            in_range("circuit_breaker.failure_rate_percent", breaker.failure_rate_percent, 1, 100)?;
            in_range("circuit_breaker.min_requests", breaker.min_requests, 1, 100_000)?;
            if let Some(max) = breaker.max_failures {
                in_range("circuit_breaker.max_failures", max, 1, 100_000)?;
            }
            in_range("circuit_breaker.window_ms", breaker.window_ms, 100, 3_600_000)?;
            in_range("circuit_breaker.open_ms", breaker.open_ms, 100, 3_600_000)?;
            in_range("circuit_breaker.half_open_probes", breaker.half_open_probes, 1, 1_000)?;
        }
        if let Some(retries) = &mut self.retries {
            retries_valid(retries)?;
        }
        in_range("timeouts.connect_ms", self.timeouts.connect_ms, 1, 60_000)?;
        in_range("timeouts.request_ms", self.timeouts.request_ms, 1, 3_600_000)?;
        in_range("timeouts.idle_ms", self.timeouts.idle_ms, 1, 3_600_000)?;
        policies("policies", &mut self.policies)?;
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
        let shapes: Vec<String> = self.paths.iter().map(|p| crate::route_path::shape(p)).collect();
        if let Some(i) = (1..shapes.len()).find(|&i| shapes[..i].contains(&shapes[i])) {
            let message = format!("'{}' differs from another path of this route only in parameter names", self.paths[i]);
            return Err(ConfigError::invalid(format!("paths[{i}]"), message));
        }
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
        if let Some(retries) = &mut self.retries {
            retries_valid(retries)?;
        }
        policies("policies", &mut self.policies)?;
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
        scopes("scopes", &self.scopes)?;
        tags(&self.tags)
    }
}

impl Validate for Credential {
    fn normalize_and_validate(&mut self) -> Result {
        let fields: [(&str, bool); 8] = [
            ("key", self.key.is_some()),
            ("key_hash", self.key_hash.is_some()),
            ("issuer", self.issuer.is_some()),
            ("algorithm", self.algorithm.is_some()),
            ("secret", self.secret.is_some()),
            ("public_key", self.public_key.is_some()),
            ("jwks_url", self.jwks_url.is_some()),
            ("key_id", self.key_id.is_some()),
        ];
        let (kind, allowed): (&str, &[&str]) = match self.kind {
            CredentialType::KeyAuth => ("key-auth", &["key_hash"]),
            CredentialType::Jwt => ("jwt", &["issuer", "algorithm", "secret", "public_key", "jwks_url", "key_id"]),
        };
        if let Some((field, _)) = fields.iter().find(|(field, given)| *given && !allowed.contains(field)) {
            return Err(ConfigError::invalid(*field, format!("is not a field of a {kind} credential")));
        }
        match self.kind {
            CredentialType::KeyAuth => self.validate_key_auth()?,
            CredentialType::Jwt => self.validate_jwt()?,
        }
        if self.name.is_empty() {
            self.name = self.derived_name();
        }
        name("name", &self.name)?;
        if self.consumer.is_empty() {
            return Err(ConfigError::invalid("consumer", "must name the consumer (username) this credential belongs to"));
        }
        tags(&self.tags)
    }
}

impl Validate for Certificate {
    fn normalize_and_validate(&mut self) -> Result {
        name("name", &self.name)?;
        let parsed = crate::tls::parse_certificate(&self.cert, self.key.as_deref())?;
        // Left empty, the names are read from the certificate itself (each
        // time it changes), not stored.
        if self.snis.is_empty() && parsed.dns_names.is_empty() {
            return Err(ConfigError::invalid("snis", "the certificate names no DNS name: list the server names it is for"));
        }
        bounded("snis", self.snis.len(), MAX_LIST)?;
        for (i, sni) in self.snis.iter_mut().enumerate() {
            sni.make_ascii_lowercase();
            host_pattern(&format!("snis[{i}]"), sni)?;
        }
        unique("snis", &self.snis)?;
        tags(&self.tags)
    }
}

impl Credential {
    fn validate_key_auth(&mut self) -> Result {
        let hash = self.key_hash.as_mut().ok_or_else(|| ConfigError::invalid("key", "a key-auth credential needs a key"))?;
        hash.make_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::invalid("key_hash", "must be 64 hex digits (as exported; send `key` to set a new key)"));
        }
        Ok(())
    }

    fn validate_jwt(&self) -> Result {
        let issuer = self.issuer.as_deref().ok_or_else(|| ConfigError::invalid("issuer", "a jwt credential needs the tokens' issuer"))?;
        if issuer.is_empty() || issuer.len() > 512 || issuer.chars().any(char::is_control) {
            return Err(ConfigError::invalid("issuer", "must be 1 to 512 characters without control characters"));
        }
        let algorithm = self.algorithm.ok_or_else(|| {
            ConfigError::invalid(
                "algorithm",
                "a jwt credential needs its algorithm (HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384 or EdDSA)",
            )
        })?;
        if algorithm.is_hmac() {
            let secret = self.secret.as_deref().ok_or_else(|| ConfigError::invalid("secret", format!("{algorithm:?} needs a secret")))?;
            if secret.len() < MIN_HMAC_SECRET || secret.len() > 4096 {
                return Err(ConfigError::invalid("secret", format!("must be {MIN_HMAC_SECRET} to 4096 bytes")));
            }
            for (field, given) in [("public_key", self.public_key.is_some()), ("jwks_url", self.jwks_url.is_some())] {
                if given {
                    return Err(ConfigError::invalid(field, format!("{algorithm:?} verifies with a secret, not a public key")));
                }
            }
        } else {
            if self.secret.is_some() {
                return Err(ConfigError::invalid("secret", format!("{algorithm:?} verifies with a public key, not a secret")));
            }
            match (&self.public_key, &self.jwks_url) {
                (Some(pem), None) => public_key("public_key", algorithm, pem)?,
                (None, Some(url)) => {
                    jwks_url("jwks_url", url)?;
                    if self.key_id.is_some() {
                        return Err(ConfigError::invalid("key_id", "a JWKS names its own keys; leave key_id out with jwks_url"));
                    }
                }
                _ => return Err(ConfigError::invalid("public_key", format!("{algorithm:?} needs exactly one of public_key or jwks_url"))),
            }
        }
        if let Some(kid) = &self.key_id
            && (kid.is_empty() || kid.len() > 256 || kid.chars().any(char::is_control))
        {
            return Err(ConfigError::invalid("key_id", "must be 1 to 256 characters without control characters"));
        }
        Ok(())
    }

    /// A stable name from what identifies the credential, so that a
    /// declarative document without names applies idempotently.
    fn derived_name(&self) -> String {
        match self.kind {
            CredentialType::KeyAuth => format!("key-{}", &self.key_hash.as_deref().unwrap_or_default()[..12]),
            CredentialType::Jwt => {
                let identity = format!("{}\n{}", self.issuer.as_deref().unwrap_or_default(), self.key_id.as_deref().unwrap_or_default());
                format!("jwt-{}", &hex::encode(Sha256::digest(identity.as_bytes()))[..12])
            }
        }
    }
}

/// Checks an API key as a user sends it: 16 to 256 visible ASCII characters.
pub fn api_key(field: &str, key: &str) -> Result {
    if key.len() < 16 || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(field, "must be 16 to 256 visible ASCII characters"));
    }
    Ok(())
}

fn public_key(field: &str, algorithm: JwtAlgorithm, pem: &str) -> Result {
    use jsonwebtoken::DecodingKey;
    let parsed = match algorithm {
        JwtAlgorithm::RS256 | JwtAlgorithm::RS384 | JwtAlgorithm::RS512 => DecodingKey::from_rsa_pem(pem.as_bytes()).map(drop),
        JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()).map(drop),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()).map(drop),
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => Ok(()),
    };
    parsed.map_err(|e| ConfigError::invalid(field, format!("is not a PEM public key for {algorithm:?}: {e}")))
}

fn jwks_url(field: &str, url: &str) -> Result {
    let uri: http::Uri = url.parse().map_err(|e| ConfigError::invalid(field, format!("'{url}' is not a valid URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(field, format!("'{url}' must be an absolute https:// (or http://) URL")));
    }
    Ok(())
}

/// Normalizes and checks a whole config: every entity, unique names and
/// ids, references between entities, and routes that would shadow each
/// other exactly. Error fields index the lists as given; on success the
/// collections end up in name order.
pub fn config(config: &mut GatewayConfig) -> Result {
    entities(&mut config.services)?;
    entities(&mut config.routes)?;
    entities(&mut config.consumers)?;
    entities(&mut config.credentials)?;
    entities(&mut config.certificates)?;
    certificates(&config.certificates)?;
    policies("policies", &mut config.policies)?;
    trusted_proxies(&mut config.trusted_proxies)?;
    unique_by(&config.consumers, "custom_id", |c| c.custom_id.clone())?;
    credentials(config)?;
    anonymous_consumers(config)?;
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
    scopes_need_authentication(config)?;
    transforms_fit_their_routes(config)?;
    config.sort();
    Ok(())
}

/// What a transform reads must exist on each route it applies to, else
/// every request would be a `400` or fall to the default profile: a
/// `{path.x}` needs `{x}` in every path of the route, and a `when.claim` or
/// `{claim.x}` needs a `jwt` policy.
fn transforms_fit_their_routes(config: &GatewayConfig) -> Result {
    for (i, route) in config.routes.iter().enumerate() {
        let Some(service) = config.services.iter().find(|s| s.name == route.service) else { continue };
        let policies = crate::model::effective_policies(route, service, &config.policies);
        let has_jwt = policies.iter().any(|p| matches!(p, Policy::Jwt(_)));
        for policy in &policies {
            let (templates, when): (Vec<&str>, _) = match policy {
                Policy::RequestTransform(t) => {
                    let headers = t.headers.set.values().chain(t.headers.add.values());
                    (headers.chain(t.query.add.values()).chain(t.path.iter()).map(String::as_str).collect(), &t.when)
                }
                Policy::ResponseTransform(t) => {
                    (t.headers.set.values().chain(t.headers.add.values()).map(String::as_str).collect(), &t.when)
                }
                _ => continue,
            };
            let needs_jwt = |what: &str| {
                ConfigError::invalid(
                    format!("routes[{i}].policies"),
                    format!(
                        "route '{}' has a {} policy using {what}, which needs a jwt policy on the route",
                        route.name,
                        policy.type_name()
                    ),
                )
            };
            if let Some(claim) = when.as_ref().and_then(|w| w.claim.as_ref())
                && !has_jwt
            {
                return Err(needs_jwt(&format!("when.claim '{claim}'")));
            }
            for template in templates.iter().filter_map(|text| crate::template::Template::parse(text).ok()) {
                for source in template.sources() {
                    match source {
                        crate::template::Source::Claim(name) if !has_jwt => return Err(needs_jwt(&format!("{{claim.{name}}}"))),
                        crate::template::Source::Path(name) => {
                            let paths = if route.paths.is_empty() { vec!["/".to_owned()] } else { route.paths.clone() };
                            if let Some(path) = paths.iter().find(|path| !crate::route_path::path_params(path).any(|p| p == name)) {
                                return Err(ConfigError::invalid(
                                    format!("routes[{i}].paths"),
                                    format!(
                                        "route '{}' has a {} policy using {{path.{name}}}, but its path '{path}' has no {{{name}}} segment",
                                        route.name,
                                        policy.type_name()
                                    ),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(())
}

/// The entities that refer to the `kind` entity named `name`, as
/// `(kind, name)`: while there are any, it can be neither deleted nor renamed.
pub fn referrers<'a>(config: &'a GatewayConfig, kind: EntityKind, name: &str) -> Vec<(EntityKind, &'a str)> {
    match kind {
        EntityKind::Service => config.routes.iter().filter(|r| r.service == name).map(|r| (EntityKind::Route, r.name.as_str())).collect(),
        EntityKind::Consumer => {
            let credentials = config.credentials.iter().filter(|c| c.consumer == name).map(|c| (EntityKind::Credential, c.name.as_str()));
            let anonymous = |policies: &[Policy]| policies.iter().any(|p| p.anonymous() == Some(name));
            let routes = config.routes.iter().filter(|r| anonymous(&r.policies)).map(|r| (EntityKind::Route, r.name.as_str()));
            let services = config.services.iter().filter(|s| anonymous(&s.policies)).map(|s| (EntityKind::Service, s.name.as_str()));
            let gateway = anonymous(&config.policies).then_some((EntityKind::Gateway, "settings"));
            credentials.chain(routes).chain(services).chain(gateway).collect()
        }
        EntityKind::Route | EntityKind::Credential | EntityKind::Certificate | EntityKind::Gateway => Vec::new(),
    }
}

/// Credentials belong to existing consumers, and each identifies one:
/// a key hash is used once, and an issuer's keys are told apart by key id
/// (an issuer served by a JWKS has one credential).
fn credentials(config: &GatewayConfig) -> Result {
    let consumers: HashSet<&str> = config.consumers.iter().map(|c| c.username.as_str()).collect();
    let mut hashes = HashMap::new();
    let mut jwt_keys: HashMap<(&str, Option<&str>), &str> = HashMap::new();
    let mut jwks_issuers: HashMap<&str, &str> = HashMap::new();
    for (i, credential) in config.credentials.iter().enumerate() {
        let field = |f: &str| format!("credentials[{i}].{f}");
        if !consumers.contains(credential.consumer.as_str()) {
            return Err(ConfigError::invalid(field("consumer"), format!("consumer '{}' does not exist", credential.consumer)));
        }
        if let Some(hash) = &credential.key_hash
            && let Some(other) = hashes.insert(hash.as_str(), credential.name.as_str())
        {
            return Err(ConfigError::conflict(field("key"), format!("the same key is already credential '{other}'")));
        }
        let Some(issuer) = credential.issuer.as_deref() else { continue };
        let clash = if credential.jwks_url.is_some() {
            jwks_issuers.insert(issuer, &credential.name).or_else(|| jwt_keys.keys().find(|(iss, _)| *iss == issuer).map(|k| jwt_keys[k]))
        } else {
            jwks_issuers.get(issuer).copied().or_else(|| jwt_keys.insert((issuer, credential.key_id.as_deref()), &credential.name))
        };
        if let Some(other) = clash {
            return Err(ConfigError::conflict(
                field("issuer"),
                format!("credential '{other}' already verifies tokens of issuer '{issuer}' (give each key of an issuer its own key_id)"),
            ));
        }
    }
    Ok(())
}

/// A route whose policies check scopes must also authenticate its callers.
fn scopes_need_authentication(config: &GatewayConfig) -> Result {
    let services: HashMap<&str, &crate::model::Service> = config.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for (i, route) in config.routes.iter().enumerate() {
        let Some(service) = services.get(route.service.as_str()) else { continue };
        let policies = crate::model::effective_policies(route, service, &config.policies);
        if policies.iter().any(|p| matches!(p, Policy::Scopes(_))) && !policies.iter().any(|p| p.authenticates()) {
            return Err(ConfigError::invalid(
                format!("routes[{i}].policies"),
                format!("route '{}' checks scopes but no key-auth or jwt policy applies to it", route.name),
            ));
        }
    }
    Ok(())
}

/// Each server name has one certificate, and one certificate at most is the default.
fn certificates(list: &[Certificate]) -> Result {
    let mut owners: HashMap<&str, &str> = HashMap::new();
    let mut default = None;
    let mut names = Vec::with_capacity(list.len());
    for (i, certificate) in list.iter().enumerate() {
        names.push(crate::tls::server_names(certificate).map_err(|e| e.within(&format!("certificates[{i}]")))?);
    }
    for (i, (certificate, names)) in list.iter().zip(&names).enumerate() {
        for (j, sni) in names.iter().enumerate() {
            if let Some(other) = owners.insert(sni.as_str(), &certificate.name) {
                return Err(ConfigError::conflict(
                    format!("certificates[{i}].snis[{j}]"),
                    format!("'{sni}' is already served by certificate '{other}'"),
                ));
            }
        }
        if certificate.default
            && let Some(other) = default.replace(&certificate.name)
        {
            return Err(ConfigError::conflict(
                format!("certificates[{i}].default"),
                format!("certificate '{other}' is already the default"),
            ));
        }
    }
    Ok(())
}

/// Every `anonymous` consumer that an authentication policy names exists.
fn anonymous_consumers(config: &GatewayConfig) -> Result {
    let consumers: HashSet<&str> = config.consumers.iter().map(|c| c.username.as_str()).collect();
    let lists = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("routes[{i}].policies"), &r.policies))
        .chain(config.services.iter().enumerate().map(|(i, s)| (format!("services[{i}].policies"), &s.policies)))
        .chain(std::iter::once(("policies".to_owned(), &config.policies)));
    for (field, list) in lists {
        for (j, policy) in list.iter().enumerate() {
            if let Some(anonymous) = policy.anonymous()
                && !consumers.contains(anonymous)
            {
                return Err(ConfigError::invalid(format!("{field}[{j}].anonymous"), format!("consumer '{anonymous}' does not exist")));
            }
        }
    }
    Ok(())
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
            let key = (crate::route_path::shape(&path), hosts.clone(), methods.clone(), headers.clone());
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

fn retries_valid(retries: &mut crate::model::Retries) -> Result {
    in_range("retries.attempts", retries.attempts, 1, 10)?;
    if let Some(per_try) = retries.per_try_timeout_ms {
        in_range("retries.per_try_timeout_ms", per_try, 1, 3_600_000)?;
    }
    in_range("retries.budget_percent", retries.budget_percent, 0, 100)?;
    retries.on.sort_by_key(|on| format!("{on:?}"));
    retries.on.dedup();
    Ok(())
}

fn health_check(health: &crate::model::HealthCheck) -> Result {
    if let Some(active) = &health.active {
        let path = &active.path;
        if !path.starts_with('/') || path.len() > MAX_PATH_LEN || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::invalid(
                "health_check.active.path",
                "must start with '/' and be at most 1024 visible ASCII characters",
            ));
        }
        in_range("health_check.active.interval_ms", active.interval_ms, 100, 3_600_000)?;
        in_range("health_check.active.timeout_ms", active.timeout_ms, 1, 60_000.min(active.interval_ms.saturating_sub(1).max(1)))?;
        in_range("health_check.active.healthy_threshold", active.healthy_threshold, 1, 100)?;
        in_range("health_check.active.unhealthy_threshold", active.unhealthy_threshold, 1, 100)?;
    }
    if let Some(passive) = &health.passive {
        in_range("health_check.passive.consecutive_failures", passive.consecutive_failures, 1, 1_000)?;
        in_range("health_check.passive.base_ejection_ms", passive.base_ejection_ms, 100, 3_600_000)?;
        in_range("health_check.passive.max_ejection_ms", passive.max_ejection_ms, passive.base_ejection_ms, 3_600_000)?;
    }
    Ok(())
}

/// Checks a list of policies: each on its own, and at most one of each type.
fn policies(field: &str, list: &mut [Policy]) -> Result {
    bounded(field, list.len(), MAX_LIST)?;
    let mut types = HashSet::new();
    for (i, policy) in list.iter_mut().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
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
            return Err(ConfigError::invalid(format!("{field}[{i}]"), message));
        }
        match policy {
            Policy::RequestSizeLimit { max_bytes } => in_range(&at("max_bytes"), *max_bytes, 1, 1 << 30)?,
            Policy::KeyAuth(p) => {
                p.header.make_ascii_lowercase();
                if p.header.is_empty() || p.header.len() > 128 || !p.header.bytes().all(is_token_byte) {
                    return Err(ConfigError::invalid(at("header"), "is not a valid header name"));
                }
                if let Some(query) = &p.query
                    && (query.is_empty() || query.len() > 128 || !query.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)))
                {
                    return Err(ConfigError::invalid(
                        at("query"),
                        "must be 1 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~' (or null)",
                    ));
                }
            }
            Policy::Jwt(p) => {
                bounded(&at("audience"), p.audience.len(), MAX_LIST)?;
                for (j, audience) in p.audience.iter().enumerate() {
                    if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control) {
                        return Err(ConfigError::invalid(
                            at(&format!("audience[{j}]")),
                            "must be 1 to 512 characters without control characters",
                        ));
                    }
                }
                bounded(&at("required_claims"), p.required_claims.len(), 16)?;
                for (j, claim) in p.required_claims.iter().enumerate() {
                    if claim.is_empty() || claim.len() > 64 || !claim.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(ConfigError::invalid(at(&format!("required_claims[{j}]")), "must be 1 to 64 visible ASCII characters"));
                    }
                }
                unique(&at("required_claims"), &p.required_claims)?;
                in_range(&at("leeway_s"), p.leeway_s, 0, 600)?;
            }
            Policy::RateLimit(p) => rate_limit(&at, p)?,
            Policy::Cors(p) => p.normalize_and_validate().map_err(|e| e.within(&format!("{field}[{i}]")))?,
            Policy::IpRestriction(p) => p.normalize_and_validate().map_err(|e| e.within(&format!("{field}[{i}]")))?,
            Policy::RequestTransform(p) => p.normalize_and_validate().map_err(|e| e.within(&format!("{field}[{i}]")))?,
            Policy::ResponseTransform(p) => p.normalize_and_validate().map_err(|e| e.within(&format!("{field}[{i}]")))?,
            Policy::Scopes(p) => {
                scopes(&at("all_of"), &p.all_of)?;
                scopes(&at("any_of"), &p.any_of)?;
                if p.all_of.is_empty() && p.any_of.is_empty() {
                    return Err(ConfigError::invalid(at("all_of"), "name at least one scope in all_of or any_of"));
                }
            }
        }
    }
    Ok(())
}

fn rate_limit(at: &dyn Fn(&str) -> String, p: &mut crate::model::RateLimitPolicy) -> Result {
    use crate::model::{RateLimitAlgorithm, RateLimitKey};
    let max_limit = if p.algorithm == RateLimitAlgorithm::SlidingWindowLog { 10_000 } else { 1_000_000_000 };
    in_range(&at("limit"), p.limit, 1, max_limit)?;
    in_range(&at("window_s"), p.window_s, 1, 86_400)?;
    match (p.algorithm, p.burst) {
        (RateLimitAlgorithm::TokenBucket | RateLimitAlgorithm::LeakyBucket, Some(burst)) => {
            in_range(&at("burst"), burst, 1, 1_000_000_000)?
        }
        (_, Some(_)) => return Err(ConfigError::invalid(at("burst"), "only token_bucket and leaky_bucket take a burst")),
        (_, None) => {}
    }
    if p.algorithm == RateLimitAlgorithm::LeakyBucket {
        let wait = p.burst.unwrap_or(p.limit) as f64 * p.window_s as f64 / p.limit as f64;
        if wait > MAX_QUEUE_WAIT_S {
            return Err(ConfigError::invalid(
                at("burst"),
                format!(
                    "a request could wait {wait:.0} s in the queue (burst × window_s / limit); at most {MAX_QUEUE_WAIT_S} s: lower burst"
                ),
            ));
        }
    }
    match RateLimitKey::parse(&p.key) {
        Some(RateLimitKey::Header(name)) => {
            if name.len() > 128 || !name.bytes().all(is_token_byte) {
                return Err(ConfigError::invalid(at("key"), "header:<name> needs a valid header name"));
            }
            p.key = format!("header:{name}");
        }
        Some(RateLimitKey::Claim(name)) if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(ConfigError::invalid(at("key"), "claim:<name> needs 1 to 64 visible ASCII characters"));
        }
        Some(_) => {}
        None => return Err(ConfigError::invalid(at("key"), "must be consumer, ip, route, service, header:<name> or claim:<name>")),
    }
    Ok(())
}

/// Checks and normalizes trusted proxy CIDRs (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
fn trusted_proxies(list: &mut [String]) -> Result {
    bounded("trusted_proxies", list.len(), MAX_LIST)?;
    for (i, cidr) in list.iter_mut().enumerate() {
        let parsed = cidr.parse::<ipnet::IpNet>().or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
            ConfigError::invalid(format!("trusted_proxies[{i}]"), format!("'{cidr}' is not an address or CIDR such as 10.0.0.0/8"))
        })?;
        *cidr = parsed.trunc().to_string();
    }
    unique("trusted_proxies", list)
}

fn scopes(field: &str, list: &[String]) -> Result {
    bounded(field, list.len(), MAX_LIST)?;
    for (i, scope) in list.iter().enumerate() {
        if scope.is_empty() || scope.len() > MAX_SCOPE_LEN || !scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            return Err(ConfigError::invalid(
                format!("{field}[{i}]"),
                "must be 1 to 128 visible ASCII characters, without quotes or backslashes",
            ));
        }
    }
    unique(field, list)
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
    fn consistent_hash_needs_a_known_hash_on_and_only_it_takes_one() {
        let with = |extra: &str| service(&format!(r#"{{"name":"s","targets":[{{"url":"http://a:1"}}]{extra}}}"#));
        for bad in [
            r#","load_balancing":"consistent_hash""#,
            r#","load_balancing":"consistent_hash","hash_on":"body""#,
            r#","load_balancing":"least_requests","hash_on":"ip""#,
            r#","load_balancing":"consistent_hash","hash_on":"header:a b""#,
        ] {
            assert_eq!(with(bad).normalize_and_validate().unwrap_err().field(), "hash_on", "{bad}");
        }
        let mut ok = with(r#","load_balancing":"consistent_hash","hash_on":"header:X-User""#);
        ok.normalize_and_validate().unwrap();
        assert_eq!(ok.hash_on.as_deref(), Some("header:x-user"));
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
            let error = r.normalize_and_validate().unwrap_err();
            assert_eq!(error.field(), "paths[1]", "{path}");
            assert!(error.message().starts_with(&format!("'{path}' ")) && error.message().contains(expected), "{path}: {error}");
        }
        let many: String = (0..17).map(|i| format!("/{{p{i}}}")).collect();
        let mut r = route(&format!(r#"{{"name":"r","service":"s","paths":["{many}"]}}"#));
        assert!(r.normalize_and_validate().unwrap_err().message().contains("at most 16"));
    }

    #[test]
    fn rejects_escapes_that_could_never_match_and_uppercases_the_rest() {
        let mut r = route(r#"{"name":"r","service":"s","paths":["/%61dmin"]}"#);
        let error = r.normalize_and_validate().unwrap_err();
        assert_eq!(error.field(), "paths[0]");
        assert!(error.message().contains("request paths are matched with escaped letters, digits and '-._~' decoded"), "{error}");
        for path in ["/a%2Fb", "/a%", "/a%zz", "/%2e%2e"] {
            let mut r = route(&format!(r#"{{"name":"r","service":"s","paths":["{path}"]}}"#));
            assert_eq!(r.normalize_and_validate().unwrap_err().field(), "paths[0]", "{path}");
        }
        let mut r = route(r#"{"name":"r","service":"s","paths":["/caf%c3%a9"]}"#);
        r.normalize_and_validate().unwrap();
        assert_eq!(r.paths, ["/caf%C3%A9"], "as normalized request paths carry it");
    }

    #[test]
    fn rejects_paths_differing_only_in_parameter_names() {
        let mut r = route(r#"{"name":"r","service":"s","paths":["/users/{id}","/users/{user}"]}"#);
        assert_eq!(r.normalize_and_validate().unwrap_err().field(), "paths[1]");
        let mut config: GatewayConfig = crate::parse::from_yaml(
            br#"
services: [{name: s, targets: [{url: "http://127.0.0.1:1"}]}]
routes:
  - {name: a, service: s, paths: ["/users/{id}"]}
  - {name: b, service: s, paths: ["/users/{user}"]}
"#,
        )
        .unwrap();
        let error = super::config(&mut config).unwrap_err();
        assert_eq!(error.field(), "routes[1].paths[0]", "{error}");
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

    fn route_with(policies: &str) -> Route {
        route(&format!(r#"{{"name":"r","service":"s","paths":["/"],"policies":{policies}}}"#))
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
        assert_eq!(twice.normalize_and_validate().unwrap_err().field(), "policies[1]");
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
            assert_eq!(r.normalize_and_validate().unwrap_err().field(), field, "{policy}");
        }
    }

    #[test]
    fn the_most_specific_auth_policy_wins_and_limits_add_up() {
        let mut c: GatewayConfig = from_json(
            br#"{"services":[{"name":"s","targets":[{"url":"http://a:1"}],"policies":[{"type":"jwt"},
                    {"type":"rate-limit","algorithm":"fixed_window","limit":5,"window_s":1}]}],
                 "routes":[{"name":"r","service":"s","paths":["/"],"policies":[{"type":"key-auth"}]}],
                 "policies":[{"type":"key-auth","header":"x-other"},{"type":"rate-limit","algorithm":"fixed_window","limit":9,"window_s":1}]}"#,
        )
        .unwrap();
        config(&mut c).unwrap();
        let types: Vec<&str> =
            crate::model::effective_policies(&c.routes[0], &c.services[0], &c.policies).iter().map(|p| p.type_name()).collect();
        assert_eq!(types, ["key-auth", "jwt", "rate-limit", "rate-limit"]);
        let chosen = crate::model::effective_policies(&c.routes[0], &c.services[0], &c.policies);
        assert!(matches!(chosen[0], Policy::KeyAuth(p) if p.header == "x-api-key"), "the route's own key-auth, not the gateway's");
    }
}
