//! A programmable upstream for tests: echoes what it received as JSON and
//! can be slow, fail with a given status, stream, or accept an upgrade and
//! echo raw bytes.
//!
//! Paths: `/slow/<ms>/…` waits before answering; `/status/<code>/…` answers
//! that status; `/upgrade` switches to the protocol the request asks for
//! and echoes bytes; `/catalog/<coding>` answers [`CATALOG`] as JSON with a
//! strong `ETag`, in that content coding (`identity`, `gzip`, `deflate`), or
//! with `Cache-Control: no-transform` (`no-transform`); anything else echoes (a JSON request body under `body`). Every answer carries `x-upstream: <name>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

/// A running test upstream.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Closes every open connection when it changes (see [`TestUpstream::stop`]).
    stop: tokio::sync::watch::Sender<bool>,
}

impl TestUpstream {
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, 0).await
    }

    /// Like [`TestUpstream::start`] on a given port (0: any), e.g. to bring a stopped one back.
    pub async fn start_on(name: &str, port: u16) -> Self {
        Self::spawn(name, port, None).await
    }

    /// An upstream speaking TLS with `certificate` (for `localhost`),
    /// requiring a client certificate signed by `client_ca` when given.
    pub async fn start_tls(name: &str, certificate: &crate::tls::TestCertificate, client_ca: Option<&crate::tls::TestCertificate>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().expect("TLS versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(rustls::pki_types::CertificateDer::from(ca.der.clone())).expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = rustls::pki_types::PrivateKeyDer::try_from(certificate.key_der.clone()).expect("test key");
        let config = builder.with_single_cert(vec![certificate.der.clone().into()], key).expect("test certificate");
        Self::spawn(name, 0, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn spawn(name: &str, port: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (counter, accepted, label) = (requests.clone(), connections.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (counter, label, mut stopped, tls) = (counter.clone(), label.clone(), stopped.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let label = label.clone();
                        async move { Ok::<_, Infallible>(answer(&label, request).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.wait_for(|stop| *stop) => {}
                            }
                        }
                        None => {
                            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = connection => {}
                                _ = stopped.wait_for(|stop| *stop) => {}
                            }
                        }
                    }
                });
            }
        });
        Self { addr, name: name.to_owned(), requests, connections, task, stop }
    }

    /// Stops listening and closes every open connection, as a killed process would.
    pub fn stop(&self) {
        self.task.abort();
        self.stop.send_replace(true);
    }

    /// `https://localhost:<port>`, for an upstream started with [`TestUpstream::start_tls`].
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What `/catalog/…` answers: a list of items with more fields than a small screen needs.
pub const CATALOG: &str = r#"{"items":[{"id":1,"name":"lamp","price":30,"description":"a long text"},{"id":2,"name":"desk","price":120,"description":"another long text"}],"total":2,"internal":{"secret":"s3cr3t"}}"#;

fn catalog(coding: &str) -> Response<Full<Bytes>> {
    use std::io::Write;
    let encoded = match coding {
        "gzip" => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(CATALOG.as_bytes()).expect("in memory");
            encoder.finish().expect("in memory")
        }
        "deflate" => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(CATALOG.as_bytes()).expect("in memory");
            encoder.finish().expect("in memory")
        }
        _ => CATALOG.as_bytes().to_vec(),
    };
    let mut response = Response::new(Full::new(Bytes::from(encoded)));
    response.headers_mut().insert("content-type", "application/json; charset=utf-8".parse().expect("static"));
    response.headers_mut().insert("etag", "\"catalog-v1\"".parse().expect("static"));
    if coding == "gzip" || coding == "deflate" {
        response.headers_mut().insert("content-encoding", coding.parse().expect("static"));
    }
    if coding == "no-transform" {
        response.headers_mut().insert("cache-control", "public, no-transform".parse().expect("static"));
    }
    response
}

async fn answer(name: &str, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let mut segments = path.trim_start_matches('/').split('/');
    let mut status = StatusCode::OK;
    match (segments.next(), segments.next()) {
        (Some("slow"), Some(ms)) => tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await,
        (Some("status"), Some(code)) => status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::OK),
        (Some("catalog"), coding) => return catalog(coding.unwrap_or("identity")),
        (Some("upgrade"), _) => {
            let parts_upgrade = request.headers().get("upgrade").cloned();
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                }
            });
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response.headers_mut().insert("connection", "upgrade".parse().expect("static"));
            let protocol = parts_upgrade.unwrap_or_else(|| "websocket".parse().expect("static"));
            response.headers_mut().insert("upgrade", protocol);
            return response;
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> =
        parts.headers.iter().map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes())))).collect();
    let echo = json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body.len(),
        "body": serde_json::from_slice::<serde_json::Value>(&body).ok(),
    });
    let mut response = Response::new(Full::new(Bytes::from(echo.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().expect("static"));
    response.headers_mut().insert("x-upstream", name.parse().unwrap_or_else(|_| "upstream".parse().expect("static")));
    response.headers_mut().insert("connection", "keep-alive, x-hop".parse().expect("static"));
    response.headers_mut().insert("x-hop", "must not reach the client".parse().expect("static"));
    response
}
