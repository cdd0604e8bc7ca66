//! Route matching: host, segment-aware path prefix with `{name}`
//! parameters, method and headers.
//!
//! Routes are indexed by host (exact names in a map, `*.suffix` patterns in
//! a map keyed by suffix, and host-less routes), then by a trie of path
//! segments where each node has its literal children in a map and at most
//! one parameter child (shared by every route with a parameter there,
//! whatever its name: each route keeps its own names), so a lookup costs a
//! few hash probes per host label and path segment whatever the number of
//! routes. A lookup that must leave a literal branch for the parameter one
//! visits each trie node at most once. Hand-written rather than `matchit`:
//! routes here are prefixes on segment boundaries with host, method and
//! header conditions and a specificity order, which a path router does not
//! model. It does not decode or normalize request paths: [`normalize_path`]
//! does, before lookup.
//!
//! **Which route wins** when several match, in this order:
//! 1. host: an exact host beats a wildcard, a longer wildcard beats a
//!    shorter one, any wildcard beats a route without hosts;
//! 2. path, compared segment by segment from the first: a literal segment
//!    beats a parameter at the same depth, and either beats the end of a
//!    shorter route path. Without parameters the longest prefix wins; for
//!    `/users/me/x`, `/users/me` beats `/users/{id}/x`, which beats
//!    `/users`; for `/a/b/c`, `/a/b` beats `/a/{x}/c` (depth 2 decides
//!    before length does). A parameter takes exactly one segment;
//! 3. a route that names methods beats one that takes any method;
//! 4. more header conditions beat fewer;
//! 5. then the route name, alphabetically; then, within one route, its
//!    first path.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portico_shared::route_path::{self, Segment};

/// The conditions of one route path, as the router stores them.
#[derive(Debug, Clone)]
pub struct RouteSpec<'a> {
    /// Index of the route in the caller's table.
    pub index: usize,
    pub name: &'a str,
    /// Normalized path prefixes (`/` when the route takes every path).
    pub paths: &'a [String],
    pub hosts: &'a [String],
    pub methods: &'a [String],
    pub headers: &'a std::collections::BTreeMap<String, Vec<String>>,
}

impl<'a> RouteSpec<'a> {
    /// The conditions of `route`, at `index` of the caller's table.
    pub fn of(index: usize, route: &'a portico_shared::model::Route) -> Self {
        Self { index, name: &route.name, paths: &route.paths, hosts: &route.hosts, methods: &route.methods, headers: &route.headers }
    }
}

/// A successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Index of the route in the caller's table.
    pub route: usize,
    /// The route path that matched, as configured (`/users/{id}`).
    pub prefix: Arc<str>,
    /// Bytes of the request path the route path matched: what `strip_path`
    /// removes (`/users/7` of `/users/7/orders` for `/users/{id}`; 0 for `/`).
    /// Always at the end of a segment.
    pub matched_len: usize,
    /// The route path's parameters with the request segments they took, in
    /// path order. Values are segments of the normalized request path, so
    /// escapes other than of unreserved characters stay escaped (`a%20b`).
    /// Empty, and not allocated, for a route path without parameters.
    pub params: Vec<(Arc<str>, Box<str>)>,
}

impl Match {
    /// The value of the parameter `name`, if the matched route path has it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| &**n == name).map(|(_, value)| &**value)
    }
}

/// One route path in a trie node. Held once per (route, path, host
/// condition): it holds no route name (the order is settled when the
/// table is built) and shares its method list with every route that names
/// the same methods.
#[derive(Debug)]
struct Candidate {
    route: usize,
    prefix: Arc<str>,
    /// Each parameter's name with the index of the segment it takes.
    params: Box<[(usize, Arc<str>)]>,
    methods: Arc<[Method]>,
    headers: Box<[(HeaderName, Box<[HeaderValue]>)]>,
}

impl Candidate {
    /// Methods named, header conditions, then the route's name (from
    /// `names`, by route index): lower wins.
    fn rank<'n>(&self, names: &HashMap<usize, &'n str>) -> (bool, std::cmp::Reverse<usize>, &'n str) {
        (self.methods.is_empty(), std::cmp::Reverse(self.headers.len()), names[&self.route])
    }

    fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, values)| headers.get_all(name).iter().any(|v| values.contains(v)))
    }

    /// The match of this candidate on `path`, of which it took `matched_len` bytes.
    fn found(&self, path: &str, matched_len: usize) -> Match {
        let mut segments = segments(path).enumerate();
        let params = self
            .params
            .iter()
            .filter_map(|(at, name)| segments.find(|(i, _)| i == at).map(|(_, value)| (name.clone(), value.into())))
            .collect();
        Match { route: self.route, prefix: self.prefix.clone(), matched_len, params }
    }
}

/// Routes under one host condition, by path segment.
#[derive(Debug, Default)]
struct PathTrie {
    children: HashMap<Box<str>, PathTrie>,
    /// Below a `{name}` segment, whatever the name.
    param: Option<Box<PathTrie>>,
    candidates: Vec<Candidate>,
}

impl PathTrie {
    fn insert(&mut self, path: &str, candidate: Candidate) {
        let mut node = self;
        for segment in route_path::segments(path) {
            node = match segment {
                Segment::Literal(literal) => node.children.entry(literal.into()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_default(),
            };
        }
        node.candidates.push(candidate);
    }

    /// Puts each node's candidates in the order they are tried, and gives
    /// back the room they were pushed into.
    fn sort(&mut self, names: &HashMap<usize, &str>) {
        // Stable: one route's paths of one shape keep their order.
        self.candidates.sort_by_key(|candidate| candidate.rank(names));
        self.candidates.shrink_to_fit();
        self.children.shrink_to_fit();
        self.children.values_mut().for_each(|child| child.sort(names));
        if let Some(param) = &mut self.param {
            param.sort(names);
        }
    }

    /// The best accepting candidate at or below this node and the bytes of
    /// `path` it matched, `rest` being what follows this node's segment:
    /// the literal child's subtree first, then the parameter child's, then
    /// this node's own candidates (a shorter prefix).
    fn lookup<'t>(&'t self, path: &str, rest: &str, method: &Method, headers: &HeaderMap) -> Option<(&'t Candidate, usize)> {
        if let Some((segment, after)) = next_segment(rest) {
            let literal = self.children.get(segment).and_then(|child| child.lookup(path, after, method, headers));
            let found = literal.or_else(|| self.param.as_ref().and_then(|child| child.lookup(path, after, method, headers)));
            if found.is_some() {
                return found;
            }
        }
        self.candidates.iter().find(|c| c.accepts(method, headers)).map(|c| (c, path.len() - rest.len()))
    }

    fn find(&self, path: &str, method: &Method, headers: &HeaderMap) -> Option<Match> {
        self.lookup(path, path, method, headers).map(|(candidate, matched_len)| candidate.found(path, matched_len))
    }
}

/// Path segments after the leading `/` (`/` alone has none).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The first segment of `path` and what follows it (from its `/`).
fn next_segment(path: &str) -> Option<(&str, &str)> {
    let path = path.trim_start_matches('/');
    match path.find('/') {
        _ if path.is_empty() => None,
        Some(end) => Some((&path[..end], &path[end..])),
        None => Some((path, "")),
    }
}

/// The compiled route table.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, PathTrie>,
    /// Keyed by the suffix after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<Box<str>, PathTrie>,
    any_host: PathTrie,
    len: usize,
}

impl Router {
    /// Builds the table. Route conditions must already be validated and
    /// normalized (as `portico_shared` does); unparsable methods or header
    /// names, which validation excludes, are skipped.
    pub fn new<'a>(routes: impl IntoIterator<Item = RouteSpec<'a>>) -> Self {
        let mut router = Self::default();
        let mut names = HashMap::new();
        let mut method_lists: HashMap<&[String], Arc<[Method]>> = HashMap::new();
        for route in routes {
            names.insert(route.index, route.name);
            let methods = method_lists
                .entry(route.methods)
                .or_insert_with(|| route.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect())
                .clone();
            let headers: Box<[(HeaderName, Box<[HeaderValue]>)]> = route
                .headers
                .iter()
                .filter_map(|(name, values)| {
                    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                    Some((name, values.iter().filter_map(|v| HeaderValue::from_str(v).ok()).collect()))
                })
                .collect();
            let root = ["/".to_owned()];
            let paths = if route.paths.is_empty() { &root[..] } else { route.paths };
            for path in paths {
                let params: Box<[(usize, Arc<str>)]> = route_path::segments(path)
                    .enumerate()
                    .filter_map(|(at, segment)| match segment {
                        Segment::Param(name) => Some((at, name.into())),
                        Segment::Literal(_) => None,
                    })
                    .collect();
                let candidate = || Candidate {
                    route: route.index,
                    prefix: path.as_str().into(),
                    params: params.clone(),
                    methods: methods.clone(),
                    headers: headers.clone(),
                };
                if route.hosts.is_empty() {
                    router.any_host.insert(path, candidate());
                }
                for host in route.hosts {
                    let trie = match host.strip_prefix("*.") {
                        Some(suffix) => router.wildcard.entry(suffix.into()).or_default(),
                        None => router.exact.entry(host.as_str().into()).or_default(),
                    };
                    trie.insert(path, candidate());
                }
                router.len += 1;
            }
        }
        router.exact.values_mut().chain(router.wildcard.values_mut()).for_each(|trie| trie.sort(&names));
        router.any_host.sort(&names);
        router
    }

    /// Number of (route, path) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The route for a request. `host` is the request's host without port,
    /// lowercase; `path` is normalized (see [`normalize_path`]).
    pub fn lookup(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Option<Match> {
        if let Some(found) = self.exact.get(host).and_then(|t| t.find(path, method, headers)) {
            return Some(found);
        }
        if !self.wildcard.is_empty() {
            // Longest suffix first: for a.b.example.com try b.example.com, example.com, com.
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(found) = self.wildcard.get(suffix).and_then(|t| t.find(path, method, headers)) {
                    return Some(found);
                }
                rest = suffix;
            }
        }
        self.any_host.find(path, method, headers)
    }
}

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (`*`, or no leading `/`).
    NotAPath,
    /// A `%XX` that is not two hex digits.
    BadEscape,
    /// An encoded `/`, `\\`, NUL or control character, a raw `\\`, or a
    /// dot segment carrying `;` parameters: things upstreams disagree about.
    Ambiguous,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAPath => "the request path must start with '/'",
            Self::BadEscape => "the request path has a malformed percent escape",
            Self::Ambiguous => "the request path has an encoded '/', '\\' or control character, a '\\', or a ';' on a dot segment",
        }
    }
}

/// A request path in canonical form, the form routes match and upstreams
/// receive: percent-escapes of unreserved characters decoded (`%61` is
/// `a`, `%2e` is `.`), `.` and `..` segments resolved and repeated slashes
/// collapsed (RFC 3986 §5.2.4), so `/public/%2e%2e/admin` is `/admin` and
/// cannot slip past the route `/admin` names. Escapes of other characters
/// are kept as sent.
pub fn normalize_path(path: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAPath);
    }
    if is_canonical(path.as_bytes()) {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    normalize_the_long_way(path)
}

/// [`normalize_path`] for a path starting with `/` that may need it.
fn normalize_the_long_way(path: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    if path.contains('\\') {
        return Err(PathError::Ambiguous);
    }
    let decoded = if path.contains('%') { std::borrow::Cow::Owned(decode_unreserved(path)?) } else { std::borrow::Cow::Borrowed(path) };
    let dot_segment = |s: &str| s == "." || s == "..";
    if decoded.split('/').any(|s| s.split_once(';').is_some_and(|(name, _)| dot_segment(name))) {
        return Err(PathError::Ambiguous);
    }
    if !decoded.contains("//") && !decoded.split('/').any(dot_segment) {
        return Ok(decoded);
    }
    let mut out: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(decoded.len());
    for segment in &out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() || trailing {
        normalized.push('/');
    }
    Ok(std::borrow::Cow::Owned(normalized))
}

/// Whether a path starting with `/` is canonical as it is, in one pass (most
/// are): no `\\`, `%` or `;`, no empty segment but a trailing one, no `.`
/// or `..` segment. Any other path goes the long way.
fn is_canonical(path: &[u8]) -> bool {
    let mut segment = 1;
    for (at, byte) in path.iter().enumerate().skip(1) {
        match byte {
            b'\\' | b'%' | b';' => return false,
            b'/' if matches!(&path[segment..at], b"" | b"." | b"..") => return false,
            b'/' => segment = at + 1,
            _ => {}
        }
    }
    !matches!(&path[segment..], b"." | b"..")
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    // Whatever lies between escapes is copied as it is: a raw non-ASCII
    // character (UTF-8, which the `http` crate accepts in paths) stays itself.
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3).ok_or(PathError::BadEscape)?;
        let byte = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
        match byte {
            b'/' | b'\\' => return Err(PathError::Ambiguous),
            b if b < 0x20 || b == 0x7f => return Err(PathError::Ambiguous),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(char::from(b)),
            _ => {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Def {
        name: &'static str,
        paths: Vec<String>,
        hosts: Vec<String>,
        methods: Vec<String>,
        headers: BTreeMap<String, Vec<String>>,
    }

    fn def(name: &'static str, paths: &[&str]) -> Def {
        Def { name, paths: paths.iter().map(|p| p.to_string()).collect(), hosts: vec![], methods: vec![], headers: BTreeMap::new() }
    }

    fn router(defs: &[Def]) -> Router {
        Router::new(defs.iter().enumerate().map(|(index, d)| RouteSpec {
            index,
            name: d.name,
            paths: &d.paths,
            hosts: &d.hosts,
            methods: &d.methods,
            headers: &d.headers,
        }))
    }

    fn find<'a>(defs: &'a [Def], router: &Router, host: &str, method: Method, path: &str) -> Option<&'a str> {
        find_with(defs, router, host, method, path, &HeaderMap::new())
    }

    fn find_with<'a>(defs: &'a [Def], router: &Router, host: &str, method: Method, path: &str, headers: &HeaderMap) -> Option<&'a str> {
        router.lookup(host, path, &method, headers).map(|m| defs[m.route].name)
    }

    #[test]
    fn prefix_match_respects_segments() {
        let defs = [def("users", &["/users"])];
        let r = router(&defs);
        for path in ["/users", "/users/", "/users/7", "/users/7/orders"] {
            assert_eq!(find(&defs, &r, "h", Method::GET, path), Some("users"), "{path}");
        }
        for path in ["/usersx", "/user", "/", "/other/users"] {
            assert_eq!(find(&defs, &r, "h", Method::GET, path), None, "{path}");
        }
    }

    #[test]
    fn longest_prefix_wins_and_root_takes_the_rest() {
        let defs = [def("root", &["/"]), def("api", &["/api"]), def("v2", &["/api/v2"])];
        let r = router(&defs);
        assert_eq!(find(&defs, &r, "h", Method::GET, "/api/v2/x"), Some("v2"));
        assert_eq!(find(&defs, &r, "h", Method::GET, "/api/v1"), Some("api"));
        assert_eq!(find(&defs, &r, "h", Method::GET, "/elsewhere"), Some("root"));
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let mut exact = def("exact", &["/"]);
        exact.hosts = vec!["api.example.com".into()];
        let mut wild = def("wild", &["/"]);
        wild.hosts = vec!["*.example.com".into()];
        let mut deep = def("deep", &["/"]);
        deep.hosts = vec!["*.eu.example.com".into()];
        let defs = [def("any", &["/"]), exact, wild, deep];
        let r = router(&defs);
        assert_eq!(find(&defs, &r, "api.example.com", Method::GET, "/"), Some("exact"));
        assert_eq!(find(&defs, &r, "web.example.com", Method::GET, "/"), Some("wild"));
        assert_eq!(find(&defs, &r, "x.eu.example.com", Method::GET, "/"), Some("deep"));
        assert_eq!(find(&defs, &r, "example.com", Method::GET, "/"), Some("any"), "a wildcard needs a label before the suffix");
        assert_eq!(find(&defs, &r, "other.org", Method::GET, "/"), Some("any"));
    }

    #[test]
    fn methods_and_headers_narrow_and_rank() {
        let mut get = def("get", &["/x"]);
        get.methods = vec!["GET".into()];
        let mut v2 = def("v2", &["/x"]);
        v2.methods = vec!["GET".into()];
        v2.headers = BTreeMap::from([("x-version".to_owned(), vec!["2".to_owned()])]);
        let defs = [def("any-method", &["/x"]), get, v2];
        let r = router(&defs);
        assert_eq!(find(&defs, &r, "h", Method::GET, "/x"), Some("get"));
        assert_eq!(find(&defs, &r, "h", Method::POST, "/x"), Some("any-method"));
        let mut headers = HeaderMap::new();
        headers.insert("x-version", HeaderValue::from_static("2"));
        assert_eq!(find_with(&defs, &r, "h", Method::GET, "/x", &headers), Some("v2"));
    }

    #[test]
    fn decodes_unreserved_escapes_and_refuses_ambiguous_ones() {
        assert_eq!(normalize_path("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/%61dmin").unwrap(), "/admin");
        assert_eq!(normalize_path("/a%20b/%c3%a9").unwrap(), "/a%20b/%C3%A9", "other escapes stay escaped");
        for bad in ["/a/..%2fadmin", "/a%5cb", "/a\\b", "/a/%00", "/a/..;/b", "/a/.;x/b"] {
            assert_eq!(normalize_path(bad).unwrap_err(), PathError::Ambiguous, "{bad}");
        }
        for bad in ["/a%", "/a%4", "/a%zz"] {
            assert_eq!(normalize_path(bad).unwrap_err(), PathError::BadEscape, "{bad}");
        }
        assert_eq!(normalize_path("/a;v=1/b").unwrap(), "/a;v=1/b", "parameters on ordinary segments are fine");
        assert_eq!(normalize_path("/caf\u{e9}/%41").unwrap(), "/caf\u{e9}/A", "raw UTF-8 beside an escape stays as sent");
    }

    #[test]
    fn normalizes_dot_segments_and_double_slashes() {
        assert_eq!(normalize_path("/a/b").unwrap(), "/a/b");
        assert_eq!(normalize_path("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/a//b/./c/").unwrap(), "/a/b/c/");
        assert_eq!(normalize_path("/../../etc").unwrap(), "/etc");
        assert_eq!(normalize_path("/a/..").unwrap(), "/");
        assert_eq!(normalize_path("*").unwrap_err(), PathError::NotAPath);
    }

    fn matched(r: &Router, path: &str) -> Option<Match> {
        r.lookup("h", path, &Method::GET, &HeaderMap::new())
    }

    #[test]
    fn literal_beats_parameter_at_the_same_depth() {
        let defs = [def("by-id", &["/users/{id}"]), def("me", &["/users/me"]), def("users", &["/users"])];
        let r = router(&defs);
        assert_eq!(find(&defs, &r, "h", Method::GET, "/users/me"), Some("me"));
        assert_eq!(find(&defs, &r, "h", Method::GET, "/users/me/orders"), Some("me"));
        assert_eq!(find(&defs, &r, "h", Method::GET, "/users/7"), Some("by-id"));
        assert_eq!(find(&defs, &r, "h", Method::GET, "/users"), Some("users"));
        let defs = [def("param-longer", &["/a/{x}/c"]), def("literal-shorter", &["/a/b"])];
        let r = router(&defs);
        assert_eq!(find(&defs, &r, "h", Method::GET, "/a/b/c"), Some("literal-shorter"), "depth 2 decides before length");
        assert_eq!(find(&defs, &r, "h", Method::GET, "/a/z/c"), Some("param-longer"));
    }

    #[test]
    fn parameter_captures_exactly_one_segment() {
        let defs = [def("orders", &["/users/{id}/orders"])];
        let r = router(&defs);
        let m = matched(&r, "/users/7/orders/42").unwrap();
        assert_eq!(m.params, [("id".into(), "7".into())]);
        assert_eq!(m.param("id"), Some("7"));
        assert_eq!(matched(&r, "/users/7/8/orders"), None, "a parameter does not take two segments");
        assert_eq!(matched(&r, "/users/orders"), None, "nor none");
        assert_eq!(matched(&r, "/users//orders"), None, "nor an empty one");
        let m = matched(&r, "/users/a;v=1/orders").unwrap();
        assert_eq!(m.param("id"), Some("a;v=1"));
    }

    #[test]
    fn falls_back_to_the_parameter_branch_when_the_literal_branch_has_no_match() {
        let mut me_get = def("me-settings", &["/users/me/settings"]);
        me_get.methods = vec!["GET".into()];
        let defs = [me_get, def("orders", &["/users/{id}/orders"]), def("any-user", &["/users/{id}"]), def("root", &["/"])];
        let r = router(&defs);
        let m = matched(&r, "/users/me/orders").unwrap();
        assert_eq!(defs[m.route].name, "orders", "the literal `me` has nothing for `orders`");
        assert_eq!(m.param("id"), Some("me"));
        assert_eq!(find(&defs, &r, "h", Method::GET, "/users/me/settings"), Some("me-settings"));
        assert_eq!(find(&defs, &r, "h", Method::POST, "/users/me/settings"), Some("any-user"), "method refused below the literal");
        assert_eq!(find(&defs, &r, "h", Method::GET, "/users"), Some("root"));
    }

    #[test]
    fn each_route_keeps_its_own_parameter_names() {
        let mut post = def("post", &["/users/{user}/orders/{order}"]);
        post.methods = vec!["POST".into()];
        let defs = [def("get", &["/users/{id}/orders/{order_id}"]), post];
        let r = router(&defs);
        let get = r.lookup("h", "/users/7/orders/9", &Method::GET, &HeaderMap::new()).unwrap();
        assert_eq!(get.params, [("id".into(), "7".into()), ("order_id".into(), "9".into())]);
        let post = r.lookup("h", "/users/7/orders/9", &Method::POST, &HeaderMap::new()).unwrap();
        assert_eq!(post.params, [("user".into(), "7".into()), ("order".into(), "9".into())]);
        assert_eq!(post.param("id"), None);
    }

    #[test]
    fn strips_the_matched_prefix_with_parameters() {
        let defs = [def("orders", &["/users/{id}/orders"]), def("root", &["/"]), def("static", &["/static"])];
        let r = router(&defs);
        let target = |path: &str| {
            let m = matched(&r, path).unwrap();
            let uri: http::Uri = format!("{path}?q=1").parse().unwrap();
            (m.matched_len, crate::proxy::forwarded_target(&uri, path, m.matched_len, true).unwrap().to_string())
        };
        assert_eq!(target("/users/42/orders/7"), ("/users/42/orders".len(), "/7?q=1".to_owned()));
        assert_eq!(target("/users/42/orders"), ("/users/42/orders".len(), "/?q=1".to_owned()));
        assert_eq!(target("/users/42/orders/"), ("/users/42/orders".len(), "/?q=1".to_owned()));
        assert_eq!(target("/static/app.js"), ("/static".len(), "/app.js?q=1".to_owned()));
        assert_eq!(target("/elsewhere/x"), (0, "/elsewhere/x?q=1".to_owned()), "the route `/` strips nothing");
    }

    #[test]
    fn percent_escaped_values_stay_as_sent() {
        let defs = [def("files", &["/files/{name}"])];
        let r = router(&defs);
        let path = normalize_path("/files/a%20b%2fc").map(|p| p.into_owned());
        assert_eq!(path.unwrap_err(), PathError::Ambiguous, "an encoded '/' never reaches the router");
        let path = normalize_path("/files/caf%c3%a9%20%7e1").unwrap();
        let m = matched(&r, &path).unwrap();
        assert_eq!(m.param("name"), Some("caf%C3%A9%20~1"), "only unreserved escapes are decoded, by normalization");
        assert_eq!(matched(&r, "/files/%7Bname%7D").unwrap().param("name"), Some("%7Bname%7D"));
    }

    #[test]
    fn routes_without_parameters_allocate_no_parameter_list() {
        let defs = [def("users", &["/users"])];
        let m = matched(&router(&defs), "/users/7").unwrap();
        assert!(m.params.is_empty());
        assert_eq!(m.params.capacity(), 0);
    }

    /// A route of the random tables: paths of `a`, `b`, `{p}`, `{q}`
    /// segments, hosts and a method condition.
    fn arbitrary_def() -> impl proptest::strategy::Strategy<Value = (Vec<String>, Vec<String>, Vec<String>)> {
        use proptest::prelude::*;
        let segment = prop_oneof![Just("a"), Just("b"), Just("{p}"), Just("{q}")];
        let path = proptest::collection::vec(segment, 0..4).prop_map(|s| format!("/{}", s.join("/")));
        let host = prop_oneof![Just("x.example.com"), Just("*.example.com")];
        let method = prop_oneof![Just("GET"), Just("POST")];
        (
            proptest::collection::vec(path, 0..3),
            proptest::collection::vec(host.prop_map(String::from), 0..2),
            proptest::collection::vec(method.prop_map(String::from), 0..2),
        )
    }

    /// Host class, wildcard length, per-segment kind (literal 0, parameter
    /// 1, end 2), methods named, header conditions, name, path order: lower wins.
    type Rank = (u8, std::cmp::Reverse<usize>, Vec<u8>, bool, std::cmp::Reverse<usize>, &'static str, usize);

    /// Route, route path, matched length, parameters.
    type Found = (usize, String, usize, Vec<(String, String)>);

    /// The documented precedence, by a scan of every (route, path, host).
    fn brute_force(defs: &[Def], host: &str, path: &str, method: &Method) -> Option<Found> {
        let request: Vec<&str> = segments(path).collect();
        let root = ["/".to_owned()];
        let mut best: Option<(Rank, Found)> = None;
        for (index, d) in defs.iter().enumerate() {
            if !(d.methods.is_empty() || d.methods.iter().any(|m| m == method.as_str())) {
                continue;
            }
            let hosts: Vec<(u8, usize)> = if d.hosts.is_empty() {
                vec![(2, 0)]
            } else {
                d.hosts
                    .iter()
                    .filter_map(|h| match h.strip_prefix("*.") {
                        Some(suffix) => host.ends_with(&format!(".{suffix}")).then_some((1, suffix.len())),
                        None => (h == host).then_some((0, 0)),
                    })
                    .collect()
            };
            let paths = if d.paths.is_empty() { &root[..] } else { &d.paths[..] };
            for (order, pattern) in paths.iter().enumerate() {
                let pattern: Vec<Segment<'_>> = route_path::segments(pattern).collect();
                let fits = pattern.len() <= request.len()
                    && pattern.iter().zip(&request).all(|(p, r)| matches!(p, Segment::Param(_)) || *p == Segment::Literal(r));
                if !fits {
                    continue;
                }
                let mut kinds: Vec<u8> = pattern.iter().map(|p| u8::from(matches!(p, Segment::Param(_)))).collect();
                kinds.push(2);
                let matched_len: usize = request[..pattern.len()].iter().map(|s| s.len() + 1).sum();
                let params = pattern
                    .iter()
                    .zip(&request)
                    .filter_map(|(p, r)| match p {
                        Segment::Param(name) => Some((name.to_string(), r.to_string())),
                        Segment::Literal(_) => None,
                    })
                    .collect::<Vec<_>>();
                for &(class, suffix) in &hosts {
                    let rank = (class, std::cmp::Reverse(suffix), kinds.clone(), d.methods.is_empty(), std::cmp::Reverse(0), d.name, order);
                    if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                        best = Some((rank, (index, paths[order].clone(), matched_len, params.clone())));
                    }
                }
            }
        }
        best.map(|(_, found)| found)
    }

    const NAMES: [&str; 8] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];

    proptest::proptest! {
        #[test]
        fn a_path_taken_as_canonical_is_what_the_long_way_makes_of_it(path in "/[a./%;\\\\2e]{0,12}") {
            if is_canonical(path.as_bytes()) {
                let normalized = normalize_the_long_way(&path).map(std::borrow::Cow::into_owned);
                proptest::prop_assert_eq!(normalized.ok(), Some(path.clone()));
            }
        }

        #[test]
        fn lookup_agrees_with_a_scan_by_the_documented_precedence(
            routes in proptest::collection::vec(arbitrary_def(), 1..8),
            request in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 0..5),
            trailing in proptest::bool::ANY,
            host in proptest::sample::select(vec!["x.example.com", "y.example.com", "other.org"]),
            post in proptest::bool::ANY,
        ) {
            let defs: Vec<Def> = routes
                .into_iter()
                .zip(NAMES)
                .map(|((paths, hosts, methods), name)| {
                    let mut d = def(name, &[]);
                    // As validation leaves them: no path twice in one route.
                    let mut seen = std::collections::HashSet::new();
                    d.paths = paths.into_iter().filter(|p| seen.insert(route_path::shape(p))).collect();
                    d.hosts = hosts;
                    d.methods = methods;
                    d
                })
                .collect();
            let r = router(&defs);
            let mut path = format!("/{}", request.join("/"));
            if trailing && !request.is_empty() { path.push('/'); }
            let method = if post { Method::POST } else { Method::GET };
            let found = r.lookup(host, &path, &method, &HeaderMap::new()).map(|m| {
                let params = m.params.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>();
                (m.route, m.prefix.to_string(), m.matched_len, params)
            });
            proptest::prop_assert_eq!(found, brute_force(&defs, host, &path, &method));
        }

        #[test]
        fn prefix_matches_exactly_when_segments_start_with_the_route(
            route in proptest::collection::vec("[a-c]{1,2}", 0..4),
            request in proptest::collection::vec("[a-c]{1,2}", 0..5),
            trailing in proptest::bool::ANY,
        ) {
            let route_path = format!("/{}", route.join("/"));
            let mut request_path = format!("/{}", request.join("/"));
            if trailing && !request.is_empty() { request_path.push('/'); }
            let defs = [def("r", &[route_path.as_str()])];
            let r = router(&defs);
            let expected = request.len() >= route.len() && request[..route.len()] == route[..];
            proptest::prop_assert_eq!(find(&defs, &r, "h", Method::GET, &request_path).is_some(), expected);
        }

        #[test]
        fn normalized_paths_have_no_dot_segments(path in "(/(\\.|\\.\\.|%2[eE]|[a-z]{0,2})){0,6}") {
            let path = if path.is_empty() { "/".to_owned() } else { path };
            let normalized = normalize_path(&path).unwrap();
            proptest::prop_assert!(normalized.starts_with('/'));
            proptest::prop_assert!(!normalized.contains("//"));
            proptest::prop_assert!(!normalized.split('/').any(|s| s == "." || s == ".."));
        }
    }
}
