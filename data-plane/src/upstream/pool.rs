//! Connections to one target: HTTP/1.1 over hyper's connection API, kept
//! for reuse. Written here rather than taken from hyper-util's legacy
//! client, which a profile of the proxy showed spending about a sixth of a
//! request's instructions on machinery a gateway does not need (a checkout
//! racing a speculative connect, a hashed map of pools per host, boxed
//! futures): each target has its own stack of idle connections.
//!
//! A connection leaves the stack for one request and comes back when that
//! request's response body is dropped ([`Lease`]). One whose last response
//! is still being read is passed over, one the upstream closed is dropped.
//! A connection not lent out for the service's idle timeout is closed by
//! its own task. A request that fails before any of it was written on a
//! reused connection (the upstream closed it at that moment) is sent once
//! more on a new one. A request that never went out is handed back with
//! the error ([`SendError::Connect`]), so a retry needs no copy of it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

use crate::body::{BoxError, UpstreamBody};
use crate::http1::{Exchange, Guarded};
use crate::idle::{Activity, InFlight, until_idle};

/// Most idle connections kept per target.
const MAX_IDLE: usize = 256;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (or a new one closed before the request
    /// went out): nothing was sent, and here is the request.
    #[error("cannot connect: {0}")]
    Connect(#[source] BoxError, Box<Request<UpstreamBody>>),
    #[error("{0}")]
    Request(#[source] hyper::Error),
}

impl SendError {
    /// The request, when it never went out.
    pub fn into_unsent(self) -> Option<Request<UpstreamBody>> {
        match self {
            Self::Connect(_, request) => Some(*request),
            Self::Request(_) => None,
        }
    }
}

/// The connections to one target.
#[derive(Debug)]
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority` of the target, what the connector dials.
    target: Uri,
    idle: Arc<Mutex<Vec<Idle>>>,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<UpstreamBody>,
    /// Counts the connection in use while lent (for its idle timeout).
    activity: Arc<Activity>,
    /// Tells the connection's wire guard which response comes next.
    exchange: Arc<Exchange>,
}

/// A connection lent to one request: back to its pool when dropped (an
/// HTTP/2 connection is shared, and only counts the request in flight).
#[derive(Debug)]
pub struct Lease {
    returns_to: Option<(Idle, Arc<Mutex<Vec<Idle>>>)>,
    _in_use: InFlight,
}

impl Lease {
    /// The lease of one stream of a multiplexed connection.
    pub(super) fn multiplexed(in_use: InFlight) -> Self {
        Self { returns_to: None, _in_use: in_use }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some((idle, pool)) = self.returns_to.take() else { return };
        if idle.sender.is_closed() {
            return;
        }
        let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_IDLE {
            pool.push(idle);
        }
    }
}

impl Pool {
    pub(super) fn new(connector: HttpsConnector<HttpConnector>, target: Uri, idle_timeout: Duration) -> Self {
        Self { connector, target, idle: Arc::default(), idle_timeout }
    }

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection,
    /// or a new one. The response body should be kept with the lease.
    pub(super) async fn send(&self, request: Request<UpstreamBody>) -> Result<(Response<Incoming>, Lease), SendError> {
        let (request, reused) = match self.checkout() {
            Some(idle) => match self.try_send(idle, request).await {
                Err(Retry::Unsent(request)) => (*request, true),
                done => return done.map_err(Retry::into_error),
            },
            None => (request, false),
        };
        if reused {
            tracing::debug!("a pooled connection closed before the request went out; sending it on a new one");
        }
        let idle = match self.connect().await {
            Ok(idle) => idle,
            Err(error) => return Err(SendError::Connect(error, Box::new(request))),
        };
        self.try_send(idle, request).await.map_err(Retry::into_error)
    }

    /// The most recently returned connection that can take a request now.
    fn checkout(&self) -> Option<Idle> {
        let mut pool = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(idle) = pool.pop() {
            if idle.sender.is_closed() {
                continue;
            }
            if idle.sender.is_ready() {
                found = Some(idle);
                break;
            }
            busy.push(idle);
        }
        pool.extend(busy.into_iter().rev());
        found
    }

    async fn try_send(&self, mut idle: Idle, request: Request<UpstreamBody>) -> Result<(Response<Incoming>, Lease), Retry> {
        let in_use = idle.activity.start();
        idle.exchange.expect_response(request.method() == http::Method::HEAD);
        match idle.sender.try_send_request(request).await {
            Ok(response) => Ok((response, Lease { returns_to: Some((idle, self.idle.clone())), _in_use: in_use })),
            Err(mut error) => match error.take_message() {
                Some(request) => Err(Retry::Unsent(Box::new(request))),
                None => Err(Retry::Failed(SendError::Request(error.into_error()))),
            },
        }
    }

    /// A new connection, its task spawned.
    async fn connect(&self) -> Result<Idle, BoxError> {
        let io = self.connector.clone().oneshot(self.target.clone()).await?;
        let exchange = Exchange::new();
        let io = TokioIo::new(Guarded::upstream(TokioIo::new(io), exchange.clone()));
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        let activity = Activity::new();
        tokio::spawn(until_idle(connection.with_upgrades(), activity.clone(), self.idle_timeout));
        Ok(Idle { sender, activity, exchange })
    }
}

/// How a try on one connection ended badly.
enum Retry {
    /// Nothing was written: the request can go on another connection.
    Unsent(Box<Request<UpstreamBody>>),
    Failed(SendError),
}

impl Retry {
    fn into_error(self) -> SendError {
        match self {
            Self::Unsent(request) => SendError::Connect("the connection closed before the request was sent".into(), request),
            Self::Failed(error) => error,
        }
    }
}
