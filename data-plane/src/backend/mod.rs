//! Backends: what turns a prepared request into a response. Today the
//! proxy (HTTP/1 and HTTP/2 upstreams, with target choice, timeouts and
//! retries); aggregation and gRPC/AMQP translation join it here.

pub mod budget;
pub mod proxy;
pub mod retry;
