//! Validation of a whole config: every entity on its own (each type's
//! `impl Validate` lives beside it in [`crate::model`]), then what only the
//! whole config can tell: unique names, ids and keys, references between
//! entities (a route's service, a credential's consumer, an `anonymous`
//! consumer), routes that would shadow each other, certificates that claim
//! the same server name. Entities are first normalized (method case, host
//! case, trailing slashes) so that equal meaning has one spelling and one hash.

use std::collections::{HashMap, HashSet};

use crate::error::ConfigError;
use crate::model::{Certificate, Entity, EntityKind, GatewayConfig, Policy, Route};

pub(crate) mod rules;

pub use crate::model::credential::api_key;
use rules::{MAX_LIST, Result, bounded, unique};
pub use rules::{MAX_NAME_LEN, Validate, name};

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
    crate::model::policy::validate_list("policies", &mut config.policies)?;
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
    config.sort();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

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
