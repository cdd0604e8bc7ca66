//! Validation of a whole config: every entity on its own (each type's
//! `impl Validate` lives beside it in [`crate::model`]), then what only the
//! whole config can tell: unique names, ids and keys, references between
//! entities (a route's service, a credential's consumer, an `anonymous`
//! consumer, a `grpc` route's proto and the services it names, an `amqp`
//! route's broker), routes
//! that would shadow each other, certificates that claim the same server
//! name. Entities are first normalized (method case, host
//! case, trailing slashes) so that equal meaning has one spelling and one hash.

use std::collections::{HashMap, HashSet};

use crate::error::{ConfigError, ConfigErrors, Errors};

use crate::model::proto::MAX_PROTOS;
use crate::model::{Certificate, Consumer, Credential, CredentialKind, Entity, EntityKind, GatewayConfig, Policy, Route};

mod amqp;
mod grpc;
pub(crate) mod rules;

pub use crate::model::credential::api_key;
use rules::{MAX_LIST, Result, bounded, unique};
pub use rules::{MAX_NAME_LEN, Validate, name};

/// Normalizes and checks a whole config: every entity, unique names and
/// ids, references between entities, and routes that would shadow each
/// other exactly. Every error is reported: each entity's own, then those
/// across entities, which look only at entities that passed their own
/// checks (so one mistake is reported once, not again as the clash it
/// causes). Error fields index the lists as given; on success the
/// collections end up in name order.
pub fn config(config: &mut GatewayConfig) -> Result<(), ConfigErrors> {
    let mut errors = Errors::default();
    let ok = Passed {
        services: entities(&mut config.services, &mut errors),
        routes: entities(&mut config.routes, &mut errors),
        consumers: entities(&mut config.consumers, &mut errors),
        credentials: entities(&mut config.credentials, &mut errors),
        certificates: entities(&mut config.certificates, &mut errors),
        protos: entities(&mut config.protos, &mut errors),
    };
    errors.check(bounded("protos", config.protos.len(), MAX_PROTOS));
    errors.check(crate::model::policy::validate_list("policies", &mut config.policies));
    errors.check(trusted_proxies(&mut config.trusted_proxies));
    certificates(passed(&config.certificates, &ok.certificates), &mut errors);
    unique_by(passed(&config.consumers, &ok.consumers), "custom_id", |c: &Consumer| c.custom_id.clone(), &mut errors);
    credentials(config, &ok, &mut errors);
    anonymous_consumers(config, &ok, &mut errors);
    let services: HashSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    for (i, route) in passed(&config.routes, &ok.routes) {
        let fields: Vec<String> = match route.backend.aggregate() {
            None => vec![format!("routes[{i}].service")],
            Some(aggregate) => (0..aggregate.calls.len()).map(|j| format!("routes[{i}].aggregate.calls[{j}].service")).collect(),
        };
        for (field, service) in fields.into_iter().zip(route.backend.services()) {
            if !services.contains(service) {
                errors.add(ConfigError::invalid(
                    field,
                    format!("route '{}' refers to service '{service}', which does not exist", route.name),
                ));
            }
        }
    }
    identical_routes(passed(&config.routes, &ok.routes), &mut errors);
    grpc::routes(config, &ok, &mut errors);
    amqp::routes(config, &ok, &mut errors);
    scopes_need_authentication(config, &ok, &mut errors);
    for (i, route) in passed(&config.routes, &ok.routes) {
        errors.check(transform_fits_its_route(config, i, route));
    }
    errors.finish()?;
    config.sort();
    Ok(())
}

/// Which entities of each list passed their own checks.
struct Passed {
    services: Vec<bool>,
    routes: Vec<bool>,
    consumers: Vec<bool>,
    credentials: Vec<bool>,
    certificates: Vec<bool>,
    protos: Vec<bool>,
}

/// The entities of `list` whose flag in `ok` is set, with their index.
fn passed<'a, E>(list: &'a [E], ok: &'a [bool]) -> impl Iterator<Item = (usize, &'a E)> + 'a {
    list.iter().enumerate().filter(|(i, _)| ok[*i])
}

/// The policies that apply to a route, when its service exists (an
/// aggregate has none of its own).
fn route_policies<'a>(config: &'a GatewayConfig, route: &'a Route) -> Option<Vec<&'a Policy>> {
    let service = match route.service() {
        Some(name) => Some(config.services.iter().find(|s| s.name == name)?),
        None => None,
    };
    Some(crate::model::effective_policies(route, service, &config.policies))
}

/// What a transform or an aggregate call reads must exist on each route
/// it applies to, else every request would be a `400` or fall to the
/// default profile: a `{path.x}` needs `{x}` in every path of the route,
/// a `when.claim` or `{claim.x}` a `jwt` policy, and a consumer field an
/// authenticating one. An aggregate route cannot rewrite the path or query
/// of a request it never sends.
fn transform_fits_its_route(config: &GatewayConfig, i: usize, route: &Route) -> std::result::Result<(), ConfigError> {
    {
        let Some(policies) = route_policies(config, route) else { return Ok(()) };
        let has_jwt = policies.iter().any(|p| matches!(p, Policy::Jwt(_)));
        if let Some(aggregate) = route.backend.aggregate() {
            if let Some(policy) =
                policies.iter().find(|p| matches!(p, Policy::RequestTransform(t) if t.path.is_some() || !t.query.is_empty()))
            {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].policies"),
                    format!(
                        "route '{}' is an aggregate, so its {} policy cannot rewrite a path or query: each call's path says what it sends",
                        route.name,
                        policy.type_name()
                    ),
                ));
            }
            let what = "aggregate";
            for source in aggregate.sources() {
                source_fits(route, i, &policies, has_jwt, what, &source)?;
            }
        }
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
            if let Some(claim) = when.as_ref().and_then(|w| w.claim.as_ref())
                && !has_jwt
            {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].policies"),
                    format!(
                        "route '{}' has a {} policy using when.claim '{claim}', which needs a jwt policy on the route",
                        route.name,
                        policy.type_name()
                    ),
                ));
            }
            let what = format!("{} policy", policy.type_name());
            for template in templates.iter().filter_map(|text| crate::template::Template::parse(text).ok()) {
                for source in template.sources() {
                    source_fits(route, i, &policies, has_jwt, &what, source)?;
                }
            }
        }
    }
    Ok(())
}

/// A template `source` used by `what` (`aggregate`, `request-transform
/// policy`) of route `i` has a value on every request the route takes.
fn source_fits(
    route: &Route,
    i: usize,
    policies: &[&Policy],
    has_jwt: bool,
    what: &str,
    source: &crate::template::Source,
) -> std::result::Result<(), ConfigError> {
    let (field, message) = match source {
        crate::template::Source::Claim(_) if !has_jwt => {
            ("policies", format!("route '{}' has a {what} using {{{source}}}, which needs a jwt policy on the route", route.name))
        }
        source if source.needs_identity() && !policies.iter().any(|p| p.authenticates()) => {
            ("policies", format!("route '{}' has a {what} using {{{source}}}, which needs key-auth or jwt on the route", route.name))
        }
        crate::template::Source::Path(name) => {
            let paths = if route.paths.is_empty() { vec!["/".to_owned()] } else { route.paths.clone() };
            let Some(path) = paths.iter().find(|path| !crate::route_path::path_params(path).any(|p| p == name)) else { return Ok(()) };
            ("paths", format!("route '{}' has a {what} using {{path.{name}}}, but its path '{path}' has no {{{name}}} segment", route.name))
        }
        _ => return Ok(()),
    };
    Err(ConfigError::invalid(format!("routes[{i}].{field}"), message))
}

/// The entities that refer to the `kind` entity named `name`, as
/// `(kind, name)`: while there are any, it can be neither deleted nor renamed.
pub fn referrers<'a>(config: &'a GatewayConfig, kind: EntityKind, name: &str) -> Vec<(EntityKind, &'a str)> {
    match kind {
        EntityKind::Service => {
            config.routes.iter().filter(|r| r.backend.services().contains(&name)).map(|r| (EntityKind::Route, r.name.as_str())).collect()
        }
        EntityKind::Consumer => {
            let credentials = config.credentials.iter().filter(|c| c.consumer == name).map(|c| (EntityKind::Credential, c.name.as_str()));
            let anonymous = |policies: &[Policy]| policies.iter().any(|p| p.anonymous() == Some(name));
            let routes = config.routes.iter().filter(|r| anonymous(&r.policies)).map(|r| (EntityKind::Route, r.name.as_str()));
            let services = config.services.iter().filter(|s| anonymous(&s.policies)).map(|s| (EntityKind::Service, s.name.as_str()));
            let gateway = anonymous(&config.policies).then_some((EntityKind::Gateway, "settings"));
            credentials.chain(routes).chain(services).chain(gateway).collect()
        }
        EntityKind::Proto => config
            .routes
            .iter()
            .filter(|r| r.backend.grpc().is_some_and(|g| g.proto == name))
            .map(|r| (EntityKind::Route, r.name.as_str()))
            .collect(),
        EntityKind::Route | EntityKind::Credential | EntityKind::Certificate | EntityKind::Gateway => Vec::new(),
    }
}

/// Checks each entity of a list on its own, then that names and ids are
/// unique among those that passed; answers which passed.
fn entities<E: Entity + Validate>(list: &mut [E], errors: &mut Errors) -> Vec<bool> {
    let ok: Vec<bool> = list
        .iter_mut()
        .enumerate()
        .map(|(i, entity)| errors.check_within(&format!("{}[{i}]", E::COLLECTION), entity.normalize_and_validate()).is_some())
        .collect();
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for (i, entity) in passed(list, &ok) {
        let prefix = format!("{}[{i}]", E::COLLECTION);
        if !names.insert(entity.name()) {
            errors.add(ConfigError::conflict(
                format!("{prefix}.{}", E::NAME_FIELD),
                format!("a {} named '{}' already exists", E::KIND.as_str(), entity.name()),
            ));
        }
        if let Some(id) = entity.id()
            && !ids.insert(id)
        {
            errors.add(ConfigError::conflict(format!("{prefix}.id"), format!("id {id} is used twice")));
        }
    }
    ok
}

/// A value (such as a consumer's `custom_id`) that at most one entity has.
fn unique_by<'a, E: Entity>(
    list: impl Iterator<Item = (usize, &'a E)>,
    field: &str,
    key: impl Fn(&E) -> Option<String>,
    errors: &mut Errors,
) {
    let mut seen = HashMap::new();
    for (i, entity) in list {
        if let Some(value) = key(entity)
            && let Some(other) = seen.insert(value.clone(), entity.name())
        {
            errors.add(ConfigError::conflict(
                format!("{}[{i}].{field}", E::COLLECTION),
                format!("{field} '{value}' is already used by {} '{other}'", E::KIND.as_str()),
            ));
        }
    }
}

/// Credentials belong to existing consumers, and each identifies one:
/// a key hash is used once, and an issuer's keys are told apart by key id
/// (an issuer served by a JWKS has one credential).
fn credentials(config: &GatewayConfig, ok: &Passed, errors: &mut Errors) {
    let consumers: HashSet<&str> = config.consumers.iter().map(|c| c.username.as_str()).collect();
    let mut hashes = HashMap::new();
    let mut jwt_keys: HashMap<(&str, Option<&str>), &str> = HashMap::new();
    let mut jwks_issuers: HashMap<&str, &str> = HashMap::new();
    for (i, credential) in passed(&config.credentials, &ok.credentials) {
        let field = |f: &str| format!("credentials[{i}].{f}");
        if !consumers.contains(credential.consumer.as_str()) {
            errors.add(ConfigError::invalid(field("consumer"), format!("consumer '{}' does not exist", credential.consumer)));
        }
        if let Some(other) = credential_clash(credential, &mut hashes, &mut jwt_keys, &mut jwks_issuers) {
            errors.add(other.within(&format!("credentials[{i}]")));
        }
    }
}

/// The credential that `credential` would clash with, as the error to report.
fn credential_clash<'a>(
    credential: &'a Credential,
    hashes: &mut HashMap<&'a str, &'a str>,
    jwt_keys: &mut HashMap<(&'a str, Option<&'a str>), &'a str>,
    jwks_issuers: &mut HashMap<&'a str, &'a str>,
) -> Option<ConfigError> {
    match &credential.kind {
        CredentialKind::KeyAuth(key) => {
            let other = hashes.insert(key.key_hash.as_deref()?, &credential.name)?;
            Some(ConfigError::conflict("key", format!("the same key is already credential '{other}'")))
        }
        CredentialKind::Jwt(jwt) => {
            let issuer = jwt.issuer.as_str();
            let clash = if jwt.jwks_url.is_some() {
                jwks_issuers
                    .insert(issuer, &credential.name)
                    .or_else(|| jwt_keys.keys().find(|(iss, _)| *iss == issuer).map(|k| jwt_keys[k]))
            } else {
                jwks_issuers.get(issuer).copied().or_else(|| jwt_keys.insert((issuer, jwt.key_id.as_deref()), &credential.name))
            };
            clash.map(|other| {
                ConfigError::conflict(
                    "issuer",
                    format!(
                        "credential '{other}' already verifies tokens of issuer '{issuer}' (give each key of an issuer its own key_id)"
                    ),
                )
            })
        }
    }
}

/// A route whose policies check scopes must also authenticate its callers.
fn scopes_need_authentication(config: &GatewayConfig, ok: &Passed, errors: &mut Errors) {
    for (i, route) in passed(&config.routes, &ok.routes) {
        let Some(policies) = route_policies(config, route) else { continue };
        if policies.iter().any(|p| matches!(p, Policy::Scopes(_))) && !policies.iter().any(|p| p.authenticates()) {
            errors.add(ConfigError::invalid(
                format!("routes[{i}].policies"),
                format!("route '{}' checks scopes but no key-auth or jwt policy applies to it", route.name),
            ));
        }
    }
}

/// Each server name has one certificate, and one certificate at most is the default.
fn certificates<'a>(list: impl Iterator<Item = (usize, &'a Certificate)>, errors: &mut Errors) {
    let mut owners: HashMap<String, &str> = HashMap::new();
    let mut default = None;
    for (i, certificate) in list {
        let Some(names) = errors.check_within(&format!("certificates[{i}]"), crate::tls::server_names(certificate)) else { continue };
        for (j, sni) in names.into_iter().enumerate() {
            if let Some(other) = owners.get(&sni) {
                errors.add(ConfigError::conflict(
                    format!("certificates[{i}].snis[{j}]"),
                    format!("'{sni}' is already served by certificate '{other}'"),
                ));
            } else {
                owners.insert(sni, &certificate.name);
            }
        }
        if certificate.default
            && let Some(other) = default.replace(&certificate.name)
        {
            errors
                .add(ConfigError::conflict(format!("certificates[{i}].default"), format!("certificate '{other}' is already the default")));
        }
    }
}

/// Every `anonymous` consumer that an authentication policy names exists.
fn anonymous_consumers(config: &GatewayConfig, ok: &Passed, errors: &mut Errors) {
    let consumers: HashSet<&str> = config.consumers.iter().map(|c| c.username.as_str()).collect();
    let lists = passed(&config.routes, &ok.routes)
        .map(|(i, r)| (format!("routes[{i}].policies"), &r.policies))
        .chain(passed(&config.services, &ok.services).map(|(i, s)| (format!("services[{i}].policies"), &s.policies)))
        .chain(std::iter::once(("policies".to_owned(), &config.policies)));
    for (field, list) in lists {
        for (j, policy) in list.iter().enumerate() {
            if let Some(anonymous) = policy.anonymous()
                && !consumers.contains(anonymous)
            {
                errors.add(ConfigError::invalid(format!("{field}[{j}].anonymous"), format!("consumer '{anonymous}' does not exist")));
            }
        }
    }
}

/// Two routes with the same path, hosts, methods and headers: the second
/// could never be chosen.
fn identical_routes<'a>(routes: impl Iterator<Item = (usize, &'a Route)>, errors: &mut Errors) {
    /// Path, sorted hosts, sorted methods, headers.
    type MatchKey = (String, Vec<String>, Vec<String>, String);
    let mut seen: HashMap<MatchKey, &str> = HashMap::new();
    for (i, route) in routes {
        let mut hosts = route.hosts.clone();
        hosts.sort();
        let mut methods = route.methods.clone();
        methods.sort();
        let headers = format!("{:?}", route.headers);
        let paths = if route.paths.is_empty() { vec!["/".to_owned()] } else { route.paths.clone() };
        for (p, path) in paths.into_iter().enumerate() {
            let key = (crate::route_path::shape(&path), hosts.clone(), methods.clone(), headers.clone());
            if let Some(other) = seen.get(&key) {
                errors.add(ConfigError::conflict(
                    format!("routes[{i}].paths[{p}]"),
                    format!(
                        "route '{}' matches exactly what route '{other}' matches ({path}); one of them could never be chosen",
                        route.name
                    ),
                ));
            } else {
                seen.insert(key, &route.name);
            }
        }
    }
}

/// Checks and normalizes trusted proxy CIDRs (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
fn trusted_proxies(list: &mut [String]) -> Result<(), ConfigErrors> {
    let mut errors = Errors::default();
    errors.check(bounded("trusted_proxies", list.len(), MAX_LIST));
    for (i, cidr) in list.iter_mut().enumerate() {
        match cidr.parse::<ipnet::IpNet>().or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)) {
            Ok(parsed) => *cidr = parsed.trunc().to_string(),
            Err(_) => errors.add(ConfigError::invalid(
                format!("trusted_proxies[{i}]"),
                format!("'{cidr}' is not an address or CIDR such as 10.0.0.0/8"),
            )),
        }
    }
    if errors.is_empty() {
        errors.check(unique("trusted_proxies", list));
    }
    errors.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    /// A config with a grpc service `orders-grpc`, an http service `web`, the
    /// proto `shop` (service `shop.Orders`) and `routes`, as YAML.
    fn grpc_config(routes: &str) -> GatewayConfig {
        let yaml = format!(
            "services:\n  - {{name: orders-grpc, protocol: grpc, targets: [{{url: \"grpc://127.0.0.1:50051\"}}]}}\n  \
             - {{name: web, targets: [{{url: \"http://127.0.0.1:1\"}}]}}\nroutes:\n{routes}"
        );
        let mut config: GatewayConfig = crate::parse::from_yaml(yaml.as_bytes()).unwrap();
        let files = [("shop/orders.proto".to_owned(), crate::model::proto::TEST_ORDERS_PROTO.to_owned())].into();
        let shop = crate::model::Proto {
            id: None,
            name: "shop".to_owned(),
            files,
            descriptor_set: None,
            tags: Vec::new(),
            created_at: None,
            updated_at: None,
        };
        config.protos.push(shop);
        config
    }

    #[test]
    fn grpc_routes_need_a_grpc_service_and_a_proto_with_their_services() {
        let mut good =
            grpc_config("  - {name: orders, service: orders-grpc, paths: [/v1], grpc: {proto: shop, services: [shop.Orders]}}\n");
        super::config(&mut good).unwrap();
        assert!(good.protos[0].pool().unwrap().get_service_by_name("shop.Orders").is_some(), "the sources were compiled");
        assert_eq!(referrers(&good, EntityKind::Proto, "shop"), [(EntityKind::Route, "orders")]);
        assert_eq!(referrers(&good, EntityKind::Service, "orders-grpc"), [(EntityKind::Route, "orders")]);

        let mut bad = grpc_config(
            "  - {name: a, service: web, paths: [/a], grpc: {proto: shop, services: [shop.Orders]}}\n  \
             - {name: b, service: orders-grpc, paths: [/b], grpc: {proto: catalog, services: [shop.Orders]}}\n  \
             - {name: c, service: orders-grpc, paths: [/c], grpc: {proto: shop, services: [shop.Orders, shop.Carts]}}\n",
        );
        let errors = super::config(&mut bad).unwrap_err();
        assert_eq!(fields(&errors), ["routes[0].grpc", "routes[1].grpc.proto", "routes[2].grpc.services[1]"]);
        let messages: Vec<&str> = errors.iter().map(ConfigError::message).collect();
        assert_eq!(messages[0], "a grpc block needs a service of protocol grpc or grpcs; service 'web' is http");
        assert_eq!(messages[2], "proto 'shop' has no service 'shop.Carts' (it has: shop.Orders)");
    }

    #[test]
    fn a_proto_that_does_not_compile_is_reported_once_with_its_file_and_line() {
        let mut config =
            grpc_config("  - {name: orders, service: orders-grpc, paths: [/v1], grpc: {proto: shop, services: [shop.Nope]}}\n");
        config.protos[0].files.insert("shop/broken.proto".to_owned(), "syntax = \"proto3\";\nmessage {\n".to_owned());
        let errors = super::config(&mut config).unwrap_err();
        assert_eq!(fields(&errors), ["protos[0].files.shop/broken.proto"], "the route is not blamed for its proto: {errors}");
        assert!(errors.first().message().starts_with("shop/broken.proto:2: "), "{errors}");

        let mut undecodable = grpc_config("  []\n");
        undecodable.protos[0].files.clear();
        undecodable.protos[0].descriptor_set = Some("//79".to_owned());
        let errors = super::config(&mut undecodable).unwrap_err();
        assert_eq!(fields(&errors), ["protos[0].descriptor_set"]);
    }

    #[test]
    fn at_most_64_protos_and_unique_names() {
        let mut config = grpc_config("  []\n");
        let shop = config.protos[0].clone();
        config.protos = vec![shop; 2];
        assert_eq!(fields(&super::config(&mut config.clone()).unwrap_err()), ["protos[1].name"]);
        config.protos = (0..=MAX_PROTOS).map(|i| crate::model::Proto { name: format!("p{i}"), ..config.protos[0].clone() }).collect();
        assert_eq!(fields(&super::config(&mut config).unwrap_err()), ["protos"]);
    }

    #[test]
    fn aggregate_calls_need_their_services_and_keep_them_from_deletion() {
        let mut config: GatewayConfig = crate::parse::from_yaml(
            br#"
services: [{name: users, targets: [{url: "http://127.0.0.1:1"}]}]
routes:
  - name: dash
    paths: ["/me/{id}"]
    aggregate:
      calls:
        - {name: profile, service: users, path: "/users/{path.id}"}
        - {name: orders, service: orders, path: "/orders?user={consumer.id}&t={path.tenant}"}
"#,
        )
        .unwrap();
        let errors = super::config(&mut config.clone()).unwrap_err();
        assert_eq!(fields(&errors), ["routes[0].aggregate.calls[1].service", "routes[0].policies"]);
        assert!(errors.as_slice()[1].message().contains("aggregate using {consumer.id}, which needs key-auth or jwt"), "{errors}");
        config.services.push(crate::parse::from_json(br#"{"name":"orders","targets":[{"url":"http://127.0.0.1:2"}]}"#).unwrap());
        config.routes[0].policies.push(crate::parse::from_json(br#"{"type":"key-auth"}"#).unwrap());
        let error = super::config(&mut config.clone()).unwrap_err().first().clone();
        assert_eq!(error.field(), "routes[0].paths", "{error}");
        assert!(error.message().contains("{path.tenant}, but its path '/me/{id}' has no {tenant} segment"), "{error}");
        assert_eq!(referrers(&config, EntityKind::Service, "orders"), [(EntityKind::Route, "dash")]);
        config.services[1].protocol = crate::model::Protocol::Grpc;
        config.services[1].targets[0].url = "grpc://127.0.0.1:2".to_owned();
        config.routes[0].paths = vec!["/me/{id}/{tenant}".to_owned()];
        let error = super::config(&mut config).unwrap_err().first().clone();
        assert_eq!(error.field(), "routes[0].aggregate.calls[1].service", "{error}");
        assert!(error.message().contains("service 'orders' speaks gRPC"), "{error}");
    }

    #[test]
    fn config_rejects_routes_to_missing_services() {
        let mut c: GatewayConfig = from_json(br#"{"routes":[{"name":"r","service":"nope","paths":["/"]}]}"#).unwrap();
        let err = config(&mut c).unwrap_err();
        assert!(matches!(err.first(), ConfigError::Invalid { .. }));
        assert_eq!(err.first().field(), "routes[0].service");
    }

    #[test]
    fn config_rejects_duplicate_names_as_conflict() {
        let mut c: GatewayConfig =
            from_json(br#"{"services":[{"name":"s","targets":[{"url":"http://a:1"}]},{"name":"s","targets":[{"url":"http://b:1"}]}]}"#)
                .unwrap();
        let err = config(&mut c).unwrap_err();
        assert!(err.all_conflicts());
        assert_eq!(err.first().field(), "services[1].name");
    }

    #[test]
    fn config_rejects_routes_that_shadow_each_other() {
        let mut c: GatewayConfig = from_json(
            br#"{"services":[{"name":"s","targets":[{"url":"http://a:1"}]}],
                 "routes":[{"name":"a","service":"s","paths":["/x"],"methods":["GET"]},
                           {"name":"b","service":"s","paths":["/x/"],"methods":["get"]}]}"#,
        )
        .unwrap();
        assert!(config(&mut c).unwrap_err().all_conflicts());
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
            crate::model::effective_policies(&c.routes[0], Some(&c.services[0]), &c.policies).iter().map(|p| p.type_name()).collect();
        assert_eq!(types, ["key-auth", "jwt", "rate-limit", "rate-limit"]);
        let chosen = crate::model::effective_policies(&c.routes[0], Some(&c.services[0]), &c.policies);
        assert!(matches!(chosen[0], Policy::KeyAuth(p) if p.header == "x-api-key"), "the route's own key-auth, not the gateway's");
    }

    fn fields(errors: &ConfigErrors) -> Vec<&str> {
        errors.iter().map(ConfigError::field).collect()
    }

    #[test]
    fn config_reports_every_mistake_of_every_entity() {
        let mut c: GatewayConfig = from_json(
            br#"{"services":[{"name":"s","targets":[{"url":"ftp://a:1"},{"url":"http://b:1","weight":5000}]}],
                 "routes":[{"name":"r","service":"s","paths":["/"],"methods":["GTE"]}],
                 "consumers":[{"username":"not valid"}],
                 "trusted_proxies":["nope"]}"#,
        )
        .unwrap();
        let errors = config(&mut c).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "services[0].targets[0].url",
                "services[0].targets[1].weight",
                "routes[0].methods[0]",
                "consumers[0].username",
                "trusted_proxies[0]"
            ]
        );
        assert!(!errors.all_conflicts());
    }

    #[test]
    fn checks_across_entities_run_on_entities_that_passed_their_own() {
        let mut c: GatewayConfig = from_json(
            br#"{"services":[{"name":"s","targets":[{"url":"http://a:1"}]},{"name":"s","targets":[{"url":"http://b:1"}]},
                             {"name":"s","targets":[{"url":"http://c:1"}]}],
                 "routes":[{"name":"bad","service":"gone","paths":["no-slash"]},{"name":"ok","service":"gone","paths":["/"]}]}"#,
        )
        .unwrap();
        let errors = config(&mut c).unwrap_err();
        assert_eq!(
            fields(&errors),
            ["services[1].name", "services[2].name", "routes[0].paths[0]", "routes[1].service"],
            "the invalid route is not reported again as referring to a missing service: {errors}"
        );
    }

    #[test]
    fn a_valid_config_is_sorted_by_name() {
        let mut c: GatewayConfig =
            from_json(br#"{"services":[{"name":"b","targets":[{"url":"http://b:1"}]},{"name":"a","targets":[{"url":"http://a:1"}]}]}"#)
                .unwrap();
        config(&mut c).unwrap();
        assert_eq!(c.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
