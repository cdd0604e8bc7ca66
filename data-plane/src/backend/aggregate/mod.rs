//! The aggregate backend: one client request answered by several upstream
//! calls ([`portico_shared::model::Aggregate`]) merged into one JSON
//! answer.
//!
//! Calls start as soon as the calls they name have answered, so calls
//! without dependencies run in parallel. Each goes through the proxy
//! backend ([`super::proxy::send`]): the same pools, balancing, health,
//! breakers and retries as a proxied request. Each call carries the
//! request id, the `X-Forwarded-*` headers, the caller's identity headers
//! and the headers a `request-transform` wrote, with its own headers, and
//! nothing else of the client's. The whole answer has a deadline: calls
//! still running then are dropped, which closes their connections.
//!
//! A required call that fails ends the request at once (`502`, `504` when
//! it timed out) naming the call; an optional one leaves its key `null`
//! and an entry in `_errors`, and the answer says `Portico-Aggregate:
//! partial` with `Cache-Control: no-store`. Merging ([`merge`]) follows
//! call order, never arrival order.

mod call;
mod merge;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use portico_shared::model::{Aggregate, AggregateCall, Merge};
use portico_shared::template::Source;
use tokio::time::Instant;

use self::call::{Call, Failure, Outcome};
use self::merge::Slot;
use super::proxy::{ClientBody, Prepared, Target};
use super::retry::RetryPlan;
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::metrics::{AnswerMetrics, AnswerResult};
use crate::stage::values::Gathered;
use crate::telemetry::{self, FutureExt as _};
use opentelemetry::KeyValue;

/// Says whether every call answered (`complete`) or an optional one failed (`partial`).
pub const PORTICO_AGGREGATE: HeaderName = HeaderName::from_static("portico-aggregate");

/// Request headers every call carries, when the request has them, besides
/// the identity headers: the request id and the forwarding set.
const FORWARDING: [&str; 5] = ["x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"];

/// What an aggregate's calls take from the request, gathered by the
/// pipeline before the request moves on (and kept by a background cache
/// refresh).
#[derive(Debug, Clone, Default)]
pub struct AggregateInput {
    /// The request values the templates read.
    values: Gathered,
    /// The headers a `request-transform` wrote, which every call carries.
    written: Vec<HeaderName>,
    /// What each call's service hashes, by call (consistent-hash services).
    hashes: Vec<Option<String>>,
    /// The values in one unambiguous text, for the response cache's key:
    /// two requests whose calls would differ never share an entry.
    key: String,
}

impl AggregateInput {
    pub fn new(values: Gathered, written: Vec<HeaderName>, hashes: Vec<Option<String>>) -> Self {
        let key = values.encode();
        Self { values, written, hashes, key }
    }

    /// The request values the calls read, for the response cache's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request values gathered (an `amqp` route's routing key reads them too).
    pub fn values(&self) -> &Gathered {
        &self.values
    }
}

/// A compiled aggregate.
#[derive(Debug)]
pub struct Aggregation {
    /// `aggregate:<route>`, what metrics and limits call it.
    label: Arc<str>,
    route: Arc<str>,
    deadline: Duration,
    merge: Merge,
    calls: Vec<Call>,
    /// Where each call's answer goes.
    slots: Vec<Slot>,
    /// The request values the templates read, gathered before the request moves on.
    sources: Vec<Source>,
    /// Some call sends the client's body.
    reads_body: bool,
    /// The client headers the templates read: the answer varies on them.
    vary: Option<HeaderValue>,
    answers: AnswerMetrics,
}

impl Aggregation {
    /// Compiles `aggregate` of route `route`; `target` gives each service's
    /// upstream and retries.
    pub fn compile(
        route: &Arc<str>,
        aggregate: &Aggregate,
        target: impl Fn(&AggregateCall) -> Result<Target, String>,
    ) -> Result<Self, String> {
        let max_body = usize::try_from(aggregate.max_body_bytes).unwrap_or(usize::MAX);
        let deadline = Duration::from_millis(aggregate.timeout_ms);
        let calls = aggregate
            .calls
            .iter()
            .enumerate()
            .map(|(i, call)| Call::compile(route, i, &aggregate.calls, target(call)?, deadline, max_body))
            .collect::<Result<Vec<_>, String>>()?;
        let mut sources: Vec<Source> = Vec::new();
        for source in aggregate.sources() {
            if !matches!(source, Source::Call { .. } | Source::Item(_) | Source::Body) && !sources.contains(&source) {
                sources.push(source);
            }
        }
        let reads_body = aggregate.sources().contains(&Source::Body);
        let headers: Vec<&str> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Header(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let vary = (!headers.is_empty()).then(|| HeaderValue::from_str(&headers.join(", "))).transpose().map_err(|e| e.to_string())?;
        Ok(Self {
            label: format!("aggregate:{route}").into(),
            route: route.clone(),
            deadline,
            merge: aggregate.merge,
            calls,
            slots: aggregate.calls.iter().map(Slot::of).collect(),
            sources,
            reads_body,
            vary,
            answers: AnswerMetrics::new(route.clone()),
        })
    }

    /// Each call's retry plan, by call name (kept by the next version while unchanged).
    pub fn retries(&self) -> impl Iterator<Item = (&str, &Arc<RetryPlan>)> {
        self.calls.iter().filter_map(|call| Some((&*call.name, call.retry()?)))
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The request sources to gather for [`Aggregation::answer`].
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// What each call's service hashes, by call: `hash` of its `hash_on`
    /// for a consistent-hash service, else nothing (an empty list when no
    /// call's service hashes).
    pub fn hashes(&self, hash: impl Fn(&portico_shared::model::HashOn) -> String) -> Vec<Option<String>> {
        if self.calls.iter().all(|call| call.hash_on().is_none()) {
            return Vec::new();
        }
        self.calls.iter().map(|call| call.hash_on().map(&hash)).collect()
    }

    /// The headers each call carries of `request` (after authentication,
    /// forwarding and transforms): the gateway's own, and `written` (the
    /// names a `request-transform` wrote).
    fn carried(request: &HeaderMap, written: &[HeaderName]) -> HeaderMap {
        let mut carried = HeaderMap::new();
        let gateway = FORWARDING.iter().chain(&crate::proxy::headers::IDENTITY).map(|name| HeaderName::from_static(name));
        let names = gateway.chain(written.iter().cloned());
        for name in names {
            for value in request.get_all(&name) {
                carried.append(name.clone(), value.clone());
            }
        }
        carried
    }

    /// Runs the calls for a request prepared by the pipeline (with its
    /// [`AggregateInput`]) and merges their answers.
    pub async fn answer(
        &self,
        prepared: Prepared<'_>,
        body: ClientBody,
        max_body_bytes: u64,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let deadline = Instant::now() + self.deadline;
        let client_body = match self.reads_body {
            false => Bytes::new(),
            true => tokio::time::timeout_at(deadline, body.read_whole(max_body_bytes)).await.map_err(|_| ProxyError::ClientTimeout)??,
        };
        let input = prepared.aggregate.unwrap_or_default();
        let headers = Self::carried(&prepared.headers, &input.written);
        let request = call::Request { values: &input.values, headers: &headers, body: &client_body, hashes: &input.hashes };
        for call in self.calls.iter().filter(|call| call.required) {
            call.check_request(&request).inspect_err(|_| self.answers.answered(AnswerResult::Failed))?;
        }
        let mut progress = Progress { outcomes: self.calls.iter().map(|_| None).collect(), started: vec![None; self.calls.len()] };
        let mut running = FuturesUnordered::new();
        loop {
            for (i, call) in self.calls.iter().enumerate() {
                if progress.started[i].is_some() || !call.dependencies().iter().all(|&d| progress.outcomes[d].is_some()) {
                    continue;
                }
                progress.started[i] = Some(Instant::now());
                match call.start(&request, &progress.outcomes) {
                    Ok(exchange) => {
                        let traced = telemetry::client_span(
                            || format!("aggregate call {}", call.name),
                            || vec![KeyValue::new("portico.aggregate.call", call.name.to_string())],
                        );
                        running.push(async move {
                            let outcome = match &traced {
                                Some(span) => exchange.with_context(span.context().clone()).await,
                                None => exchange.await,
                            };
                            if let Some(span) = traced {
                                span.end(outcome.as_ref().err().map(|failure| &failure.error as &dyn std::fmt::Display));
                            }
                            (i, outcome)
                        });
                    }
                    Err(failure) => {
                        call.record(&failure, Duration::ZERO);
                        self.settle(i, Err(failure), &mut progress)?;
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, running.next()).await {
                Ok(Some((i, outcome))) => self.settle(i, outcome, &mut progress)?,
                Ok(None) => break,
                Err(_) => {
                    self.out_of_time(&mut progress)?;
                    break;
                }
            }
        }
        let outcomes: Vec<Outcome> =
            progress.outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(Failure::not_made("it never started".to_owned())))).collect();
        Ok(self.respond(outcomes))
    }

    /// The aggregate's deadline passed: the calls still running time out
    /// (they come first: one of them is why), then those that were waiting
    /// for them are not made.
    fn out_of_time(&self, progress: &mut Progress) -> Result<(), ProxyError> {
        let deadline = self.deadline.as_millis();
        for running in [true, false] {
            for (i, call) in self.calls.iter().enumerate() {
                if progress.outcomes[i].is_some() || progress.started[i].is_some() != running {
                    continue;
                }
                let failure = if running {
                    Failure::timeout(format!("the aggregate's deadline of {deadline} ms passed first"))
                } else {
                    let waiting: Vec<&str> =
                        call.dependencies().iter().filter(|&&d| progress.outcomes[d].is_none()).map(|&d| &*self.calls[d].name).collect();
                    Failure::out_of_time(format!(
                        "the aggregate's deadline of {deadline} ms passed while it waited for '{}'",
                        waiting.join("', '")
                    ))
                };
                call.record(&failure, progress.started[i].map_or(Duration::ZERO, |at| at.elapsed()));
                self.settle(i, Err(failure), progress)?;
            }
        }
        Ok(())
    }

    /// Records call `i`'s outcome; a required call's failure ends the
    /// request, and the calls still running are cancelled (and counted so).
    fn settle(&self, i: usize, outcome: Outcome, progress: &mut Progress) -> Result<(), ProxyError> {
        if let Err(failure) = &outcome
            && self.calls[i].required
        {
            self.answers.answered(AnswerResult::Failed);
            for (j, call) in self.calls.iter().enumerate() {
                if let (Some(at), None, true) = (progress.started[j], &progress.outcomes[j], j != i) {
                    call.cancelled(at.elapsed());
                }
            }
            return Err(ProxyError::AggregateCall {
                call: self.calls[i].name.to_string(),
                timeout: failure.timeout,
                message: format!("call '{}' failed: {}", self.calls[i].name, failure.error),
            });
        }
        progress.outcomes[i] = Some(outcome);
        Ok(())
    }

    /// The merged answer.
    fn respond(&self, outcomes: Vec<Outcome>) -> Response<ResponseBody> {
        let partial = outcomes.iter().any(Result::is_err);
        let cache_control = if partial {
            Some(HeaderValue::from_static("no-store"))
        } else {
            merge::cache_control(outcomes.iter().filter_map(|o| o.as_ref().ok()))
        };
        let merged = merge::merge(self.merge, &self.slots, outcomes, &self.route);
        self.answers.answered(if partial { AnswerResult::Partial } else { AnswerResult::Complete });
        let mut response = Response::new(ResponseBody::Local(Full::new(Bytes::from(merged))));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(PORTICO_AGGREGATE, HeaderValue::from_static(if partial { "partial" } else { "complete" }));
        if let Some(value) = cache_control {
            headers.insert(header::CACHE_CONTROL, value);
        }
        if let Some(vary) = &self.vary {
            headers.insert(header::VARY, vary.clone());
        }
        response
    }
}

/// How far one request's calls have got.
struct Progress {
    /// Each call's outcome, once settled.
    outcomes: Vec<Option<Outcome>>,
    /// When each call started (or failed to).
    started: Vec<Option<Instant>>,
}
