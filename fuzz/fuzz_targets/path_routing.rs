//! Path normalisation, routing and the upstream request target, as the
//! proxy chains them (`proxy::forward`): a request target is parsed as
//! hyper would, normalised, routed through a fixed table compiled from a
//! config document, and turned into the target sent upstream.
//!
//! Input: the request target (`/api/%2e%2e/admin?x=1`), optionally after
//! a first line naming the host (`api.example.com\n/static/app.js`).
//!
//! Properties: nothing panics; normalisation is idempotent, leaves no
//! `//`, `.` or `..` segment and invents no non-ASCII character; the
//! router picks the route a brute-force scan of the table by the
//! documented precedence picks (literal segments before `{name}`
//! parameters, then longer route paths); the matched route path is one of
//! the route's paths and matches the normalised path up to the matched
//! length, which ends a segment; the parameters are the segments they
//! took; the forwarded target parses as a URI whose path is the normalised
//! path (minus the matched length when the route strips it) and whose
//! query is the client's.
#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, Method, Uri};
use libfuzzer_sys::fuzz_target;
use portico_dp::proxy::forwarded_target;
use portico_dp::router::{RouteSpec, Router, normalize_path};
use portico_shared::model::Route;
use portico_shared::route_path::{self, Segment};
use portico_shared::{GatewayConfig, parse, validate};

/// The route table: prefixes that nest, share a first segment, carry
/// `;` parameters, escapes and `{name}` parameters (beside literals at the
/// same depth, behind a method condition that sends POST to the parameter
/// branch), and host and method conditions.
const ROUTES: &str = r#"
services:
  - name: s
    targets: [{url: "http://127.0.0.1:1"}]
routes:
  - {name: root, service: s, paths: ["/"]}
  - {name: api, service: s, paths: ["/api"], strip_path: true}
  - {name: api-v2, service: s, paths: ["/api/v2"], methods: [GET], strip_path: true}
  - {name: api-v2-post, service: s, paths: ["/api/v2"], methods: [POST]}
  - {name: api-header, service: s, paths: ["/api"], headers: {x-version: ["2"]}}
  - {name: admin, service: s, paths: ["/admin"]}
  - {name: people, service: s, paths: ["/users", "/people/"], strip_path: true}
  - {name: params, service: s, paths: ["/a;v=1", "/caf%C3%A9", "/~user"], strip_path: true}
  - {name: users-me, service: s, paths: ["/users/me"], methods: [GET]}
  - {name: user-orders, service: s, paths: ["/users/{id}/orders", "/people/{id}/orders/{order}"], strip_path: true}
  - {name: api-items, service: s, paths: ["/api/{version}/items"], strip_path: true}
  - {name: tenant, service: s, paths: ["/{tenant}/v1", "/{tenant}/admin/{x}"]}
  - {name: exact-host, service: s, hosts: [api.example.com], paths: ["/"]}
  - {name: exact-host-admin, service: s, hosts: [api.example.com], paths: ["/admin/x"], strip_path: true}
  - {name: wildcard, service: s, hosts: ["*.example.com"], paths: ["/static"], strip_path: true}
  - {name: deep-wildcard, service: s, hosts: ["*.eu.example.com"], paths: ["/"]}
"#;

struct Table {
    routes: Vec<Route>,
    router: Router,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut config: GatewayConfig = parse::from_yaml(ROUTES.as_bytes()).expect("the route table parses");
    validate::config(&mut config).expect("the route table is valid");
    let routes = config.routes;
    // As `runtime::Runtime::compile` builds it.
    let router = Router::new(routes.iter().enumerate().map(|(index, route)| RouteSpec::of(index, route)));
    Table { routes, router }
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, target) = text.split_once('\n').unwrap_or(("", text));
    // What hyper hands the proxy: the request target parsed as a URI.
    let Ok(uri) = target.parse::<Uri>() else { return };
    let Ok(path) = normalize_path(uri.path()) else { return };

    assert!(path.starts_with('/'), "{path:?} does not start with '/'");
    assert!(!path.contains("//"), "{path:?} has an empty segment");
    assert!(!path.split('/').any(|s| s == "." || s == ".."), "{path:?} has a dot segment");
    // Decoding only turns escapes into ASCII: a non-ASCII character out
    // must have come in as it is.
    if let Some(invented) = path.chars().find(|c| !c.is_ascii() && !uri.path().contains(*c)) {
        panic!("normalising {:?} gave {path:?}, with {invented:?} it did not have", uri.path());
    }
    let again = normalize_path(&path).expect("a normalised path normalises");
    assert_eq!(again, path, "normalisation is not idempotent for {:?}", uri.path());

    let table = &*TABLE;
    let method = if target.len() % 2 == 0 { Method::GET } else { Method::POST };
    let headers = HeaderMap::new();
    let found = table.router.lookup(host, &path, &method, &headers);
    let expected = brute_force(&table.routes, host, &path, &method);
    assert_eq!(found.as_ref().map(|m| (m.route, &*m.prefix)), expected, "router and brute force disagree on {host:?} {method} {path:?}");
    let Some(matched) = found else { return };
    let route = &table.routes[matched.route];

    let prefix = &*matched.prefix;
    assert!(
        route.paths.iter().any(|p| p == prefix) || (route.paths.is_empty() && prefix == "/"),
        "{prefix:?} is not a path of {}",
        route.name
    );
    let (taken, rest) = path.split_at_checked(matched.matched_len).unwrap_or_else(|| panic!("{matched:?} is not within {path:?}"));
    assert!(rest.is_empty() || rest.starts_with('/'), "{matched:?} does not end a segment of {path:?}");
    let taken: Vec<&str> = taken.split('/').filter(|s| !s.is_empty()).collect();
    let pattern: Vec<Segment<'_>> = route_path::segments(prefix).collect();
    assert!(fits(&pattern, &taken) && pattern.len() == taken.len(), "{prefix:?} does not match {path:?} up to {}", matched.matched_len);
    let params: Vec<(&str, &str)> = matched.params.iter().map(|(name, value)| (&**name, &**value)).collect();
    assert_eq!(params, expected_params(&pattern, &taken), "parameters of {prefix:?} on {path:?}");

    let forwarded = forwarded_target(&uri, &path, matched.matched_len, route.strip_path)
        .unwrap_or_else(|e| panic!("the target for {path:?} (route {}) cannot be forwarded: {e}", route.name));
    let reparsed: Uri = forwarded.as_str().parse().unwrap_or_else(|e| panic!("forwarded {forwarded:?} is not a URI: {e}"));
    let sent = match rest {
        _ if !route.strip_path => &path,
        "" => "/",
        rest => rest,
    };
    assert_eq!(reparsed.path(), sent, "forwarded path differs from the routed one (route {}, prefix {prefix:?})", route.name);
    assert_eq!(reparsed.query(), uri.query(), "the query changed");
});

/// The route path `pattern` matches the first segments of `request`.
fn fits(pattern: &[Segment<'_>], request: &[&str]) -> bool {
    pattern.len() <= request.len() && pattern.iter().zip(request).all(|(p, r)| matches!(p, Segment::Param(_)) || *p == Segment::Literal(r))
}

/// Each parameter of `pattern` with the segment of `request` it takes.
fn expected_params<'a>(pattern: &[Segment<'a>], request: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    pattern
        .iter()
        .zip(request)
        .filter_map(|(p, r)| match p {
            Segment::Param(name) => Some((*name, *r)),
            Segment::Literal(_) => None,
        })
        .collect()
}

/// Host class, wildcard length, each path segment's kind (literal 0,
/// parameter 1, end 2), methods named, header conditions, name, the
/// route's path order: lower wins.
type Rank<'a> = (u8, std::cmp::Reverse<usize>, Vec<u8>, bool, std::cmp::Reverse<usize>, &'a str, usize);

/// The winning route and route path by the router's documented precedence:
/// host class (exact, longer wildcard, none); the path segment by segment
/// (a literal beats a parameter, either beats the end of a shorter path);
/// named methods; more header conditions; name.
fn brute_force<'r>(routes: &'r [Route], host: &str, path: &str, method: &Method) -> Option<(usize, &'r str)> {
    let request: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut best: Option<(Rank<'_>, (usize, &str))> = None;
    for (index, route) in routes.iter().enumerate() {
        let methods_ok = route.methods.is_empty() || route.methods.iter().any(|m| m == method.as_str());
        // The harness sends no headers: a route with header conditions never matches.
        if !methods_ok || !route.headers.is_empty() {
            continue;
        }
        let host_ranks: Vec<(u8, usize)> = if route.hosts.is_empty() {
            vec![(2, 0)]
        } else {
            route
                .hosts
                .iter()
                .filter_map(|h| match h.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")).then_some((1, suffix.len())),
                    None => (h == host).then_some((0, 0)),
                })
                .collect()
        };
        let paths: Vec<&'r str> = if route.paths.is_empty() { vec!["/"] } else { route.paths.iter().map(String::as_str).collect() };
        for &(class, suffix_len) in &host_ranks {
            for (order, prefix) in paths.iter().enumerate() {
                let pattern: Vec<Segment<'_>> = route_path::segments(prefix).collect();
                if !fits(&pattern, &request) {
                    continue;
                }
                let kinds = pattern.iter().map(|p| u8::from(matches!(p, Segment::Param(_)))).chain([2]).collect();
                let rank = (
                    class,
                    std::cmp::Reverse(suffix_len),
                    kinds,
                    route.methods.is_empty(),
                    std::cmp::Reverse(route.headers.len()),
                    route.name.as_str(),
                    order,
                );
                if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                    best = Some((rank, (index, *prefix)));
                }
            }
        }
    }
    best.map(|(_, found)| found)
}
