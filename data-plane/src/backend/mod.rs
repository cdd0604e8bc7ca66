//! Backends: what turns a prepared request into a response: the proxy
//! (HTTP/1 and HTTP/2 upstreams, with target choice, timeouts and
//! retries), aggregation (several proxied calls merged into one JSON
//! answer), gRPC transcoding (an HTTP/JSON request as a gRPC call) and
//! AMQP (a request published as a message to a broker).

pub mod aggregate;
pub mod amqp;
pub mod budget;
pub mod grpc;
pub mod proxy;
pub mod retry;

use std::sync::Arc;

use crate::upstream::Upstream;

/// What serves a route.
#[derive(Debug)]
pub enum Backend {
    Proxy(proxy::Target),
    Aggregate(Box<aggregate::Aggregation>),
    Grpc(Box<grpc::route::Transcoding>),
    Amqp(Box<amqp::AmqpRoute>),
}

impl Backend {
    /// What metrics, spans and `service`-keyed rate limits call it: the
    /// service's name (proxied, transcoded or published to), or `aggregate:<route>`.
    pub fn label(&self) -> &str {
        match self {
            Self::Proxy(target) => target.upstream.name(),
            Self::Grpc(transcoding) => transcoding.target.upstream.name(),
            Self::Aggregate(aggregation) => aggregation.label(),
            Self::Amqp(route) => route.label(),
        }
    }

    /// The upstream of a proxied route (whose requests pass as they are:
    /// upgrades, gRPC passthrough).
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        match self {
            Self::Proxy(target) => Some(&target.upstream),
            Self::Aggregate(_) | Self::Grpc(_) | Self::Amqp(_) => None,
        }
    }

    /// The one HTTP service a request goes to (none for an aggregate or a
    /// broker), and so what a `consistent_hash` one hashes on.
    pub fn target(&self) -> Option<&proxy::Target> {
        match self {
            Self::Proxy(target) => Some(target),
            Self::Grpc(transcoding) => Some(&transcoding.target),
            Self::Aggregate(_) | Self::Amqp(_) => None,
        }
    }
}
