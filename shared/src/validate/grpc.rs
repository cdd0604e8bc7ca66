//! The `grpc` routes of a config against the protos they name: each
//! proto's descriptors are decoded once; a route's service must speak gRPC
//! and its proto must have the services it names; every `google.api.http`
//! rule of those services must fit its messages; and no two routes that
//! can take the same requests may have rules that match the same ones.

use std::collections::{HashMap, HashSet};

use prost_reflect::DescriptorPool;

use super::{Passed, passed};
use crate::error::{ConfigError, Errors};
use crate::grpc::bindings::{Binding, find_collisions, method_bindings};
use crate::model::{GatewayConfig, Route};
use crate::route_path::Segment;

/// Checks the `grpc` routes of `config` (see the module's doc).
pub(super) fn routes(config: &GatewayConfig, ok: &Passed, errors: &mut Errors) {
    let pools = pools(config, ok, errors);
    let checked = backends(config, ok, &pools, errors);
    let mut bound: Vec<(usize, &Route, Vec<Binding>)> = Vec::new();
    for (i, route, pool) in checked {
        let Some(grpc) = route.backend.grpc() else { continue };
        match method_bindings(pool, &grpc.services) {
            Ok(methods) => bound.push((i, route, methods.into_iter().flat_map(|m| m.bindings).collect())),
            Err(mistakes) => {
                for mistake in mistakes {
                    errors.add(ConfigError::invalid(format!("routes[{i}].grpc"), format!("proto '{}': {mistake}", grpc.proto)));
                }
            }
        }
    }
    for (a, (_, first, first_bindings)) in bound.iter().enumerate() {
        for (j, second, second_bindings) in bound.iter().skip(a + 1).filter(|(_, second, _)| may_take_the_same_requests(first, second)) {
            let owned = first_bindings.iter().map(|b| (false, b)).chain(second_bindings.iter().map(|b| (true, b)));
            if let Some(collision) = find_collisions(owned).into_iter().find(|c| !c.first && c.second) {
                errors.add(ConfigError::invalid(
                    format!("routes[{j}].grpc"),
                    format!(
                        "rule {} of route '{}' matches the same requests as a rule of route '{}' (both routes can take them); give the routes distinct paths or hosts",
                        collision.rule, second.name, first.name
                    ),
                ));
            }
        }
    }
}

/// Two routes can be handed the same request: their hosts overlap (either
/// takes any host, or they share one), their header conditions are the
/// same, and a path of one is a prefix of a path of the other (on segment
/// boundaries, a `{param}` segment matching anything; no paths is `/`).
fn may_take_the_same_requests(a: &Route, b: &Route) -> bool {
    let hosts_overlap = a.hosts.is_empty() || b.hosts.is_empty() || a.hosts.iter().any(|host| b.hosts.contains(host));
    let paths = |route: &Route| if route.paths.is_empty() { vec!["/".to_owned()] } else { route.paths.clone() };
    hosts_overlap && a.headers == b.headers && paths(a).iter().any(|pa| paths(b).iter().any(|pb| prefix_of_either(pa, pb)))
}

fn prefix_of_either(a: &str, b: &str) -> bool {
    let same = |x: Segment<'_>, y: Segment<'_>| match (x, y) {
        (Segment::Literal(x), Segment::Literal(y)) => x == y,
        _ => true,
    };
    crate::route_path::segments(a).zip(crate::route_path::segments(b)).all(|(x, y)| same(x, y))
}

/// The descriptors of each proto that passed its own checks, by name,
/// decoded once for the whole config; a set that does not decode is an
/// error of its `descriptor_set`.
fn pools<'a>(config: &'a GatewayConfig, ok: &'a Passed, errors: &mut Errors) -> HashMap<&'a str, DescriptorPool> {
    passed(&config.protos, &ok.protos)
        .filter_map(|(i, proto)| Some((proto.name.as_str(), errors.check_within(&format!("protos[{i}]"), proto.pool())?)))
        .collect()
}

/// A `grpc` route calls a service of protocol `grpc` or `grpcs`, through a
/// proto that exists and has every service the route names. Routes whose
/// service or proto is missing altogether are reported where references
/// are checked, or here for the proto; a proto that failed its own checks
/// is not reported again. An aggregate call never goes to a gRPC service.
/// Returns the routes that passed, with their pools.
fn backends<'a>(
    config: &'a GatewayConfig,
    ok: &'a Passed,
    pools: &'a HashMap<&str, DescriptorPool>,
    errors: &mut Errors,
) -> Vec<(usize, &'a Route, &'a DescriptorPool)> {
    let mut checked = Vec::new();
    let protos: HashSet<&str> = config.protos.iter().map(|p| p.name.as_str()).collect();
    for (i, route) in passed(&config.routes, &ok.routes) {
        for (j, call) in route.backend.aggregate().map_or(&[][..], |a| &a.calls[..]).iter().enumerate() {
            if config.services.iter().any(|s| s.name == call.service && s.protocol.is_grpc()) {
                errors.add(ConfigError::invalid(
                    format!("routes[{i}].aggregate.calls[{j}].service"),
                    format!("service '{}' speaks gRPC; an aggregate call sends plain HTTP", call.service),
                ));
            }
        }
        let (Some(service_name), Some(grpc)) = (route.service(), route.backend.grpc()) else { continue };
        if let Some(service) = config.services.iter().find(|s| s.name == service_name)
            && !service.protocol.is_grpc()
        {
            errors.add(ConfigError::invalid(
                format!("routes[{i}].grpc"),
                format!(
                    "a grpc block needs a service of protocol grpc or grpcs; service '{service_name}' is {}",
                    service.protocol.scheme()
                ),
            ));
        }
        if !protos.contains(grpc.proto.as_str()) {
            errors.add(ConfigError::invalid(
                format!("routes[{i}].grpc.proto"),
                format!("route '{}' refers to proto '{}', which does not exist", route.name, grpc.proto),
            ));
            continue;
        }
        let Some(pool) = pools.get(grpc.proto.as_str()) else { continue };
        let mut all_known = true;
        for (j, name) in grpc.services.iter().enumerate() {
            if pool.get_service_by_name(name).is_none() {
                all_known = false;
                let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                errors.add(ConfigError::invalid(
                    format!("routes[{i}].grpc.services[{j}]"),
                    format!("proto '{}' has no service '{name}' (it has: {known})", grpc.proto),
                ));
            }
        }
        if all_known {
            checked.push((i, route, pool));
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use crate::model::GatewayConfig;

    const SHOP: &str = r#"syntax = "proto3";
package shop;
import "google/api/annotations.proto";
service Orders {
  rpc GetOrder(GetOrderRequest) returns (Order) { option (google.api.http) = { get: "/v1/orders/{id}" }; }
  rpc Ping(GetOrderRequest) returns (Order);
}
message GetOrderRequest { string id = 1; }
message Order { string id = 1; }
"#;

    fn config(routes: &str, source: &str) -> GatewayConfig {
        let mut config: GatewayConfig = crate::parse::from_yaml(
            format!("services: [{{name: orders, protocol: grpc, targets: [{{url: \"grpc://127.0.0.1:50051\"}}]}}]\nroutes: {routes}\n")
                .as_bytes(),
        )
        .unwrap();
        config.protos.push(
            crate::parse::from_json(serde_json::json!({"name": "shop", "files": {"shop.proto": source}}).to_string().as_bytes()).unwrap(),
        );
        config
    }

    fn route(name: &str, path: &str) -> String {
        format!("{{name: {name}, service: orders, paths: [\"{path}\"], grpc: {{proto: shop, services: [shop.Orders]}}}}")
    }

    #[test]
    fn routes_that_can_take_the_same_requests_may_not_share_a_rule() {
        let mut overlapping = config(&format!("[{}, {}]", route("a", "/v1"), route("b", "/v1/orders")), SHOP);
        let error = super::super::config(&mut overlapping).unwrap_err().first().clone();
        assert_eq!(error.field(), "routes[1].grpc", "{error}");
        assert!(
            error.message().contains("rule GET /v1/orders/{id} of route 'b' matches the same requests as a rule of route 'a'"),
            "{error}"
        );
        let mut apart = config(&format!("[{}, {}]", route("a", "/v1/orders"), route("b", "/shop.Orders")), SHOP);
        super::super::config(&mut apart).unwrap();
    }

    #[test]
    fn a_rule_that_does_not_fit_its_message_is_refused() {
        let broken = SHOP.replace("/v1/orders/{id}", "/v1/orders/{missing}");
        let mut config = config(&format!("[{}]", route("a", "/v1")), &broken);
        let error = super::super::config(&mut config).unwrap_err().first().clone();
        assert_eq!(error.field(), "routes[0].grpc", "{error}");
        assert!(error.message().starts_with("proto 'shop': shop.Orders.GetOrder (rule GET /v1/orders/{missing})"), "{error}");
    }
}
