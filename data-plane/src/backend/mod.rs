//! Backends: what turns a prepared request into a response: the proxy
//! (HTTP/1 and HTTP/2 upstreams, with target choice, timeouts and
//! retries) and aggregation (several proxied calls merged into one JSON
//! answer); gRPC and AMQP translation join them here.

pub mod aggregate;
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
}

impl Backend {
    /// What metrics, spans and `service`-keyed rate limits call it: the
    /// proxied service's name, or `aggregate:<route>`.
    pub fn label(&self) -> &str {
        match self {
            Self::Proxy(target) => target.upstream.name(),
            Self::Aggregate(aggregation) => aggregation.label(),
        }
    }

    /// The upstream of a proxied route.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        match self {
            Self::Proxy(target) => Some(&target.upstream),
            Self::Aggregate(_) => None,
        }
    }
}
