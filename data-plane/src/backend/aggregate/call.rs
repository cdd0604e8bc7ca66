//! One call of an aggregate: its templates expanded with the request's
//! values and the answers of the calls it names, sent through the proxy
//! backend, its answer read up to the aggregate's limit and parsed as
//! JSON. A `for_each` call sends one request per item, in parallel, and
//! answers with the array of their answers in item order; the limit holds
//! for its items' answers together.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use portico_shared::model::AggregateCall;
use portico_shared::model::aggregate::DEFAULT_MAX_ITEMS;
use portico_shared::template::{Escape, ExpandError, FieldPath, Lookup, MAX_JOINED, Scope, Source, Template, json_scalar};
use serde_json::Value;
use tokio::time::Instant;

use crate::backend::proxy::{self, ClientBody, Prepared, Target};
use crate::error::ProxyError;
use crate::metrics::{CallMetrics, CallOutcome};
use crate::stage::values::Gathered;

/// What a call answered, or why it has no answer.
pub(super) type Outcome = Result<Answer, Failure>;

/// A call's JSON answer and what its responses said about caching.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) value: Value,
    /// Each upstream response's caching headers (several for a `for_each` call).
    pub(super) caching: Vec<Caching>,
}

pub(super) use super::merge::Caching;

/// Why a call has no answer.
#[derive(Debug)]
pub(super) struct Failure {
    /// The status the failure counts as: the upstream's when it answered
    /// with an error, `502` when it could not be reached or read, `504` on
    /// timeout; none when the call was not made.
    pub(super) status: Option<u16>,
    pub(super) error: String,
    /// Time ran out (the call's, or the aggregate's).
    pub(super) timeout: bool,
    /// A request went out.
    made: bool,
}

impl Failure {
    pub(super) fn timeout(error: String) -> Self {
        Self { status: Some(504), error, timeout: true, made: true }
    }

    pub(super) fn not_made(error: String) -> Self {
        Self { status: None, error: format!("not made: {error}"), timeout: false, made: false }
    }

    /// The aggregate's deadline passed before the call could start.
    pub(super) fn out_of_time(error: String) -> Self {
        Self { status: Some(504), error: format!("not made: {error}"), timeout: true, made: false }
    }

    fn bad_gateway(error: String) -> Self {
        Self { status: Some(502), error, timeout: false, made: true }
    }

    fn answered(status: StatusCode, service: &str) -> Self {
        Self { status: Some(status.as_u16()), error: format!("upstream '{service}' answered {status}"), timeout: false, made: true }
    }

    fn of(error: &ProxyError) -> Self {
        Self {
            status: Some(error.status().as_u16()),
            error: error.to_string(),
            timeout: matches!(error, ProxyError::UpstreamTimeout { .. }),
            made: true,
        }
    }

    /// The metric's `outcome`.
    fn outcome(&self) -> CallOutcome {
        match (self.made, self.timeout) {
            (false, _) => CallOutcome::NotMade,
            (true, true) => CallOutcome::Timeout,
            (true, false) => CallOutcome::Error,
        }
    }
}

/// What the calls read of the client's request.
pub(super) struct Request<'a> {
    pub(super) values: &'a Gathered,
    /// The headers every call carries.
    pub(super) headers: &'a HeaderMap,
    /// The client's body (empty unless a call sends it).
    pub(super) body: &'a Bytes,
    /// What each call's service hashes, by call (consistent-hash services).
    pub(super) hashes: &'a [Option<String>],
}

impl Request<'_> {
    /// A value of the request's own: the client's body (only when it is one
    /// JSON value, so it cannot reshape the JSON it is put in), or a
    /// gathered one.
    fn value(&self, source: &Source) -> Option<Cow<'_, str>> {
        match source {
            Source::Body => {
                serde_json::from_slice::<serde::de::IgnoredAny>(self.body).ok()?;
                std::str::from_utf8(self.body).ok().map(Cow::Borrowed)
            }
            other => self.values.value(other),
        }
    }
}

/// A compiled call.
#[derive(Debug)]
pub(super) struct Call {
    /// Its place among the aggregate's calls.
    index: usize,
    pub(super) name: Arc<str>,
    metrics: CallMetrics,
    pub(super) required: bool,
    target: Target,
    method: Method,
    path: Template,
    headers: Vec<(HeaderName, Template)>,
    body: Option<Template>,
    timeout: Duration,
    max_body: usize,
    /// The calls named by templates or `for_each`, by name and index.
    names: Vec<(String, usize)>,
    dependencies: Vec<usize>,
    /// The call and path whose items it fans out over, and at most how many.
    for_each: Option<(usize, FieldPath, usize)>,
}

impl Call {
    pub(super) fn compile(
        route: &Arc<str>,
        index: usize,
        all: &[AggregateCall],
        target: Target,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Self, String> {
        let call = &all[index];
        let parse =
            |text: &str| Template::parse_in(text, Scope::Aggregate).map_err(|e| format!("call '{}': template '{text}': {e}", call.name));
        let index_of =
            |name: &str| all.iter().position(|c| c.name == name).ok_or_else(|| format!("call '{}' names unknown call '{name}'", call.name));
        let mut names = Vec::new();
        for (_, dependency) in call.dependencies() {
            if !names.iter().any(|(known, _)| *known == dependency) {
                let index = index_of(&dependency)?;
                names.push((dependency, index));
            }
        }
        let for_each = match call.for_each_source() {
            Some((source, path)) => Some((index_of(source)?, path, call.max_items.unwrap_or(DEFAULT_MAX_ITEMS) as usize)),
            None => None,
        };
        let headers = call
            .headers
            .iter()
            .map(|(name, text)| Ok((HeaderName::try_from(name.as_str()).map_err(|e| e.to_string())?, parse(text)?)))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            index,
            name: call.name.as_str().into(),
            metrics: CallMetrics::new(route.clone(), call.name.as_str().into()),
            required: call.required,
            target,
            method: Method::from_bytes(call.method.as_bytes()).map_err(|e| e.to_string())?,
            path: parse(&call.path)?,
            headers,
            body: call.body.as_deref().map(parse).transpose()?,
            timeout: call.timeout_ms.map_or(deadline, Duration::from_millis),
            max_body,
            dependencies: names.iter().map(|(_, index)| *index).collect(),
            names,
            for_each,
        })
    }

    /// The calls this one waits for.
    pub(super) fn dependencies(&self) -> &[usize] {
        &self.dependencies
    }

    /// Its retry plan, if it retries.
    pub(super) fn retry(&self) -> Option<&Arc<crate::backend::retry::RetryPlan>> {
        self.target.retry.as_ref()
    }

    /// What its service hashes, when it balances by consistent hash.
    pub(super) fn hash_on(&self) -> Option<&portico_shared::model::HashOn> {
        self.target.upstream.hash_on()
    }

    /// Builds the call's requests from `request` and the calls it waits for
    /// (all settled in `outcomes`), and gives the exchange to run; a value
    /// it needs that is missing fails it before anything is sent.
    pub(super) fn start<'s>(&'s self, request: &Request<'_>, outcomes: &[Option<Outcome>]) -> Result<BoxFuture<'s, Outcome>, Failure> {
        let answers: Vec<(&str, &Value)> = self
            .names
            .iter()
            .map(|(name, index)| match &outcomes[*index] {
                Some(Ok(answer)) => Ok((name.as_str(), &answer.value)),
                _ => Err(Failure::not_made(format!("it needs call '{name}', which failed"))),
            })
            .collect::<Result<_, _>>()?;
        let values = Values { request, answers: &answers, item: None };
        let requests = match &self.for_each {
            None => vec![self.build(&values)?],
            Some((index, path, max)) => {
                let source = &self.names.iter().find(|(_, i)| i == index).map_or("", |(name, _)| name.as_str());
                let document = answers.iter().find(|(name, _)| name == source).map(|(_, value)| *value).unwrap_or(&Value::Null);
                let named = format!("{source}{}", path.after_name());
                let items = items(document, path).ok_or_else(|| Failure::not_made(format!("{named} is not an array")))?;
                if items.len() > *max {
                    return Err(Failure::not_made(format!("{named} has {} items, more than max_items ({max})", items.len())));
                }
                items.into_iter().map(|item| self.build(&Values { item: Some(item), ..values })).collect::<Result<Vec<_>, _>>()?
            }
        };
        // Boxed here: the exchange is large (a whole upstream request's
        // state), and each move of it unboxed copied all of it.
        Ok(Box::pin(async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(self.timeout, self.exchange_all(requests))
                .await
                .unwrap_or_else(|_| Err(Failure::timeout(format!("no answer within its timeout of {} ms", self.timeout.as_millis()))));
            match &outcome {
                Ok(_) => self.metrics.record(CallOutcome::Ok, started.elapsed()),
                Err(failure) => self.record(failure, started.elapsed()),
            }
            outcome
        }))
    }

    /// Whether the request has every value of its own (path, query,
    /// headers, identity, body) that the call's templates read, each fit
    /// for where it goes: one it lacks or that does not fit is the client's
    /// mistake, a `400` before any call is made, for a required call (an
    /// optional one is only not made).
    pub(super) fn check_request(&self, request: &Request<'_>) -> Result<(), ProxyError> {
        let probe = Probe(request);
        for (template, escape) in self.templates() {
            template.expand(&probe, escape).map_err(|e| ProxyError::Unexpandable(format!("call '{}': {e}", self.name)))?;
        }
        Ok(())
    }

    /// Counts a call the request's end cut short.
    pub(super) fn cancelled(&self, elapsed: Duration) {
        self.metrics.record(CallOutcome::Cancelled, elapsed);
    }

    /// Counts a failed call.
    pub(super) fn record(&self, failure: &Failure, elapsed: Duration) {
        self.metrics.record(failure.outcome(), elapsed);
    }

    /// One request of the call, its templates expanded.
    fn build(&self, values: &Values<'_>) -> Result<Built, Failure> {
        let unexpandable = |error: ExpandError<'_>| {
            Failure::not_made(match error {
                ExpandError::Absent(source @ (Source::Call { .. } | Source::Item(_))) => {
                    format!("{} is null, absent or not a string, number or boolean", source.describe())
                }
                other => other.to_string(),
            })
        };
        for source in self.templates().flat_map(|(template, _)| template.joins()) {
            let count = values.select(source).map_or(0, |found| found.len());
            if count > MAX_JOINED {
                return Err(Failure::not_made(format!("{} reaches {count} values; a join takes at most {MAX_JOINED}", source.describe())));
            }
        }
        let target = self.path.expand(values, Escape::PathAndQuery).map_err(unexpandable)?;
        let target =
            PathAndQuery::try_from(target).map_err(|_| Failure::not_made("its expanded path is not a valid request target".to_owned()))?;
        let mut headers = HeaderMap::with_capacity(values.request.headers.len() + self.headers.len() + 2);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        for (name, template) in &self.headers {
            let value = template.expand(values, Escape::HeaderValue).map_err(unexpandable)?;
            let value = HeaderValue::try_from(value).map_err(|_| Failure::not_made(format!("its header '{name}' cannot be sent")))?;
            headers.insert(name.clone(), value);
        }
        // The gateway's own headers last, so they win.
        for name in values.request.headers.keys() {
            headers.remove(name);
        }
        headers.extend(values.request.headers.iter().map(|(name, value)| (name.clone(), value.clone())));
        let body = match &self.body {
            Some(template) => {
                if !headers.contains_key(header::CONTENT_TYPE) {
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Bytes::from(template.expand(values, Escape::JsonString).map_err(unexpandable)?)
            }
            None => Bytes::new(),
        };
        let hash = values.request.hashes.get(self.index).cloned().flatten();
        Ok(Built { target, headers, body, hash })
    }

    /// Each template with how its values are escaped.
    fn templates(&self) -> impl Iterator<Item = (&Template, Escape)> {
        std::iter::once((&self.path, Escape::PathAndQuery))
            .chain(self.headers.iter().map(|(_, template)| (template, Escape::HeaderValue)))
            .chain(self.body.iter().map(|template| (template, Escape::JsonString)))
    }

    /// Sends every request (in parallel); the answers in order, or the first failure in order.
    async fn exchange_all(&self, requests: Vec<Built>) -> Outcome {
        let read = AtomicUsize::new(0);
        if self.for_each.is_none() {
            let request = requests.into_iter().next().ok_or_else(|| Failure::not_made("nothing to send".to_owned()))?;
            return self.exchange(request, &read).await;
        }
        let answers = futures::future::join_all(requests.into_iter().map(|request| self.exchange(request, &read))).await;
        let mut values = Vec::with_capacity(answers.len());
        let mut caching = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            let answer = answer.map_err(|failure| Failure { error: format!("item {i}: {}", failure.error), ..failure })?;
            values.push(answer.value);
            caching.extend(answer.caching);
        }
        Ok(Answer { value: Value::Array(values), caching })
    }

    /// Sends one request and reads its answer; `read` counts the bytes of
    /// the call's answers so far.
    async fn exchange(&self, request: Built, read: &AtomicUsize) -> Outcome {
        let prepared = Prepared {
            method: self.method.clone(),
            path_and_query: request.target,
            headers: request.headers,
            host: None,
            hash_value: request.hash.as_deref().map(str::as_bytes),
            upgrading: false,
            idempotent: self.method.is_idempotent(),
            timeout: None,
            deadline_is_clients: false,
            aggregate: None,
            trail: None,
            forwarding: None,
        };
        let (response, lease) = proxy::send(&self.target, prepared, ClientBody::Whole(request.body)).await.map_err(|e| Failure::of(&e))?;
        let service = self.target.upstream.name();
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::answered(status, service));
        }
        let caching = Caching::of(response.headers());
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| Failure::bad_gateway(format!("upstream '{service}' cut its answer short: {error}")))?;
            let Ok(data) = frame.into_data() else { continue };
            if read.fetch_add(data.len(), Ordering::Relaxed) + data.len() > self.max_body {
                return Err(Failure::bad_gateway(format!(
                    "upstream '{service}' answered with more than {} bytes (the aggregate's max_body_bytes)",
                    self.max_body
                )));
            }
            bytes.extend_from_slice(&data);
        }
        drop(lease);
        let value = if bytes.is_empty() || self.method == Method::HEAD || status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| Failure::bad_gateway(format!("upstream '{service}' answered with something that is not JSON ({e})")))?
        };
        Ok(Answer { value, caching: vec![caching] })
    }
}

/// A request ready to send.
struct Built {
    target: PathAndQuery,
    headers: HeaderMap,
    body: Bytes,
    /// What a consistent-hash service hashes.
    hash: Option<String>,
}

/// The items `path` finds in `document`: the values a path with `[*]`
/// reaches, or the elements of the array a plain path names; `None` when
/// it names no array.
fn items<'v>(document: &'v Value, path: &FieldPath) -> Option<Vec<&'v Value>> {
    let found = path.select(document);
    if path.has_each() {
        return Some(found);
    }
    found.first().and_then(|value| value.as_array()).map(|items| items.iter().collect())
}

/// The request's values, with a stand-in for every answer and item, so
/// that expanding fails only for a value of the request's own (one it
/// lacks, or one that cannot go where the template puts it).
struct Probe<'a>(&'a Request<'a>);

impl Lookup for Probe<'_> {
    fn value(&self, source: &Source) -> Option<Cow<'_, str>> {
        match source {
            Source::Call { .. } | Source::Item(_) => Some(Cow::Borrowed("x")),
            own => self.0.value(own),
        }
    }
}

/// The values a call's templates read.
#[derive(Clone, Copy)]
struct Values<'a> {
    request: &'a Request<'a>,
    /// The answers of the calls it names.
    answers: &'a [(&'a str, &'a Value)],
    item: Option<&'a Value>,
}

impl Values<'_> {
    /// What `source`'s path reaches, when it is a call's or the item's.
    fn select(&self, source: &Source) -> Option<Vec<&Value>> {
        let (document, path) = match source {
            Source::Call { call, field } => (self.answers.iter().find(|(name, _)| name == call).map(|(_, value)| *value)?, field),
            Source::Item(field) => (self.item?, field),
            _ => return None,
        };
        Some(path.select(document))
    }
}

impl Lookup for Values<'_> {
    fn value(&self, source: &Source) -> Option<Cow<'_, str>> {
        match source {
            Source::Call { .. } | Source::Item(_) => json_scalar(self.select(source)?.first()?),
            own => self.request.value(own),
        }
    }

    fn values(&self, source: &Source) -> Option<Vec<Cow<'_, str>>> {
        match source {
            Source::Call { .. } | Source::Item(_) => self.select(source)?.into_iter().map(json_scalar).collect(),
            other => self.value(other).map(|value| vec![value]),
        }
    }
}
