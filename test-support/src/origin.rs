//! A counting origin for cache tests, whose answers are spelled in the
//! request's query, so each test's URL says what it gets:
//! `cc=` (`Cache-Control`), `vary=` (one `Vary` line each time it is
//! given), `tag=` (`Cache-Tag`), `cookie=1` (a `Set-Cookie`), `status=`,
//! `delay=` (ms before the head), `fail_after=` (answers after that many
//! requests to the origin are `503`), `size=` (a body of that many bytes,
//! streamed in chunks without `Content-Length` when `chunked=1`), `etag=`
//! (an `ETag`; a request whose `If-None-Match` holds it gets `304`). The
//! default body is JSON: `{"n": <requests so far>, "path", "query",
//! "accept-language", "authorization", "consumer"}`. It counts requests
//! started and finished, and the most it had in flight at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Debug, Default)]
struct Counts {
    started: AtomicUsize,
    finished: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// Each request's path and query, and its `If-None-Match`.
    seen: Mutex<Vec<(String, Option<String>)>>,
}

/// A running origin.
pub struct Origin {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Origin {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the origin");
        let addr = listener.local_addr().expect("bound");
        let counts = Arc::new(Counts::default());
        let serving = counts.clone();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let open = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counts = serving.clone();
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let counts = counts.clone();
                        async move { Ok::<_, Infallible>(answer(&counts, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
                open.lock().unwrap_or_else(PoisonError::into_inner).push(connection.abort_handle());
            }
        });
        Self { addr, counts, task, connections }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that reached it.
    pub fn requests(&self) -> usize {
        self.counts.started.load(Ordering::SeqCst)
    }

    /// Requests it has answered in full.
    pub fn finished(&self) -> usize {
        self.counts.finished.load(Ordering::SeqCst)
    }

    /// The most requests it had in flight at once.
    pub fn most_in_flight(&self) -> usize {
        self.counts.most_in_flight.load(Ordering::SeqCst)
    }

    /// Each request's path and query, with its `If-None-Match`.
    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.counts.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops: refuses new connections and closes the open ones.
    pub fn stop(&self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(counts: &Counts, request: Request<Incoming>) -> Response<Body> {
    let n = counts.started.fetch_add(1, Ordering::SeqCst) + 1;
    let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    counts.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let if_none_match = header("if-none-match");
    let path_and_query = parts.uri.path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
    counts.seen.lock().unwrap_or_else(PoisonError::into_inner).push((path_and_query, if_none_match.clone()));
    let query: Vec<(String, String)> = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some(delay) = param("delay").and_then(|d| d.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let etag = param("etag").map(|tag| format!("\"{tag}\""));
    let not_modified = etag.is_some() && if_none_match == etag;
    let failing = param("fail_after").and_then(|f| f.parse::<usize>().ok()).is_some_and(|after| n > after);
    let status = if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        param("status").and_then(|s| s.parse().ok()).and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK)
    };
    let body: Body = match param("size").and_then(|s| s.parse::<usize>().ok()) {
        _ if not_modified => http_body_util::Empty::new().boxed(),
        Some(size) if param("chunked").is_some() => {
            let chunks = (0..size).step_by(4096).map(move |at| Ok(Frame::data(Bytes::from(vec![b'x'; (size - at).min(4096)]))));
            let stream = futures::stream::iter(chunks).then(|chunk| async move {
                tokio::task::yield_now().await;
                chunk
            });
            BodyExt::boxed(StreamBody::new(stream))
        }
        Some(size) => http_body_util::Full::new(Bytes::from(vec![b'x'; size])).boxed(),
        None => {
            let echo = json!({
                "n": n,
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "accept-language": header("accept-language"),
                "authorization": header("authorization"),
                "consumer": header("x-consumer-username"),
            });
            http_body_util::Full::new(Bytes::from(echo.to_string())).boxed()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = value.parse() {
            headers.append(name, value);
        }
    };
    for (name, value) in &query {
        match name.as_str() {
            "cc" => put("cache-control", value),
            "vary" => put("vary", value),
            "tag" => put("cache-tag", value),
            "cookie" => put("set-cookie", "session=abc; HttpOnly"),
            _ => {}
        }
    }
    if let Some(etag) = &etag {
        put("etag", etag);
    }
    put("x-origin-count", &n.to_string());
    counts.in_flight.fetch_sub(1, Ordering::SeqCst);
    counts.finished.fetch_add(1, Ordering::SeqCst);
    response
}
