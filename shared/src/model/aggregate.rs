//! The `aggregate` backend of a route: one client request answered by
//! several upstream calls whose JSON answers are merged into one. What
//! can be checked without the rest of the config is checked here: call
//! names, templates and the references between calls (unknown calls,
//! cycles, a required call waiting on an optional one), at most one
//! non-idempotent call, and with `merge: deep` two calls that would write
//! the same key. That each call's service exists, and that templates fit
//! the route (path parameters, authentication), is [`crate::validate`]'s.
//! Running the calls is the data plane's (`backend::aggregate`).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::default_true;
use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::template::{FieldPath, RESERVED_WORDS, Scope, Source, Template};
use crate::validate::Validate;
use crate::validate::rules::{Result, bounded, in_range, is_token_byte, name};

/// Most calls one aggregate may make (a `for_each` call counts once).
pub const MAX_CALLS: usize = 16;
/// Longest deadline of an aggregate or a call.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Largest answer one call may give.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Most items a `for_each` call may fan out to.
pub const MAX_ITEMS: u32 = 100;
/// Methods a call may use.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Methods that are not idempotent (RFC 9110 §9.2.2): at most one call may use one.
const NON_IDEMPOTENT: [&str; 2] = ["POST", "PATCH"];
/// Headers a call may not set, besides the gateway's own (request id,
/// forwarding, identity): they frame the message.
const FRAMING_HEADERS: [&str; 9] =
    ["host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Bytes a call's `path` may hold as literal text: RFC 3986 path and query
/// characters and `%` escapes (no space, `#`, quotes or non-ASCII, which
/// would not make a request target, or cut it).
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// An aggregate: calls, how their answers merge, and the whole answer's deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// The whole answer's deadline, in milliseconds: calls still running
    /// then are cancelled (default 10,000, at most 300,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How the calls' answers are combined (default `namespaced`).
    #[serde(default)]
    pub merge: Merge,
    /// Most bytes of one call's answer read (default 1 MiB, at most 64 MiB);
    /// a larger answer fails the call.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// The calls, 1 to 16. Calls run in parallel unless a template names
    /// another call's field, which makes it wait for that call.
    pub calls: Vec<AggregateCall>,
}

/// How an aggregate combines its calls' answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Merge {
    /// Each call's answer under its name, in call order.
    #[default]
    Namespaced,
    /// Objects merged recursively in call order (a later call's value wins
    /// a clash, counted); an answer that is not an object goes under the
    /// call's name.
    Deep,
}

/// One upstream call of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateCall {
    /// The call's name: its key in the answer, and how other calls'
    /// templates refer to it (`{profile.segment}`). A letter, then up to 63
    /// lowercase letters, digits or `_`; not a template source word.
    pub name: String,
    /// The service called, with its balancing, health checks, breakers and retries.
    pub service: String,
    /// Default `GET`. At most one call of an aggregate may be `POST` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The request target, a template (`/users/{consumer.custom_id}?full=1`).
    pub path: String,
    /// Headers to send, each a template (`{"x-tenant": "{header.x-tenant}"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The request body, a template whose values are escaped as JSON string
    /// content; `{body}` is the client's body as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// This call's deadline in milliseconds (default and at most the aggregate's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A failed required call fails the whole answer (`502`, `504` on
    /// timeout); a failed optional one leaves its key `null` and is listed
    /// in `_errors`. Default true.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Top-level fields of the answer to keep (all when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Calls once per item of another call's array (`orders` when its answer
    /// is one, `orders.items`, or `orders.items[*].id` for the values a path
    /// reaches); templates read
    /// the item as `{item}` or `{item.<field>}`. The answer is the array of
    /// the calls' answers, in item order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// Most items of `for_each` (default 20, at most 100); more fail the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_body_bytes() -> u64 {
    1024 * 1024
}

fn default_method() -> String {
    "GET".to_owned()
}

/// Items of a `for_each` when `max_items` is not given.
pub const DEFAULT_MAX_ITEMS: u32 = 20;

impl AggregateCall {
    /// The call's templates, each with its field and how it was parsed
    /// (`None`: it does not parse, which validation reports).
    pub fn templates(&self) -> impl Iterator<Item = (String, Option<Template>)> + '_ {
        let parse = |text: &str| Template::parse_in(text, Scope::Aggregate).ok();
        let headers = self.headers.iter().map(move |(header, text)| (format!("headers.{header}"), parse(text)));
        std::iter::once(("path".to_owned(), parse(&self.path)))
            .chain(headers)
            .chain(self.body.iter().map(move |text| ("body".to_owned(), parse(text))))
    }

    /// The call and path `for_each` names (`orders.items` is `orders`,
    /// `items`; `orders` alone is the whole answer).
    pub fn for_each_source(&self) -> Option<(&str, FieldPath)> {
        FieldPath::of_call(self.for_each.as_deref()?).ok()
    }

    /// Whether the method may not be repeated safely.
    pub fn is_idempotent(&self) -> bool {
        !NON_IDEMPOTENT.contains(&self.method.as_str())
    }

    /// The calls this one waits for, each with the field that names it.
    pub fn dependencies(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        if let Some((call, _)) = self.for_each_source() {
            found.push(("for_each".to_owned(), call.to_owned()));
        }
        for (field, template) in self.templates() {
            for source in template.iter().flat_map(Template::sources) {
                if let Source::Call { call, .. } = source {
                    found.push((field.clone(), call.clone()));
                }
            }
        }
        found
    }
}

impl Validate for Aggregate {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(in_range("timeout_ms", self.timeout_ms, 1, MAX_TIMEOUT_MS));
        errors.check(in_range("max_body_bytes", self.max_body_bytes, 1, MAX_BODY_BYTES));
        if self.calls.is_empty() || self.calls.len() > MAX_CALLS {
            errors.add(ConfigError::invalid("calls", format!("needs 1 to {MAX_CALLS} calls")));
            return errors.finish();
        }
        let before = errors.count();
        for (i, call) in self.calls.iter_mut().enumerate() {
            errors.check_within(&format!("calls[{i}]"), call.check(self.timeout_ms));
        }
        if errors.count() > before {
            return errors.finish();
        }
        let names: Vec<String> = self.calls.iter().map(|c| c.name.clone()).collect();
        if let Some(i) = (1..names.len()).find(|&i| names[..i].contains(&names[i])) {
            errors.add(ConfigError::invalid(format!("calls[{i}].name"), format!("another call is named '{}'", names[i])));
            return errors.finish();
        }
        errors.check(self.check_references());
        if let Some(second) = self.calls.iter().enumerate().filter(|(_, c)| !c.is_idempotent()).nth(1) {
            errors.add(ConfigError::invalid(
                format!("calls[{}].method", second.0),
                "at most one call of an aggregate may use a non-idempotent method (POST, PATCH): a failed answer could not tell which writes happened",
            ));
        }
        if self.merge == Merge::Deep {
            errors.check(self.check_deep_collisions());
        }
        errors.finish()
    }
}

impl Aggregate {
    /// Every reference names another call; no cycle; a required call does
    /// not wait for an optional one (it could never run when that failed).
    fn check_references(&self) -> Result {
        let index: HashMap<&str, usize> = self.calls.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); self.calls.len()];
        for (i, call) in self.calls.iter().enumerate() {
            for (field, dependency) in call.dependencies() {
                let field = format!("calls[{i}].{field}");
                let Some(&j) = index.get(dependency.as_str()) else {
                    return Err(ConfigError::invalid(
                        field,
                        format!(
                            "call '{}' refers to '{dependency}', which is neither a call of this aggregate nor a request source",
                            call.name
                        ),
                    ));
                };
                if j == i {
                    return Err(ConfigError::invalid(field, format!("call '{}' refers to its own answer", call.name)));
                }
                if call.required && !self.calls[j].required {
                    return Err(ConfigError::invalid(
                        field,
                        format!(
                            "required call '{}' waits for optional call '{dependency}', so it fails whenever that one does: make both required or both optional",
                            call.name
                        ),
                    ));
                }
                edges[i].push(j);
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            let path: Vec<&str> = cycle.iter().map(|&i| self.calls[i].name.as_str()).collect();
            return Err(ConfigError::invalid(
                format!("calls[{}]", cycle[0]),
                format!("calls wait for each other in a cycle: {} → {}", path.join(" → "), path[0]),
            ));
        }
        Ok(())
    }

    /// With `merge: deep`, two calls whose kept `fields` share a name, or a
    /// call whose answer goes under its name (a `for_each` call's array)
    /// where another call keeps a field of that name, would write one key.
    fn check_deep_collisions(&self) -> Result {
        let mut writers: HashMap<&str, &str> = HashMap::new();
        for (i, call) in self.calls.iter().enumerate() {
            let keys: Vec<(String, &str)> = if call.for_each.is_some() {
                vec![("name".to_owned(), call.name.as_str())]
            } else {
                call.fields.iter().enumerate().map(|(k, f)| (format!("fields[{k}]"), f.as_str())).collect()
            };
            for (field, key) in keys {
                if let Some(other) = writers.insert(key, &call.name) {
                    return Err(ConfigError::invalid(
                        format!("calls[{i}].{field}"),
                        format!(
                            "calls '{other}' and '{}' both write '{key}' under merge: deep; keep it in one call's fields, or use merge: namespaced",
                            call.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The services the calls use.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.calls.iter().map(|c| c.service.as_str())
    }

    /// Every template source of every call.
    pub fn sources(&self) -> Vec<Source> {
        self.calls
            .iter()
            .flat_map(|c| c.templates().flat_map(|(_, t)| t.map(|t| t.sources().cloned().collect::<Vec<_>>()).unwrap_or_default()))
            .collect()
    }
}

impl AggregateCall {
    /// The call's own fields, `aggregate_timeout_ms` bounding its timeout.
    fn check(&mut self, aggregate_timeout_ms: u64) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        let valid_name = self.name.len() <= 64
            && self.name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            errors.add(ConfigError::invalid("name", "must be a lowercase letter followed by up to 63 lowercase letters, digits or '_'"));
        } else if RESERVED_WORDS.contains(&self.name.as_str()) {
            errors.add(ConfigError::invalid(
                "name",
                format!("'{}' names a template source; the reserved words are {}", self.name, RESERVED_WORDS.join(", ")),
            ));
        }
        errors.check(name("service", &self.service));
        self.method.make_ascii_uppercase();
        if !METHODS.contains(&self.method.as_str()) {
            errors.add(ConfigError::invalid("method", format!("must be one of {}", METHODS.join(", "))));
        }
        if let Some(timeout) = self.timeout_ms {
            errors.check(in_range("timeout_ms", timeout, 1, aggregate_timeout_ms));
        }
        let fan_out = self.for_each.is_some();
        let check_template = |field: &str, text: &str, body: bool| -> Result<Template> {
            let template = super::policy::transform::template_in(field, text, Scope::Aggregate)?;
            for source in template.sources() {
                match source {
                    Source::Body if !body => return Err(ConfigError::invalid(field, "`{body}` may only be used in a call's body")),
                    Source::Item(_) if !fan_out => {
                        return Err(ConfigError::invalid(field, format!("`{{{source}}}` needs for_each on the call")));
                    }
                    _ => {}
                }
            }
            Ok(template)
        };
        if !self.path.starts_with('/') {
            errors.add(ConfigError::invalid("path", "must start with '/'"));
        } else if let Some(template) = errors.check(check_template("path", &self.path, false))
            && let Some(bad) = template.literals().flat_map(str::chars).find(|&c| !u8::try_from(c).is_ok_and(is_target_byte))
        {
            errors.add(ConfigError::invalid(
                "path",
                format!("has '{bad}', which cannot be in a request target (write it percent-encoded; a fragment '#' is never sent)"),
            ));
        }
        errors.check(bounded("headers", self.headers.len(), 32));
        self.headers = std::mem::take(&mut self.headers).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        for (header, text) in &self.headers {
            let field = format!("headers.{header}");
            if header.is_empty() || !header.bytes().all(is_token_byte) {
                errors.add(ConfigError::invalid(field, "is not a valid header name"));
            } else if FRAMING_HEADERS.contains(&header.as_str())
                || super::policy::transform::GATEWAY_WRITTEN.contains(&header.as_str())
                || header.starts_with("x-consumer-")
            {
                errors.add(ConfigError::invalid(field, "is set by the gateway or frames the message, so a call cannot set it"));
            } else {
                errors.check(check_template(&field, text, false));
            }
        }
        if let Some(body) = &self.body {
            if ["GET", "HEAD"].contains(&self.method.as_str()) {
                errors.add(ConfigError::invalid("body", format!("a {} call sends no body", self.method)));
            } else {
                errors.check(check_template("body", body, true));
            }
        }
        errors.check(bounded("fields", self.fields.len(), 64));
        for (i, field) in self.fields.iter().enumerate() {
            if field.is_empty() || field.len() > 128 || !field.bytes().all(|b| b.is_ascii_graphic()) {
                errors.add(ConfigError::invalid(
                    format!("fields[{i}]"),
                    "must be 1 to 128 visible ASCII characters (a top-level field name)",
                ));
            }
        }
        if let Some(i) = (1..self.fields.len()).find(|&i| self.fields[..i].contains(&self.fields[i])) {
            errors.add(ConfigError::invalid(format!("fields[{i}]"), format!("'{}' is listed twice", self.fields[i])));
        }
        match (&self.for_each, self.max_items) {
            (Some(text), max_items) => {
                match FieldPath::of_call(text) {
                    Ok((call, _)) if !call.is_empty() && !RESERVED_WORDS.contains(&call) => {}
                    Err(message) => errors.add(ConfigError::invalid("for_each", message)),
                    Ok(_) => errors.add(ConfigError::invalid(
                        "for_each",
                        "must name another call's array: `<call>` (an array answer), `<call>.<field>` (`orders.items`) or a path with `[*]`",
                    )),
                }
                if let Some(max) = max_items {
                    errors.check(in_range("max_items", max, 1, MAX_ITEMS));
                }
            }
            (None, Some(_)) => errors.add(ConfigError::invalid("max_items", "only applies to a for_each call")),
            (None, None) => {}
        }
        errors.finish()
    }
}

/// A cycle in `edges` (call → the calls it waits for), as the calls on it
/// from the first one met; `None` when there is none.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(at: usize, edges: &[Vec<usize>], marks: &mut [Mark], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[at] = Mark::Open;
        stack.push(at);
        for &next in &edges[at] {
            match marks[next] {
                Mark::Open => {
                    let from = stack.iter().position(|&s| s == next).unwrap_or(0);
                    return Some(stack[from..].to_vec());
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[at] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; edges.len()];
    (0..edges.len()).find_map(|start| if marks[start] == Mark::New { visit(start, edges, &mut marks, &mut Vec::new()) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;
    use crate::template::Step;

    fn aggregate(json: &str) -> std::result::Result<Aggregate, ConfigErrors> {
        let mut aggregate: Aggregate = from_json(json.as_bytes()).unwrap();
        aggregate.normalize_and_validate().map(|()| aggregate)
    }

    fn refused(json: &str) -> ConfigError {
        aggregate(json).unwrap_err().first().clone()
    }

    #[test]
    fn a_mobile_dashboard_validates_with_defaults() {
        let a = aggregate(
            r#"{"calls":[{"name":"profile","service":"users","path":"/users/{consumer.custom_id}","timeout_ms":300},
                {"name":"orders","service":"orders","path":"/orders?user={consumer.custom_id}","required":false},
                {"name":"recs","service":"recs","path":"/recs/{profile.segment}"}]}"#,
        )
        .unwrap();
        assert_eq!((a.timeout_ms, a.merge, a.max_body_bytes), (10_000, Merge::Namespaced, 1024 * 1024));
        assert_eq!(a.calls[0].method, "GET");
        assert!(a.calls[1].dependencies().is_empty());
        assert_eq!(a.calls[2].dependencies(), [("path".to_owned(), "profile".to_owned())]);
    }

    #[test]
    fn refuses_cycles_naming_the_calls() {
        let e = refused(
            r#"{"calls":[{"name":"a","service":"s","path":"/a/{b.x}"},{"name":"b","service":"s","path":"/b/{c.x}"},{"name":"c","service":"s","path":"/c/{a.x}"}]}"#,
        );
        assert_eq!(e.field(), "calls[0]");
        assert!(e.message().contains("a → b → c → a"), "{e}");
    }

    #[test]
    fn refuses_unknown_and_self_references() {
        let e = refused(r#"{"calls":[{"name":"a","service":"s","path":"/a/{prof.x}"}]}"#);
        assert_eq!(e.field(), "calls[0].path");
        assert!(e.message().contains("'prof'"), "{e}");
        let e = refused(r#"{"calls":[{"name":"a","service":"s","path":"/a","headers":{"x-b":"{a.x}"}}]}"#);
        assert_eq!(e.field(), "calls[0].headers.x-b");
        let e =
            refused(r#"{"calls":[{"name":"a","service":"s","path":"/a"},{"name":"b","service":"s","path":"/b","for_each":"c.items"}]}"#);
        assert_eq!(e.field(), "calls[1].for_each");
    }

    #[test]
    fn refuses_a_required_call_waiting_for_an_optional_one() {
        let e =
            refused(r#"{"calls":[{"name":"a","service":"s","path":"/a","required":false},{"name":"b","service":"s","path":"/b/{a.id}"}]}"#);
        assert_eq!(e.field(), "calls[1].path");
        assert!(e.message().contains("optional call 'a'"), "{e}");
    }

    #[test]
    fn refuses_two_non_idempotent_calls() {
        let e = refused(
            r#"{"calls":[{"name":"a","service":"s","path":"/a","method":"post"},{"name":"b","service":"s","path":"/b","method":"PUT"},{"name":"c","service":"s","path":"/c","method":"patch"}]}"#,
        );
        assert_eq!(e.field(), "calls[2].method");
    }

    #[test]
    fn refuses_deep_collisions_seen_in_fields() {
        let e = refused(
            r#"{"merge":"deep","calls":[{"name":"a","service":"s","path":"/a","fields":["id","name"]},{"name":"b","service":"s","path":"/b","fields":["name"]}]}"#,
        );
        assert_eq!(e.field(), "calls[1].fields[0]");
        assert!(e.message().contains("'a' and 'b' both write 'name'"), "{e}");
        let e = refused(
            r#"{"merge":"deep","calls":[{"name":"a","service":"s","path":"/a","fields":["lines"]},{"name":"lines","service":"s","path":"/l/{item}","for_each":"a.ids"}]}"#,
        );
        assert_eq!(e.field(), "calls[1].name");
        aggregate(
            r#"{"calls":[{"name":"a","service":"s","path":"/a","fields":["id"]},{"name":"b","service":"s","path":"/b","fields":["id"]}]}"#,
        )
        .expect("namespaced answers cannot collide");
    }

    #[test]
    fn checks_each_call_naming_its_field() {
        for (json, field) in [
            (r#"{"calls":[]}"#, "calls"),
            (r#"{"timeout_ms":0,"calls":[{"name":"a","service":"s","path":"/a"}]}"#, "timeout_ms"),
            (r#"{"calls":[{"name":"Path","service":"s","path":"/a"}]}"#, "calls[0].name"),
            (r#"{"calls":[{"name":"query","service":"s","path":"/a"}]}"#, "calls[0].name"),
            (r#"{"calls":[{"name":"a","service":"s","path":"a"}]}"#, "calls[0].path"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/{nope}"}]}"#, "calls[0].path"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a","method":"BREW"}]}"#, "calls[0].method"),
            (r#"{"timeout_ms":100,"calls":[{"name":"a","service":"s","path":"/a","timeout_ms":200}]}"#, "calls[0].timeout_ms"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a","body":"{body}"}]}"#, "calls[0].body"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/{body}","method":"POST"}]}"#, "calls[0].path"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a","headers":{"Host":"x"}}]}"#, "calls[0].headers.host"),
            (
                r#"{"calls":[{"name":"a","service":"s","path":"/a","headers":{"X-Consumer-Username":"{query.as}"}}]}"#,
                "calls[0].headers.x-consumer-username",
            ),
            (
                r#"{"calls":[{"name":"a","service":"s","path":"/a","headers":{"x-forwarded-host":"x"}}]}"#,
                "calls[0].headers.x-forwarded-host",
            ),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a","headers":{"x-consumer-tier":"x"}}]}"#, "calls[0].headers.x-consumer-tier"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a b"}]}"#, "calls[0].path"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a#frag"}]}"#, "calls[0].path"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/caf\u00e9"}]}"#, "calls[0].path"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/{item}"}]}"#, "calls[0].path"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a","max_items":3}]}"#, "calls[0].max_items"),
            (r#"{"calls":[{"name":"a","service":"s","path":"/a"},{"name":"a","service":"s","path":"/b"}]}"#, "calls[1].name"),
            (
                r#"{"calls":[{"name":"a","service":"s","path":"/a"},{"name":"b","service":"s","path":"/b/{a.items[*].id}"}]}"#,
                "calls[1].path",
            ),
        ] {
            assert_eq!(refused(json).field(), field, "{json}");
        }
    }

    #[test]
    fn fan_out_and_join_are_accepted() {
        let a = aggregate(
            r#"{"calls":[{"name":"orders","service":"s","path":"/orders"},
                {"name":"lines","service":"s","path":"/orders/{item.id}/lines","for_each":"orders.items","max_items":5},
                {"name":"products","service":"s","path":"/products?ids={orders.items[*].product|join:,}"}]}"#,
        )
        .unwrap();
        let (call, path) = a.calls[1].for_each_source().unwrap();
        assert_eq!((call, path.0), ("orders", vec![Step::Key("items".to_owned())]));
        assert_eq!(a.calls[2].dependencies(), [("path".to_owned(), "orders".to_owned())]);
        let a = aggregate(
            r#"{"calls":[{"name":"ids","service":"s","path":"/ids"},
                {"name":"each","service":"s","path":"/x/{item}","for_each":"ids"},
                {"name":"batch","service":"s","path":"/x?ids={ids[*]|join:,}&first={ids[0]}"}]}"#,
        )
        .expect("an answer that is an array is read from its first step");
        assert_eq!(a.calls[1].for_each_source().unwrap(), ("ids", FieldPath::default()));
    }
}
