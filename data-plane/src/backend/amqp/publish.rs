//! Publishing a request as a message, and awaiting the broker's confirm.
//!
//! A [`Message`] is built from the request ([`Message::from_request`]):
//! the body as it came; `message_id` from a valid `Idempotency-Key` (else
//! a new UUID), so a consumer can drop a client's retry; `correlation_id`
//! the request id; `timestamp` (seconds), `app_id` `portico`, the content
//! type (the route's, else the request's, else `application/octet-stream`); as headers the route's
//! allow-list, the identity headers the gateway wrote and `x-request-id`.
//! Never `Authorization`, `Proxy-Authorization` or `Cookie`
//! ([`MessageSettings::allow_list`] refuses them, with the route's key header).
//!
//! [`Broker::publish`] answers only once the broker confirmed: an ack is
//! the message's id (`202`), an ack after a `basic.return` of a mandatory
//! message is [`AmqpError::Unroutable`], a nack [`AmqpError::Nacked`]; a
//! broker that starts blocking publishers meanwhile (RabbitMQ's resource
//! alarms) is [`AmqpError::Unavailable`] at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName};
use http::{Response, StatusCode};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, ErrorKind};
use tokio::time::Instant;

use super::connection::{BLOCKED, Broker, Lease};
use super::{AmqpError, metrics};
use crate::body::ResponseBody;
use crate::proxy::headers::{IDENTITY, REQUEST_ID};

/// Request headers never copied into a message.
const NEVER_COPIED: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// The header a client names its message with.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A message's content type when neither the route nor the request gives one.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// AMQP's delivery modes.
const TRANSIENT: u8 = 1;
const PERSISTENT: u8 = 2;

/// What a route's `amqp` block says about its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSettings {
    pub exchange: String,
    /// Unroutable messages are returned (`502`) instead of dropped.
    pub mandatory: bool,
    /// Delivery mode 2 (written to disk by durable queues).
    pub persistent: bool,
    /// The confirm's deadline (and an `rpc` reply's, from the publish on).
    pub timeout: Duration,
    /// The message's content type; `None` keeps the request's.
    pub content_type: Option<String>,
    /// Request headers copied to the message's headers ([`MessageSettings::allow_list`]).
    pub headers: Vec<HeaderName>,
}

impl MessageSettings {
    /// A route's header allow-list, refusing `Authorization`,
    /// `Proxy-Authorization`, `Cookie` and `key_header` (the key-auth
    /// header) with a message naming the header.
    pub fn allow_list<S: AsRef<str>>(names: &[S], key_header: Option<&str>) -> Result<Vec<HeaderName>, String> {
        names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("headers: '{name}': {e}"))?;
                let secret =
                    NEVER_COPIED.contains(&header.as_str()) || key_header.is_some_and(|key| key.eq_ignore_ascii_case(header.as_str()));
                if secret {
                    return Err(format!("headers: '{name}' carries credentials and is never copied into a message"));
                }
                Ok(header)
            })
            .collect()
    }

    fn delivery_mode(&self) -> u8 {
        if self.persistent { PERSISTENT } else { TRANSIENT }
    }
}

/// A request as a message, ready to publish.
#[derive(Debug, Clone)]
pub struct Message {
    pub message_id: String,
    pub(super) properties: BasicProperties,
    pub(super) body: Bytes,
}

impl Message {
    /// The message for a request with `headers` (as the gateway prepared
    /// them: identity headers its own), `request_id` and `body`.
    pub fn from_request(settings: &MessageSettings, headers: &HeaderMap, request_id: &str, body: Bytes) -> Self {
        let message_id = headers
            .get(IDEMPOTENCY_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(idempotency_key)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let mut table = FieldTable::default();
        let copied = settings.headers.iter().map(HeaderName::as_str).chain(IDENTITY);
        for name in copied {
            let values: Vec<&[u8]> = headers.get_all(name).iter().map(|value| value.as_bytes()).collect();
            if !values.is_empty() {
                table.insert(name.into(), AMQPValue::LongString(LongString::from(values.join(&b", "[..]))));
            }
        }
        table.insert(REQUEST_ID.as_str().into(), AMQPValue::LongString(request_id.into()));
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
        let properties = BasicProperties::default()
            .with_message_id(message_id.as_str().into())
            .with_correlation_id(short_string(request_id))
            .with_timestamp(timestamp)
            .with_app_id("portico".into())
            .with_delivery_mode(settings.delivery_mode())
            .with_headers(table);
        let content_type = settings
            .content_type
            .as_deref()
            .or_else(|| headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()))
            .unwrap_or(DEFAULT_CONTENT_TYPE);
        let properties = properties.with_content_type(short_string(content_type));
        Self { message_id, properties, body }
    }
}

/// A client's idempotency key, if usable as a message id: 1 to 255
/// visible ASCII characters, a structured-field string's quotes removed.
fn idempotency_key(value: &str) -> Option<&str> {
    let key = value.trim();
    let key = key.strip_prefix('"').and_then(|key| key.strip_suffix('"')).unwrap_or(key);
    let valid = (1..=255).contains(&key.len()) && key.bytes().all(|byte| byte.is_ascii_graphic());
    valid.then_some(key)
}

/// A property value (at most 255 bytes, cut at a character boundary).
fn short_string(value: &str) -> ShortString {
    let mut end = value.len().min(255);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].into()
}

/// The answer to a confirmed publish: `202 {"message_id"}`.
pub fn accepted(message_id: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "message_id": message_id }).to_string();
    let mut response = Response::new(ResponseBody::Local(http_body_util::Full::new(Bytes::from(body))));
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

impl Broker {
    /// Publishes `message` to the route's exchange with `routing_key` and
    /// awaits the broker's confirm, within the route's timeout: the
    /// message's id once acked.
    pub async fn publish(&self, settings: &MessageSettings, routing_key: &str, message: Message) -> Result<String, AmqpError> {
        let deadline = Instant::now() + settings.timeout;
        let mut lease = self.lease_to_publish(deadline).await?;
        self.send(&mut lease, settings, routing_key, message.properties, &message.body, deadline).await?;
        Ok(message.message_id)
    }

    /// A pooled channel to publish on by `deadline` (also `rpc`'s); none is
    /// counted as a publish the broker was unavailable for.
    pub(super) async fn lease_to_publish(&self, deadline: Instant) -> Result<Lease, AmqpError> {
        let lease = self.lease(deadline).await;
        if lease.is_err() {
            metrics::published(self.shared.service(), "unavailable");
        }
        lease
    }

    /// Publishes on `lease`'s channel and awaits the confirm by `deadline`
    /// (also `rpc`'s publish); counts the result.
    pub(super) async fn send(
        &self,
        lease: &mut Lease,
        settings: &MessageSettings,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(), AmqpError> {
        let result = self.confirm(lease, settings, routing_key, properties, body, deadline).await;
        let outcome = match &result {
            Ok(()) => "confirmed",
            Err(AmqpError::Unroutable { .. }) => "returned",
            Err(AmqpError::Nacked { .. }) => "nacked",
            Err(AmqpError::Timeout { .. }) => "timeout",
            Err(AmqpError::ChannelClosed { .. }) => "channel_closed",
            Err(_) => "unavailable",
        };
        metrics::published(self.shared.service(), outcome);
        result
    }

    async fn confirm(
        &self,
        lease: &mut Lease,
        settings: &MessageSettings,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(), AmqpError> {
        let exchange = settings.exchange.as_str();
        let options = BasicPublishOptions { mandatory: settings.mandatory, immediate: false };
        let confirmed = async {
            let channel = lease.channel();
            channel.basic_publish(short_string(exchange), short_string(routing_key), options, body, properties).await?.await
        };
        // A broker that starts blocking publishers holds this confirm back until its alarm clears: a 503 now, not a 504 later.
        let answered = tokio::select! {
            answered = tokio::time::timeout_at(deadline, confirmed) => answered,
            () = self.shared.until_blocked() => {
                lease.discard();
                return Err(self.shared.unavailable(BLOCKED));
            }
        };
        let confirmation = match answered {
            Ok(Ok(confirmation)) => confirmation,
            Ok(Err(error)) => {
                let failure = self.publish_failure(exchange, &error);
                lease.discard();
                return Err(failure);
            }
            Err(_) => {
                return Err(AmqpError::Timeout { exchange: exchange.to_owned(), timeout_ms: millis(settings.timeout) });
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            // Every pooled channel is in confirm mode; a publish without a confirm is never answered 202.
            Confirmation::NotRequested => {
                lease.discard();
                Err(self.shared.unavailable("the channel was not in confirm mode"))
            }
            Confirmation::Ack(Some(returned)) => Err(AmqpError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            }),
            Confirmation::Nack(_) => Err(AmqpError::Nacked { exchange: exchange.to_owned(), retry_after_s: self.shared.retry_after_s() }),
        }
    }

    /// A publish's error: the broker closing the channel over it (a soft
    /// error: missing exchange, no permission) or the connection failing.
    fn publish_failure(&self, exchange: &str, error: &lapin::Error) -> AmqpError {
        match error.kind() {
            ErrorKind::ProtocolError(amqp) if error.is_amqp_soft_error() => {
                AmqpError::ChannelClosed { exchange: exchange.to_owned(), reason: format!("{} {}", amqp.get_id(), amqp.get_message()) }
            }
            _ => self.shared.unavailable(&error.to_string()),
        }
    }
}

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MessageSettings {
        MessageSettings {
            exchange: "orders".into(),
            mandatory: true,
            persistent: true,
            timeout: Duration::from_secs(1),
            content_type: None,
            headers: vec![HeaderName::from_static("x-tenant")],
        }
    }

    fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
        properties.headers().as_ref().and_then(|table| table.inner().get(name))
    }

    #[test]
    fn a_message_carries_the_allow_listed_and_identity_headers_and_its_ids() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        headers.insert("x-other", "not copied".parse().unwrap());
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        headers.insert("x-consumer-username", "alice".parse().unwrap());
        headers.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert("idempotency-key", "\"order-42\"".parse().unwrap());
        let message = Message::from_request(&settings(), &headers, "req-1", Bytes::from_static(b"{}"));
        let properties = &message.properties;
        assert_eq!(message.message_id, "order-42");
        assert_eq!(properties.message_id().as_ref().map(ShortString::as_str), Some("order-42"));
        assert_eq!(properties.correlation_id().as_ref().map(ShortString::as_str), Some("req-1"));
        assert_eq!(properties.app_id().as_ref().map(ShortString::as_str), Some("portico"));
        assert_eq!(properties.content_type().as_ref().map(ShortString::as_str), Some("application/json"));
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert!(properties.timestamp().is_some_and(|seconds| seconds > 1_700_000_000));
        assert_eq!(header(properties, "x-tenant"), Some(&AMQPValue::LongString("acme".into())));
        assert_eq!(header(properties, "x-consumer-username"), Some(&AMQPValue::LongString("alice".into())));
        assert_eq!(header(properties, "x-request-id"), Some(&AMQPValue::LongString("req-1".into())));
        assert_eq!(header(properties, "x-other"), None);
        assert_eq!(header(properties, "authorization"), None);
        assert_eq!(message.body, Bytes::from_static(b"{}"));
    }

    #[test]
    fn without_a_usable_idempotency_key_the_message_id_is_a_new_uuid() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "has space".parse().unwrap());
        let settings = MessageSettings { persistent: false, content_type: Some("text/plain".into()), ..settings() };
        let first = Message::from_request(&settings, &headers, "r", Bytes::new());
        let second = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::new());
        let untyped = Message::from_request(&self::settings(), &HeaderMap::new(), "r", Bytes::new());
        assert_eq!(untyped.properties.content_type().as_ref().map(ShortString::as_str), Some("application/octet-stream"));
        assert!(uuid::Uuid::parse_str(&first.message_id).is_ok(), "{}", first.message_id);
        assert_ne!(first.message_id, second.message_id);
        assert_eq!(*first.properties.delivery_mode(), Some(TRANSIENT));
        assert_eq!(first.properties.content_type().as_ref().map(ShortString::as_str), Some("text/plain"));
        assert_eq!(idempotency_key(&"k".repeat(256)), None);
        assert_eq!(idempotency_key(""), None);
        assert_eq!(idempotency_key(" abc-1 "), Some("abc-1"));
    }

    #[test]
    fn credentials_never_enter_the_allow_list() {
        assert!(MessageSettings::allow_list(&["x-tenant", "X-Trace"], Some("apikey")).is_ok());
        for refused in ["Authorization", "cookie", "Proxy-Authorization", "ApiKey"] {
            let error = MessageSettings::allow_list(&[refused], Some("apikey")).unwrap_err();
            assert!(error.contains(refused), "{error}");
        }
        assert!(MessageSettings::allow_list(&["bad header"], None).unwrap_err().contains("bad header"));
    }
}
