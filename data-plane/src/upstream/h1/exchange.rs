//! One request and its response on a connection: the head written, the
//! request body streamed (with `Content-Length`, or chunked when its size
//! is not known) while the response is awaited, since a target may answer
//! before it has read the whole body; then the response body read by
//! [`Body`], which goes on sending what is left of the request body.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::FutureExt;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::{Conn, Idle};
use crate::body::{BoxError, UpstreamBody};
use crate::http1::response::{self, CutShort, Next, Unframer};
use crate::http1::{Replayed, Violation};
use crate::proxy::headers::Forwarding;
use crate::upstream::{Incoming, SendError};

/// Why an exchange gave no response.
pub(super) enum Failed {
    /// The connection closed before any answer, and the request may go on
    /// another one: it is whole again (body and all), and its head never
    /// went out whole or it is idempotent.
    Unsent,
    Error(BoxError),
}

impl Failed {
    /// The error of a request that gets no further try (`request`: it, whole when unsent).
    pub(super) fn into_error(self, request: Request<UpstreamBody>) -> SendError {
        match self {
            Self::Unsent => SendError::Connect("the connection closed before the request was answered".into(), Box::new(request)),
            Self::Error(error) => SendError::Request(error),
        }
    }
}

/// A rule of the wire broken by the target, as a read's error (what
/// [`crate::http1::violation`] finds).
fn violation(violation: Violation) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, violation)
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: the request's own headers say nothing else.
    None,
    Length(u64),
    Chunked,
}

/// Sends `request` on `conn`, with the `forwarding` fields after its own,
/// and reads the response head. A response body returns `conn` to `idle`
/// once read to its end, when it can be reused. The request is borrowed,
/// not taken: its body goes (and comes back when it is [`Failed::Unsent`]),
/// the rest stays with the caller, so that the request is not stored in
/// both futures.
pub(super) async fn exchange(
    mut conn: Box<Conn>,
    request: &mut Request<UpstreamBody>,
    forwarding: Option<&Forwarding<'_>>,
    idle: &Arc<Idle>,
) -> Result<Response<Incoming>, Failed> {
    conn.write.clear();
    // In a block: the body is not kept in the future beside its upload.
    let (kept, mut upload) = {
        let mut body = std::mem::take(request.body_mut());
        let framing = if body.is_end_stream() { Framing::None } else { body.size_hint().exact().map_or(Framing::Chunked, Framing::Length) };
        write_head(request, forwarding, framing, &mut conn.write);
        // A body kept whole goes with the head, in one write, and stays for a replay.
        let kept = match &mut body {
            UpstreamBody::Kept(full) if framing != Framing::None => {
                let data = full.frame().now_or_never().and_then(|frame| frame?.ok()?.into_data().ok()).unwrap_or_default();
                Some(data)
            }
            _ => None,
        };
        let upload = (kept.is_none() && framing != Framing::None).then(|| Box::new(Upload::new(body, framing == Framing::Chunked)));
        (kept, upload)
    };
    let head_length = conn.write.len();
    if let Some(data) = &kept {
        conn.write.extend_from_slice(data);
    }
    let to_head = request.method() == Method::HEAD;
    let mut written = 0;
    let mut write_failed = None;
    let mut sent = false;
    let head = poll_fn(|cx| {
        if write_failed.is_none() && !sent {
            match poll_send(cx, &mut conn, &mut written, upload.as_deref_mut()) {
                Poll::Ready(Ok(())) => sent = true,
                Poll::Ready(Err(Upstream(error))) => write_failed = Some(error),
                Poll::Ready(Err(Client(error))) => return Poll::Ready(Err(Ended::Client(error))),
                Poll::Pending => {}
            }
        }
        loop {
            // Nothing to parse before the first read.
            if !conn.read.is_empty() {
                match response::read_head(&mut conn.read, to_head, &mut conn.spare) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(broken) => return Poll::Ready(Err(Ended::Io(violation(broken)))),
                }
            }
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.read)) {
                Ok(0) => return Poll::Ready(Err(Ended::Closed)),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(Ended::Io(error))),
            }
        }
    })
    .await;
    let head = match head {
        Ok(head) => head,
        Err(Ended::Client(error)) => return Err(Failed::Error(error)),
        Err(ended) => {
            // Sent again only if nothing of it can have been acted on (its
            // head never went out whole), or it is idempotent; and only
            // whole: with its body kept, or no frame of it taken.
            let answered_nothing = conn.read.is_empty();
            let may_resend = written < head_length || request.method().is_idempotent();
            let replayable = upload.as_ref().is_none_or(|upload| !upload.started);
            if conn.reused && answered_nothing && may_resend && replayable {
                *request.body_mut() = match (kept, upload) {
                    (Some(data), _) => UpstreamBody::Kept(Full::new(data)),
                    (None, Some(upload)) => upload.body,
                    (None, None) => UpstreamBody::default(),
                };
                return Err(Failed::Unsent);
            }
            let error = match (ended, write_failed) {
                (Ended::Io(error), _) | (Ended::Closed, Some(error)) => error,
                (Ended::Closed, None) => {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "the upstream closed the connection without an answer")
                }
                (Ended::Client(_), _) => unreachable!("handled above"),
            };
            return Err(Failed::Error(Box::new(error)));
        }
    };
    let (response, ()) = head.response.into_parts();
    // What follows a `101` is the new protocol's (and its own to read).
    if response.status == StatusCode::SWITCHING_PROTOCOLS {
        let asked = request.method() == Method::CONNECT || request.headers().contains_key(header::UPGRADE);
        if !asked {
            return Err(Failed::Error(Box::new(violation(Violation::UnaskedUpgrade))));
        }
        return Ok(Response::from_parts(response, Incoming::Switched(Some(Upgraded::new(conn.io, conn.read)))));
    }
    head.body.check(&conn.read).map_err(|broken| Failed::Error(Box::new(violation(broken))))?;
    // The request's map takes the next response head on this connection.
    conn.spare = crate::http1::kept(std::mem::take(request.headers_mut()));
    let keep_alive = head.keep_alive && write_failed.is_none();
    let upload = upload.filter(|_| !sent);
    let body = Body { conn: Some(conn), unframer: head.body, upload, keep_alive, idle: idle.clone(), written };
    Ok(Response::from_parts(response, Incoming::H1(body)))
}

/// How waiting for a response head ended without one.
enum Ended {
    /// The client's request body failed.
    Client(BoxError),
    Io(io::Error),
    /// The connection closed.
    Closed,
}

/// Most bytes of the request body buffered before they are written.
const MAX_BUFFERED_UPLOAD: usize = 64 * 1024;

/// A failed send: the target's connection, or the client's body.
enum SendFailure {
    Upstream(io::Error),
    Client(BoxError),
}
use SendFailure::{Client, Upstream};

/// Writes the connection's buffer (from `written` on: the head, then
/// what the request body gives) until the body has ended and all is sent.
/// The body is asked for its next frame before the buffer is written, so
/// a body that fails at once (a malformed chunk that came with the head)
/// leaves nothing half sent.
fn poll_send(cx: &mut Context<'_>, conn: &mut Conn, written: &mut usize, mut upload: Option<&mut Upload>) -> Poll<Result<(), SendFailure>> {
    loop {
        let mut waiting_for_body = false;
        if let Some(upload) = upload.as_deref_mut().filter(|upload| !upload.ended) {
            if *written == conn.write.len() {
                conn.write.clear();
                *written = 0;
            }
            if conn.write.len() - *written < MAX_BUFFERED_UPLOAD {
                match Pin::new(&mut upload.body).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        upload.take(frame, &mut conn.write).map_err(Client)?;
                        continue;
                    }
                    Poll::Pending => waiting_for_body = true,
                }
            }
        }
        if *written < conn.write.len() {
            match ready!(Pin::new(&mut conn.io).poll_write(cx, &conn.write[*written..])) {
                Ok(0) => return Poll::Ready(Err(Upstream(io::ErrorKind::WriteZero.into()))),
                Ok(n) => *written += n,
                Err(error) => return Poll::Ready(Err(Upstream(error))),
            }
            continue;
        }
        ready!(Pin::new(&mut conn.io).poll_flush(cx)).map_err(Upstream)?;
        return if waiting_for_body { Poll::Pending } else { Poll::Ready(Ok(())) };
    }
}

/// `method target HTTP/1.1`, the headers and the forwarding fields, and
/// the body's framing.
fn write_head<B>(request: &Request<B>, forwarding: Option<&Forwarding<'_>>, framing: Framing, out: &mut Vec<u8>) {
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.uri().path_and_query().map_or("/", |target| target.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(request.headers(), framing == Framing::None, out);
    if let Some(forwarding) = forwarding {
        forwarding.write(out);
    }
    match framing {
        Framing::None => {}
        Framing::Length(length) => {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The fields but `Transfer-Encoding` and `Content-Length`, which the
/// body's framing writes (without a body, a client's `Content-Length: 0`
/// is kept, as hyper's client keeps it).
fn write_headers(headers: &HeaderMap, no_body: bool, out: &mut Vec<u8>) {
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING || (*name == header::CONTENT_LENGTH && !(no_body && value == "0")) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A request body being sent.
#[derive(Debug)]
struct Upload {
    body: UpstreamBody,
    chunked: bool,
    /// A frame was taken from the body: it can no longer be sent again.
    started: bool,
    /// The body gave its last frame (its end is being written).
    ended: bool,
}

impl Upload {
    fn new(body: UpstreamBody, chunked: bool) -> Self {
        Self { body, chunked, started: false, ended: false }
    }

    /// Encodes a frame of the body (`None`: its end) into `out`.
    fn take(&mut self, frame: Option<Result<Frame<Bytes>, BoxError>>, out: &mut Vec<u8>) -> Result<(), BoxError> {
        self.started = true;
        match frame {
            None => {
                self.ended = true;
                if self.chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            Some(frame) => {
                // Trailers are not sent.
                let Ok(data) = frame?.into_data() else { return Ok(()) };
                if self.chunked && !data.is_empty() {
                    let _ = write!(out, "{:x}\r\n", data.len());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&data);
                }
            }
        }
        Ok(())
    }
}

/// An upstream response body over HTTP/1.1, read from the connection as
/// it is polled (and sending what is left of the request body meanwhile).
/// Its connection goes back to the pool when the body ended cleanly;
/// dropped before that, the connection is closed.
#[derive(Debug)]
pub struct Body {
    /// `None` once the body ended.
    conn: Option<Box<Conn>>,
    unframer: Unframer,
    upload: Option<Box<Upload>>,
    /// The connection may carry another request after this response.
    keep_alive: bool,
    idle: Arc<Idle>,
    /// Bytes of the connection's write buffer sent (for the upload).
    written: usize,
}

impl Body {
    /// The body ended: its connection goes back to the pool if it can be reused.
    fn finish(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let sent = self.upload.is_none() && conn.write.len() == self.written;
        let nothing_after = conn.read.is_empty() && !conn.holds_decrypted();
        if self.keep_alive && sent && nothing_after {
            self.idle.put(conn);
        } else if !nothing_after {
            tracing::debug!("the upstream sent bytes after the response: its connection is closed");
        }
    }

    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        if self.upload.is_none() && conn.write.len() == self.written {
            return Ok(());
        }
        match poll_send(cx, conn, &mut self.written, self.upload.as_deref_mut()) {
            Poll::Ready(Ok(())) => self.upload = None,
            // The response is what matters now: the connection just cannot be reused.
            Poll::Ready(Err(Upstream(_))) => {
                self.upload = None;
                self.keep_alive = false;
                self.written = conn.write.len();
            }
            Poll::Ready(Err(Client(error))) => return Err(error),
            Poll::Pending => {}
        }
        Ok(())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Err(error) = this.poll_upload(cx) {
            this.conn = None;
            return Poll::Ready(Some(Err(error)));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match this.unframer.next(&mut conn.read) {
                Ok(Next::Data(data)) => {
                    if this.unframer.is_end() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Next::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Next::More) => {}
                Err(broken) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(violation(broken)))));
                }
            }
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.read)) {
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(this.unframer.closed().err().map(|cut: CutShort| Err(Box::new(cut) as BoxError)));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || (self.unframer.is_end() && self.upload.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match self.unframer.remaining() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if self.unframer.is_end() {
            self.finish();
        }
    }
}

/// The target's side of a connection that switched protocols (`101`):
/// what was read past the response first, then the connection.
pub type Upgraded = Replayed<super::Io>;
