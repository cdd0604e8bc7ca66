//! Request/reply over RabbitMQ's direct reply-to.
//!
//! Each pooled channel consumes `amq.rabbitmq.reply-to` (no-ack) from the
//! moment it opens, before anything is published on it ([`super::connection`]);
//! a call publishes with `reply_to` set to it, on the same channel, and
//! waits for the reply carrying its correlation id.
//!
//! The correlation id is a new UUID per call, not the request id: a
//! client may send its own `X-Request-Id`, so request ids can repeat, and
//! a late reply to an earlier call with the same id must not answer a
//! later one. The request id travels as the `x-request-id` header (and a
//! responder echoes the correlation id, as RabbitMQ's RPC tutorials do).
//!
//! A call's waiter is registered before the publish and removed when the
//! call ends however it ends: reply, timeout, or the client going away
//! (the future dropped; [`Waiter`]'s `Drop`). A reply whose correlation id
//! no call awaits is dropped and counted ([`Broker::stray_replies`]), so
//! replies cannot cross.
//!
//! The answer is the reply's body with its `content_type` as
//! `Content-Type`, and the status of its [`STATUS_HEADER`] header (an
//! integer, or a string of one, 200–599; `200` when absent; anything else
//! is a `502`).

use std::sync::{Arc, PoisonError};
use std::time::Instant as StdInstant;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, ShortString};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::{Broker, DIRECT_REPLY_TO, Shared};
use super::publish::{Message, MessageSettings, millis};
use super::{AmqpError, metrics};
use crate::body::ResponseBody;

/// The reply header whose value is the HTTP status of the answer.
pub const STATUS_HEADER: &str = "x-http-status";

/// A responder's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Reply {
    fn from_delivery(delivery: Delivery) -> Result<Self, AmqpError> {
        let properties = &delivery.properties;
        let status = match properties.headers().as_ref().and_then(|headers| headers.inner().get(STATUS_HEADER)) {
            None => StatusCode::OK,
            Some(value) => status_of(value)?,
        };
        let content_type = properties.content_type().as_ref().map(|value| value.as_str().to_owned());
        Ok(Self { status, content_type, body: Bytes::from(delivery.data) })
    }

    /// The client's response.
    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::Local(http_body_util::Full::new(self.body)));
        *response.status_mut() = self.status;
        if let Some(content_type) = self.content_type.and_then(|value| HeaderValue::from_str(&value).ok()) {
            response.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        response
    }
}

/// The status a reply's [`STATUS_HEADER`] names.
fn status_of(value: &AMQPValue) -> Result<StatusCode, AmqpError> {
    let number = match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok().and_then(|text| text.trim().parse().ok()),
        AMQPValue::ShortString(text) => text.as_str().trim().parse().ok(),
        _ => None,
    };
    number
        .filter(|n| (200..=599).contains(n))
        .and_then(|n| u16::try_from(n).ok())
        .and_then(|n| StatusCode::from_u16(n).ok())
        .ok_or_else(|| AmqpError::InvalidReply(format!("{STATUS_HEADER} is {value:?}, not a status from 200 to 599")))
}

/// A call's place in the waiter map, removed when dropped.
struct Waiter {
    shared: Arc<Shared>,
    correlation_id: String,
    reply: oneshot::Receiver<Delivery>,
}

impl Waiter {
    fn register(shared: &Arc<Shared>, correlation_id: String) -> Self {
        let (sender, reply) = oneshot::channel();
        let count = {
            let mut waiters = shared.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            waiters.insert(correlation_id.clone(), sender);
            waiters.len()
        };
        metrics::rpc_waiters(shared.service(), count);
        Self { shared: Arc::clone(shared), correlation_id, reply }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let count = {
            let mut waiters = self.shared.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            waiters.remove(&self.correlation_id);
            waiters.len()
        };
        metrics::rpc_waiters(self.shared.service(), count);
    }
}

impl Broker {
    /// Publishes `message` with `reply_to` the direct reply-to and awaits
    /// the reply, both within the route's timeout.
    pub async fn rpc(&self, settings: &MessageSettings, routing_key: &str, message: Message) -> Result<Reply, AmqpError> {
        let started = StdInstant::now();
        let result = self.call(settings, routing_key, message).await;
        let outcome = match &result {
            Ok(_) => "replied",
            Err(AmqpError::NoReply { .. }) => "no_reply",
            Err(error) => error.code(),
        };
        metrics::rpc_done(self.shared.service(), outcome, started.elapsed());
        result
    }

    async fn call(&self, settings: &MessageSettings, routing_key: &str, message: Message) -> Result<Reply, AmqpError> {
        let deadline = Instant::now() + settings.timeout;
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let mut waiter = Waiter::register(&self.shared, correlation_id.clone());
        let properties = message.properties.with_correlation_id(ShortString::from(correlation_id)).with_reply_to(DIRECT_REPLY_TO.into());
        self.send(settings, routing_key, properties, &message.body, deadline).await?;
        let no_reply = || AmqpError::NoReply { exchange: settings.exchange.clone(), timeout_ms: millis(settings.timeout) };
        match tokio::time::timeout_at(deadline, &mut waiter.reply).await {
            Ok(Ok(delivery)) => Reply::from_delivery(delivery),
            // The sender is dropped only with the channel's consumer: no reply will come.
            Ok(Err(_)) | Err(_) => Err(no_reply()),
        }
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::LongString;

    use super::*;

    #[test]
    fn the_status_header_is_an_integer_or_a_string_of_one_within_200_to_599() {
        assert_eq!(status_of(&AMQPValue::ShortInt(404)).unwrap(), StatusCode::NOT_FOUND);
        assert_eq!(status_of(&AMQPValue::LongLongInt(201)).unwrap(), StatusCode::CREATED);
        assert_eq!(status_of(&AMQPValue::LongString(LongString::from("422"))).unwrap(), StatusCode::UNPROCESSABLE_ENTITY);
        for refused in [AMQPValue::LongInt(101), AMQPValue::LongInt(600), AMQPValue::LongString("ok".into()), AMQPValue::Boolean(true)] {
            let error = status_of(&refused).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY, "{refused:?}");
        }
    }
}
