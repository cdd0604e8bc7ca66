//! Connections to one target of a `grpc` or `grpcs` service: HTTP/2 over
//! hyper's connection API, the shape of [`super::pool`] (`send(request) ->
//! (response, lease)`) but multiplexed: one connection carries every
//! request, as many at once as the target's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! allows; when it is full (or closed) the next request opens another, up to
//! [`MAX_CONNECTIONS`], past which requests queue on the least busy one.
//!
//! `grpc` targets are spoken to in cleartext with prior knowledge (h2c),
//! `grpcs` ones over rustls offering only ALPN `h2`, verified exactly like
//! `https` targets ([`super::tls`]). Keep-alive pings notice a dead
//! connection ([`KEEP_ALIVE_INTERVAL`], [`KEEP_ALIVE_TIMEOUT`]); flow control
//! is hyper's and h2's, with an adaptive window. A connection with no stream
//! for the service's idle timeout is closed by its own task.
//!
//! Requests come origin-form with `Host` set, as for HTTP/1: here they
//! become HTTP/2 requests with an absolute URI (`http` or `https`, and the
//! `Host` as `:authority`) and `te: trailers`, which gRPC requires.
//! Dropping the response future or its body resets the stream (hyper sends
//! `RST_STREAM(CANCEL)`), so a client that goes away cancels the call.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::dial::Dialer;
use super::{Lease, SendError};
use crate::body::{BoxError, UpstreamBody};
use crate::idle::{Activity, InFlight, until_idle};

/// Largest response head (names, values and 32 bytes per field) taken
/// from a target, as the pipeline's limit on requests
/// (`proxy::headers::MAX_HEADER_BYTES`; hyper's default is 16 KiB).
const MAX_RESPONSE_HEADER_BYTES: u32 = 64 * 1024;
/// Most connections kept per target.
const MAX_CONNECTIONS: usize = 8;
/// A PING after this long without a frame from the target...
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// ...which must be answered within this long, or the connection is closed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 connections to one target.
#[derive(Debug)]
pub(super) struct H2Pool {
    dialer: Dialer,
    scheme: Scheme,
    authority: Authority,
    connections: Mutex<Vec<Connection>>,
    /// Held while a connection is being made, so that requests arriving
    /// together share it rather than each opening one; it holds when the
    /// last attempt failed, so that those that waited fail with it rather
    /// than each trying (and waiting out the connect timeout) in turn.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Connection {
    sender: SendRequest<UpstreamBody>,
    /// Streams in flight (and when the last ended, for the idle timeout).
    activity: Arc<Activity>,
    /// The target's `SETTINGS_MAX_CONCURRENT_STREAMS`, as last seen by the connection's task.
    max_streams: Arc<AtomicUsize>,
}

/// One stream of a connection, counted in flight until the guard drops.
type Claimed = (SendRequest<UpstreamBody>, InFlight);

impl Connection {
    fn is_full(&self) -> bool {
        self.activity.in_flight() >= self.max_streams.load(Ordering::Relaxed)
    }

    fn claim(&self) -> Claimed {
        (self.sender.clone(), self.activity.start())
    }
}

/// A connection attempt made while this request waited for it failed.
#[derive(Debug, thiserror::Error)]
#[error("connecting to the target failed just now")]
struct FailedMeanwhile;

/// The target did not agree to HTTP/2 in the TLS handshake.
#[derive(Debug, thiserror::Error)]
#[error("the target did not agree to HTTP/2 (ALPN h2) in the TLS handshake")]
struct NoH2;

impl H2Pool {
    pub(super) fn new(dialer: Dialer, scheme: Scheme, authority: Authority, idle_timeout: Duration) -> Self {
        Self { dialer, scheme, authority, connections: Mutex::default(), connecting: tokio::sync::Mutex::new(None), idle_timeout }
    }

    /// Sends `request` (origin-form URI, `Host` set) as an HTTP/2 request on
    /// a connection with a free stream, or a new one. A request that never
    /// went out (no connection, or one that closed first) comes back in
    /// [`SendError::Connect`].
    pub(super) async fn send(&self, request: Request<UpstreamBody>) -> Result<(Response<super::Incoming>, Lease), SendError> {
        let request = self.to_http2(request);
        let (mut sender, in_flight) = match self.available() {
            Some(claimed) => claimed,
            None => match self.connection().await {
                Ok(claimed) => claimed,
                Err(error) => return Err(SendError::Connect(error, Box::new(request))),
            },
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response.map(super::Incoming::H2), Lease::multiplexed(in_flight))),
            Err(mut error) => match error.take_message() {
                Some(request) => Err(SendError::Connect("the connection closed before the request was sent".into(), Box::new(request))),
                None => Err(SendError::Request(Box::new(error.into_error()))),
            },
        }
    }

    /// The request as HTTP/2 wants it: absolute URI with the `Host` as
    /// authority, no `Host` field, `te: trailers`.
    fn to_http2(&self, mut request: Request<UpstreamBody>) -> Request<UpstreamBody> {
        let host = request.headers_mut().remove(header::HOST);
        let authority = host.and_then(|host| Authority::try_from(host.as_bytes()).ok()).unwrap_or_else(|| self.authority.clone());
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(authority);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = Version::HTTP_2;
        request.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
        request
    }

    /// A stream of a connection with one free (claimed under the lock, so
    /// requests arriving together do not all take the last one), forgetting closed connections.
    fn available(&self) -> Option<Claimed> {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        connections.retain(|c| !c.sender.is_closed());
        connections.iter().find(|c| !c.is_full()).map(Connection::claim)
    }

    /// A stream for the next request: on a connection that freed up or was
    /// made meanwhile, a new one, or (at [`MAX_CONNECTIONS`]) the least busy.
    async fn connection(&self) -> Result<Claimed, BoxError> {
        let asked = Instant::now();
        let mut last_failure = self.connecting.lock().await;
        if let Some(connection) = self.available() {
            return Ok(connection);
        }
        if last_failure.is_some_and(|failed| failed >= asked) {
            return Err(Box::new(FailedMeanwhile));
        }
        {
            let connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
            if connections.len() >= MAX_CONNECTIONS
                && let Some(least_busy) = connections.iter().min_by_key(|c| c.activity.in_flight())
            {
                return Ok(least_busy.claim());
            }
        }
        let connection = self.connect().await.inspect_err(|_| *last_failure = Some(Instant::now()))?;
        let claimed = connection.claim();
        self.connections.lock().unwrap_or_else(PoisonError::into_inner).push(connection);
        Ok(claimed)
    }

    /// A new connection, its task spawned.
    async fn connect(&self) -> Result<Connection, BoxError> {
        match tokio::time::timeout(self.dialer.connect_timeout, self.dial()).await {
            Ok(connected) => connected,
            Err(_) => Err(Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "the connection was not ready within connect_ms"))),
        }
    }

    async fn dial(&self) -> Result<Connection, BoxError> {
        let tls = self.scheme == Scheme::HTTPS;
        let io = self.dialer.dial(&self.authority, if tls { 443 } else { 80 }, tls).await?;
        if tls && io.alpn() != Some(b"h2") {
            return Err(Box::new(NoH2));
        }
        self.handshake(TokioIo::new(io)).await
    }

    async fn handshake<T>(&self, io: T) -> Result<Connection, BoxError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .max_header_list_size(MAX_RESPONSE_HEADER_BYTES)
            .handshake(io)
            .await?;
        let activity = Activity::new();
        let max_streams = Arc::new(AtomicUsize::new(connection.current_max_send_streams()));
        let seen = max_streams.clone();
        let mut connection = Box::pin(connection);
        let driven = std::future::poll_fn(move |cx| {
            let polled = connection.as_mut().poll(cx);
            seen.store(connection.current_max_send_streams(), Ordering::Relaxed);
            polled
        });
        tokio::spawn(until_idle(driven, activity.clone(), self.idle_timeout));
        Ok(Connection { sender, activity, max_streams })
    }
}
