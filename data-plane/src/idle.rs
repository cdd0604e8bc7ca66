//! Connections that stay idle are closed: a connection counts the requests
//! in flight on it, and once none has been in flight for its idle timeout
//! it is dropped. Requests that take long, and long streaming responses,
//! are never cut by it. On a client connection a request is in flight from
//! arrival until its response body is sent or abandoned
//! (`--client-idle-timeout-ms`; an HTTP/1 connection goes sooner, by the
//! header read timeout, and HTTP/2 pings do not count as activity); on an
//! upstream connection, while it is lent to a request (the service's
//! `timeouts.idle_ms`). A client connection's header read timeout is kept
//! here too, rather than by hyper, whose timer costs a boxed sleep
//! registered and removed per request: an HTTP/1 connection with no request
//! in flight is waiting for its next request head, or reading it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::access_log::Pending;
use crate::body::{BoxError, ResponseBody};
use crate::proxy::Epilogue;
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

    /// Starts the quiet time afresh (a client connection once its TLS
    /// handshake is done and its first byte came: the head's time starts then).
    pub fn restart(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
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

/// A response body whose request counts in flight until it is dropped,
/// and is then logged and its span ended, if it has them (its access log
/// line has the bytes the body sent).
#[derive(Debug)]
pub struct Counted {
    body: ResponseBody,
    _request: InFlight,
    logged: Option<Pending>,
    traced: Option<crate::telemetry::Span>,
    /// The body was read to its end, or none follows the head.
    ended: bool,
}

impl Counted {
    pub fn new(body: ResponseBody, request: InFlight, epilogue: Epilogue) -> Self {
        Self { body, _request: request, logged: epilogue.logged, traced: epilogue.traced, ended: epilogue.bodiless }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(logged) = &mut this.logged {
                    logged.sent(frame.data_ref().map_or(0, Bytes::len));
                }
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // hyper may stop polling a body that says it has ended.
        let completed = self.ended || self.body.is_end_stream();
        if let Some(logged) = self.logged.take() {
            logged.finish(completed);
        }
        if let Some(span) = self.traced.take() {
            let cut: &dyn std::fmt::Display = &"the response body was cut short";
            span.end((!completed).then_some(cut));
        }
    }
}

/// Runs `connection` until it ends, or until it has had no request in
/// flight for `idle`.
pub async fn until_idle<F: Future>(connection: F, activity: Arc<Activity>, idle: Duration) {
    let _ = until_quiet(connection, activity, || idle).await;
}

/// Runs `connection` until it ends (giving its output), or until it has
/// had no request in flight for as long as `limit()` says when asked (a
/// client connection's limit is shorter once it turns out to speak HTTP/1:
/// the header read timeout, see `server.rs`). The clock is read when a
/// request ends and when the one timer per connection fires, never per read.
pub async fn until_quiet<F: Future>(connection: F, activity: Arc<Activity>, limit: impl Fn() -> Duration) -> Option<F::Output> {
    tokio::pin!(connection);
    loop {
        let limit_ms = u64::try_from(limit().as_millis()).unwrap_or(u64::MAX);
        let quiet = now_ms().saturating_sub(activity.last_ms.load(Ordering::Relaxed));
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        if !busy && quiet >= limit_ms {
            tracing::debug!(quiet_ms = quiet, "closing a connection with no request in flight");
            return None;
        }
        let wait = if busy { limit_ms } else { limit_ms - quiet };
        if let Woke::Finished(output) = connection_or_timer(connection.as_mut(), Duration::from_millis(wait)).await {
            return Some(output);
        }
    }
}

enum Woke<T> {
    Finished(T),
    Timer,
}

/// Polls `connection` until it finishes or `wait` passes. The timer is
/// polled once, to register it; after that a wake of the connection's task
/// only asks whether it has fired (its registration wakes the task when it
/// does), where polling it again on every wake would cost a timer poll per
/// read and write.
async fn connection_or_timer<F: Future>(mut connection: Pin<&mut F>, wait: Duration) -> Woke<F::Output> {
    let mut timer = std::pin::pin!(tokio::time::sleep(wait));
    let mut registered = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(Woke::Finished(output));
        }
        if registered {
            return if timer.is_elapsed() { Poll::Ready(Woke::Timer) } else { Poll::Pending };
        }
        // With the task's cooperative budget spent (by the connection's own
        // reads and writes), tokio's timer returns without registering, and
        // wakes the task to be polled again: it is registered only when
        // polled with budget left.
        registered = tokio::task::coop::has_budget_remaining();
        timer.as_mut().poll(cx).map(|()| Woke::Timer)
    })
    .await
}
