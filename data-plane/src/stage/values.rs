//! What templates read from a request ([`portico_shared::template`]): path
//! parameters the router captured, the client's query (decoded), request
//! headers, the authenticated consumer and its token's claims, and the
//! request id. Values are looked up only when a template asks, or, for an
//! aggregate whose calls run after the request has moved on, gathered
//! first ([`Gathered`]).

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue};
use portico_shared::template::{Lookup, Source};

use crate::auth::{Authenticator, Identity};

/// One request's template values.
pub struct RequestValues<'a> {
    /// Route path parameters, by name, as the (normalized) request path has them.
    pub params: &'a [(std::sync::Arc<str>, Box<str>)],
    /// The client's query, as sent.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub identity: Option<&'a Identity>,
    pub auth: &'a Authenticator,
    pub request_id: &'a HeaderValue,
}

impl Lookup for RequestValues<'_> {
    fn value(&self, source: &Source) -> Option<Cow<'_, str>> {
        match source {
            // Decoded, so that escaping it where it lands gives the escape the client sent.
            Source::Path(name) => {
                let (_, raw) = self.params.iter().find(|(param, _)| &**param == name)?;
                Some(percent_encoding::percent_decode_str(raw).decode_utf8().unwrap_or(Cow::Borrowed(raw)))
            }
            Source::Query(name) => {
                form_urlencoded::parse(self.query?.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| Cow::Owned(value.into_owned()))
            }
            Source::Header(name) => self.headers.get(name.as_str())?.to_str().ok().map(Cow::Borrowed),
            Source::RequestId => self.request_id.to_str().ok().map(Cow::Borrowed),
            Source::Claim(name) => self.identity?.claim(name).map(Cow::Owned),
            Source::ConsumerId => Some(Cow::Borrowed(self.identity?.consumer_id())),
            Source::ConsumerUsername => self.auth.username(self.identity?).map(Cow::Borrowed),
            Source::ConsumerCustomId => self.auth.custom_id(self.identity?).map(Cow::Borrowed),
            // An aggregate's own values (its calls', its items', the body's),
            // and a routing key's body fields: not the request stage's.
            Source::Call { .. } | Source::Item(_) | Source::Body | Source::BodyField(_) => None,
        }
    }
}

impl RequestValues<'_> {
    /// The values of `sources` this request has (absent ones left out).
    pub fn gather(&self, sources: &[Source]) -> Gathered {
        Gathered(sources.iter().filter_map(|source| Some((source.clone(), self.value(source)?.into_owned()))).collect())
    }
}

/// Request values gathered for later ([`RequestValues::gather`]).
#[derive(Debug, Clone, Default)]
pub struct Gathered(Vec<(Source, String)>);

impl Gathered {
    /// The values in one unambiguous text: each source and value
    /// length-prefixed (an absent value is left out, its source with it).
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(source, value)| {
                let source = source.to_string();
                format!("{}:{source}{}:{value}", source.len(), value.len())
            })
            .collect()
    }
}

impl Lookup for Gathered {
    fn value(&self, source: &Source) -> Option<Cow<'_, str>> {
        self.0.iter().find(|(known, _)| known == source).map(|(_, value)| Cow::Borrowed(value.as_str()))
    }
}
