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
//! documented precedence picks; the matched prefix is one of the route's
//! paths and a segment-boundary prefix of the normalised path; the
//! forwarded target parses as a URI whose path is the normalised path
//! (minus the prefix when the route strips it) and whose query is the
//! client's.
#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, Method, Uri};
use libfuzzer_sys::fuzz_target;
use portico_dp::proxy::forwarded_target;
use portico_dp::router::{RouteSpec, Router, normalize_path};
use portico_shared::model::Route;
use portico_shared::{GatewayConfig, parse, validate};

/// The route table: prefixes that nest, share a first segment, carry
/// parameters and escapes, and host and method conditions.
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
    assert_eq!(found.as_ref().map(|m| m.route), expected, "router and brute force disagree on {host:?} {method} {path:?}");
    let Some(matched) = found else { return };
    let route = &table.routes[matched.route];

    let prefix = &*matched.prefix;
    assert!(
        route.paths.iter().any(|p| p == prefix) || (route.paths.is_empty() && prefix == "/"),
        "{prefix:?} is not a path of {}",
        route.name
    );
    assert!(on_boundary(&path, prefix), "{prefix:?} is not a segment prefix of {path:?}");

    let forwarded = forwarded_target(&uri, &path, prefix, route.strip_path)
        .unwrap_or_else(|e| panic!("the target for {path:?} (route {}) cannot be forwarded: {e}", route.name));
    let reparsed: Uri = forwarded.as_str().parse().unwrap_or_else(|e| panic!("forwarded {forwarded:?} is not a URI: {e}"));
    let sent = if route.strip_path && prefix != "/" {
        match &path[prefix.len()..] {
            "" => "/",
            rest => rest,
        }
    } else {
        &path
    };
    assert_eq!(reparsed.path(), sent, "forwarded path differs from the routed one (route {}, prefix {prefix:?})", route.name);
    assert_eq!(reparsed.query(), uri.query(), "the query changed");
});

/// `prefix` is `path`, or `path` continues it at a `/`.
fn on_boundary(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// Host class, wildcard length, path segments, methods named, header
/// conditions, name: lower wins.
type Rank<'a> = (u8, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>, bool, std::cmp::Reverse<usize>, &'a str);

/// The winning route by the router's documented precedence: host class
/// (exact, longer wildcard, none), longest path in segments, named methods,
/// more header conditions, name.
fn brute_force(routes: &[Route], host: &str, path: &str, method: &Method) -> Option<usize> {
    let segments = |p: &str| p.split('/').filter(|s| !s.is_empty()).count();
    let root = ["/".to_owned()];
    let mut best: Option<(Rank<'_>, usize)> = None;
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
        let paths = if route.paths.is_empty() { &root[..] } else { &route.paths[..] };
        for &(class, suffix_len) in &host_ranks {
            for prefix in paths.iter().filter(|p| on_boundary(path, p)) {
                let rank = (
                    class,
                    std::cmp::Reverse(suffix_len),
                    std::cmp::Reverse(segments(prefix)),
                    route.methods.is_empty(),
                    std::cmp::Reverse(route.headers.len()),
                    route.name.as_str(),
                );
                if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                    best = Some((rank, index));
                }
            }
        }
    }
    best.map(|(_, index)| index)
}
