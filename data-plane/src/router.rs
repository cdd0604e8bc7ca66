//! Route matching: host, segment-aware path prefix, method and headers.
//!
//! Routes are indexed by host (exact names in a map, `*.suffix` patterns in
//! a map keyed by suffix, and host-less routes), then by a trie of path
//! segments, so a lookup costs a few hash probes per host label and path
//! segment whatever the number of routes. Hand-written rather than
//! `matchit`: routes here are prefixes on segment boundaries with host,
//! method and header conditions and a specificity order, which a path
//! router does not model.
//!
//! **Which route wins** when several match, in this order:
//! 1. host: an exact host beats a wildcard, a longer wildcard beats a
//!    shorter one, any wildcard beats a route without hosts;
//! 2. path: the longest matching prefix (in segments);
//! 3. a route that names methods beats one that takes any method;
//! 4. more header conditions beat fewer;
//! 5. then the route name, alphabetically.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

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
    /// The route path that matched (for `strip_path`).
    pub prefix: Arc<str>,
}

#[derive(Debug)]
struct Candidate {
    route: usize,
    name: Arc<str>,
    prefix: Arc<str>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Vec<HeaderValue>)>,
}

impl Candidate {
    fn rank(&self) -> (bool, std::cmp::Reverse<usize>, Arc<str>) {
        (self.methods.is_empty(), std::cmp::Reverse(self.headers.len()), self.name.clone())
    }

    fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, values)| headers.get_all(name).iter().any(|v| values.contains(v)))
    }
}

/// Routes under one host condition, by path segment.
#[derive(Debug, Default)]
struct PathTrie {
    children: HashMap<Box<str>, PathTrie>,
    candidates: Vec<Candidate>,
}

impl PathTrie {
    fn insert(&mut self, path: &str, candidate: Candidate) {
        let mut node = self;
        for segment in segments(path) {
            node = node.children.entry(segment.into()).or_default();
        }
        node.candidates.push(candidate);
    }

    fn sort(&mut self) {
        self.candidates.sort_by_key(Candidate::rank);
        self.children.values_mut().for_each(PathTrie::sort);
    }

    /// The deepest matching node's first accepting candidate, falling
    /// back to shallower nodes (shorter prefixes).
    fn lookup<'p>(&self, mut segments: impl Iterator<Item = &'p str>, method: &Method, headers: &HeaderMap) -> Option<Match> {
        let deeper =
            segments.next().and_then(|segment| self.children.get(segment)).and_then(|child| child.lookup(segments, method, headers));
        deeper.or_else(|| {
            self.candidates.iter().find(|c| c.accepts(method, headers)).map(|c| Match { route: c.route, prefix: c.prefix.clone() })
        })
    }
}

/// Path segments after the leading `/` (`/` alone has none).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/').filter(|s| !s.is_empty())
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
        for route in routes {
            let methods: Vec<Method> = route.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect();
            let headers: Vec<(HeaderName, Vec<HeaderValue>)> = route
                .headers
                .iter()
                .filter_map(|(name, values)| {
                    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                    Some((name, values.iter().filter_map(|v| HeaderValue::from_str(v).ok()).collect()))
                })
                .collect();
            let root = ["/".to_owned()];
            let paths = if route.paths.is_empty() { &root[..] } else { route.paths };
            let name: Arc<str> = route.name.into();
            for path in paths {
                let candidate = || Candidate {
                    route: route.index,
                    name: name.clone(),
                    prefix: path.as_str().into(),
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
        router.exact.values_mut().chain(router.wildcard.values_mut()).for_each(PathTrie::sort);
        router.any_host.sort();
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
        if let Some(found) = self.exact.get(host).and_then(|t| t.lookup(segments(path), method, headers)) {
            return Some(found);
        }
        if !self.wildcard.is_empty() {
            // Longest suffix first: for a.b.example.com try b.example.com, example.com, com.
            let mut rest = host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(found) = self.wildcard.get(suffix).and_then(|t| t.lookup(segments(path), method, headers)) {
                    return Some(found);
                }
                rest = suffix;
            }
        }
        self.any_host.lookup(segments(path), method, headers)
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

    proptest::proptest! {
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
