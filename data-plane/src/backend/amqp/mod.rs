//! HTTP to AMQP (RabbitMQ): a route's request published as a message,
//! answered once the broker confirmed it (`publish`), or with the reply a
//! responder sends back through direct reply-to (`rpc`).
//!
//! - [`connection`]: a service's [`Broker`]: one connection per node,
//!   failover over its targets, reconnection with backoff, a bounded pool
//!   of confirm-mode channels, fast `503`s while down or blocked;
//! - [`publish`]: the [`Message`] a request becomes, [`Broker::publish`]
//!   and its confirm (`202 {"message_id"}`, [`accepted`]);
//! - [`rpc`]: [`Broker::rpc`], each call holding its channel until its
//!   reply (correlation id: the request id), the [`Reply`];
//! - [`error`]: [`AmqpError`], each failure's status and code;
//! - [`metrics`], the `portico_amqp_*` metrics;
//! - [`route`]: an `amqp` route ([`AmqpRoute`]): the body read, the
//!   routing key expanded, the message published as the route's mode says.

pub mod connection;
pub mod error;
pub mod metrics;
pub mod publish;
pub mod route;
pub mod rpc;
#[cfg(test)]
mod tests;

pub use connection::{Broker, BrokerSettings, Credentials, TlsSettings};
pub use error::AmqpError;
pub use publish::{Message, MessageSettings, accepted};
pub use route::AmqpRoute;
pub use rpc::{Reply, STATUS_HEADER};
