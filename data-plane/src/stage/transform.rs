//! The `request-transform` and `response-transform` stages: header, query
//! and path rewrites compiled once per config version (names parsed,
//! templates parsed), applied per request in a fixed order. Request
//! transforms run after authentication and before the gateway writes its
//! forwarding and identity headers, so those always win; header values and
//! path segments come from templates, escaped where they land, and a value
//! the request lacks is the client's `400`, never an empty segment upstream.
//! JSON bodies are shaped by [`super::body`].

use http::{HeaderMap, HeaderName, HeaderValue};
use portico_shared::model::policy::transform::{HeaderOps, QueryOps, RequestTransformPolicy, ResponseTransformPolicy};
use portico_shared::template::{Escape, Lookup, Template};

use crate::error::ProxyError;

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("'{name}' is not a header name"))
}

fn template(text: &str) -> Result<Template, String> {
    Template::parse(text).map_err(|e| format!("template '{text}': {e}"))
}

fn expand(template: &Template, values: &impl Lookup, escape: Escape) -> Result<String, ProxyError> {
    template.expand(values, escape).map_err(|e| ProxyError::Unexpandable(e.to_string()))
}

/// Header rewrites: remove → rename → set → add.
#[derive(Debug, Default)]
struct HeaderPlan {
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
    set: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
}

/// Header values expanded for one request.
#[derive(Debug, Default)]
pub struct ExpandedHeaders {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderPlan {
    fn compile(ops: &HeaderOps) -> Result<Self, String> {
        let templates = |map: &std::collections::BTreeMap<String, String>| {
            map.iter().map(|(name, value)| Ok((header_name(name)?, template(value)?))).collect::<Result<Vec<_>, String>>()
        };
        Ok(Self {
            remove: ops.remove.iter().map(|name| header_name(name)).collect::<Result<_, _>>()?,
            rename: ops.rename.iter().map(|(from, to)| Ok((header_name(from)?, header_name(to)?))).collect::<Result<_, String>>()?,
            set: templates(&ops.set)?,
            add: templates(&ops.add)?,
        })
    }

    /// The `set` and `add` values for a request.
    fn expand(&self, values: &impl Lookup) -> Result<ExpandedHeaders, ProxyError> {
        let expand_all = |list: &[(HeaderName, Template)]| {
            list.iter()
                .map(|(name, template)| {
                    let text = expand(template, values, Escape::HeaderValue)?;
                    let value = HeaderValue::try_from(text)
                        .map_err(|_| ProxyError::Unexpandable(format!("the value for header '{name}' cannot be sent in a header")))?;
                    Ok((name.clone(), value))
                })
                .collect::<Result<Vec<_>, ProxyError>>()
        };
        Ok(ExpandedHeaders { set: expand_all(&self.set)?, add: expand_all(&self.add)? })
    }

    fn apply(&self, headers: &mut HeaderMap, expanded: ExpandedHeaders) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (from, to) in &self.rename {
            if let http::header::Entry::Occupied(entry) = headers.entry(from) {
                let (_, values) = entry.remove_entry_mult();
                let values: Vec<HeaderValue> = values.collect();
                headers.remove(to);
                for value in values {
                    headers.append(to, value);
                }
            }
        }
        for (name, value) in expanded.set {
            headers.insert(name, value);
        }
        for (name, value) in expanded.add {
            headers.append(name, value);
        }
    }
}

/// Query rewrites: remove → rename → add.
#[derive(Debug, Default)]
struct QueryPlan {
    remove: Vec<String>,
    rename: Vec<(String, String)>,
    add: Vec<(String, Template)>,
}

impl QueryPlan {
    fn compile(ops: &QueryOps) -> Result<Option<Self>, String> {
        if ops.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            remove: ops.remove.clone(),
            rename: ops.rename.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            add: ops.add.iter().map(|(name, value)| Ok((name.clone(), template(value)?))).collect::<Result<_, String>>()?,
        }))
    }

    /// The rewritten query (`None`: no query at all). Untouched pairs keep
    /// their bytes as sent; names are compared decoded. A client's pair with
    /// the name of an added one (as sent or once renamed) is dropped: most
    /// frameworks read a parameter's first value, so it would otherwise win
    /// over the gateway's (`?tenant=other&tenant={consumer.custom_id}`).
    fn apply(&self, query: Option<&str>, values: &impl Lookup) -> Result<Option<String>, ProxyError> {
        let mut pairs: Vec<String> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (raw_name, rest) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            let name: String = form_urlencoded::parse(raw_name.as_bytes()).next().map(|(k, _)| k.into_owned()).unwrap_or_default();
            if self.remove.contains(&name) {
                continue;
            }
            let renamed = self.rename.iter().find(|(from, _)| *from == name).map(|(_, to)| to);
            if self.add.iter().any(|(added, _)| added == renamed.unwrap_or(&name)) {
                continue;
            }
            match renamed {
                Some(to) => pairs.push(match rest {
                    Some(value) => format!("{}={value}", encode_query(to)),
                    None => encode_query(to),
                }),
                None => pairs.push(pair.to_owned()),
            }
        }
        for (name, template) in &self.add {
            pairs.push(format!("{}={}", encode_query(name), expand(template, values, Escape::QueryComponent)?));
        }
        Ok((!pairs.is_empty()).then(|| pairs.join("&")))
    }
}

fn encode_query(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A compiled `request-transform`.
#[derive(Debug)]
pub struct RequestShaper {
    headers: HeaderPlan,
    /// The headers it writes (renamed to, set, added): their values are
    /// part of a response cache key.
    written: Vec<HeaderName>,
    query: Option<QueryPlan>,
    path: Option<Template>,
    /// The JSON body part, if any.
    pub body: Option<super::body::BodyShaper>,
}

/// What a request transform decided for one request, before the gateway's
/// own headers are written.
#[derive(Debug)]
pub struct RequestRewrite {
    headers: ExpandedHeaders,
    /// The upstream path and query, when the transform changes either.
    pub target: Option<http::uri::PathAndQuery>,
}

impl RequestShaper {
    pub fn compile(policy: &RequestTransformPolicy) -> Result<Self, String> {
        let headers = HeaderPlan::compile(&policy.headers)?;
        let renamed = headers.rename.iter().map(|(_, to)| to);
        let mut written: Vec<HeaderName> = renamed.chain(headers.set.iter().chain(&headers.add).map(|(name, _)| name)).cloned().collect();
        written.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        written.dedup();
        Ok(Self {
            headers,
            written,
            query: QueryPlan::compile(&policy.query)?,
            path: policy.path.as_deref().map(template).transpose()?,
            body: super::body::BodyShaper::compile_request(policy)?,
        })
    }

    /// The headers it writes.
    pub fn written(&self) -> &[HeaderName] {
        &self.written
    }

    /// Expands every template for the request (so a missing value is a
    /// `400` before anything changes). `path` is the upstream path the route
    /// would send; `query` the client's.
    pub fn prepare(&self, path: &str, query: Option<&str>, values: &impl Lookup) -> Result<RequestRewrite, ProxyError> {
        let headers = self.headers.expand(values)?;
        let target = if self.path.is_some() || self.query.is_some() {
            let path = match &self.path {
                Some(template) => expand(template, values, Escape::PathSegment)?,
                None => path.to_owned(),
            };
            let query = match &self.query {
                Some(plan) => plan.apply(query, values)?,
                None => query.map(str::to_owned),
            };
            let text = match query {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            Some(text.parse().map_err(|_| ProxyError::Unexpandable("the rewritten path is not a valid request target".to_owned()))?)
        } else {
            None
        };
        Ok(RequestRewrite { headers, target })
    }

    /// Rewrites the request's headers.
    pub fn apply(&self, headers: &mut HeaderMap, rewrite: RequestRewrite) {
        self.headers.apply(headers, rewrite.headers);
    }
}

/// A compiled `response-transform`'s header part.
#[derive(Debug)]
pub struct ResponseShaper {
    headers: HeaderPlan,
    /// The JSON body part, if any.
    pub body: Option<super::body::BodyShaper>,
}

/// A response transform chosen for one request, its templates expanded.
#[derive(Debug)]
pub struct ResponseRewrite<'r> {
    pub shaper: &'r ResponseShaper,
    headers: ExpandedHeaders,
}

impl ResponseShaper {
    pub fn compile(policy: &ResponseTransformPolicy) -> Result<Self, String> {
        Ok(Self { headers: HeaderPlan::compile(&policy.headers)?, body: super::body::BodyShaper::compile(policy)? })
    }

    /// Expands the header templates against the request.
    pub fn prepare(&self, values: &impl Lookup) -> Result<ResponseRewrite<'_>, ProxyError> {
        Ok(ResponseRewrite { shaper: self, headers: self.headers.expand(values)? })
    }
}

impl ResponseRewrite<'_> {
    /// Rewrites the response's headers.
    pub fn apply_headers(self, headers: &mut HeaderMap) {
        self.shaper.headers.apply(headers, self.headers);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use portico_shared::template::Source;

    use super::*;

    fn plan(json: serde_json::Value) -> QueryPlan {
        QueryPlan::compile(&serde_json::from_value(json).unwrap()).unwrap().unwrap()
    }

    #[test]
    fn an_added_parameter_replaces_the_clients_own() {
        let plan = plan(serde_json::json!({"add": {"tenant": "{consumer.id}", "limit": "20"}, "rename": {"t": "tenant"}}));
        let values: HashMap<Source, String> = [(Source::ConsumerId, "acme".to_owned())].into();
        let query = plan.apply(Some("tenant=evil&q=a%20b&te%6Eant=evil&t=evil&limit=100000"), &values).unwrap();
        assert_eq!(query.as_deref(), Some("q=a%20b&limit=20&tenant=acme"));
    }

    #[test]
    fn untouched_pairs_keep_their_bytes_and_repeats() {
        let plan = plan(serde_json::json!({"remove": ["debug"], "rename": {"q": "search"}}));
        let values: HashMap<Source, String> = HashMap::new();
        let query = plan.apply(Some("q=1&a=%2B&a=2&debug&de%62ug=1&q"), &values).unwrap();
        assert_eq!(query.as_deref(), Some("search=1&a=%2B&a=2&search"));
        assert_eq!(plan.apply(Some("debug=1"), &values).unwrap(), None, "nothing left, no `?`");
    }
}
