//! The `request-transform` and `response-transform` policies as users write
//! them: header, query and path rewrites with templates (see
//! [`crate::template`]), and a `when` that picks a client profile on one
//! route (`mobile` by a JWT claim, `web` by a header). JSON body shaping is
//! [`crate::shape`]; what the data plane does with all this is
//! `portico_dp::stage::transform`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::Validate;
use crate::validate::rules::{Result, bounded, is_token_byte};

/// Header rewrites, applied in the order remove → rename → set → add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Names removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Old name → new name (every value moves).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
    /// Name → value template: replaces every value the header had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Name → value template: one more value, beside those the header had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.rename.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Query rewrites, applied in the order remove → rename → add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryOps {
    /// Parameters removed (every occurrence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Old name → new name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
    /// Name → value template, appended (percent-encoded) in place of any
    /// parameter of that name the client sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
}

impl QueryOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.rename.is_empty() && self.add.is_empty()
    }
}

/// Which callers a transform is for: those whose verified token has the
/// claim, or whose request has the header, with exactly this value. A
/// transform without `when` is the route's default profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// A claim of the caller's JWT (needs a `jwt` policy on the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// A request header (case-insensitive name); the response gets `Vary` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The value that selects this profile, compared exactly.
    pub equals: String,
}

/// Fields of the `request-transform` policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTransformPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub headers: HeaderOps,
    #[serde(default, skip_serializing_if = "QueryOps::is_empty")]
    pub query: QueryOps,
    /// The upstream path, as a template (`/v2/users/{path.id}`); it replaces
    /// the path the route would send (`strip_path` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// JSON request bodies: `allow`, `deny`, `rename` by JSONPath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<crate::shape::JsonOps>,
    /// Largest body `body` reads, 1 byte to 16 MiB (default 1 MiB): a larger
    /// request is `413`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

/// Fields of the `response-transform` policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseTransformPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub headers: HeaderOps,
    /// JSON response bodies: `allow`, `deny`, `rename` by JSONPath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<crate::shape::JsonOps>,
    /// Largest body `body` reads, 1 byte to 16 MiB (default 1 MiB): a
    /// larger response goes to the client untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

/// Most entries in one list or map of a transform.
const MAX_ENTRIES: usize = 64;

/// Headers the gateway itself sets or that frame or encode the message
/// (a `Content-Encoding` changed by hand would corrupt the body): no transform
/// may remove, rename, set or add them (the gateway's identity and
/// forwarding headers are also written after request transforms, so they
/// always win).
const RESERVED_HEADERS: [&str; 20] = [
    "host",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
    "x-consumer-id",
    "x-consumer-username",
    "x-user-id",
    "x-scopes",
    "x-anonymous-consumer",
];

fn invalid<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(ConfigError::invalid(field, message))
}

/// A header name a transform may touch, lowercased.
fn header_name(field: &str, name: &str) -> Result<String> {
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 128 || !lower.bytes().all(is_token_byte) {
        return invalid(field, format!("'{name}' is not a valid header name"));
    }
    // Also as spelled with `_` or `.` (which CGI-style servers read as `-`)
    // and any `x-consumer-*`: the data plane strips those from clients as
    // identity, so a transform must not write them either.
    let dashed = lower.split(['-', '_', '.']).filter(|part| !part.is_empty()).collect::<Vec<_>>().join("-");
    if RESERVED_HEADERS.contains(&dashed.as_str()) || dashed.starts_with("x-consumer-") {
        return invalid(field, format!("'{lower}' is set by the gateway or frames the message; a transform cannot change it"));
    }
    Ok(lower)
}

/// Lowercases the keys of a header map, refusing two spellings of one
/// name; `values` says whether values are templates (`set`, `add`) or
/// header names (`rename`). The map is rewritten only when all is well.
fn header_map(field: &str, map: &mut BTreeMap<String, String>, values: bool, errors: &mut Errors) {
    if errors.check(bounded(field, map.len(), MAX_ENTRIES)).is_none() {
        return;
    }
    let before = errors.count();
    let mut out = BTreeMap::new();
    for (name, value) in map.iter() {
        let at = format!("{field}.{name}");
        let key = errors.check(header_name(&at, name));
        let value = if values {
            errors.check(template_text(&at, value));
            value.clone()
        } else {
            errors.check(header_name(&at, value)).unwrap_or_default()
        };
        if let Some(key) = key
            && out.insert(key, value).is_some()
        {
            errors.add(ConfigError::invalid(at, "is listed twice (header names are case-insensitive)"));
        }
    }
    if errors.count() == before {
        *map = out;
    }
}

/// Request headers the gateway writes after transforms: a template reading
/// one would read what the client sent, not what the upstream gets.
pub(crate) const GATEWAY_WRITTEN: [&str; 11] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
    "x-consumer-id",
    "x-consumer-username",
    "x-user-id",
    "x-scopes",
    "x-anonymous-consumer",
];

/// A template's text: parsed to check its syntax and sources.
fn template_text(field: &str, text: &str) -> Result {
    template_in(field, text, crate::template::Scope::Request).map(drop)
}

/// A template of `scope`, parsed, whose `{header.*}` sources are headers a
/// client may send (not one the gateway writes).
pub(crate) fn template_in(field: &str, text: &str, scope: crate::template::Scope) -> Result<crate::template::Template> {
    let template = crate::template::Template::parse_in(text, scope).map_err(|message| ConfigError::invalid(field, message))?;
    for source in template.sources() {
        if let crate::template::Source::Header(name) = source
            && (GATEWAY_WRITTEN.contains(&name.as_str()) || name.starts_with("x-consumer-"))
        {
            return invalid(
                field,
                format!(
                    "{{header.{name}}} would read what the client sent: the gateway writes '{name}' itself \
                     (use {{consumer.id}}, {{consumer.username}}, {{consumer.custom_id}}, {{claim.<name>}} or {{request_id}})"
                ),
            );
        }
    }
    Ok(template)
}

impl HeaderOps {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if errors.check(bounded("remove", self.remove.len(), MAX_ENTRIES)).is_some() {
            for (i, name) in self.remove.iter_mut().enumerate() {
                if let Some(lower) = errors.check(header_name(&format!("remove[{i}]"), name)) {
                    *name = lower;
                }
            }
        }
        header_map("rename", &mut self.rename, false, &mut errors);
        header_map("set", &mut self.set, true, &mut errors);
        header_map("add", &mut self.add, true, &mut errors);
        errors.finish()
    }
}

/// A query parameter name: visible ASCII, no `&`, `=` or `#`.
fn query_name(field: &str, name: &str) -> Result {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic() && !b"&=#+%".contains(&b)) {
        return invalid(field, format!("'{name}' must be 1 to 128 visible ASCII characters other than '&', '=', '#', '+', '%'"));
    }
    Ok(())
}

impl QueryOps {
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if errors.check(bounded("remove", self.remove.len(), MAX_ENTRIES)).is_some() {
            for (i, name) in self.remove.iter().enumerate() {
                errors.check(query_name(&format!("remove[{i}]"), name));
            }
        }
        if errors.check(bounded("rename", self.rename.len(), MAX_ENTRIES)).is_some() {
            for (from, to) in &self.rename {
                errors.check(query_name(&format!("rename.{from}"), from));
                errors.check(query_name(&format!("rename.{from}"), to));
            }
        }
        if errors.check(bounded("add", self.add.len(), MAX_ENTRIES)).is_some() {
            for (name, value) in &self.add {
                errors.check(query_name(&format!("add.{name}"), name));
                errors.check(template_text(&format!("add.{name}"), value));
            }
        }
        errors.finish()
    }
}

impl When {
    /// Exactly one of `claim` and `header`; header names lowercased.
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        match (&self.claim, &mut self.header) {
            (Some(claim), None) if !claim.is_empty() && claim.len() <= 128 => {}
            (Some(_), None) => errors.add(ConfigError::invalid("claim", "must be 1 to 128 characters")),
            (None, Some(header)) => {
                let lower = header.to_ascii_lowercase();
                if lower.is_empty() || lower.len() > 128 || !lower.bytes().all(is_token_byte) {
                    errors.add(ConfigError::invalid("header", format!("'{header}' is not a valid header name")));
                } else {
                    *header = lower;
                }
            }
            _ => errors.add(ConfigError::invalid("claim", "name exactly one of claim or header")),
        }
        if self.equals.len() > 1_024 {
            errors.add(ConfigError::invalid("equals", "must be at most 1024 characters"));
        }
        errors.finish()
    }
}

impl Validate for RequestTransformPolicy {
    /// Normalizes header names and checks names and templates, reporting
    /// every error.
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if let Some(when) = &mut self.when {
            errors.check_within("when", when.normalize_and_validate());
        }
        errors.check_within("headers", self.headers.normalize_and_validate());
        errors.check_within("query", self.query.normalize_and_validate());
        if let Some(path) = &self.path {
            if !path.starts_with('/') || path.len() > 1_024 || path.contains(['?', '#', ' ']) {
                errors.add(ConfigError::invalid("path", "must start with '/' and have no '?', '#' or spaces (at most 1024 characters)"));
            } else {
                errors.check(template_text("path", path));
            }
        }
        body(self.body.as_ref(), self.max_body_bytes, &mut errors);
        if self.headers.is_empty() && self.query.is_empty() && self.path.is_none() && self.body.is_none() {
            errors.add(ConfigError::invalid("headers", "the transform changes nothing: give headers, query, path or body"));
        }
        errors.finish()
    }
}

impl Validate for ResponseTransformPolicy {
    /// Normalizes header names and checks names and templates, reporting
    /// every error.
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if let Some(when) = &mut self.when {
            errors.check_within("when", when.normalize_and_validate());
        }
        errors.check_within("headers", self.headers.normalize_and_validate());
        body(self.body.as_ref(), self.max_body_bytes, &mut errors);
        if self.headers.is_empty() && self.body.is_none() {
            errors.add(ConfigError::invalid("headers", "the transform changes nothing: give headers or body"));
        }
        errors.finish()
    }
}

/// Largest `max_body_bytes`.
const MAX_BODY_BYTES: u64 = 16 << 20;

/// The JSON body part: paths compile (RFC 9535; the first bad one is
/// reported), the limit is sane.
fn body(ops: Option<&crate::shape::JsonOps>, max_body_bytes: Option<u64>, errors: &mut Errors) {
    if let Some(ops) = ops {
        errors.check_within("body", crate::shape::JsonShape::compile(ops));
    }
    match max_body_bytes {
        Some(_) if ops.is_none() => {
            errors.add(ConfigError::invalid("max_body_bytes", "only a transform with a body takes max_body_bytes"));
        }
        Some(limit) if !(1..=MAX_BODY_BYTES).contains(&limit) => {
            errors.add(ConfigError::invalid("max_body_bytes", format!("must be 1 to {MAX_BODY_BYTES}")));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_bad_header_name_a_bad_template_and_a_bad_json_path_at_once() {
        let mut policy: RequestTransformPolicy = serde_json::from_value(serde_json::json!({
            "when": {"header": "bad header", "equals": "web"},
            "headers": {"remove": ["Host", "X-Old"], "set": {"x-a": "{nope.x}", "bad name": "v"}},
            "query": {"add": {"a&b": "{query.x"}},
            "path": "no-slash",
            "body": {"allow": ["$.items[*"]},
            "max_body_bytes": 0,
        }))
        .unwrap();
        let errors = policy.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(
            fields,
            [
                "when.header",
                "headers.remove[0]",
                "headers.set.bad name",
                "headers.set.x-a",
                "query.add.a&b",
                "query.add.a&b",
                "path",
                "body.allow[0]",
                "max_body_bytes"
            ]
        );
        assert!(errors.as_slice()[1].message().contains("'host' is set by the gateway"), "{errors}");
        assert!(errors.as_slice()[2].message().contains("'bad name' is not a valid header name"), "{errors}");
        assert_eq!(policy.headers.remove, ["Host", "x-old"], "each good entry is still normalized");
    }

    #[test]
    fn two_spellings_of_a_header_are_reported_once_and_a_bad_one_not_as_a_repeat() {
        let mut policy: ResponseTransformPolicy = serde_json::from_value(serde_json::json!({
            "headers": {"rename": {"X-A": "x-b", "x-a": "x-c", "x:a": "x-d"}, "add": {"x-e": "ok"}},
        }))
        .unwrap();
        let errors = policy.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["headers.rename.x-a", "headers.rename.x:a"]);
        assert!(errors.first().message().contains("listed twice"), "{errors}");
    }

    fn request(json: serde_json::Value) -> std::result::Result<RequestTransformPolicy, ConfigErrors> {
        let mut policy: RequestTransformPolicy = serde_json::from_value(json).unwrap();
        policy.normalize_and_validate().map(|()| policy)
    }

    #[test]
    fn rejects_identity_and_forwarding_headers_however_spelled() {
        for name in ["x_consumer_id", "X.Forwarded__For", "x-consumer-custom-id", "x_consumer_groups", "X-Real_IP"] {
            for headers in [
                serde_json::json!({"set": {name: "v"}}),
                serde_json::json!({"add": {name: "v"}}),
                serde_json::json!({"rename": {"x-org": name}}),
                serde_json::json!({"remove": [name]}),
            ] {
                let error = request(serde_json::json!({"headers": headers})).unwrap_err();
                assert!(error.to_string().contains("set by the gateway"), "{headers}: {error}");
            }
        }
        assert!(request(serde_json::json!({"headers": {"set": {"x_custom.name": "v", "x-consumer": "v"}}})).is_ok());
    }

    #[test]
    fn rejects_templates_reading_headers_the_gateway_writes() {
        for name in ["x-real-ip", "X-Forwarded-For", "x-forwarded-proto", "x-consumer-custom-id", "x-user-id", "forwarded"] {
            let template = format!("{{header.{name}}}");
            for policy in [
                serde_json::json!({"headers": {"set": {"x-client": template}}}),
                serde_json::json!({"query": {"add": {"ip": template}}}),
                serde_json::json!({"path": format!("/ip/{template}")}),
            ] {
                let error = request(policy.clone()).unwrap_err();
                assert!(error.to_string().contains("would read what the client sent"), "{policy}: {error}");
            }
        }
        assert!(request(serde_json::json!({"headers": {"set": {"x-tenant": "{header.x-org} {header.host}"}}})).is_ok());
    }
}
