//! HTTP/1.1 to `http` and `https` targets, driven in the request's own
//! task: the fast lane. hyper's client would spawn a task per connection
//! and hand every request and response across a channel and a oneshot;
//! here the request's head is written from a buffer kept with the
//! connection, the response's head read with the strict reader of
//! [`crate::http1::response`], and its body read from the socket by the
//! body itself as the client's connection asks for it ([`Body`]). No task,
//! channel or timer per request.
//!
//! Connections wait in a stack per target (the most recently used first).
//! One goes back only after a response framed to its end with nothing
//! after it (over TLS, no record decrypted and unread either), on HTTP/1.1
//! without `Connection: close`, its request body sent whole; any other is
//! closed, as is one that sat idle for the service's idle timeout or became
//! readable while idle (closed by the target, or sending what nobody asked
//! for): when met at checkout, or by a sweep of the idle ones a few times
//! a second. A request whose reused connection closes before any answer
//! (the target closed it at that moment) goes once more on a new one when
//! it is whole (its body kept, or none of it taken yet) and either its
//! head never went out whole or it is idempotent.

mod exchange;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::HeaderMap;
use http::uri::{Authority, Scheme};
use http::{Request, Response};

pub(super) use self::exchange::Body;
use self::exchange::Failed;
pub use self::exchange::Upgraded;
use super::dial::{Dialer, Io};
use super::{Lease, SendError};
use crate::body::UpstreamBody;
use crate::proxy::headers::Forwarding;

/// Most idle connections kept per target.
const MAX_IDLE: usize = 256;
/// Read buffer of a connection (grown for larger reads).
const READ_BUFFER: usize = 8 * 1024;
/// Largest buffer an idle connection keeps.
const KEPT_BUFFER: usize = 64 * 1024;

/// The connections to one target.
#[derive(Debug)]
pub(super) struct Pool {
    dialer: Dialer,
    authority: Authority,
    tls: bool,
    idle: Arc<Idle>,
}

/// A target's idle connections, most recently used last.
#[derive(Debug)]
pub(super) struct Idle {
    connections: Mutex<Vec<(Box<Conn>, Instant)>>,
    timeout: Duration,
    /// A sweep closes connections idle past the timeout (started with the first one kept).
    sweeping: AtomicBool,
}

/// A connection and its buffers, kept between requests (boxed, so that
/// it moves between the pool and a request's body as a pointer).
#[derive(Debug)]
pub(super) struct Conn {
    io: Io,
    /// Bytes read and not yet taken.
    read: BytesMut,
    /// The request head being written (its capacity kept).
    write: Vec<u8>,
    /// The header map the next response head is read into: the previous
    /// request's, emptied (`http1::kept`: no map allocated per response).
    spare: HeaderMap,
    /// It carried a request before.
    reused: bool,
}

impl Conn {
    fn new(io: Io) -> Box<Self> {
        Box::new(Self {
            io,
            read: BytesMut::with_capacity(READ_BUFFER),
            write: Vec::with_capacity(1024),
            spare: HeaderMap::new(),
            reused: false,
        })
    }

    /// Whether an idle connection can take a request: nothing arrived on it
    /// while idle (not the target's close, not bytes nobody asked for).
    /// Costs no system call unless the socket became readable.
    fn is_usable(&mut self) -> bool {
        if self.holds_decrypted() {
            return false;
        }
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match self.io.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: a TLS session ticket is read and leaves nothing;
            // anything else is the end or unsolicited bytes.
            Poll::Ready(Ok(())) => {
                matches!(tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), &mut cx, &mut self.read), Poll::Pending)
                    && self.read.is_empty()
            }
        }
    }
}

impl Conn {
    /// Over TLS, whether records the target sent were decrypted but not
    /// yet read (tokio-rustls hands out one record per read): bytes beyond
    /// a response that the socket no longer shows.
    fn holds_decrypted(&self) -> bool {
        match &self.io {
            Io::Tcp(_) => false,
            Io::Tls(stream) => !stream.get_ref().1.wants_read(),
        }
    }
}

impl Idle {
    /// Keeps `conn` for the next request (with buffers of the usual size:
    /// a large body once sent or read is not kept for as long as it idles).
    fn put(self: &Arc<Self>, mut conn: Box<Conn>) {
        conn.reused = true;
        if conn.write.capacity() > KEPT_BUFFER {
            conn.write = Vec::new();
        }
        if conn.read.capacity() > KEPT_BUFFER {
            conn.read = BytesMut::with_capacity(READ_BUFFER);
        }
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        if connections.len() < MAX_IDLE {
            connections.push((conn, Instant::now()));
        }
        drop(connections);
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            // A body dropped while its runtime shuts down has none to sweep on.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(sweep(Arc::downgrade(self)))),
                Err(_) => self.sweeping.store(false, Ordering::Relaxed),
            }
        }
    }

    /// The most recently used connection that can take a request.
    fn take(&self) -> Option<Box<Conn>> {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((mut conn, since)) = connections.pop() {
            if since.elapsed() >= self.timeout {
                connections.clear(); // those below were idle longer still
                return None;
            }
            if conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }
}

/// Every this long, idle connections are looked at: those the target
/// closed (or that sent something) are closed on our side too, those idle
/// past the timeout are closed. Stops while none is idle.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

async fn sweep(idle: Weak<Idle>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(idle) = idle.upgrade() else { return };
        let mut connections = idle.connections.lock().unwrap_or_else(PoisonError::into_inner);
        connections.retain_mut(|(conn, since)| since.elapsed() < idle.timeout && conn.is_usable());
        if connections.is_empty() {
            idle.sweeping.store(false, Ordering::Relaxed);
            return;
        }
    }
}

impl Pool {
    pub(super) fn new(dialer: Dialer, scheme: &Scheme, authority: Authority, idle_timeout: Duration) -> Self {
        let idle = Arc::new(Idle { connections: Mutex::default(), timeout: idle_timeout, sweeping: AtomicBool::new(false) });
        Self { dialer, authority, tls: *scheme == Scheme::HTTPS, idle }
    }

    /// Sends `request` (origin-form URI, `Host` set), with the
    /// `forwarding` fields after its own, on an idle connection, or a new
    /// one. Not an `async fn`, whose arguments its future would hold twice
    /// (as taken, and as the body's own bindings): the block's future holds
    /// the request once, and the exchanges borrow it.
    #[expect(clippy::manual_async_fn, reason = "an async fn's future holds its arguments twice")]
    pub(super) fn send<'a>(
        &'a self,
        mut request: Request<UpstreamBody>,
        forwarding: Option<&'a Forwarding<'a>>,
    ) -> impl Future<Output = Result<(Response<super::Incoming>, Lease), SendError>> + Send + 'a {
        async move {
            if let Some(conn) = self.idle.take() {
                match exchange::exchange(conn, &mut request, forwarding, &self.idle).await {
                    Err(Failed::Unsent) => {
                        tracing::debug!("a pooled connection closed before the request was answered; sending it on a new one");
                    }
                    done => return done.map(|response| (response, Lease::default())).map_err(|failed| failed.into_error(request)),
                }
            }
            // Boxed: a connect (TCP, TLS) is rare on a warm pool, and would
            // otherwise enlarge every request's future, which is moved whole.
            let conn = match Box::pin(self.connect()).await {
                Ok(conn) => conn,
                Err(error) => return Err(SendError::Connect(error, Box::new(request))),
            };
            match exchange::exchange(conn, &mut request, forwarding, &self.idle).await {
                Ok(response) => Ok((response, Lease::default())),
                Err(failed) => Err(failed.into_error(request)),
            }
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, crate::body::BoxError> {
        let default_port = if self.tls { 443 } else { 80 };
        match tokio::time::timeout(self.dialer.connect_timeout, self.dialer.dial(&self.authority, default_port, self.tls)).await {
            Ok(io) => Ok(Conn::new(io?)),
            Err(_) => Err(Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "no connection within connect_ms"))),
        }
    }
}
