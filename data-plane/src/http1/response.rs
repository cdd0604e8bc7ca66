//! Upstream responses as the HTTP/1 fast lane reads them
//! (`crate::upstream::h1`): the head checked by the wire rules
//! ([`head::response`]), then parsed into an `http::Response` whose
//! header values share the bytes read (no copy);
//! the body unframed by its length, its chunks ([`Chunked`]) or the end of
//! the connection. Interim (`1xx`) heads are skipped.
//!
//! Strict where two parsers could read a response two ways: a head that
//! breaks a rule (`Content-Length` with `Transfer-Encoding`, two lengths, a
//! bare `LF`, …), a bad chunk, or any byte beyond the response read with
//! its head (a body on a `204`, `304` or `HEAD` response, bytes after the
//! body) is a [`Violation`]: the response is refused and its connection
//! never reused. Bytes beyond it that come later close the connection.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};

use super::chunked::{Chunked, Piece};
use super::head::{self, Framing, Lines, Side};
use super::{MAX_RESPONSE_HEAD, Violation};

/// Most header fields in a response head (as many as a request may have,
/// `proxy::headers::MAX_HEADERS`).
const MAX_HEADERS: usize = 100;

/// A response head, read.
#[derive(Debug)]
pub struct ResponseHead {
    pub response: Response<()>,
    /// How its body is framed.
    pub body: Unframer,
    /// The connection may carry another request once the body is read:
    /// HTTP/1.1, no `Connection: close`, a body that ends before the connection does.
    pub keep_alive: bool,
}

/// Reads the response head at the start of `buf` (removing it, and any
/// interim heads before it) into the header map `spare` (taken; empty,
/// its capacity reused); `to_head`: it answers a `HEAD` request. `None` while the
/// head is not complete.
pub fn read_head(buf: &mut BytesMut, to_head: bool, spare: &mut HeaderMap) -> Result<Option<ResponseHead>, Violation> {
    loop {
        let (end, framing, lines) = match head::read(buf, Side::Upstream)? {
            Some(head) => {
                // A response has no leading empty lines: its line ends are offsets in the head.
                debug_assert_eq!(head.span.start, 0);
                (head.span.end, head::response(&head, to_head)?, head.lines)
            }
            None if buf.len() > MAX_RESPONSE_HEAD => return Err(Violation::HeadTooLarge),
            None => return Ok(None),
        };
        if end > MAX_RESPONSE_HEAD {
            return Err(Violation::HeadTooLarge);
        }
        if framing == Framing::Interim {
            buf.advance(end);
            continue;
        }
        let (response, close) = parse(buf.split_to(end).freeze(), &lines, std::mem::take(spare))?;
        let body = match framing {
            Framing::Length(length) => Unframer::Length(length),
            Framing::Chunked => Unframer::Chunked(Chunked::new()),
            // A `101`'s bytes are the new protocol's; a body without
            // length or chunks lasts until the connection closes.
            Framing::Opaque if response.status() == StatusCode::SWITCHING_PROTOCOLS => Unframer::Done,
            Framing::Opaque => Unframer::UntilClose,
            Framing::Empty | Framing::Interim | Framing::Upgrade => Unframer::Done,
        };
        let keep_alive = response.version() == Version::HTTP_11
            && !matches!(body, Unframer::UntilClose)
            && response.status() != StatusCode::SWITCHING_PROTOCOLS
            && !close;
        return Ok(Some(ResponseHead { response, body, keep_alive }));
    }
}

/// Parses a head the wire rules accepted (so its lines end in `CRLF`, its
/// status line is `HTTP/1.x NNN reason`, no line is folded), its values
/// slices of `head` (but the connection's own fields, see [`own_field`]),
/// and whether a `Connection` field lists `close`. Read
/// here rather than by httparse: the rules' pass found the lines already
/// (`lines`: where they end, from the head's start), and
/// `HeaderName`/`HeaderValue` check each name's and value's bytes as
/// httparse would (token names, no control bytes but tab in values).
fn parse(head: Bytes, lines: &Lines, mut headers: HeaderMap) -> Result<(Response<()>, bool), Violation> {
    let (version, code) = (head[7], &head[9..12]);
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let status = StatusCode::from_u16(code).map_err(|_| Violation::StatusLine)?;
    if lines.count() > MAX_HEADERS + 1 {
        return Err(Violation::HeadTooLarge);
    }
    // Room for the few the gateway adds (request id, rate limits, …).
    debug_assert!(headers.is_empty(), "a spare header map is kept cleared");
    headers.reserve(lines.count() - 1 + 4);
    let mut at = lines.end(0).ok_or(Violation::StatusLine)? + 1;
    let mut close = false;
    for index in 1..lines.count() {
        let end = match lines.end(index) {
            Some(end) => end,
            None => at + memchr::memchr(b'\n', &head[at..]).ok_or(Violation::HeaderSyntax)?,
        };
        let line = &head[at..end - 1];
        at = end + 1;
        let colon = memchr::memchr(b':', line).ok_or(Violation::HeaderSyntax)?;
        let value = head::trim(&line[colon + 1..]);
        match own_field(&line[..colon], value) {
            Some(Own::Connection { close: listed, kept }) => {
                close |= listed;
                if !kept {
                    continue;
                }
            }
            Some(Own::KeepAlive) => continue,
            None => {}
        }
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| Violation::HeaderSyntax)?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(value)).map_err(|_| Violation::HeaderSyntax)?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if version == b'0' { Version::HTTP_10 } else { Version::HTTP_11 };
    *response.headers_mut() = headers;
    Ok((response, close))
}

/// A field about the upstream connection itself, which the reader acts on.
enum Own {
    /// `Connection`: whether it lists `close`; `kept` when it also names
    /// other fields (which the forwarder then removes with it, see
    /// `proxy::headers::remove_hop_by_hop`).
    Connection { close: bool, kept: bool },
    /// `Keep-Alive`: the target's idle limits, which the pool's own replace.
    KeepAlive,
}

/// Whether the field `name: value` is one of [`Own`]. Both are hop-by-hop
/// and never forwarded: a `Connection` listing only `close` and
/// `keep-alive`, and `Keep-Alive`, stay out of the response's map (nearly
/// every response has one: keeping it cost a map entry, and its removal
/// by the forwarder more).
fn own_field(name: &[u8], value: &[u8]) -> Option<Own> {
    let connection = name.eq_ignore_ascii_case(b"connection");
    if !connection && !name.eq_ignore_ascii_case(b"keep-alive") {
        return None;
    }
    // A value `HeaderValue` would refuse is refused as any other field's.
    if !value.iter().all(|b| head::is_field_text(*b)) {
        return None;
    }
    if connection {
        let (mut close, mut kept) = (false, false);
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                kept = true;
            }
        }
        return Some(Own::Connection { close, kept });
    }
    Some(Own::KeepAlive)
}

/// Where a response body is: what is left of it, by its framing.
#[derive(Debug, Clone)]
pub enum Unframer {
    Length(u64),
    Chunked(Chunked),
    /// Until the connection closes.
    UntilClose,
    /// Ended (or never had a body).
    Done,
}

/// What the bytes read so far give of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Data(Bytes),
    /// More bytes must be read first.
    More,
    /// The body ended.
    End,
}

impl Unframer {
    /// Takes the body's next data from the start of `buf` (framing bytes
    /// are consumed, data is split off without a copy).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Next, Violation> {
        loop {
            if buf.is_empty() && !matches!(self, Self::Done | Self::Length(0)) {
                return Ok(Next::More);
            }
            match self {
                Self::Done | Self::Length(0) => {
                    *self = Self::Done;
                    return Ok(Next::End);
                }
                Self::Length(left) => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= take as u64;
                    return Ok(Next::Data(buf.split_to(take).freeze()));
                }
                Self::UntilClose => return Ok(Next::Data(buf.split().freeze())),
                Self::Chunked(chunked) => match chunked.next(buf)? {
                    Piece::Framing(n) => buf.advance(n),
                    Piece::Data(n) => return Ok(Next::Data(buf.split_to(n).freeze())),
                    Piece::End(n) => {
                        buf.advance(n);
                        *self = Self::Done;
                    }
                },
            }
        }
    }

    /// The connection closed after what was read: the end of a body read
    /// until close, else the body was cut short.
    pub fn closed(&mut self) -> Result<(), CutShort> {
        match self {
            Self::UntilClose | Self::Done | Self::Length(0) => {
                *self = Self::Done;
                Ok(())
            }
            Self::Length(_) | Self::Chunked(_) => Err(CutShort),
        }
    }

    /// Checks the framing of the body bytes in `buf` (read with the head),
    /// without taking them: a framing error, or bytes beyond the body, are
    /// found before the response is passed on.
    pub fn check(&self, buf: &[u8]) -> Result<(), Violation> {
        match self {
            Self::Done if !buf.is_empty() => Err(Violation::UnsolicitedBytes),
            Self::Length(length) if buf.len() as u64 > *length => Err(Violation::UnsolicitedBytes),
            Self::Chunked(chunked) => {
                let mut chunked = chunked.clone();
                let mut at = 0;
                while at < buf.len() {
                    match chunked.next(&buf[at..])? {
                        Piece::Framing(n) | Piece::Data(n) => at += n,
                        Piece::End(n) if at + n < buf.len() => return Err(Violation::UnsolicitedBytes),
                        Piece::End(_) => return Ok(()),
                    }
                }
                Ok(())
            }
            Self::Done | Self::Length(_) | Self::UntilClose => Ok(()),
        }
    }

    pub fn is_end(&self) -> bool {
        matches!(self, Self::Done | Self::Length(0))
    }

    /// Exactly what is left, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Done => Some(0),
            Self::Length(left) => Some(*left),
            Self::Chunked(_) | Self::UntilClose => None,
        }
    }
}

/// The upstream closed the connection before the body's end.
#[derive(Debug, thiserror::Error)]
#[error("the upstream closed the connection before the end of the response body")]
pub struct CutShort;

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], to_head: bool) -> Result<Option<ResponseHead>, Violation> {
        read_head(&mut BytesMut::from(bytes), to_head, &mut HeaderMap::new())
    }

    /// The whole body of `bytes` (head and body), read in pieces of `step`
    /// bytes, with the violation or cut found on the way.
    fn body(bytes: &[u8], step: usize) -> Result<Vec<u8>, String> {
        let mut buf = BytesMut::new();
        let mut input = bytes.chunks(step);
        let mut head = loop {
            match read_head(&mut buf, false, &mut HeaderMap::new()).map_err(|v| v.to_string())? {
                Some(head) => break head,
                None => buf.extend_from_slice(input.next().ok_or("no head")?),
            }
        };
        head.body.check(&buf).map_err(|v| v.to_string())?;
        let mut data = Vec::new();
        loop {
            match head.body.next(&mut buf).map_err(|v| v.to_string())? {
                Next::Data(bytes) => data.extend_from_slice(&bytes),
                // Bytes after the end, read with it or later, are beyond the response.
                Next::End if buf.is_empty() && input.next().is_none() => return Ok(data),
                Next::End => return Err(Violation::UnsolicitedBytes.to_string()),
                Next::More => match input.next() {
                    Some(bytes) => buf.extend_from_slice(bytes),
                    None => return head.body.closed().map(|()| data).map_err(|cut| cut.to_string()),
                },
            }
        }
    }

    #[test]
    fn reads_heads_and_bodies_by_each_framing_whatever_the_reads() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", b"hello"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
                b"hello world",
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", b"until the end"),
        ];
        for (bytes, expected) in cases {
            for step in [1, 3, 7, bytes.len()] {
                assert_eq!(body(bytes, step).as_deref(), Ok(expected), "{} in steps of {step}", String::from_utf8_lossy(bytes));
            }
        }
        let head = read(b"HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(head.response.status(), StatusCode::CREATED);
        assert_eq!(head.response.headers().get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(head.keep_alive && head.body.is_end());
    }

    #[test]
    fn a_head_of_more_lines_than_the_rules_pass_keeps_is_read_whole() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        bytes.extend((0..40).flat_map(|i| format!("X-{i}: value {i}\r\n").into_bytes()));
        bytes.extend_from_slice(b"Connection: close\r\nContent-Length: 2\r\n\r\nok");
        let head = read(&bytes, false).unwrap().unwrap();
        let headers = head.response.headers();
        assert_eq!(headers.len(), 41, "the fields but `Connection: close`, which the reader acts on");
        for i in 0..40 {
            assert_eq!(headers[format!("x-{i}")], format!("value {i}"));
        }
        assert!(!head.keep_alive, "the Connection line after the kept ones is read");
        assert_eq!(head.body.remaining(), Some(2));
        // After an interim head, the final one's lines are its own.
        let mut interim = b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n".to_vec();
        interim.extend_from_slice(&bytes);
        let head = read(&interim, false).unwrap().unwrap();
        assert_eq!(head.response.headers().len(), 41);
        assert!(!head.response.headers().contains_key("x-interim"));
        assert_eq!(head.response.headers()["x-39"], "value 39");
        // As many fields as a head may have.
        let mut most = b"HTTP/1.1 200 OK\r\n".to_vec();
        most.extend((1..MAX_HEADERS).flat_map(|i| format!("X-{i}: v\r\n").into_bytes()));
        most.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        assert_eq!(read(&most, false).unwrap().unwrap().response.headers().len(), MAX_HEADERS);
    }

    #[test]
    fn only_an_http_1_1_response_framed_to_its_end_keeps_the_connection() {
        let keeps = |bytes: &[u8]| read(bytes, false).unwrap().unwrap().keep_alive;
        assert!(keeps(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nconnection: close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps(b"HTTP/1.1 200 OK\r\n\r\n"), "read until close");
        assert!(!keeps(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"));
    }

    #[test]
    fn the_connections_own_fields_are_acted_on_not_kept() {
        let head =
            read(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n", false);
        let head = head.unwrap().unwrap();
        assert_eq!(head.response.headers().keys().collect::<Vec<_>>(), ["x-a", "content-length"]);
        assert!(head.keep_alive);
        // One that names other fields stays, for the forwarder to remove them with it.
        let head = read(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n", false);
        let head = head.unwrap().unwrap();
        assert_eq!(head.response.headers()["connection"], "Keep-Alive, X-Private");
        assert!(head.keep_alive);
        let head = read(b"HTTP/1.1 200 OK\r\nCONNECTION: close\r\nContent-Length: 0\r\n\r\n", false).unwrap().unwrap();
        assert!(!head.response.headers().contains_key("connection") && !head.keep_alive);
        // A value no header may have is refused, kept or not.
        let bad = read(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\x01\r\nContent-Length: 0\r\n\r\n", false);
        assert_eq!(bad.err(), Some(Violation::HeaderSyntax));
    }

    #[test]
    fn responses_without_a_body_have_none() {
        for (bytes, to_head) in [
            (&b"HTTP/1.1 204 No Content\r\n\r\n"[..], false),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n", true),
        ] {
            assert!(read(bytes, to_head).unwrap().unwrap().body.is_end(), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn malformed_responses_are_refused() {
        let refused: [(&[u8], Violation); 12] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Violation::LengthAndChunked),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", Violation::DuplicateContentLength),
            (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", Violation::ContentLength),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", Violation::TransferEncoding),
            (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", Violation::BareLf),
            (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok", Violation::ObsFold),
            (b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok", Violation::HeaderSyntax),
            (b"HTTP/1.1 999999 OK\r\n\r\n", Violation::StatusLine),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsmuggled\r\n0\r\n\r\n", Violation::ChunkSize),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n", Violation::ChunkEnd),
            // Bytes beyond the response: a body on a 204, bytes after a body.
            (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled", Violation::UnsolicitedBytes),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", Violation::UnsolicitedBytes),
        ];
        for (bytes, violation) in refused {
            for step in [1, bytes.len()] {
                assert_eq!(body(bytes, step), Err(violation.to_string()), "{} in steps of {step}", String::from_utf8_lossy(bytes));
            }
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        many.extend((0..=MAX_HEADERS).flat_map(|i| format!("X-{i}: v\r\n").into_bytes()));
        many.extend_from_slice(b"\r\n");
        assert_eq!(body(&many, many.len()), Err(Violation::HeadTooLarge.to_string()));
        let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        huge.resize(MAX_RESPONSE_HEAD + 10, b'a');
        assert_eq!(body(&huge, 4096), Err(Violation::HeadTooLarge.to_string()), "refused before its end comes");
    }

    #[test]
    fn a_head_response_with_a_body_and_chunks_after_the_last_are_bytes_beyond_the_response() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"[..]);
        let head = read_head(&mut buf, true, &mut HeaderMap::new()).unwrap().unwrap();
        assert_eq!(head.body.check(&buf), Err(Violation::UnsolicitedBytes));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nextra";
        assert_eq!(body(chunked, chunked.len()), Err(Violation::UnsolicitedBytes.to_string()));
        assert_eq!(body(chunked, 1), Err(Violation::UnsolicitedBytes.to_string()));
    }

    #[test]
    fn a_body_cut_short_is_an_error_but_one_read_until_close_ends_there() {
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 100), Err(CutShort.to_string()));
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 100), Err(CutShort.to_string()));
        assert_eq!(body(b"HTTP/1.0 200 OK\r\n\r\nall of it", 4).as_deref(), Ok(&b"all of it"[..]));
    }
}
