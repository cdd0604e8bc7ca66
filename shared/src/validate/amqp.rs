//! The `amqp` routes of a config against their services and policies: an
//! `amqp` block publishes to a service of protocol `amqp`/`amqps`, and such
//! a service is reached only through one (never proxied to, never called
//! by an aggregate); a routing key's variables have a value on every
//! request the route takes; and no route copies the header its key-auth
//! policy reads the key from.

use super::{Passed, passed, route_policies, source_fits};
use crate::error::{ConfigError, Errors};
use crate::model::{GatewayConfig, Policy, Route, RouteBackend};
use crate::template::Source;

/// Checks the routes of `config` that touch AMQP (see the module's doc).
pub(super) fn routes(config: &GatewayConfig, ok: &Passed, errors: &mut Errors) {
    let speaks_amqp = |name: &str| config.services.iter().find(|s| s.name == name).map(|s| s.protocol.is_amqp());
    for (i, route) in passed(&config.routes, &ok.routes) {
        match &route.backend {
            RouteBackend::Aggregate { aggregate } => {
                for (j, call) in aggregate.calls.iter().enumerate().filter(|(_, call)| speaks_amqp(&call.service) == Some(true)) {
                    errors.add(ConfigError::invalid(
                        format!("routes[{i}].aggregate.calls[{j}].service"),
                        format!("service '{}' is an AMQP broker; an aggregate call sends HTTP", call.service),
                    ));
                }
            }
            RouteBackend::Proxy { service } if speaks_amqp(service) == Some(true) => {
                errors.add(ConfigError::invalid(
                    format!("routes[{i}].amqp"),
                    format!("a route to an AMQP service needs an amqp block (service '{service}' is an AMQP broker)"),
                ));
            }
            RouteBackend::Amqp { service, .. } => {
                if speaks_amqp(service) == Some(false) {
                    let protocol = config.services.iter().find(|s| &s.name == service).map_or("", |s| s.protocol.scheme());
                    errors.add(ConfigError::invalid(
                        format!("routes[{i}].amqp"),
                        format!("an amqp block needs a service of protocol amqp or amqps; service '{service}' is {protocol}"),
                    ));
                } else if let Err(error) = fits_its_route(config, i, route) {
                    errors.add(error);
                }
            }
            RouteBackend::Proxy { .. } | RouteBackend::Grpc { .. } => {}
        }
    }
}

/// The routing key's variables have values on every request of route `i`
/// (`{path.x}` in every path, `{claim.x}` after jwt, a consumer field after
/// authentication), and the headers copied are not where its key-auth
/// policy finds the key.
fn fits_its_route(config: &GatewayConfig, i: usize, route: &Route) -> Result<(), ConfigError> {
    let (Some(amqp), Some(policies)) = (route.backend.amqp(), route_policies(config, route)) else { return Ok(()) };
    let has_jwt = policies.iter().any(|p| matches!(p, Policy::Jwt(_)));
    let key_query: Vec<&str> = policies
        .iter()
        .filter_map(|p| match p {
            Policy::KeyAuth(key_auth) => key_auth.query.as_deref(),
            _ => None,
        })
        .collect();
    if let Ok(template) = amqp.routing_key_template() {
        for source in template.sources() {
            source_fits(route, i, &policies, has_jwt, "routing_key", source)?;
            let secret = match source {
                Source::Header(name) => {
                    CREDENTIAL_HEADERS.contains(&name.as_str())
                        || policies.iter().any(|p| matches!(p, Policy::KeyAuth(k) if k.header.eq_ignore_ascii_case(name)))
                }
                Source::Query(name) => key_query.contains(&name.as_str()),
                _ => false,
            };
            if secret {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].amqp.routing_key"),
                    format!(
                        "{{{source}}} carries a credential, which may not go into a routing key (brokers and consumers see it, and so do error messages)"
                    ),
                ));
            }
        }
    }
    let key_headers = policies.iter().filter_map(|p| match p {
        Policy::KeyAuth(key_auth) => Some(key_auth.header.to_ascii_lowercase()),
        _ => None,
    });
    for key_header in key_headers {
        if let Some(k) = amqp.headers.iter().position(|h| *h == key_header) {
            return Err(ConfigError::invalid(
                format!("routes[{i}].amqp.headers[{k}]"),
                format!("'{key_header}' carries the route's API key (its key-auth policy's header) and may not be copied into a message"),
            ));
        }
    }
    Ok(())
}

/// Request headers that carry credentials, whatever the route's policies.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "x-api-key"];

#[cfg(test)]
mod tests {
    use crate::model::GatewayConfig;

    const BROKER: &str =
        r#"{name: events, protocol: amqp, targets: [{url: "amqp://127.0.0.1"}], credentials: {username: app, password: pw}}"#;

    fn errors_of(services: &str, routes: &str) -> Vec<(String, String)> {
        let mut config: GatewayConfig = crate::parse::from_yaml(
            format!("services: [{BROKER}, {{name: web, targets: [{{url: \"http://127.0.0.1:1\"}}]}}{services}]\nroutes: {routes}\n")
                .as_bytes(),
        )
        .unwrap();
        super::super::config(&mut config)
            .map_or_else(|e| e.iter().map(|e| (e.field().to_owned(), e.message().to_owned())).collect(), |()| Vec::new())
    }

    fn fields(errors: &[(String, String)]) -> Vec<&str> {
        errors.iter().map(|(field, _)| field.as_str()).collect()
    }

    #[test]
    fn an_amqp_service_is_reached_only_through_an_amqp_block() {
        let amqp = "amqp: {exchange: orders, routing_key: \"order.{path.kind}\"}";
        assert!(errors_of("", &format!("[{{name: a, service: events, paths: [\"/events/{{kind}}\"], {amqp}}}]")).is_empty());
        let errors = errors_of(
            "",
            &format!(
                "[{{name: a, service: events, paths: [/e]}}, {{name: b, service: web, paths: [\"/w/{{kind}}\"], {amqp}}}, \
                 {{name: c, paths: [/c], aggregate: {{calls: [{{name: x, service: events, path: /x}}]}}}}]"
            ),
        );
        assert_eq!(fields(&errors), ["routes[0].amqp", "routes[1].amqp", "routes[2].aggregate.calls[0].service"], "{errors:?}");
        assert_eq!(errors[0].1, "a route to an AMQP service needs an amqp block (service 'events' is an AMQP broker)");
        assert_eq!(errors[1].1, "an amqp block needs a service of protocol amqp or amqps; service 'web' is http");
    }

    #[test]
    fn a_routing_key_reads_only_what_every_request_of_the_route_has() {
        let route = |key: &str, extra: &str| {
            format!("[{{name: a, service: events, paths: [\"/e/{{kind}}\"], amqp: {{exchange: x, routing_key: \"{key}\"}}{extra}}}]")
        };
        for (key, extra, field) in [
            ("{path.other}", "", "routes[0].paths"),
            ("{consumer.custom_id}", "", "routes[0].policies"),
            ("{claim.sub}", ", policies: [{type: key-auth}]", "routes[0].policies"),
        ] {
            assert_eq!(fields(&errors_of("", &route(key, extra))), [field], "{key}");
        }
        let fine = route("{path.kind}.{consumer.id}.{body.id}.{header.x-tenant}.{query.q}.{request_id}", ", policies: [{type: key-auth}]");
        assert!(errors_of("", &fine).is_empty());
    }

    #[test]
    fn a_route_never_copies_its_key_auth_header() {
        let route = "[{name: a, service: events, paths: [/e], amqp: {exchange: x, routing_key: k, headers: [x-tenant, x-key]}, \
                     policies: [{type: key-auth, header: X-Key}]}]";
        let errors = errors_of("", route);
        assert_eq!(fields(&errors), ["routes[0].amqp.headers[1]"], "{errors:?}");
        let on_the_service = ", {name: keyed, protocol: amqp, targets: [{url: \"amqp://127.0.0.1\"}], credentials: {username: app, password: pw}, \
             policies: [{type: key-auth, header: X-Key}]}";
        let route = "[{name: a, service: keyed, paths: [/e], amqp: {exchange: x, routing_key: k, headers: [x-key]}}]";
        assert_eq!(fields(&errors_of(on_the_service, route)), ["routes[0].amqp.headers[0]"]);
    }

    #[test]
    fn a_routing_key_may_not_carry_a_credential() {
        for key in ["\"k.{header.cookie}\"", "\"k.{header.authorization}\"", "\"k.{query.apikey}\"", "\"k.{header.x-key}\""] {
            let route = format!(
                "[{{name: a, service: events, paths: [/e], policies: [{{type: key-auth, header: x-key, query: apikey}}], amqp: {{exchange: x, routing_key: {key}}}}}]"
            );
            let errors = errors_of("", &route);
            assert_eq!(fields(&errors), ["routes[0].amqp.routing_key"], "{key}: {errors:?}");
            assert!(errors[0].1.contains("carries a credential"), "{errors:?}");
        }
        assert!(
            errors_of("", "[{name: a, service: events, paths: [/e], amqp: {exchange: x, routing_key: \"k.{header.x-tenant}\"}}]")
                .is_empty()
        );
    }
}
