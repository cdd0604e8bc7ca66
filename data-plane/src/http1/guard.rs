//! The IO wrapper that puts a client connection's bytes through a
//! [`Scanner`] on their way to hyper, and the verdicts on its requests that
//! it shares with the proxy.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Fault, Scanner, Violation};

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
    /// The connection began with the HTTP/2 preface.
    http2: AtomicBool,
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

    /// Whether the connection speaks HTTP/1 (as far as read: until its
    /// first bytes came, it is taken to).
    pub fn http1(&self) -> bool {
        !self.http2.load(Ordering::Relaxed)
    }
}

/// A connection whose reads are checked as HTTP/1 (see the module docs);
/// writes pass as they are.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    scanner: Scanner,
    verdicts: Arc<Verdicts>,
    /// Once a read failed, every later one fails the same way.
    failed: Option<Violation>,
}

impl<IO> Guarded<IO> {
    /// A client connection, its verdicts kept in `verdicts`.
    pub fn client(io: IO, verdicts: Arc<Verdicts>) -> Self {
        Self { io, scanner: Scanner::new(), verdicts, failed: None }
    }

    /// A client connection from a request after its first on (those before
    /// it were served by Portico's own HTTP/1 server, [`super::server`]).
    pub fn resumed_client(io: IO, verdicts: Arc<Verdicts>) -> Self {
        Self { io, scanner: Scanner::resumed(), verdicts, failed: None }
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
        let fed = this.scanner.feed(&buf.filled()[before..]);
        if let Some(upgrade) = this.scanner.upgrade_request() {
            let _ = this.verdicts.upgrade.set(upgrade);
        }
        if this.scanner.http2() {
            this.verdicts.http2.store(true, Ordering::Relaxed);
        }
        match fed {
            Ok(()) => Poll::Ready(Ok(())),
            Err(Fault::Head { index, violation }) => {
                let _ = this.verdicts.first_bad.set((index, violation));
                Poll::Ready(Ok(()))
            }
            Err(Fault::Stream { at, violation }) => {
                tracing::debug!(%violation, "HTTP/1 stream refused");
                this.failed = Some(violation);
                // Sound bytes (a request head) go on, so that the request is
                // answered when its body fails.
                if at > 0 {
                    buf.set_filled(before + at);
                    Poll::Ready(Ok(()))
                } else {
                    buf.set_filled(before);
                    Poll::Ready(Err(refused(violation)))
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
