//! Request/reply over RabbitMQ's direct reply-to.
//!
//! Each pooled channel consumes `amq.rabbitmq.reply-to` (no-ack) from the
//! moment it opens, before anything is published on it, into its own
//! [`ReplySlot`] ([`super::connection`]); a call publishes with `reply_to`
//! set to it, on the same channel, and waits for the reply carrying its
//! correlation id, which is the request id (CONTRACT.md), as a responder
//! echoes it (RabbitMQ's RPC tutorials).
//!
//! A client may send its own `X-Request-Id`, so request ids, and so
//! correlation ids, can repeat. Replies still cannot cross, by
//! construction: the broker sends a direct reply to the channel that
//! published the request, and a call holds its channel alone from before
//! the publish until it ends ([`Call`]). A call that ends without its
//! reply (timeout, the client going away: the future dropped) discards its
//! channel, closed and never pooled again, so a late reply has no call to
//! reach (RabbitMQ drops replies to a closed reply-to). A reply whose
//! correlation id is not that of the call holding the channel, or that
//! comes while none does, is dropped and counted ([`Broker::stray_replies`]).
//! The pool's size is so the most `rpc` calls a service has at once; a
//! call waits for a channel within its timeout.
//!
//! The answer is the reply's body with its `content_type` as
//! `Content-Type`, and the status of its [`STATUS_HEADER`] header (an
//! integer, or a string of one, 200–599; `200` when absent; anything else
//! is a `502`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant as StdInstant;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::{Broker, DIRECT_REPLY_TO, Lease, Shared};
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

/// Where a pooled channel's direct replies go: the call holding the
/// channel, while it awaits the reply with its correlation id.
#[derive(Default)]
pub(super) struct ReplySlot(Mutex<Option<Awaited>>);

struct Awaited {
    correlation_id: String,
    reply: oneshot::Sender<Delivery>,
}

impl ReplySlot {
    /// Hands `delivery` to the awaiting call if it is that call's reply;
    /// `false` (a stray reply) otherwise.
    pub(super) fn deliver(&self, delivery: Delivery) -> bool {
        let awaited = {
            let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let correlation_id = delivery.properties.correlation_id().as_ref().map(|id| id.as_str());
            let matches = slot.as_ref().is_some_and(|awaited| correlation_id == Some(awaited.correlation_id.as_str()));
            if matches { slot.take() } else { None }
        };
        // The call may have ended since: then its reply is stray too.
        awaited.is_some_and(|awaited| awaited.reply.send(delivery).is_ok())
    }

    fn set(&self, awaited: Option<Awaited>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = awaited;
    }
}

/// An `rpc` call holding its channel. When dropped, however the call
/// ended, it stops awaiting; without its reply, its channel is discarded.
struct Call {
    lease: Lease,
    reply: oneshot::Receiver<Delivery>,
    replied: bool,
    shared: Arc<Shared>,
}

impl Call {
    /// Awaits the reply with `correlation_id` on `lease`'s channel (before publishing there).
    fn start(shared: &Arc<Shared>, lease: Lease, correlation_id: String) -> Self {
        let (sender, reply) = oneshot::channel();
        lease.replies().set(Some(Awaited { correlation_id, reply: sender }));
        let count = shared.rpc_waiters.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::rpc_waiters(shared.service(), count);
        Self { lease, reply, replied: false, shared: Arc::clone(shared) }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.lease.replies().set(None);
        if !self.replied {
            self.lease.discard();
        }
        let count = self.shared.rpc_waiters.fetch_sub(1, Ordering::Relaxed) - 1;
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
        let correlation_id = message.properties.correlation_id().as_ref().map(|id| id.as_str().to_owned()).unwrap_or_default();
        let lease = self.lease_to_publish(deadline).await?;
        let mut call = Call::start(&self.shared, lease, correlation_id);
        let properties = message.properties.with_reply_to(DIRECT_REPLY_TO.into());
        self.send(&mut call.lease, settings, routing_key, properties, &message.body, deadline).await?;
        match tokio::time::timeout_at(deadline, &mut call.reply).await {
            Ok(Ok(delivery)) => {
                call.replied = true;
                Reply::from_delivery(delivery)
            }
            // Only the call's reply or its end empties its slot (and drops the sender).
            Ok(Err(_)) | Err(_) => Err(AmqpError::NoReply { exchange: settings.exchange.clone(), timeout_ms: millis(settings.timeout) }),
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
