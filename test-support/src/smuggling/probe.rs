//! Sends one vector to a proxy and judges what happened on both sides.
//!
//! A vector passes only if all of these hold:
//! * the client got a 4xx (or 501/505) or a close, or exactly one response
//!   from the upstream per request it sent (a strict reading of its bytes,
//!   [`super::wire::own_requests`]), each naming that request, and never two
//!   responses for one request;
//! * the upstream saw nothing, or cleanly framed requests that are the
//!   client's own (plus the follow-up); never `/smuggled`, never bytes it
//!   could not parse or bytes left after a body;
//! * if the connection stayed open, a follow-up `GET /follow-up` on it got
//!   its own 200 from the upstream;
//! * a vector marked `expect: reject` was rejected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::corpus::{Expect, Vector, escape};
use super::recorder::{ConnLog, Recorder};
use super::wire::{OwnRequests, own_requests};

/// Sent on the vector's connection once it has been answered.
pub const FOLLOW_UP: &[u8] = b"GET /follow-up HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// How long to wait, per vector.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// For the first response (or a close) after sending.
    pub response: Duration,
    /// After the expected responses, for anything extra (a second response).
    pub quiet: Duration,
    /// For the first response to a vector that is incomplete (a proxy that
    /// rejects does so at once; one that waits for more bytes is right).
    pub incomplete: Duration,
    /// For the proxy to close its upstream connections afterwards.
    pub settle: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            response: Duration::from_millis(1000),
            quiet: Duration::from_millis(50),
            incomplete: Duration::from_millis(300),
            settle: Duration::from_millis(1000),
        }
    }
}

/// How a vector was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    /// 4xx/501/505 or a close, and nothing of it reached the upstream.
    Rejected,
    /// Reached the upstream as cleanly framed requests, answered once each.
    ForwardedCleanly,
    /// Something of the list in the module doc did not hold.
    Failed,
}

/// A vector's verdict and why.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub reason: String,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.kind != VerdictKind::Failed
    }
}

/// One response the client read.
#[derive(Debug, Clone)]
struct Response {
    status: u16,
    /// `X-Recorder-Saw`: the request the upstream answered.
    saw: Option<String>,
}

impl Response {
    fn describe(&self) -> String {
        match &self.saw {
            Some(saw) => format!("{} from the upstream for {saw}", self.status),
            None => format!("{} from the proxy", self.status),
        }
    }

    fn is_rejection(&self) -> bool {
        self.saw.is_none() && ((400..500).contains(&self.status) || self.status == 501 || self.status == 505)
    }
}

/// What one phase (the vector, or the follow-up) got back.
#[derive(Debug, Default)]
struct Phase {
    responses: Vec<Response>,
    eof: bool,
    tunnel: bool,
    garbage: Option<String>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Parsed {
    Done(Option<Response>, usize),
    More,
    Bad(String),
}

/// One response from the start of `buf`, leniently: the proxy's framing.
fn parse_response(buf: &[u8], head: bool, eof: bool) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n").map(|e| e + 4).or_else(|| find(buf, b"\n\n").map(|e| e + 2)) else {
        return if eof && !buf.is_empty() {
            Parsed::Bad(format!("truncated response head: {}", escape(&buf[..buf.len().min(200)])))
        } else {
            Parsed::More
        };
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.strip_prefix("HTTP/1.").and_then(|s| s.get(2..5)).and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Parsed::Bad(format!("not a response: {}", escape(&buf[..buf.len().min(200)])));
    };
    let mut length = None;
    let mut chunked = false;
    let mut saw = None;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "x-recorder-saw" => saw = Some(value.to_owned()),
            _ => {}
        }
    }
    if (100..200).contains(&status) {
        // Interim: 100 Continue is skipped; 101 starts a tunnel.
        return Parsed::Done((status == 101).then_some(Response { status, saw }), end);
    }
    let response = Response { status, saw };
    if head || status == 204 || status == 304 {
        return Parsed::Done(Some(response), end);
    }
    if chunked {
        let mut pos = end;
        loop {
            let Some(line_end) = find(&buf[pos..], b"\r\n") else { return Parsed::More };
            let size_text = String::from_utf8_lossy(&buf[pos..pos + line_end]).into_owned();
            let size_text = size_text.split(';').next().unwrap_or_default().trim().to_owned();
            let Ok(size) = usize::from_str_radix(&size_text, 16) else {
                return Parsed::Bad(format!("bad chunk size in a response: {size_text:?}"));
            };
            pos += line_end + 2;
            if size == 0 {
                let Some(trailer_end) =
                    find(&buf[pos..], b"\r\n\r\n").map(|e| e + 4).or_else(|| buf[pos..].starts_with(b"\r\n").then_some(2))
                else {
                    return Parsed::More;
                };
                return Parsed::Done(Some(response), pos + trailer_end);
            }
            if buf.len() < pos + size + 2 {
                return Parsed::More;
            }
            pos += size + 2;
        }
    }
    match length {
        Some(n) if buf.len() >= end + n => Parsed::Done(Some(response), end + n),
        Some(_) => Parsed::More,
        None if eof => Parsed::Done(Some(response), buf.len()),
        None => Parsed::More,
    }
}

/// Reads responses until `want` have come and `quiet` passed without more,
/// or the connection closed, or `response` passed with fewer.
async fn read_phase(stream: &mut TcpStream, methods: &[String], want: usize, timing: &Timing) -> Phase {
    let mut phase = Phase::default();
    let mut buf = Vec::new();
    let start = Instant::now();
    let mut last = Instant::now();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Parse what is complete.
        while !phase.tunnel && phase.garbage.is_none() {
            let head = methods.get(phase.responses.len()).is_some_and(|m| m == "HEAD");
            match parse_response(&buf, head, phase.eof) {
                Parsed::Done(response, used) => {
                    buf.drain(..used);
                    if let Some(response) = response {
                        phase.tunnel = response.status == 101;
                        phase.responses.push(response);
                    }
                }
                Parsed::More => break,
                Parsed::Bad(reason) => phase.garbage = Some(reason),
            }
        }
        if phase.eof {
            break;
        }
        let settled =
            phase.tunnel || phase.garbage.is_some() || phase.responses.len() >= want || phase.responses.iter().any(Response::is_rejection);
        let wait = if settled { timing.quiet.saturating_sub(last.elapsed()) } else { timing.response.saturating_sub(start.elapsed()) };
        if wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => phase.eof = true,
            Ok(Ok(n)) => {
                if !phase.tunnel {
                    buf.extend_from_slice(&chunk[..n]);
                }
                last = Instant::now();
            }
        }
    }
    phase
}

fn strip_target(target: &str) -> String {
    let target = target.split('#').next().unwrap_or_default();
    if let Some(rest) = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://")) {
        return match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => rest[i..].to_owned(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_owned(),
        };
    }
    target.to_owned()
}

/// Sends `vector` to `proxy` on a fresh connection and judges the exchange
/// and what `recorder` (the proxy's upstream) received.
pub async fn probe(proxy: SocketAddr, vector: &Vector, recorder: &Recorder, timing: &Timing) -> Verdict {
    recorder.take(timing.settle).await; // forget anything from before
    let own = own_requests(&vector.bytes);
    let methods: Vec<String> = own.requests.iter().map(|(m, _)| m.clone()).collect();
    let mut stream = match TcpStream::connect(proxy).await {
        Ok(s) => s,
        Err(e) => return Verdict { kind: VerdictKind::Failed, reason: format!("cannot connect to the proxy: {e}") },
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.write_all(&vector.bytes).await; // a proxy may close before reading it all
    let first_timing = if own.incomplete { Timing { response: timing.incomplete, ..*timing } } else { *timing };
    let first = read_phase(&mut stream, &methods, own.requests.len(), &first_timing).await;
    // After an upgrade request the client's bytes are the new protocol's,
    // answered with a 101 or not: no follow-up then.
    let follow = if !first.eof && !first.tunnel && !own.incomplete && !own.upgrades && stream.write_all(FOLLOW_UP).await.is_ok() {
        Some(read_phase(&mut stream, &["GET".to_owned()], 1, timing).await)
    } else {
        None
    };
    drop(stream);
    let upstream = recorder.take(timing.settle).await;
    judge(vector, &own, &first, follow.as_ref(), &upstream)
}

fn judge(vector: &Vector, own: &OwnRequests, first: &Phase, follow: Option<&Phase>, upstream: &[ConnLog]) -> Verdict {
    let mut failures: Vec<String> = Vec::new();
    let own_targets: Vec<String> = own.requests.iter().map(|(_, t)| strip_target(t)).collect();

    // The upstream side.
    let mut seen: Vec<String> = Vec::new();
    for (i, conn) in upstream.iter().enumerate() {
        seen.extend(conn.requests.iter().map(|(m, t)| format!("{m} {t}")));
        if let Some(error) = &conn.error {
            let from = conn.bytes.len() - conn.pending;
            failures
                .push(format!("upstream connection {i} got bytes that are not cleanly framed ({error}): {}", clip(&conn.bytes[from..])));
        } else if conn.pending > 0 && !own.incomplete {
            let from = conn.bytes.len() - conn.pending;
            failures.push(format!("upstream connection {i} got an unfinished request: {}", clip(&conn.bytes[from..])));
        }
        if !conn.closed {
            failures.push(format!("upstream connection {i} was still open {:?} after the exchange", Timing::default().settle));
        }
    }
    let follow_ups = seen.iter().filter(|s| strip_target(s.split(' ').nth(1).unwrap_or_default()) == "/follow-up").count();
    let others: Vec<&String> = seen.iter().filter(|s| strip_target(s.split(' ').nth(1).unwrap_or_default()) != "/follow-up").collect();
    if others.iter().any(|s| s.contains("/smuggled")) {
        failures.push(format!("a smuggled request reached the upstream (it saw: {})", seen.join(", ")));
    } else {
        for (i, s) in others.iter().enumerate() {
            let target = strip_target(s.split(' ').nth(1).unwrap_or_default());
            if own_targets.get(i) != Some(&target) {
                failures.push(format!(
                    "the upstream saw {s}, which the client did not send as request {} (it sent {:?})",
                    i + 1,
                    own_targets
                ));
                break;
            }
        }
    }
    if follow_ups > 1 || (follow.is_none() && follow_ups > 0) {
        failures.push(format!("the upstream saw /follow-up {follow_ups} times for {} sent", u8::from(follow.is_some())));
    }

    // The client side, for the vector.
    let from_upstream: Vec<&Response> = first.responses.iter().filter(|r| r.saw.is_some()).collect();
    let from_proxy: Vec<&Response> = first.responses.iter().filter(|r| r.saw.is_none()).collect();
    let describe = |p: &Phase| p.responses.iter().map(Response::describe).collect::<Vec<_>>().join(", ");
    if let Some(garbage) = &first.garbage {
        failures.push(format!("the client got {garbage}"));
    }
    if from_upstream.len() > own.requests.len() {
        failures.push(format!(
            "the client got {} upstream responses for {} request(s): {}",
            from_upstream.len(),
            own.requests.len(),
            describe(first)
        ));
    }
    for (i, r) in from_upstream.iter().enumerate() {
        let named = r.saw.as_deref().and_then(|s| s.split(' ').nth(1)).map(strip_target);
        if let (Some(named), Some(expected)) = (named, own_targets.get(i))
            && named != *expected
        {
            failures.push(format!("response {} names {named}, not {expected}", i + 1));
        }
    }
    for r in &from_proxy {
        if !r.is_rejection() {
            failures.push(format!("the proxy answered {}", r.status));
        }
    }
    if from_proxy.len() > 1 || from_proxy.first().is_some_and(|r| !std::ptr::eq(*r, &first.responses[first.responses.len() - 1])) {
        failures.push(format!("the proxy's own answer is not the last and only one: {}", describe(first)));
    }
    let rejected = first.responses.first().map_or(first.eof, Response::is_rejection);
    let silent = first.responses.is_empty() && !first.eof;

    // The follow-up.
    if let Some(phase) = follow {
        let ok =
            phase.responses.len() == 1 && phase.responses[0].status == 200 && phase.responses[0].saw.as_deref() == Some("GET /follow-up");
        if !(ok || (phase.responses.is_empty() && phase.eof)) {
            let got = if phase.responses.is_empty() { format!("nothing within {:?}", Timing::default().response) } else { describe(phase) };
            failures.push(format!("the follow-up on the same connection got {got} (poisoned)"));
        }
    }
    if vector.expect == Expect::Reject && !rejected && failures.is_empty() {
        let got = if silent { "no answer".to_owned() } else { describe(first) };
        failures.push(format!("must be rejected (400 or close), got {got}"));
    }

    if !failures.is_empty() {
        return Verdict { kind: VerdictKind::Failed, reason: failures.join("; ") };
    }
    let reached = seen.len() - follow_ups;
    if rejected && reached == 0 {
        let how = first.responses.first().map_or("closed without a response".to_owned(), |r| r.status.to_string());
        return Verdict { kind: VerdictKind::Rejected, reason: how };
    }
    let reason = if silent { format!("no answer yet (incomplete request); upstream saw {reached}") } else { describe(first) };
    Verdict { kind: VerdictKind::ForwardedCleanly, reason }
}

fn clip(bytes: &[u8]) -> String {
    let mut s = escape(&bytes[..bytes.len().min(160)]);
    if bytes.len() > 160 {
        s.push_str("...");
    }
    s
}
