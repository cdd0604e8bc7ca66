//! A deliberately strict HTTP/1.1 request parser: CRLF only, no obs-fold,
//! token names, no CTLs in values, one Host, one framing header (a single
//! `Content-Length` of digits, or `Transfer-Encoding: chunked` alone, never
//! both, never on HTTP/1.0), no look-alike framing names
//! (`Transfer_Encoding`), clean chunk syntax, no framing fields in trailers.
//! What it accepts is "cleanly framed": every parser reads it the same way.
//! The recorder uses it on what a proxy forwards; the runner uses it (without
//! the Host rule) to find which requests a vector itself contains.

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// The values of the fields called `name` (case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The request asks to switch protocols: what follows is not HTTP.
    pub fn upgrades(&self) -> bool {
        self.values("upgrade").next().is_some()
    }

    /// Nothing may follow this request on its connection.
    pub fn closes(&self) -> bool {
        let tokens = |token: &str| {
            self.values("connection").any(|v| String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        tokens("close") || (self.version == "HTTP/1.0" && !tokens("keep-alive"))
    }
}

/// Which rules apply beyond framing.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// HTTP/1.1 needs exactly one Host (what a proxy forwards); a client's
    /// own request may lack it (the proxy adds one).
    pub require_host: bool,
}

/// The outcome of parsing from the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A request and the bytes it took (leading empty lines included).
    Complete(Request, usize),
    /// Valid so far; more bytes are needed.
    Incomplete,
    /// Not cleanly framed, and why.
    Invalid(String),
}

const MAX_HEAD: usize = 1 << 20;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

enum Line<'a> {
    Line(&'a [u8], usize),
    Incomplete,
}

/// The line at `pos` ending in CRLF, and where the next begins.
fn line(buf: &[u8], pos: usize) -> Result<Line<'_>, String> {
    for i in pos..buf.len() {
        match buf[i] {
            b'\n' => return Err(format!("bare LF at byte {i}")),
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(Line::Incomplete),
                    Some(b'\n') => Ok(Line::Line(&buf[pos..i], i + 2)),
                    Some(_) => Err(format!("bare CR at byte {i}")),
                };
            }
            _ => {}
        }
    }
    if buf.len() - pos > MAX_HEAD { Err("line over 1 MiB".into()) } else { Ok(Line::Incomplete) }
}

macro_rules! next_line {
    ($buf:expr, $pos:expr) => {
        match line($buf, $pos) {
            Err(e) => return Parse::Invalid(e),
            Ok(Line::Incomplete) => return Parse::Incomplete,
            Ok(Line::Line(l, next)) => (l, next),
        }
    };
}

/// A field line: `name ":" OWS value OWS`, strictly.
fn field(line: &[u8]) -> Result<(String, Vec<u8>), String> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err("obs-fold (a line starting with whitespace)".into());
    }
    let colon =
        line.iter().position(|&b| b == b':').ok_or_else(|| format!("field line without a colon: {}", super::corpus::escape(line)))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err(format!("field name is not a token: {}", super::corpus::escape(name)));
    }
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    let value = &value[start..end];
    if let Some(&bad) = value.iter().find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("control byte \\x{bad:02x} in the value of {}", String::from_utf8_lossy(name)));
    }
    Ok((String::from_utf8_lossy(name).into_owned(), value.to_vec()))
}

fn squash(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase()).collect()
}

/// Parses one request from the start of `buf`.
pub fn parse_request(buf: &[u8], rules: Rules) -> Parse {
    let mut pos = 0;
    while buf[pos..].starts_with(b"\r\n") {
        pos += 2;
    }
    if pos == buf.len() || buf[pos..] == *b"\r" {
        return Parse::Incomplete;
    }
    let (request_line, mut pos) = next_line!(buf, pos);
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Parse::Invalid(format!("request line is not three parts: {}", super::corpus::escape(request_line)));
    };
    if !is_token(method) {
        return Parse::Invalid("method is not a token".into());
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Parse::Invalid(format!("bad request target {}", super::corpus::escape(target)));
    }
    if *version != b"HTTP/1.1" && *version != b"HTTP/1.0" {
        return Parse::Invalid(format!("bad version {}", super::corpus::escape(version)));
    }
    let mut request = Request {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        version: String::from_utf8_lossy(version).into_owned(),
        headers: Vec::new(),
    };
    loop {
        let (l, next) = next_line!(buf, pos);
        pos = next;
        if l.is_empty() {
            break;
        }
        match field(l) {
            Ok(f) => request.headers.push(f),
            Err(e) => return Parse::Invalid(e),
        }
        if request.headers.len() > 1000 {
            return Parse::Invalid("over 1000 fields".into());
        }
    }
    for (name, _) in &request.headers {
        let squashed = squash(name);
        if (squashed == "transferencoding" || squashed == "contentlength")
            && !name
                .eq_ignore_ascii_case(&squashed.replace("transferencoding", "transfer-encoding").replace("contentlength", "content-length"))
        {
            return Parse::Invalid(format!("look-alike framing field {name}"));
        }
    }
    let hosts = request.values("host").count();
    if hosts > 1 || (rules.require_host && request.version == "HTTP/1.1" && hosts != 1) {
        return Parse::Invalid(format!("{hosts} Host fields"));
    }
    let lengths: Vec<&[u8]> = request.values("content-length").collect();
    let codings: Vec<&[u8]> = request.values("transfer-encoding").collect();
    if !codings.is_empty() && !lengths.is_empty() {
        return Parse::Invalid("Transfer-Encoding and Content-Length together".into());
    }
    if lengths.len() > 1 {
        return Parse::Invalid("several Content-Length fields".into());
    }
    if codings.len() > 1 {
        return Parse::Invalid("several Transfer-Encoding fields".into());
    }
    if let Some(length) = lengths.first() {
        if length.is_empty() || length.len() > 12 || !length.iter().all(u8::is_ascii_digit) {
            return Parse::Invalid(format!("bad Content-Length {}", super::corpus::escape(length)));
        }
        let n: usize = String::from_utf8_lossy(length).parse().unwrap_or(usize::MAX);
        return if buf.len() - pos >= n { Parse::Complete(request, pos + n) } else { Parse::Incomplete };
    }
    if let Some(coding) = codings.first() {
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Parse::Invalid(format!("Transfer-Encoding {} is not just chunked", super::corpus::escape(coding)));
        }
        if request.version == "HTTP/1.0" {
            return Parse::Invalid("Transfer-Encoding on HTTP/1.0".into());
        }
        return match chunked(buf, pos) {
            Ok(Some(end)) => Parse::Complete(request, end),
            Ok(None) => Parse::Incomplete,
            Err(e) => Parse::Invalid(e),
        };
    }
    Parse::Complete(request, pos)
}

fn chunk_extensions(ext: &[u8]) -> Result<(), String> {
    for piece in ext.split(|&b| b == b';').skip(1) {
        let piece = String::from_utf8_lossy(piece);
        let piece = piece.trim_matches([' ', '\t']);
        let (name, value) = piece
            .split_once('=')
            .map_or((piece, None), |(n, v)| (n.trim_end_matches([' ', '\t']), Some(v.trim_start_matches([' ', '\t']))));
        let quoted =
            |v: &str| v.len() >= 2 && v.starts_with('"') && v.ends_with('"') && v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        if !is_token(name.as_bytes()) || value.is_some_and(|v| !is_token(v.as_bytes()) && !quoted(v)) {
            return Err(format!("bad chunk extension {}", super::corpus::escape(ext)));
        }
    }
    Ok(())
}

/// The end of a chunked body starting at `pos`, `None` if incomplete.
fn chunked(buf: &[u8], mut pos: usize) -> Result<Option<usize>, String> {
    loop {
        let (size_line, next) = match line(buf, pos)? {
            Line::Incomplete => return Ok(None),
            Line::Line(l, n) => (l, n),
        };
        let digits_end = size_line.iter().position(|&b| b == b';').unwrap_or(size_line.len());
        let digits = &size_line[..digits_end];
        if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("bad chunk size line {}", super::corpus::escape(size_line)));
        }
        chunk_extensions(&size_line[digits_end..])?;
        let size = usize::from_str_radix(&String::from_utf8_lossy(digits), 16).map_err(|e| e.to_string())?;
        pos = next;
        if size == 0 {
            loop {
                let (l, next) = match line(buf, pos)? {
                    Line::Incomplete => return Ok(None),
                    Line::Line(l, n) => (l, n),
                };
                pos = next;
                if l.is_empty() {
                    return Ok(Some(pos));
                }
                let (name, _) = field(l).map_err(|e| format!("trailer: {e}"))?;
                if ["content-length", "transfer-encoding", "host"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
                    return Err(format!("framing field {name} in the trailers"));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if buf[pos + size..pos + size + 2] != *b"\r\n" {
            return Err(format!("chunk data of size {size} not followed by CRLF"));
        }
        pos += size + 2;
    }
}

/// The requests a client's bytes contain, as a strict reader sees them: the
/// clean requests in order, stopping at the first that is invalid or
/// incomplete, or after one that closes or upgrades the connection.
#[derive(Debug, Clone, Default)]
pub struct OwnRequests {
    /// `(method, target)` of each request the client sent.
    pub requests: Vec<(String, String)>,
    /// The last request is incomplete: the proxy may rightly wait.
    pub incomplete: bool,
    /// A request upgrades the connection: what follows is tunnel data.
    pub upgrades: bool,
}

/// What a vector's bytes ask for, for judging.
pub fn own_requests(bytes: &[u8]) -> OwnRequests {
    let mut own = OwnRequests::default();
    let mut pos = 0;
    while pos < bytes.len() {
        match parse_request(&bytes[pos..], Rules { require_host: false }) {
            Parse::Complete(request, used) => {
                own.requests.push((request.method.clone(), request.target.clone()));
                pos += used;
                if request.upgrades() {
                    own.upgrades = true;
                    break;
                }
                if request.closes() {
                    break;
                }
            }
            Parse::Incomplete => {
                own.incomplete = true;
                break;
            }
            Parse::Invalid(_) => break,
        }
    }
    if own.requests.is_empty() && !own.incomplete {
        // Invalid strictly; if reading bare LF as CRLF leaves it unfinished,
        // a lenient proxy may rightly wait for more.
        let mut lenient = Vec::with_capacity(bytes.len() + 16);
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
                lenient.push(b'\r');
            }
            lenient.push(b);
        }
        own.incomplete = parse_request(&lenient, Rules { require_host: false }) == Parse::Incomplete;
    }
    if !bytes.windows(4).any(|w| w == b"\r\n\r\n") && !bytes.windows(2).any(|w| w == b"\n\n") {
        // No reader can have a whole head: any proxy may rightly wait.
        own.incomplete = true;
    }
    if own.requests.is_empty() {
        // Not cleanly framed: the client's own request is its first line.
        let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(0);
        let first = bytes[start..].split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
        let mut parts = first.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let target = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        own.requests.push((method, target));
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Rules = Rules { require_host: true };

    #[test]
    fn accepts_clean_requests_and_reports_their_length() {
        let raw = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET";
        assert!(matches!(parse_request(raw, STRICT), Parse::Complete(ref r, 50) if r.target == "/a"));
        let chunked = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nhi\r\n0\r\nX-T: 1\r\n\r\n";
        assert!(matches!(parse_request(chunked, STRICT), Parse::Complete(_, n) if n == chunked.len()));
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n", STRICT), Parse::Incomplete);
    }

    #[test]
    fn rejects_ambiguous_framing() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        ] {
            assert!(matches!(parse_request(raw, STRICT), Parse::Invalid(_)), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn own_requests_stop_at_ambiguity_and_close() {
        let own = own_requests(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        assert_eq!(own.requests.len(), 2, "Host is not required of the client");
        let own = own_requests(b"GET /a HTTP/1.0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
        assert_eq!(own.requests, vec![("GET".into(), "/a".into())]);
        let own = own_requests(
            b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        );
        assert_eq!(own.requests, vec![("POST".into(), "/p".into())]);
    }

    #[test]
    fn no_vector_sends_smuggled_as_its_own_request() {
        let vectors = super::super::load_corpus(&super::super::corpus::default_dir()).expect("corpus");
        let clean: Vec<String> = vectors
            .into_iter()
            .filter(|v| own_requests(&v.bytes).requests.iter().any(|(_, t)| t.contains("/smuggled")))
            .map(|v| v.name)
            .collect();
        assert!(clean.is_empty(), "these vectors send /smuggled as a clean request of their own: {clean:?}");
    }
}
