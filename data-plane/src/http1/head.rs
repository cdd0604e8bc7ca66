//! Message heads: where one ends, whether it keeps the rules, and how its
//! body is framed.

use std::ops::Range;

/// Which side of the proxy a connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// From a client: requests.
    Client,
    /// To an upstream: responses.
    Upstream,
}

/// A rule of the HTTP/1 wire that a message broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("a line ends in a bare LF (only CRLF ends a line)")]
    BareLf,
    #[error("the message head is too large")]
    HeadTooLarge,
    #[error("the request line is not 'method SP target SP HTTP/1.x'")]
    RequestLine,
    #[error("the status line is not 'HTTP/1.x SP code SP reason'")]
    StatusLine,
    #[error("a header line is malformed")]
    HeaderSyntax,
    #[error("a header line is folded (obs-fold)")]
    ObsFold,
    #[error("Content-Length is sent more than once")]
    DuplicateContentLength,
    #[error("Content-Length is not a number")]
    ContentLength,
    #[error("Transfer-Encoding is sent more than once")]
    DuplicateTransferEncoding,
    #[error("Transfer-Encoding is not 'chunked'")]
    TransferEncoding,
    #[error("Transfer-Encoding and Content-Length are both sent")]
    LengthAndChunked,
    #[error("a header spells Content-Length or Transfer-Encoding with other separators")]
    DisguisedFraming,
    #[error("HTTP/1.0 has no Transfer-Encoding")]
    TransferEncodingOnHttp10,
    #[error("an HTTP/1.1 request has no Host")]
    MissingHost,
    #[error("Host is sent more than once")]
    DuplicateHost,
    #[error("Host is not a valid host[:port]")]
    Host,
    #[error("a chunk size is not 1 to 16 hex digits")]
    ChunkSize,
    #[error("a chunk extension holds a control byte or is too long")]
    ChunkExtension,
    #[error("a chunk is not followed by CRLF")]
    ChunkEnd,
    #[error("a trailer line is malformed or too long")]
    Trailer,
    #[error("the upstream sent bytes beyond the response")]
    UnsolicitedBytes,
    #[error("the upstream switched protocols (101) to a request that did not ask to")]
    UnaskedUpgrade,
}

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: the next head follows.
    Empty,
    /// A `1xx` response: the final response's head follows.
    Interim,
    Length(u64),
    Chunked,
    /// What follows is not HTTP/1 messages (HTTP/2, a response read until close).
    Opaque,
    /// A request that asks to switch protocols (`Upgrade`, `CONNECT`): what
    /// follows is not HTTP/1 if the switch happens, and is not checked.
    Upgrade,
}

/// Leading empty lines a request may have (RFC 9112 §2.2 says ignore at
/// least one; more is refused rather than skipped without bound).
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// Longest method accepted (the longest registered one, `UPDATEREDIRECTREF`,
/// has 17 bytes): a long one is more likely a body the client meant to send.
const MAX_METHOD: usize = 32;

/// Where a head starts in `buf`: past the leading empty lines a request may have.
fn leading_empty_lines(buf: &[u8], side: Side) -> usize {
    let mut start = 0;
    if side == Side::Client {
        while start < 2 * MAX_LEADING_EMPTY_LINES && buf[start..].starts_with(b"\r\n") {
            start += 2;
        }
    }
    start
}

/// Finds the end of the head at the start of `buf`, checking line ends
/// from `from` on (what is before was checked already). Returns the head's
/// span (past leading empty lines, through its final `CRLF CRLF`), or
/// `None` when it is not complete yet.
pub(super) fn find_end(buf: &[u8], from: usize, side: Side) -> Result<Option<Range<usize>>, Violation> {
    let start = leading_empty_lines(buf, side);
    // A bare CR is left to the parser of the head (hyper's for requests,
    // `response::parse` for responses), which refuses it anywhere in a head.
    for at in memchr::memchr_iter(b'\n', &buf[from.max(start)..]) {
        let at = at + from.max(start);
        if at == 0 || buf[at - 1] != b'\r' {
            return Err(Violation::BareLf);
        }
        if at >= start + 3 && buf[at - 3..at - 1] == *b"\r\n" {
            return Ok(Some(start..at + 1));
        }
    }
    Ok(None)
}

/// A complete head, read in one pass.
#[derive(Debug)]
pub(super) struct Head<'a> {
    /// Its bytes in the buffer read (past leading empty lines, through the
    /// final `CRLF CRLF`).
    pub(super) span: Range<usize>,
    /// The request or status line.
    start_line: &'a [u8],
    fields: Fields<'a>,
    pub(super) lines: Lines,
}

/// Where a head's lines end, as its one pass found them, so that its
/// parser need not look for them again: how many lines come before the
/// empty one that ends the head (the start line is the first), and the
/// offset in the buffer of the `LF` of each of the first [`Lines::KEPT`].
#[derive(Debug)]
pub(super) struct Lines {
    ends: [u32; Lines::KEPT],
    kept: usize,
    count: usize,
}

impl Lines {
    /// As many as most responses have: few enough to stay cheap to make
    /// and to move (each head read makes one).
    const KEPT: usize = 16;

    fn new() -> Self {
        Self { ends: [0; Self::KEPT], kept: 0, count: 0 }
    }

    fn push(&mut self, lf: usize) {
        if let (true, Some(end), Ok(lf)) = (self.kept == self.count, self.ends.get_mut(self.count), u32::try_from(lf)) {
            *end = lf;
            self.kept += 1;
        }
        self.count += 1;
    }

    /// The lines before the empty one, the start line included.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// The offset of line `index`'s `LF`, when it is kept.
    pub(super) fn end(&self, index: usize) -> Option<usize> {
        self.ends[..self.kept].get(index).map(|&end| end as usize)
    }
}

/// Reads the head at the start of `buf`, line by line in one pass, with
/// the same line rules as [`find_end`]; `None` while it is not complete.
/// A header line that breaks a rule is reported once the head is complete,
/// as when the head spans reads (and only [`find_end`] sees it until then):
/// the verdict never depends on how the stream was cut.
pub(super) fn read(buf: &[u8], side: Side) -> Result<Option<Head<'_>>, Violation> {
    let start = leading_empty_lines(buf, side);
    let (mut line_start, mut start_line, mut fields, mut lines) = (start, None, Fields::default(), Lines::new());
    let mut refused = None;
    for at in memchr::memchr_iter(b'\n', &buf[start..]) {
        let at = at + start;
        if at == 0 || buf[at - 1] != b'\r' {
            return Err(Violation::BareLf);
        }
        let line = &buf[line_start..at - 1];
        line_start = at + 1;
        if start_line.is_none() || !line.is_empty() {
            lines.push(at);
        }
        match start_line {
            None => start_line = Some(line),
            Some(start_line) if line.is_empty() => {
                if let Some(violation) = refused {
                    return Err(violation);
                }
                if fields.chunked && fields.content_length.is_some() {
                    return Err(Violation::LengthAndChunked);
                }
                return Ok(Some(Head { span: start..at + 1, start_line, fields, lines }));
            }
            Some(_) if refused.is_none() => refused = fields.add(line).err(),
            Some(_) => {}
        }
    }
    Ok(None)
}

/// The framing headers of a head, each checked for its syntax.
#[derive(Debug, Default)]
struct Fields<'a> {
    content_length: Option<u64>,
    chunked: bool,
    host: Option<&'a [u8]>,
    upgrade: bool,
}

impl<'a> Fields<'a> {
    /// Takes one header line.
    fn add(&mut self, line: &'a [u8]) -> Result<(), Violation> {
        match line.first() {
            Some(b' ' | b'\t') => return Err(Violation::ObsFold),
            // Only these letters start a name that frames a message (or
            // spells one with other separators): most lines stop here.
            Some(b'c' | b'C' | b't' | b'T' | b'h' | b'H' | b'u' | b'U') => {}
            _ => return Ok(()),
        }
        // A line without a colon, names of other than token characters and
        // values with control bytes are refused by the head's parser
        // (hyper's for requests, `response::parse` for responses).
        let Some(colon) = memchr::memchr(b':', line) else { return Ok(()) };
        let (name, value) = (&line[..colon], || trim(&line[colon + 1..]));
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if self.content_length.is_some() {
                    return Err(Violation::DuplicateContentLength);
                }
                self.content_length = Some(content_length(value())?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if self.chunked {
                    return Err(Violation::DuplicateTransferEncoding);
                }
                if !value().eq_ignore_ascii_case(b"chunked") {
                    return Err(Violation::TransferEncoding);
                }
                self.chunked = true;
            }
            4 if name.eq_ignore_ascii_case(b"host") => {
                if self.host.is_some() {
                    return Err(Violation::DuplicateHost);
                }
                self.host = Some(value());
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            14.. if disguised(name) && ["content-length", "transfer-encoding"].iter().any(|f| same_but_separators(name, f.as_bytes())) => {
                return Err(Violation::DisguisedFraming);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Checks a request head; `first`: the connection's first (where the
/// HTTP/2 preface may come).
pub(super) fn request(head: &Head<'_>, first: bool) -> Result<Framing, Violation> {
    let (request_line, fields) = (head.start_line, &head.fields);
    if first && request_line == b"PRI * HTTP/2.0" {
        return Ok(Framing::Opaque);
    }
    // The target is hyper's parser's to check (it refuses spaces in it).
    let (Some(first), Some(last)) = (memchr::memchr(b' ', request_line), memchr::memrchr(b' ', request_line)) else {
        return Err(Violation::RequestLine);
    };
    let (method, target, version) = (&request_line[..first], &request_line[(first + 1).min(last)..last], &request_line[last + 1..]);
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(Violation::RequestLine),
    };
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|b| is_token(*b)) || target.is_empty() {
        return Err(Violation::RequestLine);
    }
    match fields.host {
        Some(host) if !valid_host(host) => return Err(Violation::Host),
        None if !http10 => return Err(Violation::MissingHost),
        _ => {}
    }
    if fields.chunked && http10 {
        return Err(Violation::TransferEncodingOnHttp10);
    }
    // As hyper decides: `CONNECT` on any version, `Upgrade` on HTTP/1.1.
    if method == b"CONNECT" || (fields.upgrade && !http10) {
        return Ok(Framing::Upgrade);
    }
    Ok(match (fields.chunked, fields.content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(length)) => Framing::Length(length),
    })
}

/// Checks a response head; `to_head`: it answers a `HEAD` request.
pub(super) fn response(head: &Head<'_>, to_head: bool) -> Result<Framing, Violation> {
    let (status_line, fields) = (head.start_line, &head.fields);
    let code = match status_line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0' | b'1', b' ', code @ ..] if code.len() >= 3 => &code[..3],
        _ => return Err(Violation::StatusLine),
    };
    let reason = &status_line[12..];
    let valid_reason = reason.is_empty() || (reason[0] == b' ' && reason.iter().all(|b| is_field_text(*b)));
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' || !valid_reason {
        return Err(Violation::StatusLine);
    }
    Ok(match code {
        b"101" => Framing::Opaque,
        [b'1', ..] => Framing::Interim,
        b"204" | b"304" => Framing::Empty,
        _ if to_head => Framing::Empty,
        _ => match (fields.chunked, fields.content_length) {
            (true, _) => Framing::Chunked,
            (false, Some(0)) => Framing::Empty,
            (false, Some(length)) => Framing::Length(length),
            (false, None) => Framing::Opaque,
        },
    })
}

/// `Content-Length`: one to 19 digits (so it fits 64 bits), nothing else
/// (no sign, list or spaces).
pub(super) fn content_length(value: &[u8]) -> Result<u64, Violation> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Violation::ContentLength);
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// `Host`: empty, or a name of letters, digits, `-`, `.`, `_`, `~`, or a
/// bracketed IPv6 address, with an optional port of up to 5 digits.
fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.first() {
        Some(b'[') => match memchr::memchr(b']', host) {
            Some(close) => {
                let inside = &host[1..close];
                if inside.is_empty() || !inside.iter().all(|b| b.is_ascii_hexdigit() || b":.".contains(b)) {
                    return false;
                }
                (&host[..0], &host[close + 1..])
            }
            None => return false,
        },
        _ => match memchr::memchr(b':', host) {
            Some(colon) => (&host[..colon], &host[colon..]),
            None => (host, &host[..0]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    port_ok && name.iter().all(|b| HOST_NAME[usize::from(*b)])
}

/// The bytes of a host name [`valid_host`] takes, as a table: one load per byte.
const HOST_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

/// Whether a name may spell another with other separators: it has a `_`,
/// a `.` or a `--`.
pub fn disguised(name: &[u8]) -> bool {
    let mut previous = 0;
    for &b in name {
        if b == b'_' || b == b'.' || (b == b'-' && previous == b'-') {
            return true;
        }
        previous = b;
    }
    false
}

/// Equal, taking any run of `-`, `_` and `.` in `name` for a `-` of
/// the lowercase `canonical`, in any case: `X_User__Id` is `x-user-id`.
pub fn same_but_separators(name: &[u8], canonical: &[u8]) -> bool {
    matches!(strip_prefix_but_separators(name, canonical), Some([]))
}

/// What follows `canonical` at the start of `name`, compared as by
/// [`same_but_separators`]: `x__consumer_foo` starts with `x-consumer-`.
pub fn strip_prefix_but_separators<'a>(name: &'a [u8], canonical: &[u8]) -> Option<&'a [u8]> {
    if name.len() < canonical.len() {
        return None; // separator runs only make a name longer
    }
    let separator = |b: u8| matches!(b, b'-' | b'_' | b'.');
    let mut at = 0;
    for expected in canonical {
        let b = *name.get(at)?;
        at += 1;
        if *expected == b'-' && separator(b) {
            while name.get(at).is_some_and(|b| separator(*b)) {
                at += 1;
            }
        } else if b == b'-' || !b.eq_ignore_ascii_case(expected) {
            return None;
        }
    }
    Some(&name[at..])
}

/// A byte a field value (or a reason phrase) may hold: visible ASCII,
/// space, tab and obs-text (RFC 9110 §5.5), what `HeaderValue` accepts.
pub(super) fn is_field_text(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// `tchar` of RFC 9110 §5.6.2.
pub(super) fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// [`is_token`] as a table: one load per byte.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'..=b'`' | b'|' | b'~');
        b += 1;
    }
    table
};

/// Without leading and trailing spaces and tabs.
pub(super) fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &value[start..end]
}
