//! The closed loop: each connection slot sends the transaction's requests
//! one after the other (one keep-alive connection per authority, HTTP/1.1
//! or HTTP/2 with prior knowledge), times the whole sequence and starts
//! the next. A request is a GET, a POST of a fixed body, or a unary gRPC
//! call; what counts as its success is checked on every answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;

pub(crate) struct Plan {
    pub(crate) urls: Vec<Uri>,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
    /// Run this long first without counting.
    pub(crate) warmup: Duration,
    pub(crate) call: Call,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1; always for gRPC.
    pub(crate) http2: bool,
    /// Sent as `Host` (`:authority` over HTTP/2) instead of the URL's authority.
    pub(crate) host: Option<String>,
    /// The answer's body (for gRPC, the reply message) must be exactly this.
    pub(crate) expect: Option<Bytes>,
    /// The answer's status must be exactly this (else any 2xx).
    pub(crate) expect_status: Option<StatusCode>,
}

/// What one request of a transaction is.
pub(crate) enum Call {
    /// A GET; a success is a 2xx answer.
    Get,
    /// A POST of this JSON body; a success is a 2xx answer.
    PostJson(Bytes),
    /// A unary gRPC call (`POST`, `application/grpc`, `te: trailers`) whose
    /// request message is this (encoded protobuf, sent in one
    /// length-prefixed frame); a success is a `200` with `grpc-status: 0`,
    /// in the trailers or a trailers-only answer, and one reply message.
    Grpc(Bytes),
}

pub(crate) struct Report {
    transactions: usize,
    failed: usize,
    seconds: f64,
    /// Each counted transaction's latency in µs, sorted.
    latencies: Vec<u64>,
}

impl Report {
    pub(crate) fn json(&self) -> serde_json::Value {
        let percentile = |q: f64| {
            let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len().max(1));
            self.latencies.get(rank - 1).copied().unwrap_or(0)
        };
        json!({
            "transactions": self.transactions,
            "failed": self.failed,
            "seconds": self.seconds,
            "per_second": self.transactions as f64 / self.seconds,
            "p50_us": percentile(0.50),
            "p99_us": percentile(0.99),
            "p999_us": percentile(0.999),
        })
    }
}

pub(crate) async fn run(plan: &Plan) -> Report {
    let started = Instant::now();
    let counting_from = started + plan.warmup;
    let end = counting_from + plan.duration;
    let request = Template::new(plan);
    let slots: Vec<_> = (0..plan.connections).map(|_| tokio::spawn(slot(request.clone(), counting_from, end))).collect();
    let mut report = Report { transactions: 0, failed: 0, seconds: plan.duration.as_secs_f64(), latencies: Vec::new() };
    for slot in slots {
        let (latencies, failed) = slot.await.expect("a connection slot");
        report.transactions += latencies.len();
        report.failed += failed;
        report.latencies.extend(latencies);
    }
    report.latencies.sort_unstable();
    report
}

/// Everything a slot needs to build and judge its requests.
#[derive(Clone)]
struct Template {
    urls: Vec<Uri>,
    method: Method,
    /// The request body, framed for gRPC.
    body: Bytes,
    headers: HeaderMap,
    grpc: bool,
    http2: bool,
    host: Option<String>,
    expect: Option<Bytes>,
    expect_status: Option<StatusCode>,
}

impl Template {
    fn new(plan: &Plan) -> Self {
        let mut headers = HeaderMap::new();
        let (method, body, grpc) = match &plan.call {
            Call::Get => (Method::GET, Bytes::new(), false),
            Call::PostJson(body) => {
                headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                (Method::POST, body.clone(), false)
            }
            Call::Grpc(message) => {
                headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/grpc"));
                headers.insert(header::TE, header::HeaderValue::from_static("trailers"));
                let length = u32::try_from(message.len()).expect("a gRPC message under 4 GiB");
                let mut framed = Vec::with_capacity(5 + message.len());
                framed.push(0);
                framed.extend_from_slice(&length.to_be_bytes());
                framed.extend_from_slice(message);
                (Method::POST, Bytes::from(framed), true)
            }
        };
        Self {
            urls: plan.urls.clone(),
            method,
            body,
            headers,
            grpc,
            http2: plan.http2 || grpc,
            host: plan.host.clone(),
            expect: plan.expect.clone(),
            expect_status: plan.expect_status,
        }
    }

    /// Whether an answer with this status, headers and body (trailers
    /// after it) is a success; the reason when it is not.
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &Bytes, trailers: Option<&HeaderMap>) -> Result<(), String> {
        if self.expect_status.map_or(!status.is_success(), |expected| status != expected) {
            return Err(format!("answered {status}"));
        }
        let answer = if self.grpc {
            let grpc_status = headers.get("grpc-status").or_else(|| trailers.and_then(|t| t.get("grpc-status")));
            if grpc_status.is_none_or(|code| code != "0") {
                return Err(format!("grpc-status {grpc_status:?}, grpc-message {:?}", trailers.and_then(|t| t.get("grpc-message"))));
            }
            match body.get(..5) {
                Some([0, length @ ..]) if body.len() == 5 + u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize => {
                    body.slice(5..)
                }
                _ => return Err(format!("not one uncompressed gRPC message: {} bytes", body.len())),
            }
        } else {
            body.clone()
        };
        match &self.expect {
            Some(expected) if *expected != answer => Err(format!("unexpected answer: {:?}", String::from_utf8_lossy(&answer))),
            _ => Ok(()),
        }
    }
}

/// One keep-alive connection.
enum Connection {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    async fn open(authority: &str, http2: bool) -> Result<Self, String> {
        let stream = TcpStream::connect(authority).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let io = TokioIo::new(stream);
        if http2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(Self::Http2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(Self::Http1(sender))
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Self::Http1(sender) => sender.is_closed(),
            Self::Http2(sender) => sender.is_closed(),
        }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        match self {
            Self::Http1(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await.map_err(|e| e.to_string())
            }
            Self::Http2(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// One slot's transactions until `end`: the latencies of those that
/// started after `counting_from` and succeeded, and how many failed.
async fn slot(template: Template, counting_from: Instant, end: Instant) -> (Vec<u64>, usize) {
    let mut connections: HashMap<String, Connection> = HashMap::new();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let mut ok = true;
        for url in &template.urls {
            if let Err(error) = call(&template, &mut connections, url).await {
                if failed == 0 {
                    eprintln!("transactions: {url}: {error}");
                }
                ok = false;
                break;
            }
        }
        let finished = Instant::now();
        if started < counting_from || finished > end {
            continue;
        }
        if ok {
            latencies.push(u64::try_from((finished - started).as_micros()).unwrap_or(u64::MAX));
        } else {
            failed += 1;
        }
    }
    (latencies, failed)
}

/// One request on the authority's connection (opened when there is none
/// or it closed), its body read whole and judged.
async fn call(template: &Template, connections: &mut HashMap<String, Connection>, url: &Uri) -> Result<(), String> {
    let authority = url.authority().ok_or("a URL without host")?.as_str();
    if connections.get(authority).is_none_or(Connection::is_closed) {
        connections.insert(authority.to_owned(), Connection::open(authority, template.http2).await?);
    }
    let connection = connections.get_mut(authority).ok_or("no connection")?;
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let host = template.host.as_deref().unwrap_or(authority);
    let mut request = if template.http2 {
        // HTTP/2 carries the host as `:authority`, from an absolute URI.
        Request::builder().uri(format!("http://{host}{path}"))
    } else {
        Request::builder().uri(path).header(header::HOST, host)
    }
    .method(template.method.clone())
    .body(Full::new(template.body.clone()))
    .map_err(|e| e.to_string())?;
    request.headers_mut().extend(template.headers.clone());
    let response = connection.send(request).await?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    template.judge(parts.status, &parts.headers, &collected.to_bytes(), trailers.as_ref())
}
