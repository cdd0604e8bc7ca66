//! An `amqp` route's backend: the request read whole (within the route's
//! size limit), its routing key expanded from the request's values and
//! JSON body fields, and the message published to the service's
//! [`Broker`]: answered `202 {"message_id"}` once confirmed (`publish`),
//! or with the responder's reply (`rpc`).
//!
//! The pipeline gathers the request values the routing key reads before
//! the request moves on ([`AmqpRoute::sources`], carried as an
//! [`AggregateInput`](crate::backend::aggregate::AggregateInput)); the body's fields are read here, once the body is
//! whole. A routing key that misses a value, or is longer than AMQP
//! allows once expanded, is the client's `400`, naming the variable.
//!
//! [`broker_settings`] maps a service of protocol `amqp`/`amqps` onto the
//! broker connection that serves it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use portico_shared::model::amqp::MAX_SHORTSTR;
use portico_shared::model::{AmqpBackend, AmqpMode, Service};
use portico_shared::template::{Escape, Lookup, Source, Template, json_scalar};

use super::{Broker, BrokerSettings, Credentials, Message, MessageSettings, TlsSettings, accepted};
use crate::backend::proxy::{ClientBody, Prepared};
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::proxy::headers::REQUEST_ID;
use crate::telemetry;
use opentelemetry::KeyValue;

/// Most channels a service's broker connection opens on one node, and so
/// most `rpc` calls under way at once (each holds a channel until it ends).
const CHANNEL_POOL_SIZE: usize = 32;
/// Longest pause between reconnection attempts to a lost broker.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);
/// The `Retry-After` of a `503` (broker down, blocked, or refusing the message).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The broker connection of a service of protocol `amqp`/`amqps`: its
/// targets of weight above 0 in the order listed (failover), its
/// credentials and TLS settings, and its connect timeout.
pub fn broker_settings(service: &Service) -> BrokerSettings {
    let tls = service.tls.as_ref().map_or_else(TlsSettings::default, |tls| TlsSettings {
        ca_bundle: tls.ca_bundle.clone(),
        client_cert: tls.client_cert.clone().zip(tls.client_key.clone()),
    });
    BrokerSettings {
        service: service.name.as_str().into(),
        targets: service.targets.iter().filter(|target| target.weight > 0).map(|target| target.url.clone()).collect(),
        credentials: service.credentials.as_ref().map(|credentials| Credentials {
            username: credentials.username.clone(),
            password: credentials.password.clone().unwrap_or_default(),
        }),
        tls,
        pool_size: CHANNEL_POOL_SIZE,
        connect_timeout: Duration::from_millis(u64::from(service.timeouts.connect_ms)),
        max_backoff: MAX_RECONNECT_BACKOFF,
        retry_after: RETRY_AFTER,
    }
}

/// An `amqp` route, compiled.
#[derive(Debug)]
pub struct AmqpRoute {
    pub broker: Arc<Broker>,
    pub settings: MessageSettings,
    routing_key: RoutingKey,
    mode: AmqpMode,
}

impl AmqpRoute {
    /// Compiles a route's `amqp` block, publishing to `broker`; `key_header`
    /// is the header the route's key-auth policy reads (never copied).
    pub fn compile(amqp: &AmqpBackend, broker: Arc<Broker>, key_header: Option<&str>) -> Result<Self, String> {
        let settings = MessageSettings {
            exchange: amqp.exchange.clone(),
            mandatory: amqp.mandatory,
            persistent: amqp.persistent,
            timeout: Duration::from_millis(u64::from(amqp.timeout_ms)),
            content_type: amqp.content_type.clone(),
            headers: MessageSettings::allow_list(&amqp.headers, key_header)?,
        };
        Ok(Self { broker, settings, routing_key: RoutingKey::compile(amqp)?, mode: amqp.mode })
    }

    /// The service's name, what metrics and limits call the backend.
    pub fn label(&self) -> &str {
        &self.broker.settings().service
    }

    /// The request sources to gather for [`AmqpRoute::answer`].
    pub fn sources(&self) -> &[Source] {
        &self.routing_key.sources
    }

    /// Publishes `prepared` (its values gathered by the pipeline) and
    /// answers as the route's mode says.
    pub async fn answer(
        &self,
        prepared: Prepared<'_>,
        body: ClientBody,
        max_body_bytes: u64,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // A client that never finishes its body must not hold the request forever: it gets the route's timeout too.
        let body =
            tokio::time::timeout(self.settings.timeout, body.read_whole(max_body_bytes)).await.map_err(|_| ProxyError::ClientTimeout)??;
        let input = prepared.aggregate.unwrap_or_default();
        let routing_key = self.routing_key.expand(input.values(), &body)?;
        let request_id = prepared.headers.get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or_default();
        let message = Message::from_request(&self.settings, &prepared.headers, request_id, body);
        let mode = if self.mode == AmqpMode::Publish { "publish" } else { "rpc" };
        let traced = telemetry::client_span(
            || format!("amqp {mode} {}", self.settings.exchange),
            || {
                vec![
                    KeyValue::new("messaging.system", "rabbitmq"),
                    KeyValue::new("messaging.destination.name", self.settings.exchange.clone()),
                ]
            },
        );
        let answer = match self.mode {
            AmqpMode::Publish => self.broker.publish(&self.settings, &routing_key, message).await.map(|id| accepted(&id)),
            AmqpMode::Rpc => self.broker.rpc(&self.settings, &routing_key, message).await.map(|reply| reply.into_response()),
        };
        if let Some(span) = traced {
            span.end(answer.as_ref().err().map(|error| error as &dyn std::fmt::Display));
        }
        Ok(answer?)
    }
}

/// A route's routing key template, with what it reads.
#[derive(Debug)]
struct RoutingKey {
    template: Template,
    /// The request values it reads (its body fields aside), gathered by the pipeline.
    sources: Vec<Source>,
    /// It reads fields of the JSON body.
    reads_body: bool,
}

impl RoutingKey {
    fn compile(amqp: &AmqpBackend) -> Result<Self, String> {
        let template = amqp.routing_key_template().map_err(|e| format!("routing_key: {e}"))?;
        let mut sources: Vec<Source> = Vec::new();
        for source in template.sources() {
            if !matches!(source, Source::BodyField(_)) && !sources.contains(source) {
                sources.push(source.clone());
            }
        }
        let reads_body = template.sources().any(|source| matches!(source, Source::BodyField(_)));
        Ok(Self { template, sources, reads_body })
    }

    /// The key for a request with `values` (its gathered ones) and `body`:
    /// a value missing, or a key too long for AMQP, is a `400`.
    fn expand(&self, values: &impl Lookup, body: &Bytes) -> Result<String, ProxyError> {
        let refused = |message: String| ProxyError::Unexpandable(format!("routing key: {message}"));
        let json = match self.reads_body {
            false => None,
            true => Some(
                serde_json::from_slice(body).map_err(|_| refused("it reads fields of the request body, which is not JSON".to_owned()))?,
            ),
        };
        let lookup = KeyValues { request: values, body: json.as_ref() };
        let key = self.template.expand(&lookup, Escape::RoutingKeyWord).map_err(|error| refused(error.to_string()))?;
        if key.len() > MAX_SHORTSTR {
            return Err(refused(format!("it is {} bytes once expanded; a routing key is at most {MAX_SHORTSTR}", key.len())));
        }
        Ok(key)
    }
}

/// A routing key's values: the request's, gathered, and its JSON body's
/// fields (a string, number or boolean; anything else has none).
struct KeyValues<'a, L> {
    request: &'a L,
    body: Option<&'a serde_json::Value>,
}

impl<L: Lookup> Lookup for KeyValues<'_, L> {
    fn value(&self, source: &Source) -> Option<Cow<'_, str>> {
        match source {
            Source::BodyField(field) => match field.select(self.body?).as_slice() {
                [one] => json_scalar(one),
                _ => None,
            },
            other => self.request.value(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn routing_key(template: &str) -> RoutingKey {
        let amqp: AmqpBackend = serde_json::from_value(serde_json::json!({"exchange": "x", "routing_key": template})).unwrap();
        RoutingKey::compile(&amqp).unwrap()
    }

    fn expand(template: &str, values: &[(&str, &str)], body: &str) -> Result<String, String> {
        let values: HashMap<Source, String> =
            values.iter().map(|(source, value)| (Source::parse(source).unwrap(), (*value).to_owned())).collect();
        routing_key(template).expand(&values, &Bytes::copy_from_slice(body.as_bytes())).map_err(|error| {
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{error}");
            error.to_string()
        })
    }

    #[test]
    fn the_pipeline_gathers_the_request_values_and_the_body_is_read_here() {
        let key = routing_key("order.{path.kind}.{body.kind}.{path.kind}.{request_id}");
        assert_eq!(key.sources, [Source::parse("path.kind").unwrap(), Source::RequestId], "each once, body fields aside");
        assert!(key.reads_body);
        assert!(!routing_key("order.{header.x-tenant}").reads_body);
    }

    #[test]
    fn body_fields_are_json_scalars_and_anything_else_is_a_400_naming_the_field() {
        let body = r#"{"kind":"created","items":[{},{"n":7}],"ok":true}"#;
        assert_eq!(
            expand("order.{path.kind}.{body.kind}.{body.items[1].n}.{body.ok}", &[("path.kind", "a")], body).unwrap(),
            "order.a.created.7.true"
        );
        for body in [r#"{"kind":null}"#, r#"{"kind":{"a":1}}"#, r#"{"kind":[1]}"#, "{}", "[]"] {
            let error = expand("order.{body.kind}", &[], body).unwrap_err();
            assert!(error.contains("routing key: the request has no value for field 'kind' of the JSON request body"), "{body}: {error}");
        }
        assert!(expand("{body.kind}", &[], "kind=1").unwrap_err().contains("not JSON"));
        assert!(expand("{path.kind}", &[], "not JSON, not read").unwrap_err().contains("path parameter 'kind'"));
        assert!(expand("{query.k}", &[("query.k", "a\u{1}b")], "").unwrap_err().contains("query parameter 'k' is not one word"));
        assert!(expand("{body.kind}", &[], "{\"kind\":\"a\\u0001b\"}").unwrap_err().contains("control character"));
        for injected in ["created.refund", "*", "#", ""] {
            let error = expand("order.{path.kind}", &[("path.kind", injected)], "").unwrap_err();
            assert!(error.contains("path parameter 'kind'"), "{injected:?}: {error}");
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_is_a_408_within_the_route_timeout() {
        use crate::backend::proxy::ClientBody;
        use crate::body::{BoxError, UpstreamBody};
        let amqp: AmqpBackend =
            serde_json::from_value(serde_json::json!({"exchange": "x", "routing_key": "k", "timeout_ms": 200})).unwrap();
        let settings = BrokerSettings {
            service: "events".into(),
            targets: vec!["amqp://127.0.0.1:1/%2F".into()],
            credentials: None,
            tls: TlsSettings::default(),
            pool_size: 1,
            connect_timeout: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
        };
        let route = AmqpRoute::compile(&amqp, Broker::new(settings, None).unwrap(), None).unwrap();
        let prepared = Prepared {
            method: http::Method::POST,
            path_and_query: http::uri::PathAndQuery::from_static("/e"),
            headers: http::HeaderMap::new(),
            host: None,
            hash_value: None,
            upgrading: false,
            idempotent: false,
            timeout: None,
            deadline_is_clients: false,
            aggregate: None,
            trail: None,
            forwarding: None,
        };
        let never_ends = http_body_util::StreamBody::new(futures::stream::pending::<Result<hyper::body::Frame<Bytes>, BoxError>>());
        let body = ClientBody::Once(UpstreamBody::translated(None, never_ends));
        let answered = tokio::time::timeout(Duration::from_secs(5), route.answer(prepared, body, 1024)).await;
        let error = answered.expect("the body read ends with the route's timeout").unwrap_err();
        assert_eq!(error.status(), http::StatusCode::REQUEST_TIMEOUT, "{error}");
    }

    #[test]
    fn an_expanded_key_over_255_bytes_is_refused() {
        let long = "k".repeat(250);
        assert_eq!(expand("{query.k}", &[("query.k", &long)], "").unwrap().len(), 250);
        let error = expand("order.{query.k}", &[("query.k", &long)], "").unwrap_err();
        assert!(error.contains("256 bytes once expanded; a routing key is at most 255"), "{error}");
    }
}
