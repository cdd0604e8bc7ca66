//! A real gRPC server for tests: tonic serving `echo.v1.Echo`
//! (`proto/echo/v1/echo.proto`: unary `Say`, server-streaming `Stream`,
//! client-streaming `Collect`, `Fail` with a requested status) and the
//! standard `grpc.health.v1.Health/Check`, in cleartext (h2c) or TLS.
//! Request metadata named `x-echo-*` comes back as response metadata; a
//! `Stream` the client abandons is counted ([`GrpcUpstream::cancelled_streams`]).
//!
//! The services are served by hyper directly rather than tonic's transport
//! server, which would enforce the client's `grpc-timeout` itself (with
//! `CANCELLED`): here only the gateway in front enforces it, so a test sees
//! the gateway's deadline and nothing else.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

/// Code generated from `proto/echo/v1/echo.proto`.
pub mod echo {
    tonic::include_proto!("echo.v1");
}

/// Code generated from `proto/grpc/health/v1/health.proto`.
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

use echo::echo_server::{Echo, EchoServer};
use echo::{FailRequest, SayReply, SayRequest, StreamRequest};
use health::health_server::{Health, HealthServer};
use health::{HealthCheckRequest, HealthCheckResponse};

/// A running gRPC test server.
pub struct GrpcUpstream {
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    serving: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Service {
    calls: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    serving: Arc<AtomicBool>,
}

impl GrpcUpstream {
    /// A server in cleartext, HTTP/2 with prior knowledge.
    pub async fn start() -> Self {
        Self::spawn(None, None).await
    }

    /// Like [`GrpcUpstream::start`], taking at most `streams` concurrent
    /// streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub async fn start_limited(streams: u32) -> Self {
        Self::spawn(None, Some(streams)).await
    }

    /// A server speaking TLS with `certificate` (for `localhost`), offering ALPN `h2`.
    pub async fn start_tls(certificate: &crate::tls::TestCertificate) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::try_from(certificate.key_der.clone()).expect("test key");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der.clone().into()], key)
            .expect("test certificate");
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::spawn(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))), None).await
    }

    async fn spawn(tls: Option<tokio_rustls::TlsAcceptor>, max_streams: Option<u32>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the gRPC upstream");
        let addr = listener.local_addr().expect("gRPC upstream address");
        let service = Service { calls: Arc::default(), cancelled: Arc::default(), serving: Arc::new(AtomicBool::new(true)) };
        let (calls, cancelled, serving) = (service.calls.clone(), service.cancelled.clone(), service.serving.clone());
        let routes = Routes::new(EchoServer::new(service.clone())).add_service(HealthServer::new(service));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (routes, tls) = (routes.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = TowerToHyperService::new(tower::util::MapRequest::new(routes, without_deadline));
                    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
                    builder.http2().max_concurrent_streams(max_streams);
                    let _ = match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            builder.serve_connection(TokioIo::new(stream), service).await
                        }
                        None => builder.serve_connection(TokioIo::new(stream), service).await,
                    };
                });
            }
        });
        Self { addr, calls, cancelled, serving, connections, task }
    }

    /// `grpc://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// `grpcs://localhost:<port>`, for a server started with [`GrpcUpstream::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("grpcs://localhost:{}", self.addr.port())
    }

    /// Calls of `Echo` methods received so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// `Stream` calls dropped before their last reply went out (the client went away).
    pub fn cancelled_streams(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// What the health check answers from now on (`SERVING` or `NOT_SERVING`).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a stream dropped while armed.
struct Unfinished(Option<Arc<AtomicUsize>>);

impl Unfinished {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(cancelled) = self.0.take() {
            cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A request without its `grpc-timeout` (see the module's text).
fn without_deadline(mut request: hyper::Request<hyper::body::Incoming>) -> hyper::Request<hyper::body::Incoming> {
    request.headers_mut().remove("grpc-timeout");
    request
}

impl Service {
    fn call<T>(&self, request: &Request<T>) -> MetadataMap {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut echoed = MetadataMap::new();
        for entry in request.metadata().iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry
                && key.as_str().starts_with("x-echo-")
            {
                echoed.insert(key.clone(), value.clone());
            }
        }
        echoed
    }
}

fn with_metadata<T>(message: T, metadata: MetadataMap) -> Response<T> {
    let mut response = Response::new(message);
    *response.metadata_mut() = metadata;
    response
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<SayReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Service {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let metadata = self.call(&request);
        let request = request.into_inner();
        // Not even a zero sleep: tokio rounds it up to the next timer tick (about 1 ms).
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
        }
        Ok(with_metadata(SayReply { text: request.text, index: 0 }, metadata))
    }

    type StreamStream = ReplyStream;

    async fn stream(&self, request: Request<StreamRequest>) -> Result<Response<ReplyStream>, Status> {
        let metadata = self.call(&request);
        let request = request.into_inner();
        let delay = Duration::from_millis(u64::from(request.delay_ms));
        let mut unfinished = Unfinished(Some(self.cancelled.clone()));
        let count = request.count;
        let text = request.text;
        let replies = futures::stream::iter(0..count).then(move |index| {
            let text = format!("{text} {index}");
            async move {
                if index > 0 {
                    tokio::time::sleep(delay).await;
                }
                Ok(SayReply { text, index })
            }
        });
        // The guard goes with the stream, and is disarmed after its last reply.
        let replies = replies.inspect(move |reply| {
            if reply.as_ref().is_ok_and(|r| r.index + 1 == count) {
                unfinished.disarm();
            }
        });
        let failure =
            (request.fail_code != 0).then(|| Err(Status::new(tonic::Code::from_i32(request.fail_code), "failed after the replies")));
        let replies = replies.chain(futures::stream::iter(failure));
        Ok(with_metadata(Box::pin(replies) as ReplyStream, metadata))
    }

    async fn collect(&self, request: Request<Streaming<SayRequest>>) -> Result<Response<SayReply>, Status> {
        let metadata = self.call(&request);
        let mut stream = request.into_inner();
        let mut texts = Vec::new();
        while let Some(message) = stream.next().await {
            texts.push(message?.text);
        }
        let count = u32::try_from(texts.len()).unwrap_or(u32::MAX);
        Ok(with_metadata(SayReply { text: texts.join(" "), index: count }, metadata))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<SayReply>, Status> {
        let metadata = self.call(&request);
        let request = request.into_inner();
        Err(Status::with_metadata(tonic::Code::from_i32(request.code), request.message, metadata))
    }
}

#[tonic::async_trait]
impl Health for Service {
    async fn check(&self, _request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let status = if self.serving.load(Ordering::SeqCst) {
            health::health_check_response::ServingStatus::Serving
        } else {
            health::health_check_response::ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse { status: status as i32 }))
    }
}
