//! Connections that stay idle are closed: a connection counts the requests
//! in flight on it, and once none has been in flight for its idle timeout
//! it is dropped. Requests that take long, and long streaming responses,
//! are never cut by it. On a client connection a request is in flight from
//! arrival until its response body is sent or abandoned
//! (`--client-idle-timeout-ms`; an HTTP/1 connection waiting for its next
//! request goes sooner, by the header read timeout, and HTTP/2 pings do
//! not count as activity); on an upstream connection, while it is lent to
//! a request (the service's `timeouts.idle_ms`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ResponseBody};
use crate::upstream::health::now_ms;

/// The requests of one connection.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// When a request last ended (or the connection opened).
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { in_flight: AtomicUsize::new(0), last_ms: AtomicU64::new(now_ms()) })
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body whose request counts in flight until it is dropped.
#[derive(Debug)]
pub struct Counted {
    body: ResponseBody,
    _request: InFlight,
}

impl Counted {
    pub fn new(body: ResponseBody, request: InFlight) -> Self {
        Self { body, _request: request }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Runs `connection` until it ends, or until it has had no request in
/// flight for `idle`.
pub async fn until_idle<F: Future>(connection: F, activity: Arc<Activity>, idle: Duration) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    tokio::pin!(connection);
    loop {
        let quiet = now_ms().saturating_sub(activity.last_ms.load(Ordering::Relaxed));
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        if !busy && quiet >= idle_ms {
            tracing::debug!(?idle, "closing an idle connection");
            return;
        }
        let wait = if busy { idle_ms } else { idle_ms - quiet };
        tokio::select! {
            biased; // the connection first, and no random draw per poll
            _ = &mut connection => return,
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}
