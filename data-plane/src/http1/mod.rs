//! A strict HTTP/1 wire guard, on both sides of the proxy.
//!
//! hyper parses HTTP/1 leniently where leniency lets two parsers disagree
//! about where a message ends (request smuggling, response splitting): it
//! takes a bare `LF` as a line end, honours `Transfer-Encoding: chunked`
//! sent twice, and lets a request without `Host`, with two, or with a
//! malformed one through. Its parser cannot be made stricter from outside.
//! So Portico's own HTTP/1 server ([`server`]), which serves a connection's
//! requests without a body, checks each head against the rules below
//! itself, and hands a connection to hyper's server only as it is, from a
//! request on: there every byte passes a [`Scanner`] first ([`Guarded`], an
//! IO wrapper), which finds each request head, checks it against the same
//! rules, and follows the body's framing (length or chunked) to the next
//! head. Neither changes a byte.
//!
//! - **Client side.** A request head that breaks a rule is recorded with
//!   its position on the connection ([`Verdicts`]); the proxy answers that
//!   request itself (`400`) and closes the
//!   connection, so nothing after it is ever read as a request. A malformed
//!   chunked body fails the read: the proxy answers `400`, never blaming
//!   the upstream. After an upgrade request (`Upgrade`, `CONNECT`) or the
//!   HTTP/2 preface, bytes are not HTTP/1 and pass unchecked; the proxy
//!   closes a connection whose upgrade was refused.
//! - **Upstream side.** The fast lane reads responses itself
//!   ([`response`]) by the same rules: a response that breaks one, or any
//!   byte the upstream sends beyond the responses asked for (a body on a
//!   `204`, `304` or `HEAD` response, bytes after the body), is refused:
//!   the client gets `502` and the connection is never reused. The `http1`
//!   fuzz target reads responses with it as the fast lane does.
//!
//! The rules (RFC 9112 where it says MUST, the stricter reading where it
//! allows a choice), each a [`Violation`]: no bare `LF` (even inside a CRLF
//! head); no obs-fold; a request line of `method SP target SP
//! HTTP/1.0|HTTP/1.1` with a method of at most 32 bytes; at most one
//! `Content-Length`, all digits; at most one `Transfer-Encoding`, exactly
//! `chunked`, never beside `Content-Length` nor on HTTP/1.0; no
//! `Content-Length` or `Transfer-Encoding` spelled with other separators;
//! requests: exactly one valid `Host` on HTTP/1.1 (none or one on
//! HTTP/1.0); chunk sizes of 1 to 16 hex digits and nothing else, extensions
//! by their grammar, every chunk and trailer line ending in `CRLF`. What
//! hyper's parser refuses itself (a bare `CR`, names that are not tokens,
//! control bytes in values, spaces in the target) is not checked twice.

mod chunked;
mod guard;
mod head;
mod replay;
pub mod response;
pub mod server;

pub use guard::{Guarded, Verdict, Verdicts};
pub use head::{Side, Violation, disguised, same_but_separators, strip_prefix_but_separators};
pub use replay::Replayed;

use self::chunked::Chunked;
use self::head::Framing;

/// Longest request head the scanner follows: the HTTP codec's own cap
/// (`server::CODEC_MAX_HEADER_BYTES`); past it the codec answers `431`.
pub const MAX_REQUEST_HEAD: usize = 256 * 1024;
/// Longest upstream response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header fields a header map kept for the next message (by a client
/// or upstream connection) has room for: a message of many more does not
/// leave its map to idle with the connection.
const KEPT_FIELDS: usize = 64;

/// `map` emptied, to take the next message's fields without allocating
/// (an empty map instead when it has room for more than [`KEPT_FIELDS`]).
pub fn kept(mut map: http::HeaderMap) -> http::HeaderMap {
    if map.capacity() > KEPT_FIELDS {
        return http::HeaderMap::new();
    }
    map.clear();
    map
}

/// Whether a comma-separated field value lists `token`, in any case.
pub fn value_lists(value: &[u8], token: &str) -> bool {
    value.split(|b| *b == b',').any(|listed| listed.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The rule a failed read broke, when `error` is such a read's error.
pub fn violation(error: &(dyn std::error::Error + 'static)) -> Option<Violation> {
    let io = error.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<Violation>().copied()
}

/// Where the scanner is in the byte stream.
#[derive(Debug)]
enum State {
    /// Between messages, or inside a head (its bytes so far in `Scanner::head`).
    Head,
    /// Inside a body of known length: this many bytes left.
    Length(u64),
    Chunked(Chunked),
    /// Not HTTP/1 messages any more (an upgrade, HTTP/2, a body read until
    /// the connection closes), or a violation was found: nothing is checked.
    Done,
}

/// Follows HTTP/1 messages through a byte stream, checking each head and
/// body framing. Feed it every byte read, in order.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// A head that spans reads, so far.
    head: Vec<u8>,
    /// Heads complete so far (requests), for the verdicts' positions.
    heads: u64,
    /// The request head that asked for an upgrade, past which nothing is checked.
    upgrade: Option<u64>,
    /// The connection began with the HTTP/2 preface.
    http2: bool,
    /// The stream starts where the connection does (where the HTTP/2
    /// preface may come), not after requests read by another reader.
    opening: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

/// What a fed read turned out to hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Fault {
    /// Request head number `index` (from 0) on the connection broke a rule.
    /// The bytes are still to be passed on; the connection is answered and closed.
    Head { index: u64, violation: Violation },
    /// The stream broke a rule `at` this offset of the fed bytes (those
    /// before it are sound): the connection fails there.
    Stream { at: usize, violation: Violation },
}

impl Scanner {
    pub const fn new() -> Self {
        Self { state: State::Head, head: Vec::new(), heads: 0, upgrade: None, http2: false, opening: true }
    }

    /// A scanner of a connection's bytes from a request after its first
    /// (requests before it were read by another reader): the HTTP/2 preface
    /// is a bad request line there.
    pub const fn resumed() -> Self {
        Self { state: State::Head, head: Vec::new(), heads: 0, upgrade: None, http2: false, opening: false }
    }

    /// Request heads complete so far (what the fuzz target compares with
    /// another parser).
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// The request (by position, from 0) that asked for an upgrade, after
    /// which the scanner checks nothing.
    pub fn upgrade_request(&self) -> Option<u64> {
        self.upgrade
    }

    /// Whether the connection began with the HTTP/2 preface.
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// Whether the next byte starts a new message (or leading empty lines).
    pub fn between_messages(&self) -> bool {
        matches!(self.state, State::Head) && self.head.is_empty()
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Fault> {
        let fed = bytes.len();
        while !bytes.is_empty() {
            let at = fed - bytes.len();
            match &mut self.state {
                State::Head => {
                    let used = self.head_bytes(bytes)?;
                    bytes = &bytes[used..];
                }
                State::Length(left) => {
                    let used = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len());
                    *left -= used as u64;
                    if *left == 0 {
                        self.message_done();
                    }
                    bytes = &bytes[used..];
                }
                State::Chunked(chunked) => {
                    let (used, done) = chunked.feed(bytes).map_err(|violation| self.fail(Fault::Stream { at, violation }))?;
                    if done {
                        self.message_done();
                    }
                    bytes = &bytes[used..];
                }
                State::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// Takes bytes of a head; returns how many belong to it (all of them
    /// while the head is not complete).
    fn head_bytes(&mut self, bytes: &[u8]) -> Result<usize, Fault> {
        let limit = MAX_REQUEST_HEAD;
        if self.head.is_empty() {
            // The usual case: the whole head in one read, read in place.
            return match head::read(bytes, Side::Client) {
                Ok(Some(head)) => self.head_done(&head).map(|()| head.span.end),
                Ok(None) if bytes.len() > limit => Err(self.head_fault(Violation::HeadTooLarge)),
                Ok(None) => {
                    self.head.extend_from_slice(bytes);
                    Ok(bytes.len())
                }
                Err(violation) => Err(self.head_fault(violation)),
            };
        }
        let before = self.head.len();
        let taken = bytes.len().min((limit + 1).saturating_sub(before));
        self.head.extend_from_slice(&bytes[..taken]);
        // What was there before was checked already (but its last bytes,
        // which may start a line end); the head is read once complete.
        match head::find_end(&self.head, before.saturating_sub(3), Side::Client) {
            Ok(Some(_)) => {
                // The buffer goes (a head rarely spans reads; an idle
                // connection keeps no memory for one).
                let buffered = std::mem::take(&mut self.head);
                match head::read(&buffered, Side::Client) {
                    Ok(Some(head)) => self.head_done(&head).map(|()| head.span.end - before),
                    Ok(None) => Ok(taken), // cannot be: find_end found the end
                    Err(violation) => Err(self.head_fault(violation)),
                }
            }
            Ok(None) if self.head.len() > limit => Err(self.head_fault(Violation::HeadTooLarge)),
            Ok(None) => Ok(taken),
            Err(violation) => Err(self.head_fault(violation)),
        }
    }

    /// A complete head: check it and follow its body.
    fn head_done(&mut self, head: &head::Head<'_>) -> Result<(), Fault> {
        let framing = head::request(head, self.opening && self.heads == 0).map_err(|violation| self.head_fault(violation))?;
        self.heads += 1;
        self.state = match framing {
            Framing::Empty => {
                self.message_done();
                return Ok(());
            }
            Framing::Interim => State::Head,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::Chunked(Chunked::new()),
            // Only the HTTP/2 preface is opaque in a request stream.
            Framing::Opaque => {
                self.http2 = true;
                State::Done
            }
            Framing::Upgrade => {
                self.upgrade = Some(self.heads - 1);
                State::Done
            }
        };
        Ok(())
    }

    fn message_done(&mut self) {
        self.state = State::Head;
    }

    /// A head broke a rule: the request is answered, the connection closed.
    fn head_fault(&mut self, violation: Violation) -> Fault {
        self.fail(Fault::Head { index: self.heads, violation })
    }

    fn fail(&mut self, fault: Fault) -> Fault {
        self.state = State::Done;
        self.head = Vec::new();
        fault
    }
}

#[cfg(test)]
mod tests;
