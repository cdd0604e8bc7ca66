//! Shaping JSON bodies with JSONPath (RFC 9535) for the `request-transform`
//! and `response-transform` policies: keep only some parts of a body
//! (`allow`), remove parts (`deny`), rename object members (`rename`). A
//! mobile client can get `items[*]` trimmed to `id` and `name` while the web
//! client gets everything.
//!
//! [`JsonOps`] is the `body` part of a transform as users write it;
//! [`JsonShape::compile`] checks and compiles its paths once, when a config
//! is written or a config version is compiled, never per request;
//! [`JsonShape::apply`] shapes one parsed body. Parsing, size limits and
//! content types are the caller's business; nothing here does I/O.
//!
//! # Semantics
//!
//! The three operations run in this order: **allow, then deny, then
//! rename**. Each evaluates its paths against the body as the previous
//! operation left it, and all paths of one operation against the same body
//! (a path never sees another path's effect of the same operation).
//!
//! **`allow`** (when non-empty) keeps only:
//! - every node selected by any allow path, *whole* (with everything below it);
//! - every object or array an allow path walks through on the way: the nodes
//!   selected by each leading part of the path (`$.items` and `$.items[*]` for
//!   `$.items[*].id`). Such a container is kept even when nothing below it is
//!   kept, as an empty `{}` or `[]`, so trimming `$.items[*]` to `id` keeps
//!   every item (an item without `id` becomes `{}`) and an empty `items` stays
//!   `[]`. A scalar on the way (`"items": 5`) is not kept: only selection keeps
//!   a scalar;
//! - the ancestors of kept nodes, holding only the members and elements that
//!   lead to kept nodes.
//!
//! Arrays keep their kept elements in their original order, without gaps: an
//! element that is neither selected nor on the way is removed and later
//! elements move up. When nothing matches, the body becomes the empty
//! container of its root's type (`{}` or `[]`); a scalar body that no path
//! selects becomes `null`. `allow: ["$"]` keeps the body as it is.
//! Example: `{"items":[{"id":1,"name":"a","price":3}],"total":1}` with allow
//! `["$.items[*].id", "$.items[*].name"]` gives `{"items":[{"id":1,"name":"a"}]}`.
//!
//! **`deny`** removes every node selected by any deny path: object members
//! are removed from their object, array elements from their array (all
//! selected elements of one array are removed together, so `$.a[0,2]`
//! removes the original first and third elements). `$` itself cannot be
//! denied (a compile error); use `allow` to empty a body.
//!
//! **`rename`** maps a JSONPath to a new member name (1 to 256 characters).
//! Every selected node that is an object member keeps its value under the new
//! name in the same object (at the same position when the map keeps
//! insertion order). Selected array elements are skipped: they have no name.
//! If the object already has a member with the new name, the renamed member
//! replaces it, unless that member is itself renamed away (so `a`→`b` with
//! `b`→`a` swaps them). If two members of one object are renamed to the same
//! name, the one later in the object wins. If two rename paths select the
//! same member, the path that sorts first (the map's order) names it. A path
//! and a path below it both apply (`$.a`→`x` with `$.a.b`→`y` gives `x.y`).
//! A rename path is rejected at compile time when it is `$` (the body has no
//! name) or when its last segment has an index or slice selector (`$.a[0]`,
//! `$.a[1:]`): those only ever select array elements. Names, `*` and filters
//! are accepted; whatever array elements they select are skipped.
//!
//! # Limits and cost
//!
//! At most 64 paths per list (`allow`, `deny`, `rename`), each at most 1024
//! characters. Paths are the admin's; only the body comes from clients. The
//! work is one query per path (plus one per leading part for `allow`) and a
//! rebuild of the touched objects and arrays, each a pass over the body, so
//! cost grows with body size times the number of paths. Two things can make a
//! single path cost more: a filter that itself runs a query over a subtree
//! (`$..[?@..x]`, `$.a[?$..b]`) costs that query once per candidate node, and
//! recursion follows the body's nesting (bounded by the parser's nesting
//! limit, 128 for `serde_json`).
//!
//! The RFC's `match()` and `search()` functions are not available (a path
//! using them does not compile): `serde_json_path` compiles their regular
//! expression anew for every node a filter looks at, and with
//! `match(@.a, @.b)` the pattern would come from the body. `length()`,
//! `count()` and `value()` are.
//!
//! # Why the hand-written part
//!
//! `serde_json_path` parses and evaluates paths and tells where each selected
//! node is ([`JsonPath::query_located`]); it does not edit values and does not
//! expose a parsed path's segments. Two small things are hand-written here: the
//! edits (by location, grouped per parent so that removing array elements never
//! shifts another location), and [`segment_starts`], which splits a path the
//! crate has already accepted into its segments, to find the leading parts for
//! `allow` and the last segment for `rename`'s check.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_json_path::{JsonPath, NormalizedPath, PathElement};
use utoipa::ToSchema;

use crate::error::ConfigError;

/// Most paths in one of `allow`, `deny`, `rename`.
pub const MAX_PATHS: usize = 64;
/// Longest path, in characters.
pub const MAX_PATH_CHARS: usize = 1024;
/// Longest new name of a renamed member, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// How a transform shapes a JSON body: `allow`, then `deny`, then `rename`,
/// each a JSONPath (RFC 9535) list. See the module documentation for the
/// exact rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonOps {
    /// When non-empty, only the nodes these paths select are kept (with the
    /// objects and arrays on the way to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// The nodes these paths select are removed. `$` is not allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Path of object members → their new name (1 to 256 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
}

/// [`JsonOps`] with its paths compiled, ready to apply to many bodies.
#[derive(Debug, Clone, Default)]
pub struct JsonShape {
    allow: Vec<JsonPath>,
    /// The leading parts of the allow paths (`$.items`, `$.items[*]` for
    /// `$.items[*].id`), deduplicated: what they select is "on the way".
    allow_ways: Vec<JsonPath>,
    deny: Vec<JsonPath>,
    /// In the map's order (by path), which decides who names a member two
    /// paths select.
    rename: Vec<(JsonPath, String)>,
}

impl JsonShape {
    /// Checks and compiles every path of `ops`. An error's field is relative
    /// to `JsonOps` (`allow[2]`, `deny[0]`, `rename.$.a`) and its message
    /// quotes the parser's reason.
    pub fn compile(ops: &JsonOps) -> Result<Self, ConfigError> {
        check_count("allow", ops.allow.len())?;
        check_count("deny", ops.deny.len())?;
        check_count("rename", ops.rename.len())?;

        let mut shape = JsonShape::default();
        let mut ways = HashSet::new();
        for (i, source) in ops.allow.iter().enumerate() {
            shape.allow.push(parse(&format!("allow[{i}]"), source)?);
            let starts = segment_starts(source);
            // Every leading part with at least one segment and fewer than all
            // of them; `$` itself is always on the way.
            for &end in starts.iter().skip(1) {
                let way = source.get(..end).unwrap_or_default().trim_end();
                if ways.insert(way.to_owned()) {
                    // The crate accepted the whole path, so each leading part
                    // parses; if one did not, the containers on its way are
                    // simply not kept, which is still a sub-document.
                    if let Ok(path) = JsonPath::parse(way) {
                        shape.allow_ways.push(path);
                    }
                }
            }
        }
        for (i, source) in ops.deny.iter().enumerate() {
            let field = format!("deny[{i}]");
            let path = parse(&field, source)?;
            if segment_starts(source).is_empty() {
                return Err(ConfigError::invalid(field, "`$` is the whole body and cannot be denied (use allow to keep less)"));
            }
            shape.deny.push(path);
        }
        for (source, name) in &ops.rename {
            let field = format!("rename.{source}");
            let path = parse(&field, source)?;
            let starts = segment_starts(source);
            let Some(&last) = starts.last() else {
                return Err(ConfigError::invalid(field, "`$` is the whole body, not an object member, and cannot be renamed"));
            };
            if selects_by_position(source.get(last..).unwrap_or_default()) {
                return Err(ConfigError::invalid(
                    field,
                    "the last segment has an index or slice, which only selects array elements; \
                     a rename path must select object members (end in a name, `*` or a filter)",
                ));
            }
            let chars = name.chars().count();
            if chars == 0 || chars > MAX_NAME_CHARS {
                return Err(ConfigError::invalid(field, format!("the new name must be 1 to {MAX_NAME_CHARS} characters, got {chars}")));
            }
            shape.rename.push((path, name.clone()));
        }
        Ok(shape)
    }

    /// Whether applying changes nothing (no allow, deny or rename path).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.rename.is_empty()
    }

    /// Shapes `value`: allow, then deny, then rename.
    pub fn apply(&self, value: &mut Value) {
        self.apply_allow(value);
        self.apply_deny(value);
        self.apply_rename(value);
    }

    fn apply_allow(&self, value: &mut Value) {
        if self.allow.is_empty() {
            return;
        }
        let mut keep = Keep::default();
        for path in &self.allow {
            for node in path.query_located(value).iter() {
                keep.insert(&steps(node.location()), true);
            }
        }
        if keep.whole {
            return;
        }
        for path in &self.allow_ways {
            for node in path.query_located(value).iter() {
                if node.node().is_object() || node.node().is_array() {
                    keep.insert(&steps(node.location()), false);
                }
            }
        }
        if !keep.prune(value) {
            *value = Value::Null;
        }
    }

    fn apply_deny(&self, value: &mut Value) {
        let mut groups: HashMap<Vec<Step>, Vec<Step>> = HashMap::new();
        for path in &self.deny {
            for node in path.query_located(value).iter() {
                let mut parent = steps(node.location());
                // The root has no parent to be removed from; compile rejects `$`.
                if let Some(last) = parent.pop() {
                    groups.entry(parent).or_default().push(last);
                }
            }
        }
        for (parent, children) in deepest_first(groups) {
            match get_mut(value, &parent) {
                Some(Value::Object(map)) => {
                    let names: HashSet<&str> = children.iter().filter_map(Step::name).collect();
                    map.retain(|key, _| !names.contains(key.as_str()));
                }
                Some(Value::Array(items)) => {
                    let indexes: HashSet<usize> = children.iter().filter_map(Step::index).collect();
                    let mut i = 0;
                    items.retain(|_| {
                        let keep = !indexes.contains(&i);
                        i += 1;
                        keep
                    });
                }
                _ => {}
            }
        }
    }

    fn apply_rename(&self, value: &mut Value) {
        let mut groups: HashMap<Vec<Step>, Vec<(String, &str)>> = HashMap::new();
        for (path, new) in &self.rename {
            for node in path.query_located(value).iter() {
                let mut parent = steps(node.location());
                // Array elements and the root have no name: skipped.
                if let Some(Step::Name(old)) = parent.pop() {
                    groups.entry(parent).or_default().push((old, new.as_str()));
                }
            }
        }
        for (parent, renames) in deepest_first(groups) {
            let Some(Value::Object(map)) = get_mut(value, &parent) else { continue };
            let mut new_names: HashMap<&str, &str> = HashMap::new();
            for (old, new) in &renames {
                // The first path in the map's order names the member.
                new_names.entry(old.as_str()).or_insert(new);
            }
            let replaced: HashSet<&str> = new_names.values().copied().collect();
            let mut out = Map::new();
            for (key, member) in std::mem::take(map) {
                match new_names.get(key.as_str()) {
                    Some(new) => {
                        out.insert((*new).to_owned(), member);
                    }
                    // An existing member with a new name is replaced by the
                    // renamed one, wherever either sits in the object.
                    None if replaced.contains(key.as_str()) => {}
                    None => {
                        out.insert(key, member);
                    }
                }
            }
            *map = out;
        }
    }
}

fn check_count(field: &str, count: usize) -> Result<(), ConfigError> {
    if count > MAX_PATHS {
        return Err(ConfigError::invalid(field, format!("at most {MAX_PATHS} paths, got {count}")));
    }
    Ok(())
}

fn parse(field: &str, source: &str) -> Result<JsonPath, ConfigError> {
    let chars = source.chars().count();
    if chars > MAX_PATH_CHARS {
        return Err(ConfigError::invalid(field, format!("a path is at most {MAX_PATH_CHARS} characters, got {chars}")));
    }
    JsonPath::parse(source).map_err(|e| ConfigError::invalid(field, format!("not a JSONPath (RFC 9535): {e}")))
}

/// One step of a node's location, owned so the body can be edited once the
/// query that found it is done.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Name(String),
    Index(usize),
}

impl Step {
    fn name(&self) -> Option<&str> {
        match self {
            Step::Name(name) => Some(name),
            Step::Index(_) => None,
        }
    }

    fn index(&self) -> Option<usize> {
        match self {
            Step::Name(_) => None,
            Step::Index(i) => Some(*i),
        }
    }
}

fn steps(location: &NormalizedPath<'_>) -> Vec<Step> {
    location
        .iter()
        .map(|element| match element {
            PathElement::Name(name) => Step::Name((*name).to_owned()),
            PathElement::Index(i) => Step::Index(*i),
        })
        .collect()
}

fn get_mut<'v>(mut value: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    for step in steps {
        value = match (step, value) {
            (Step::Name(name), Value::Object(map)) => map.get_mut(name)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Edit groups keyed by the parent they edit, deepest parent first. Editing a
/// parent's children never changes the location of a parent at the same depth
/// or above, so every later group still finds its parent where the query saw
/// it; a group below an edited one was handled before it.
fn deepest_first<T>(groups: HashMap<Vec<Step>, T>) -> Vec<(Vec<Step>, T)> {
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|(parent, _)| std::cmp::Reverse(parent.len()));
    groups
}

/// What `allow` keeps below one node: the node whole, or only some of its
/// members or elements (possibly none: an empty container on the way).
/// Ordered maps rather than hash maps: they are small, and hashing each
/// member's name with SipHash cost more than the rest of the walk.
#[derive(Debug, Default)]
struct Keep {
    whole: bool,
    names: BTreeMap<String, Keep>,
    indexes: BTreeMap<usize, Keep>,
}

impl Keep {
    fn insert(&mut self, steps: &[Step], whole: bool) {
        let mut node = self;
        for step in steps {
            if node.whole {
                return;
            }
            node = match step {
                Step::Name(name) => node.names.entry(name.clone()).or_default(),
                Step::Index(i) => node.indexes.entry(*i).or_default(),
            };
        }
        if whole {
            *node = Keep { whole: true, ..Keep::default() };
        }
    }

    /// Cuts `value` down, in place, to its kept part; `false` when nothing
    /// of it is kept (a scalar that was only on the way).
    fn prune(mut self, value: &mut Value) -> bool {
        if self.whole {
            return true;
        }
        match value {
            Value::Object(map) => {
                map.retain(|key, member| self.names.remove(key).is_some_and(|keep| keep.prune(member)));
                true
            }
            Value::Array(items) => {
                let mut index = 0;
                items.retain_mut(|item| {
                    let kept = self.indexes.remove(&index).is_some_and(|keep| keep.prune(item));
                    index += 1;
                    kept
                });
                true
            }
            _ => false,
        }
    }
}

/// Byte offsets where each segment of `path` starts (its `.`, `..` or `[`);
/// empty for `$`. `path` must be a query `serde_json_path` accepted: this
/// only tells segments apart, it does not check them. Inside brackets it
/// skips quoted strings (with their escapes) and nested brackets, which is
/// all RFC 9535 puts there; outside, a segment is `.name`, `.*`, `..name`,
/// `..*`, `..[…]` or `[…]`, with blanks allowed between segments.
fn segment_starts(path: &str) -> Vec<usize> {
    let bytes = path.as_bytes();
    let mut starts = Vec::new();
    let Some(root) = path.find('$') else { return starts };
    let mut i = root + 1;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'[' => {
                starts.push(i);
                i = after_bracket(bytes, i);
            }
            b'.' => {
                starts.push(i);
                i += 1;
                if bytes.get(i) == Some(&b'.') {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'[') {
                    i = after_bracket(bytes, i);
                } else {
                    while bytes.get(i).is_some_and(|b| !matches!(b, b'.' | b'[' | b' ' | b'\t' | b'\n' | b'\r')) {
                        i += 1;
                    }
                }
            }
            _ => i += 1,
        }
    }
    starts
}

/// The offset just past the `]` closing the bracket opened at `open`.
fn after_bracket(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut quote = None;
    let mut i = open;
    while let Some(&byte) = bytes.get(i) {
        match quote {
            Some(_) if byte == b'\\' => i += 1,
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None => match byte {
                b'\'' | b'"' => quote = Some(byte),
                b'[' => depth += 1,
                b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    bytes.len()
}

/// Whether a segment (`[0]`, `..['a', 1:]`, `.name`) has an index or slice
/// selector, which only selects array elements.
fn selects_by_position(segment: &str) -> bool {
    let body = segment.trim_start_matches('.');
    let Some(inner) = body.strip_prefix('[').and_then(|b| b.trim_end().strip_suffix(']')) else {
        return false; // `.name` or `.*`
    };
    let bytes = inner.as_bytes();
    let mut depth = 0usize;
    let mut quote = None;
    let mut start = 0;
    let mut selectors = Vec::new();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match quote {
            Some(_) if byte == b'\\' => i += 1,
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None => match byte {
                b'\'' | b'"' => quote = Some(byte),
                b'[' | b'(' => depth += 1,
                b']' | b')' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => {
                    selectors.push(inner.get(start..i).unwrap_or_default());
                    start = i + 1;
                }
                _ => {}
            },
        }
        i += 1;
    }
    selectors.push(inner.get(start..).unwrap_or_default());
    selectors.iter().any(|selector| matches!(selector.trim_start().bytes().next(), Some(b'0'..=b'9' | b'-' | b':')))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn shape(allow: &[&str], deny: &[&str], rename: &[(&str, &str)]) -> JsonShape {
        let ops = JsonOps {
            allow: allow.iter().map(|p| (*p).to_owned()).collect(),
            deny: deny.iter().map(|p| (*p).to_owned()).collect(),
            rename: rename.iter().map(|(p, n)| ((*p).to_owned(), (*n).to_owned())).collect(),
        };
        JsonShape::compile(&ops).unwrap()
    }

    fn shaped(shape: &JsonShape, mut value: Value) -> Value {
        shape.apply(&mut value);
        value
    }

    fn allowed(paths: &[&str], value: Value) -> Value {
        shaped(&shape(paths, &[], &[]), value)
    }

    fn denied(paths: &[&str], value: Value) -> Value {
        shaped(&shape(&[], paths, &[]), value)
    }

    fn renamed(renames: &[(&str, &str)], value: Value) -> Value {
        shaped(&shape(&[], &[], renames), value)
    }

    fn compile_error(ops: JsonOps) -> ConfigError {
        JsonShape::compile(&ops).unwrap_err()
    }

    // allow

    #[test]
    fn allow_trims_items_to_the_listed_fields() {
        let body = json!({"items": [{"id": 1, "name": "a", "price": 3}], "total": 1});
        assert_eq!(allowed(&["$.items[*].id", "$.items[*].name"], body), json!({"items": [{"id": 1, "name": "a"}]}));
    }

    #[test]
    fn allow_keeps_every_item_under_a_wildcard_even_without_the_fields() {
        let body = json!({"items": [{"id": 1, "price": 3}, {"sku": "x"}, {"id": 3}]});
        assert_eq!(allowed(&["$.items[*].id", "$.items[*].name"], body), json!({"items": [{"id": 1}, {}, {"id": 3}]}));
    }

    #[test]
    fn allow_keeps_an_empty_array_the_path_walks_through() {
        assert_eq!(allowed(&["$.items[*].id", "$.total"], json!({"items": [], "total": 0, "x": 1})), json!({"items": [], "total": 0}));
    }

    #[test]
    fn allow_drops_scalars_on_the_way() {
        assert_eq!(allowed(&["$.items[*].id"], json!({"items": [1, 2], "x": 1})), json!({"items": []}));
        assert_eq!(allowed(&["$.items[*].id"], json!({"items": 5})), json!({}));
    }

    #[test]
    fn allow_keeps_a_selected_node_whole() {
        let body = json!({"a": {"b": {"c": [1, {"d": 2}]}, "e": 3}, "f": 4});
        assert_eq!(allowed(&["$.a.b"], body), json!({"a": {"b": {"c": [1, {"d": 2}]}}}));
    }

    #[test]
    fn allow_with_nothing_matching_gives_the_empty_root_container() {
        assert_eq!(allowed(&["$.nope"], json!({"a": 1})), json!({}));
        assert_eq!(allowed(&["$.nope"], json!([1, 2])), json!([]));
        assert_eq!(allowed(&["$[5]"], json!([1, 2])), json!([]));
    }

    #[test]
    fn allow_of_a_scalar_body_keeps_it_only_when_selected() {
        assert_eq!(allowed(&["$.a"], json!(5)), Value::Null);
        assert_eq!(allowed(&["$"], json!(5)), json!(5));
    }

    #[test]
    fn allow_root_keeps_the_body() {
        let body = json!({"a": [1, {"b": null}], "c": "d"});
        assert_eq!(allowed(&["$", "$.a"], body.clone()), body);
    }

    #[test]
    fn allow_keeps_selected_elements_in_their_original_order() {
        assert_eq!(allowed(&["$[2,0]"], json!(["a", "b", "c"])), json!(["a", "c"]));
        assert_eq!(allowed(&["$.l[-1]", "$.l[0]"], json!({"l": [1, 2, 3]})), json!({"l": [1, 3]}));
    }

    #[test]
    fn allow_filter_keeps_only_matching_items() {
        let body = json!({"items": [{"id": 1, "price": 1}, {"id": 2, "price": 3}, {"id": 3, "price": 5}], "n": 3});
        assert_eq!(allowed(&["$.items[?@.price > 2]"], body.clone()), json!({"items": [{"id": 2, "price": 3}, {"id": 3, "price": 5}]}));
        // Items the filter passes over are not on the way; those it selects are.
        assert_eq!(allowed(&["$.items[?@.price > 2].name"], body), json!({"items": [{}, {}]}));
    }

    #[test]
    fn allow_quoted_member_name_with_a_space() {
        assert_eq!(allowed(&["$['odd key']"], json!({"odd key": [1], "odd": 2})), json!({"odd key": [1]}));
    }

    #[test]
    fn allow_descendant_keeps_the_ancestors_of_every_match() {
        let body = json!({"a": {"id": 1, "x": 2}, "b": [{"id": 3}, {"y": 4}], "c": 5});
        assert_eq!(allowed(&["$..id"], body), json!({"a": {"id": 1}, "b": [{"id": 3}]}));
    }

    // deny

    #[test]
    fn deny_removes_a_nested_member() {
        assert_eq!(denied(&["$.a.b"], json!({"a": {"b": 1, "c": 2}, "b": 3})), json!({"a": {"c": 2}, "b": 3}));
    }

    #[test]
    fn deny_descendant_removes_secret_at_every_depth() {
        let body = json!({"secret": 1, "a": {"secret": {"secret": 2}, "k": [{"secret": 3, "v": 4}]}});
        assert_eq!(denied(&["$..secret"], body), json!({"a": {"k": [{"v": 4}]}}));
    }

    #[test]
    fn deny_removes_the_selected_elements_by_their_original_index() {
        assert_eq!(denied(&["$.l[0,2]"], json!({"l": ["a", "b", "c", "d"]})), json!({"l": ["b", "d"]}));
        assert_eq!(denied(&["$[0]", "$[1].x"], json!([1, {"x": 2, "y": 3}])), json!([{"y": 3}]));
    }

    #[test]
    fn deny_filter_removes_matching_items() {
        let body = json!({"items": [{"price": 1}, {"price": 3}, {"price": 2}, {"price": 7}]});
        assert_eq!(denied(&["$.items[?@.price > 2]"], body), json!({"items": [{"price": 1}, {"price": 2}]}));
    }

    #[test]
    fn deny_a_node_and_a_node_below_it() {
        assert_eq!(denied(&["$.a.b", "$.a"], json!({"a": {"b": 1}, "c": 2})), json!({"c": 2}));
    }

    #[test]
    fn deny_quoted_member_name_with_a_space() {
        assert_eq!(denied(&["$['odd key']"], json!({"odd key": 1, "odd": 2})), json!({"odd": 2}));
    }

    #[test]
    fn deny_of_a_missing_path_changes_nothing() {
        let body = json!({"a": [1, 2], "b": "c"});
        assert_eq!(denied(&["$.x.y", "$.a[9]", "$.b.c"], body.clone()), body);
    }

    // rename

    #[test]
    fn rename_items_title_to_name() {
        let body = json!({"items": [{"id": 1, "title": "a"}, {"id": 2}, {"title": "c"}]});
        assert_eq!(renamed(&[("$.items[*].title", "name")], body), json!({"items": [{"id": 1, "name": "a"}, {"id": 2}, {"name": "c"}]}));
    }

    #[test]
    fn rename_replaces_an_existing_member_of_the_new_name() {
        assert_eq!(renamed(&[("$.title", "name")], json!({"name": "old", "title": "new"})), json!({"name": "new"}));
        assert_eq!(renamed(&[("$.a", "z")], json!({"a": 1, "z": 2})), json!({"z": 1}));
    }

    #[test]
    fn rename_swaps_two_members() {
        assert_eq!(renamed(&[("$.a", "b"), ("$.b", "a")], json!({"a": 1, "b": 2})), json!({"a": 2, "b": 1}));
    }

    #[test]
    fn rename_applies_to_a_member_and_a_member_below_it() {
        assert_eq!(renamed(&[("$.a", "x"), ("$.a.b", "y")], json!({"a": {"b": 1}})), json!({"x": {"y": 1}}));
    }

    #[test]
    fn rename_skips_array_elements_a_wildcard_selects() {
        assert_eq!(renamed(&[("$.*", "z")], json!([1, 2])), json!([1, 2]));
        assert_eq!(renamed(&[("$.l.*", "z")], json!({"l": [{"a": 1}]})), json!({"l": [{"a": 1}]}));
    }

    #[test]
    fn rename_first_path_in_order_names_a_member_two_paths_select() {
        // "$.a" sorts before "$['a']".
        assert_eq!(renamed(&[("$['a']", "second"), ("$.a", "first")], json!({"a": 1})), json!({"first": 1}));
    }

    #[test]
    fn rename_with_a_filter_renames_the_matching_members() {
        assert_eq!(renamed(&[("$[?@ > 1]", "big")], json!({"a": 1, "b": 5})), json!({"a": 1, "big": 5}));
    }

    #[test]
    fn rename_descendant_renames_at_every_depth() {
        assert_eq!(renamed(&[("$..pw", "password")], json!({"pw": 1, "u": [{"pw": 2}]})), json!({"password": 1, "u": [{"password": 2}]}));
    }

    // order and compile

    #[test]
    fn apply_runs_allow_then_deny_then_rename() {
        let s = shape(&["$.items[*].id", "$.items[*].title"], &["$.items[?@.id == 2]"], &[("$.items[*].title", "name")]);
        let body = json!({"items": [{"id": 1, "title": "a", "p": 1}, {"id": 2, "title": "b"}], "total": 2});
        assert_eq!(shaped(&s, body), json!({"items": [{"id": 1, "name": "a"}]}));
    }

    #[test]
    fn empty_ops_compile_to_an_empty_shape_that_changes_nothing() {
        let s = JsonShape::compile(&JsonOps::default()).unwrap();
        assert!(s.is_empty());
        let body = json!({"a": [1]});
        assert_eq!(shaped(&s, body.clone()), body);
        assert!(!shape(&[], &["$.a"], &[]).is_empty());
    }

    #[test]
    fn rejects_an_invalid_path_naming_the_field_and_the_reason() {
        let e = compile_error(JsonOps { allow: vec!["$.a".into(), "$.b".into(), "$.items[".into()], ..JsonOps::default() });
        assert_eq!(e.field(), "allow[2]");
        assert!(e.message().starts_with("not a JSONPath (RFC 9535): at position"), "{}", e.message());
        let e = compile_error(JsonOps { deny: vec!["a.b".into()], ..JsonOps::default() });
        assert_eq!(e.field(), "deny[0]");
        let e = compile_error(JsonOps { rename: [("$.a[".into(), "b".into())].into(), ..JsonOps::default() });
        assert_eq!(e.field(), "rename.$.a[");
    }

    #[test]
    fn rejects_denying_the_root() {
        let e = compile_error(JsonOps { deny: vec!["$.a".into(), "$".into()], ..JsonOps::default() });
        assert_eq!(e.field(), "deny[1]");
        assert!(e.message().contains("cannot be denied"));
    }

    #[test]
    fn rejects_renaming_the_root() {
        let e = compile_error(JsonOps { rename: [("$".into(), "b".into())].into(), ..JsonOps::default() });
        assert_eq!(e.field(), "rename.$");
    }

    #[test]
    fn rejects_rename_paths_ending_in_an_index_or_slice() {
        for path in ["$.a[0]", "$.a[-1]", "$.a[1:]", "$.a[:2]", "$['a', 0]", "$..[0]", "$.a [ 0 ]"] {
            let e = compile_error(JsonOps { rename: [(path.into(), "b".into())].into(), ..JsonOps::default() });
            assert_eq!(e.field(), format!("rename.{path}"));
            assert!(e.message().contains("index or slice"), "{path}: {}", e.message());
        }
        for path in ["$.a", "$.a[0].b", "$[*]", "$.*", "$..a", "$['a','b']", "$[?@.x == '0']", "$[?@[0]]", "$..['x']", "$['[0]']"] {
            assert!(JsonShape::compile(&JsonOps { rename: [(path.into(), "b".into())].into(), ..JsonOps::default() }).is_ok(), "{path}");
        }
    }

    #[test]
    fn rejects_a_new_name_empty_or_over_256_characters() {
        let e = compile_error(JsonOps { rename: [("$.a".into(), String::new())].into(), ..JsonOps::default() });
        assert_eq!((e.field(), e.message()), ("rename.$.a", "the new name must be 1 to 256 characters, got 0"));
        assert!(JsonShape::compile(&JsonOps { rename: [("$.a".into(), "é".repeat(256))].into(), ..JsonOps::default() }).is_ok());
        let e = compile_error(JsonOps { rename: [("$.a".into(), "x".repeat(257))].into(), ..JsonOps::default() });
        assert_eq!(e.message(), "the new name must be 1 to 256 characters, got 257");
    }

    #[test]
    fn rejects_more_than_64_paths_in_a_list() {
        let paths: Vec<String> = (0..65).map(|i| format!("$.a{i}")).collect();
        assert!(JsonShape::compile(&JsonOps { allow: paths[..64].to_vec(), ..JsonOps::default() }).is_ok());
        let e = compile_error(JsonOps { allow: paths.clone(), ..JsonOps::default() });
        assert_eq!((e.field(), e.message()), ("allow", "at most 64 paths, got 65"));
        let e = compile_error(JsonOps { deny: paths.clone(), ..JsonOps::default() });
        assert_eq!(e.field(), "deny");
        let e = compile_error(JsonOps { rename: paths.into_iter().map(|p| (p, "x".to_owned())).collect(), ..JsonOps::default() });
        assert_eq!(e.field(), "rename");
    }

    #[test]
    fn rejects_a_path_over_1024_characters() {
        let long = format!("$.{}", "a".repeat(1022));
        assert!(JsonShape::compile(&JsonOps { allow: vec![long.clone()], ..JsonOps::default() }).is_ok());
        let e = compile_error(JsonOps { deny: vec![format!("{long}b")], ..JsonOps::default() });
        assert_eq!((e.field(), e.message()), ("deny[0]", "a path is at most 1024 characters, got 1025"));
    }

    #[test]
    fn rejects_regex_functions_and_accepts_the_others() {
        for path in ["$[?match(@.a, 'x.*')]", "$[?search(@.a, 'x')]"] {
            let e = compile_error(JsonOps { allow: vec![path.into()], ..JsonOps::default() });
            assert_eq!(e.field(), "allow[0]", "{path}");
            assert!(e.message().contains("function"), "{path}: {}", e.message());
        }
        let s = shape(&["$[?length(@.n) == 2]", "$[?count(@.*) == 1]", "$[?value(@.v) == 1]"], &[], &[]);
        let body = json!([{"n": "ab"}, {"n": "abc", "m": 0}, {"k": [1]}, {"v": 1, "w": 2}]);
        assert_eq!(shaped(&s, body), json!([{"n": "ab"}, {"k": [1]}, {"v": 1, "w": 2}]));
    }

    #[test]
    fn segments_of_paths_with_tricky_strings_and_filters() {
        let cases: &[(&str, &[&str])] = &[
            ("$", &[]),
            ("$.a", &["$"]),
            ("$.items[*].id", &["$", "$.items", "$.items[*]"]),
            ("$..a..['b'].*", &["$", "$..a", "$..a..['b']"]),
            ("$['a]b'].c", &["$", "$['a]b']"]),
            ("$[\"x\\\"]y\"][0]", &["$", "$[\"x\\\"]y\"]"]),
            ("$['it\\'s'] ['x.y'].z", &["$", "$['it\\'s']", "$['it\\'s'] ['x.y']"]),
            ("$[?@.a[0] == ']' && length(@['b[']) > 1].c", &["$", "$[?@.a[0] == ']' && length(@['b[']) > 1]"]),
            ("$.é.ü[1:3]", &["$", "$.é", "$.é.ü"]),
        ];
        for (path, leading) in cases {
            JsonPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let parts: Vec<&str> = segment_starts(path).into_iter().map(|end| path[..end].trim_end()).collect();
            assert_eq!(&parts, leading, "{path}");
            for part in parts {
                JsonPath::parse(part).unwrap_or_else(|e| panic!("{path} → {part}: {e}"));
            }
        }
    }

    // JsonOps as users write it

    #[test]
    fn json_ops_leaves_out_empty_lists_and_rejects_unknown_fields() {
        assert_eq!(serde_json::to_value(JsonOps::default()).unwrap(), json!({}));
        let ops: JsonOps = serde_json::from_value(json!({"allow": ["$.a"], "rename": {"$.b": "c"}})).unwrap();
        assert_eq!(serde_json::to_value(&ops).unwrap(), json!({"allow": ["$.a"], "rename": {"$.b": "c"}}));
        assert!(serde_json::from_value::<JsonOps>(json!({"alow": ["$.a"]})).is_err());
    }

    // properties

    const PATHS: &[&str] = &[
        "$",
        "$.a",
        "$.a.b",
        "$..a",
        "$.*",
        "$[0]",
        "$[-1]",
        "$[1:3]",
        "$.a[*].b",
        "$..[?@ > 1]",
        "$[?@.a]",
        "$['a','b']",
        "$..*",
        "$.*.c",
        "$..c[0]",
    ];

    /// Paths without index or slice selectors, and without filters on the
    /// way: what they select does not depend on positions, so removing
    /// elements before a node or members beside it does not change whether
    /// the node is selected.
    const UNPOSITIONAL_PATHS: &[&str] =
        &["$.a", "$.a.b", "$..a", "$.*", "$.a[*].b", "$..[?@ > 1]", "$['a','b']", "$..*", "$.*.c", "$[?@.a]"];

    /// Paths that select at most one member per object (so renaming to a
    /// fresh name never merges two), without descendants (so no selected
    /// node is inside another).
    const RENAME_PATHS: &[&str] = &["$.a", "$.a.b", "$.*.a", "$[*].b", "$['a','b'].c", "$[?@.b].a"];

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-2i64..4).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn renamable(path: &str) -> bool {
        segment_starts(path).last().is_some_and(|&last| !selects_by_position(&path[last..]))
    }

    fn owned(paths: Vec<&str>) -> Vec<String> {
        paths.into_iter().map(String::from).collect()
    }

    /// Whether `part` is `whole` with some members and elements left out:
    /// scalars equal, object members found under the same name, array
    /// elements found in the same order (arrays close their gaps).
    fn is_subdocument(part: &Value, whole: &Value) -> bool {
        match (part, whole) {
            (Value::Object(p), Value::Object(w)) => p.iter().all(|(k, v)| w.get(k).is_some_and(|wv| is_subdocument(v, wv))),
            (Value::Array(p), Value::Array(w)) => {
                let mut rest = w.iter();
                p.iter().all(|v| rest.any(|wv| is_subdocument(v, wv)))
            }
            _ => part == whole,
        }
    }

    proptest! {
        #[test]
        fn apply_never_panics(
            body in json(),
            allow in prop::sample::subsequence(PATHS.to_vec(), 0..4),
            deny in prop::sample::subsequence(PATHS[1..].to_vec(), 0..4),
            rename in prop::collection::btree_map(prop::sample::select(PATHS[1..].to_vec()), "[a-c]", 0..4),
        ) {
            let ops = JsonOps {
                allow: owned(allow),
                deny: owned(deny),
                rename: rename.into_iter().filter(|(p, _)| renamable(p)).map(|(p, n)| (p.to_owned(), n)).collect(),
            };
            let mut value = body;
            JsonShape::compile(&ops).unwrap().apply(&mut value);
        }

        #[test]
        fn allow_root_alone_is_identity(body in json()) {
            prop_assert_eq!(allowed(&["$"], body.clone()), body);
        }

        #[test]
        fn allow_result_is_a_subdocument_of_the_input(body in json(), allow in prop::sample::subsequence(PATHS.to_vec(), 1..4)) {
            let out = allowed(&allow, body.clone());
            prop_assert!(is_subdocument(&out, &body) || (out.is_null() && !body.is_object() && !body.is_array()), "{} from {}", out, body);
        }

        #[test]
        fn allow_keeps_every_node_it_selects(body in json(), allow in prop::sample::subsequence(UNPOSITIONAL_PATHS.to_vec(), 1..4)) {
            let out = allowed(&allow, body.clone());
            for path in &allow {
                let path = JsonPath::parse(path).unwrap();
                prop_assert_eq!(path.query(&out).all(), path.query(&body).all(), "{} from {}", out, body);
            }
        }

        #[test]
        fn deny_then_query_finds_nothing(body in json(), deny in prop::sample::subsequence(UNPOSITIONAL_PATHS.to_vec(), 1..3)) {
            let out = denied(&deny, body.clone());
            for path in &deny {
                let left = JsonPath::parse(path).unwrap().query(&out).all();
                prop_assert!(left.is_empty(), "{} still selects {:?} in {}", path, left, out);
            }
            prop_assert!(is_subdocument(&out, &body));
        }

        #[test]
        fn rename_then_query_of_the_new_name_finds_the_old_values(body in json(), path in prop::sample::select(RENAME_PATHS.to_vec())) {
            let out = renamed(&[(path, "z")], body.clone());
            let before = JsonPath::parse(path).unwrap().query_located(&body);
            for node in before.iter() {
                let mut location = steps(node.location());
                if let Some(Step::Name(_)) = location.pop() {
                    location.push(Step::Name("z".into()));
                    let mut out = out.clone();
                    prop_assert_eq!(get_mut(&mut out, &location).map(|v| v.clone()), Some(node.node().clone()), "{} in {}", path, body);
                }
            }
            prop_assert!(JsonPath::parse(path).unwrap().query(&out).is_empty());
        }

        #[test]
        fn rename_descendant_renames_every_match(body in json()) {
            let out = renamed(&[("$..a", "z")], body.clone());
            let before = JsonPath::parse("$..a").unwrap().query(&body).len();
            prop_assert_eq!(JsonPath::parse("$..z").unwrap().query(&out).len(), before);
            prop_assert!(JsonPath::parse("$..a").unwrap().query(&out).is_empty());
        }
    }
}
