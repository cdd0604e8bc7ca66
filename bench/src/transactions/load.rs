//! The closed loop: each connection slot sends the transaction's GETs one
//! after the other (one keep-alive connection per authority), times the
//! whole sequence and starts the next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

pub(crate) struct Plan {
    pub(crate) urls: Vec<Uri>,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
    /// Run this long first without counting.
    pub(crate) warmup: Duration,
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
    let slots: Vec<_> = (0..plan.connections).map(|_| tokio::spawn(slot(plan.urls.clone(), counting_from, end))).collect();
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

/// One slot's transactions until `end`: the latencies of those that
/// started after `counting_from` and succeeded, and how many failed.
async fn slot(urls: Vec<Uri>, counting_from: Instant, end: Instant) -> (Vec<u64>, usize) {
    let mut connections: HashMap<String, SendRequest<Empty<Bytes>>> = HashMap::new();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let mut ok = true;
        for url in &urls {
            if let Err(error) = get(&mut connections, url).await {
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

/// One GET on the authority's connection (opened when there is none or it
/// closed), its body read whole; an error for a non-2xx answer.
async fn get(connections: &mut HashMap<String, SendRequest<Empty<Bytes>>>, url: &Uri) -> Result<(), String> {
    let authority = url.authority().ok_or("a URL without host")?.as_str();
    if connections.get(authority).is_none_or(|sender| sender.is_closed()) {
        let stream = TcpStream::connect(authority).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        connections.insert(authority.to_owned(), sender);
    }
    let sender = connections.get_mut(authority).ok_or("no connection")?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path).header(header::HOST, authority).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    response.into_body().collect().await.map_err(|e| e.to_string())?;
    if status.is_success() { Ok(()) } else { Err(format!("answered {status}")) }
}
