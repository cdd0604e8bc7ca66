//! Portico's own HTTP/1.1 server connection, for the requests that are
//! nearly all of a gateway's traffic: HTTP/1.1 with no body, no upgrade and
//! no `Expect`. hyper's server costs a proxied `GET` about 8,000
//! instructions (parse, dispatch, encode, flush; `bench/RESULTS.md`); this
//! one reads each head with the wire rules' pass ([`super::head`]) and
//! httparse, and writes each response head and body into one buffer.
//!
//! The first request it does not serve itself hands the connection over,
//! with every byte read from that request on ([`Ended::HandOff`]), to
//! hyper's server for the rest of the connection's life: a request with a
//! body, an upgrade or `CONNECT`, `Expect`, HTTP/1.0, the HTTP/2 preface, a
//! head that breaks a wire rule or that httparse refuses, a head or target
//! past the codec's limits. So every answer hyper gave before (the `400` of
//! a smuggling attempt, a `431`, a `414`, `100 Continue`) it still gives,
//! from the same bytes.
//!
//! What it does as hyper's server did (`hyper::proto::h1::role::Server`):
//! a response's length is its `Content-Length`, else its body's exact
//! size, else it is chunked; `HEAD`, `204` and `304` answers have no body;
//! `Date` is added when missing; trailers are sent only to a client that
//! sent `TE: trailers`, and only those the `Trailer` field names; a client
//! that closes its side while its request is being answered cancels it;
//! a connection closes after `Connection: close` (either side's) or once
//! the node is stopping, saying so in the response.

use std::future::{Future, poll_fn};
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::head::{self, Framing, Side};
use super::{MAX_REQUEST_HEAD, Replayed, kept, value_lists};
use crate::body::{BoxError, RequestBody};
use crate::proxy::headers::MAX_HEADERS;
use crate::state::stopped;

/// Longest request target served (hyper's `MAX_URI_LEN`; past it hyper answers `414`).
const MAX_TARGET: usize = u16::MAX as usize - 1;
/// Room made for reads at a time.
const READ_SIZE: usize = 8 * 1024;
/// Least room a read is given.
const MIN_ROOM: usize = 1024;
/// Body data up to this size is copied into the write buffer, to go out in
/// one write with what precedes it; larger data is written as it is.
const COPY_LIMIT: usize = 16 * 1024;
/// The write buffer goes out once it holds this much, and a connection
/// keeps at most this much of it between responses.
const FLUSH_AT: usize = 64 * 1024;

/// How a connection's loop ended.
#[derive(Debug)]
pub enum Ended<IO> {
    /// The connection is done: either side closed it, or a response closed it.
    Closed,
    /// A request came that this server leaves to hyper's: the connection,
    /// replaying every byte read from that request on; `opening`: it is the
    /// connection's first request (where the HTTP/2 preface may come).
    HandOff { io: Replayed<IO>, opening: bool },
}

/// A request head this server serves, as parsed.
struct Parsed {
    request: Request<RequestBody>,
    /// The client asked to close after this request.
    close: bool,
    /// The client accepts trailers (`TE: trailers`).
    trailers: bool,
}

/// Serves the HTTP/1.1 requests on `io`, each answered by `respond`, until
/// the connection closes, `stop` turns true (between requests; a response
/// in progress is finished and says it closes the connection) or a request
/// comes that hyper's server is to serve.
pub async fn serve<IO, F, Fut, B>(mut io: IO, mut respond: F, stop: watch::Receiver<bool>) -> Ended<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RequestBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut read = BytesMut::with_capacity(READ_SIZE);
    let mut write = Vec::with_capacity(READ_SIZE);
    // A response's header map, kept for the next request (hyper does the
    // same; see `kept`).
    let mut spare = HeaderMap::new();
    let mut first = true;
    // The stop's wake, registered once for the connection's life (then a
    // version check tells whether it came: see the wait for bytes below).
    let mut stopping = pin!({
        let mut stop = stop.clone();
        async move { stopped(&mut stop).await }
    });
    let mut stop_registered = false;
    loop {
        // Bytes already checked for a head's end (a head rarely spans reads).
        let mut checked = 0;
        let (span, framing) = loop {
            if !read.is_empty() {
                // The wire rules' pass over the head, once it is complete
                // (nearly always in the first read; the bytes of one that
                // spans reads are searched for its end once each).
                let complete = match checked {
                    0 => Ok(true),
                    _ => head::find_end(&read, checked - 3, Side::Client).map(|end| end.is_some()),
                };
                match complete.map(|complete| complete.then(|| head::read(&read, Side::Client))) {
                    Ok(Some(Ok(Some(head)))) if head.span.end <= MAX_REQUEST_HEAD => {
                        break (head.span.clone(), head::request(&head, first));
                    }
                    Ok(Some(Ok(None)) | None) if read.len() <= MAX_REQUEST_HEAD => checked = read.len().max(3),
                    _ => return Ended::HandOff { io: Replayed::new(io, read), opening: first },
                }
            }
            make_room(&mut read);
            let got = poll_fn(|cx| {
                if let Poll::Ready(got) = tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut read) {
                    return Poll::Ready(Some(got));
                }
                // Once the stop's wake is registered, a version check says
                // whether it came (polling the watch on every wait costs more).
                let stopped = match stop_registered {
                    false => {
                        stop_registered = true;
                        stopping.as_mut().poll(cx).is_ready()
                    }
                    true => stop.has_changed().unwrap_or(true),
                };
                if stopped { Poll::Ready(None) } else { Poll::Pending }
            })
            .await;
            if !matches!(got, Some(Ok(n)) if n > 0) {
                return Ended::Closed;
            }
        };
        let head = read.split_to(span.end).freeze();
        let parsed = match framing {
            // No body, no upgrade, the rules kept: what httparse then takes is served here.
            Ok(Framing::Empty) => parse(&head, span.start, std::mem::take(&mut spare)),
            _ => None,
        };
        let Some(parsed) = parsed else {
            let mut replayed = BytesMut::with_capacity(head.len() + read.len());
            replayed.extend_from_slice(&head);
            replayed.extend_from_slice(&read);
            return Ended::HandOff { io: Replayed::new(io, replayed), opening: first };
        };
        first = false;
        let to_head = parsed.request.method() == Method::HEAD;
        let Some(response) = answer(&mut io, &mut read, respond(parsed.request)).await else {
            return Ended::Closed;
        };
        let mut close = parsed.close || !matches!(stop.has_changed(), Ok(false));
        let (mut parts, mut body) = response.into_parts();
        let Ok(encoding) = write_head(&mut parts, &body, to_head, &mut close, &mut write) else {
            return Ended::Closed;
        };
        spare = kept(parts.headers);
        let sent = send_body(&mut io, &mut read, &mut body, encoding, parsed.trailers, &mut write).await;
        // The request is over (its access log line written) before the next one.
        drop(body);
        if write.capacity() > FLUSH_AT {
            write = Vec::with_capacity(READ_SIZE);
        }
        if sent.is_err() || close {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// Parses the request head `head[start..]` (complete, the wire rules
/// kept) into a request with the header map `headers`; `None` when hyper's
/// server is to serve it.
fn parse(head: &Bytes, start: usize, mut headers: HeaderMap) -> Option<Parsed> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut request, &head[start..], &mut fields);
    if !matches!(parsed, Ok(httparse::Status::Complete(_))) || request.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(request.method?.as_bytes()).ok()?;
    let target = request.path?;
    if target.len() > MAX_TARGET {
        return None;
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(target.as_bytes())).ok()?;
    let (mut close, mut trailers) = (false, false);
    headers.reserve(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value)).ok()?;
        match name {
            header::EXPECT => return None,
            header::CONNECTION => close |= value_lists(value.as_bytes(), "close"),
            header::TE => trailers |= value_lists(value.as_bytes(), "trailers"),
            _ => {}
        }
        headers.append(name, value);
    }
    let mut built = Request::new(RequestBody::Empty);
    *built.method_mut() = method;
    *built.uri_mut() = uri;
    *built.version_mut() = Version::HTTP_11;
    *built.headers_mut() = headers;
    Some(Parsed { request: built, close, trailers })
}

/// Waits for `response`, meanwhile watching the client (see [`Watch`]):
/// `None` when it closed the connection first, which drops (cancels) the
/// request.
async fn answer<IO, Fut, B>(io: &mut IO, read: &mut BytesMut, response: Fut) -> Option<Response<B>>
where
    IO: AsyncRead + Unpin,
    Fut: Future<Output = Response<B>>,
{
    let mut response = pin!(response);
    let mut watch = Watch::new(read);
    poll_fn(|cx| {
        if let Poll::Ready(response) = response.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        if watch.client_gone(io, read, cx) { Poll::Ready(None) } else { Poll::Pending }
    })
    .await
}

/// Whether the client closed its connection while its request is answered
/// (as hyper's server finds it): read on while nothing is buffered; bytes
/// that come (a pipelined request) wait in the buffer and end the watch.
struct Watch {
    watching: bool,
}

impl Watch {
    fn new(read: &BytesMut) -> Self {
        Self { watching: read.is_empty() }
    }

    fn client_gone<IO: AsyncRead + Unpin>(&mut self, io: &mut IO, read: &mut BytesMut, cx: &mut std::task::Context<'_>) -> bool {
        if !self.watching {
            return false;
        }
        make_room(read);
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, read) {
            Poll::Ready(Ok(0) | Err(_)) => true,
            Poll::Ready(Ok(_)) => {
                self.watching = false;
                false
            }
            Poll::Pending => false,
        }
    }
}

/// Room for the next read, reserved only when little is left: the bytes
/// before it may still back a request in flight, and while they do a
/// reserve must allocate anew.
fn make_room(read: &mut BytesMut) {
    if read.capacity() - read.len() < MIN_ROOM {
        read.reserve(READ_SIZE);
    }
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Encoding {
    /// This many bytes, then the next response (none: no body at all).
    Length(u64),
    /// Chunks; the trailers the response names in `Trailer`, when the client takes them.
    Chunked { trailers: Vec<HeaderName> },
}

/// The response's head was not one to send (two different lengths, a
/// length beside chunks, an interim status): the connection is closed
/// without it, as hyper's server does.
#[derive(Debug)]
struct Unsendable;

/// Writes the head of `response` into `out` (after what is there) and says
/// how its body follows; `to_head`: it answers a `HEAD`; `close`: the
/// connection closes after it (becomes true if the response says so).
fn write_head<B: Body>(
    response: &mut http::response::Parts,
    body: &B,
    to_head: bool,
    close: &mut bool,
    out: &mut Vec<u8>,
) -> Result<Encoding, Unsendable> {
    let status = response.status;
    if status.is_informational() {
        return Err(Unsendable);
    }
    // As in hyper: no body is declared for an ended one, its length for an exact one.
    let declared = match body.is_end_stream() {
        true => Declared::Nothing,
        false => body.size_hint().exact().map_or(Declared::Unknown, Declared::Exactly),
    };
    let has_body = !to_head && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    let may_state_length = status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    write_status_line(status, out);
    let (mut encoding, mut dated, mut says_close) = (None, false, false);
    let mut trailer_names = Vec::new();
    for (name, value) in &response.headers {
        match *name {
            header::CONTENT_LENGTH => {
                let length = match declared {
                    Declared::Exactly(length) => length,
                    Declared::Nothing if to_head => head::content_length(value.as_bytes()).map_err(|_| Unsendable)?,
                    // Without a body only a `HEAD` answer states a length (`0` is added below).
                    Declared::Nothing => continue,
                    Declared::Unknown => head::content_length(value.as_bytes()).map_err(|_| Unsendable)?,
                };
                match encoding {
                    None => encoding = Some(Encoding::Length(length)),
                    Some(Encoding::Length(first)) if first == length || matches!(declared, Declared::Exactly(_)) => continue,
                    Some(_) => return Err(Unsendable),
                }
            }
            header::TRANSFER_ENCODING => {
                if !has_body {
                    continue;
                }
                match encoding {
                    None if value_lists(value.as_bytes(), "chunked") => encoding = Some(Encoding::Chunked { trailers: Vec::new() }),
                    _ => return Err(Unsendable),
                }
            }
            header::TRAILER => {
                if !has_body {
                    continue;
                }
                let names = value.to_str().unwrap_or_default().split(',');
                trailer_names.extend(names.filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()));
            }
            header::CONNECTION => says_close |= value_lists(value.as_bytes(), "close"),
            header::DATE => dated = true,
            _ => {}
        }
        write_field(name.as_str().as_bytes(), value.as_bytes(), out);
    }
    let encoding = match (encoding, declared) {
        (Some(Encoding::Chunked { .. }), _) => Encoding::Chunked { trailers: trailer_names },
        (Some(encoding), _) => encoding,
        (None, Declared::Unknown) if has_body => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Encoding::Chunked { trailers: trailer_names }
        }
        (None, Declared::Nothing | Declared::Exactly(0)) => {
            if may_state_length && !to_head {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            Encoding::Length(0)
        }
        (None, Declared::Exactly(length)) if may_state_length => {
            let _ = write!(out, "content-length: {length}\r\n");
            Encoding::Length(length)
        }
        (None, Declared::Exactly(_) | Declared::Unknown) => Encoding::Length(0),
    };
    if !dated {
        date::write(out);
    }
    if *close && !says_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    *close |= says_close;
    out.extend_from_slice(b"\r\n");
    Ok(if has_body { encoding } else { Encoding::Length(0) })
}

/// What a response body says of its length.
#[derive(Debug, Clone, Copy)]
enum Declared {
    /// It has ended already.
    Nothing,
    Exactly(u64),
    Unknown,
}

fn write_status_line(status: StatusCode, out: &mut Vec<u8>) {
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    // A reason must be written: many parsers expect one.
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_field(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Fields that may not be sent as trailers (RFC 9110 §6.5.1; the list
/// hyper keeps out of them).
fn allowed_in_trailers(name: &HeaderName) -> bool {
    ![
        header::AUTHORIZATION,
        header::CACHE_CONTROL,
        header::CONTENT_ENCODING,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
        header::HOST,
        header::MAX_FORWARDS,
        header::SET_COOKIE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::TE,
    ]
    .contains(name)
}

/// The body did not fit its length, or failed, or the client's connection
/// did: the connection ends without another response.
#[derive(Debug)]
struct Broken;

/// Writes `out` (the head) and `body` by `encoding`, flushing whenever the
/// body has nothing ready (and then watching the client, see [`Watch`]);
/// `trailers`: the client takes them.
async fn send_body<IO, B>(
    io: &mut IO,
    read: &mut BytesMut,
    body: &mut B,
    encoding: Encoding,
    trailers: bool,
    out: &mut Vec<u8>,
) -> Result<(), Broken>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (mut left, chunked) = match &encoding {
        Encoding::Length(length) => (*length, false),
        Encoding::Chunked { .. } => (u64::MAX, true),
    };
    let mut watch = Watch::new(read);
    // What the body gave that fits goes out before a broken body closes the
    // connection (as hyper's server, which writes as it goes).
    let ended = loop {
        if left == 0 {
            break Ok(());
        }
        let frame = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            // Nothing ready: what is written so far goes out first.
            Poll::Pending if !out.is_empty() => Poll::Ready(Next::Flush),
            Poll::Pending if watch.client_gone(io, read, cx) => Poll::Ready(Next::Gone),
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => Poll::Ready(Next::Frame(frame)),
        })
        .await;
        let frame = match frame {
            Next::Flush => {
                flush(io, out).await?;
                continue;
            }
            Next::Gone => return Err(Broken),
            Next::Frame(None) if chunked => {
                out.extend_from_slice(b"0\r\n\r\n");
                break Ok(());
            }
            // Shorter than its length, or failed.
            Next::Frame(None | Some(Err(_))) => break Err(Broken),
            Next::Frame(Some(Ok(frame))) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let (Ok(fields), Encoding::Chunked { trailers: names }) = (frame.into_trailers(), &encoding) {
                    write_trailers(&fields, names, trailers, out);
                    break Ok(());
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        let data = if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
            &data[..]
        } else {
            // More than the length says: only what it owes goes out (as hyper does).
            let owed = usize::try_from(left).map_or(data.len(), |left| left.min(data.len()));
            left -= owed as u64;
            &data[..owed]
        };
        if data.len() > COPY_LIMIT {
            flush(io, out).await?;
            io.write_all(data).await.map_err(|_| Broken)?;
        } else {
            out.extend_from_slice(data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        // A body whose frames keep coming goes out as it grows.
        if out.len() >= FLUSH_AT {
            flush(io, out).await?;
        }
    };
    flush(io, out).await?;
    ended
}

/// What a wait on the response body found.
enum Next<F> {
    /// Nothing yet: what is written so far is to go out.
    Flush,
    /// Nothing yet, and the client closed its connection.
    Gone,
    Frame(F),
}

/// The last chunk with the trailer fields the response named in `Trailer`,
/// when the client takes them (`accepted`).
fn write_trailers(fields: &HeaderMap, named: &[HeaderName], accepted: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if accepted {
        for (name, value) in fields.iter().filter(|(name, _)| named.contains(name) && allowed_in_trailers(name)) {
            write_field(name.as_str().as_bytes(), value.as_bytes(), out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `out` and flushes the connection (TLS keeps written records
/// until then), leaving `out` empty.
async fn flush<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut Vec<u8>) -> Result<(), Broken> {
    let written = io.write_all(out).await;
    out.clear();
    written.map_err(|_| Broken)?;
    io.flush().await.map_err(|_| Broken)
}

/// The `Date` field, formatted once a second per thread (as hyper does).
mod date {
    use std::cell::RefCell;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// `date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`.
    const LINE: usize = 37;

    struct Cached {
        second: u64,
        line: [u8; LINE],
    }

    thread_local! {
        static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: 0, line: [0; LINE] }) };
    }

    pub(super) fn write(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        CACHED.with_borrow_mut(|cached| {
            if cached.second != second || cached.line[0] == 0 {
                let formatted = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
                let line = format!("date: {formatted}\r\n");
                if line.len() == LINE {
                    cached.line.copy_from_slice(line.as_bytes());
                    cached.second = second;
                } else {
                    out.extend_from_slice(line.as_bytes());
                    return;
                }
            }
            out.extend_from_slice(&cached.line);
        });
    }
}

#[cfg(test)]
mod tests;
