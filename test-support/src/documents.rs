//! An upstream answering fixed JSON documents by path, for aggregation
//! tests: an answer depends on the path alone, so requests that differ
//! only in timing get identical bodies. `delay=<ms>` in the query waits
//! before the answer (the query is otherwise ignored); a path without a
//! document is `404`. It records each request's target, headers and body
//! as it arrives.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its path and query.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A running document upstream.
pub struct DocumentUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DocumentUpstream {
    /// Serves each `(path, document)`.
    pub async fn start(documents: &[(&str, Value)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the document upstream");
        let addr = listener.local_addr().expect("bound");
        let documents: Arc<HashMap<String, Bytes>> =
            Arc::new(documents.iter().map(|(path, document)| ((*path).to_owned(), Bytes::from(document.to_string()))).collect());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (documents, recorded) = (documents.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (documents, recorded) = (documents.clone(), recorded.clone());
                        async move { Ok::<_, Infallible>(answer(&documents, &recorded, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The body of each request received so far (as text).
    pub fn bodies(&self) -> Vec<String> {
        self.seen().into_iter().map(|seen| String::from_utf8_lossy(&seen.body).into_owned()).collect()
    }

    /// The path and query of each request received so far.
    pub fn targets(&self) -> Vec<String> {
        self.seen().into_iter().map(|seen| seen.target).collect()
    }
}

impl Drop for DocumentUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(documents: &HashMap<String, Bytes>, seen: &Mutex<Vec<Seen>>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
    let target = parts.uri.path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
    seen.lock().unwrap_or_else(PoisonError::into_inner).push(Seen { target, headers: parts.headers, body });
    let delay = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(name, _)| name == "delay")
        .and_then(|(_, ms)| ms.parse().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let Some(document) = documents.get(parts.uri.path()) else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"{\"error\":\"no such document\"}")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let mut response = Response::new(Full::new(document.clone()));
    response.headers_mut().insert("content-type", "application/json".parse().expect("static"));
    response
}
