//! The IO wrapper that puts a connection's bytes through a [`Scanner`] on
//! their way to hyper, and what it shares with the proxy: the verdicts on a
//! client connection's requests, the responses awaited on an upstream one.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Fault, Scanner, Side, Violation};

/// What the scanner found of one client connection's requests.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// The first bad head's position and rule (nothing after it is checked).
    first_bad: OnceLock<(u64, Violation)>,
    /// The position of the request that asked for an upgrade (nothing after
    /// it is checked).
    upgrade: OnceLock<u64>,
    /// Requests handed to the proxy so far.
    served: AtomicU64,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its head keeps the rules; the connection may go on.
    Pass,
    /// Its head broke a rule: answer it with an error and close.
    Refuse(Violation),
    /// It asks for an upgrade, past which the bytes are not checked: unless
    /// it is answered `101`, close the connection after it.
    Upgrade,
}

impl Verdicts {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The verdict on the connection's next request: call once per request,
    /// in the order they come (HTTP/1 serves them one after another).
    pub fn next_request(&self) -> Verdict {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        if let Some((_, violation)) = self.first_bad.get().filter(|(bad, _)| *bad <= index) {
            return Verdict::Refuse(*violation);
        }
        if self.upgrade.get().is_some_and(|upgrade| *upgrade <= index) {
            return Verdict::Upgrade;
        }
        Verdict::Pass
    }
}

/// What an upstream connection's next response answers: set before each request.
#[derive(Debug, Default)]
pub struct Exchange(AtomicU8);

const NOTHING: u8 = 0;
const REQUEST: u8 = 1;
const HEAD_REQUEST: u8 = 2;

impl Exchange {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A request is about to be sent (`head`: a `HEAD`, answered without a body).
    pub fn expect_response(&self, head: bool) {
        self.0.store(if head { HEAD_REQUEST } else { REQUEST }, Ordering::Release);
    }

    fn take(&self) -> Option<bool> {
        match self.0.swap(NOTHING, Ordering::Acquire) {
            NOTHING => None,
            awaited => Some(awaited == HEAD_REQUEST),
        }
    }
}

#[derive(Debug)]
enum Link {
    Client(Arc<Verdicts>),
    Upstream(Arc<Exchange>),
}

/// A connection whose reads are checked as HTTP/1 (see the module docs);
/// writes pass as they are.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
    link: Link,
    /// Once a read failed, every later one fails the same way.
    failed: Option<Violation>,
}

impl<IO> Guarded<IO> {
    /// A client connection, its verdicts kept in `verdicts`.
    pub fn client(io: IO, verdicts: Arc<Verdicts>) -> Self {
        Self { io, scanner: Scanner::new(Side::Client), link: Link::Client(verdicts), failed: None }
    }

    /// An upstream connection, told of each request by `exchange`.
    pub fn upstream(io: IO, exchange: Arc<Exchange>) -> Self {
        Self { io, scanner: Scanner::new(Side::Upstream), link: Link::Upstream(exchange), failed: None }
    }
}

fn refused(violation: Violation) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, violation)
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(violation) = this.failed {
            return Poll::Ready(Err(refused(violation)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Link::Upstream(exchange) = &this.link
            && let Some(head) = exchange.take()
        {
            this.scanner.expect_response(head);
        }
        let fed = this.scanner.feed(&buf.filled()[before..]);
        if let (Link::Client(verdicts), Some(upgrade)) = (&this.link, this.scanner.upgrade_request()) {
            let _ = verdicts.upgrade.set(upgrade);
        }
        match fed {
            Ok(()) => Poll::Ready(Ok(())),
            Err(Fault::Head { index, violation }) => {
                if let Link::Client(verdicts) = &this.link {
                    let _ = verdicts.first_bad.set((index, violation));
                }
                Poll::Ready(Ok(()))
            }
            Err(Fault::Stream { at, violation }) => {
                tracing::debug!(%violation, "HTTP/1 stream refused");
                this.failed = Some(violation);
                // A client's sound bytes (a request head) go on, so that its
                // request is answered when its body fails; an upstream's
                // read fails whole, so a bad response is never half used.
                match &this.link {
                    Link::Client(_) if at > 0 => {
                        buf.set_filled(before + at);
                        Poll::Ready(Ok(()))
                    }
                    _ => {
                        buf.set_filled(before);
                        Poll::Ready(Err(refused(violation)))
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
