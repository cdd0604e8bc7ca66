//! Starting and stopping a data plane: bind both listeners, open the
//! access log, restore the cached config, connect to the control plane,
//! serve until SIGTERM or Ctrl-C, then stop accepting and let in-flight
//! requests finish (bounded) and their access log lines be written.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portico_shared::secret::KeyHasher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::access_log::{AccessLog, Destination, TlsInfo};
use crate::auth::AuthSettings;
use crate::body::RequestBody;
use crate::cache::SnapshotCache;
use crate::config_client::ConfigClient;
use crate::http1::server::Ended;
use crate::http1::{self, Guarded, Verdict, Verdicts};
use crate::idle::{Activity, Counted, until_quiet};
use crate::proxy::headers::Peer;
use crate::ratelimit::LimitSettings;
use crate::ratelimit::redis::RedisBackend;
use crate::runtime::Context;
use crate::settings::{Settings, default_node_id};
use crate::stage::cache::ResponseCache;
use crate::state::{NodeState, stopped};

/// Shortest accepted cluster token (the control plane's rule).
const MIN_TOKEN_LEN: usize = 16;
/// Hard cap of the HTTP codecs on a request head, above the limit the
/// pipeline enforces with a JSON `431` (`proxy::headers::check_limits`);
/// past it hyper answers a bare `431` itself. The HTTP/1 codec keeps its
/// default of 100 fields (also the pipeline's limit): a higher cap makes it
/// allocate and fill a header array for every request, a twentieth of a
/// proxied request's instructions.
const CODEC_MAX_HEADER_BYTES: usize = 256 * 1024;

/// How the proxy listener treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time a client has to send its first byte, and then its request head
    /// (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may finish after a shutdown signal.
    pub drain: Duration,
    /// A connection silent this long is closed.
    pub client_idle: Duration,
}

/// Why a data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
}

/// Runs the data plane until a shutdown signal.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let cluster_token =
        settings.cluster_token.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
            StartError::Config("--cluster-token (PORTICO_CLUSTER_TOKEN) is required: the control plane expects it".into())
        })?;
    if cluster_token.len() < MIN_TOKEN_LEN {
        return Err(StartError::Config(format!("--cluster-token must be at least {MIN_TOKEN_LEN} characters")));
    }
    portico_shared::validate::name("gateway", &settings.gateway).map_err(|e| StartError::Config(format!("--gateway: {}", e.message())))?;
    if !settings.control_plane.starts_with("http://") && !settings.control_plane.starts_with("https://") {
        return Err(StartError::Config(format!("--control-plane must be an http:// URL, got '{}'", settings.control_plane)));
    }
    if let Some(url) = &settings.redis_url
        && !url.starts_with("redis://")
        && !url.starts_with("rediss://")
    {
        return Err(StartError::Config("--redis-url must start with redis:// or rediss://".into()));
    }
    let metrics = crate::metrics::install().map_err(StartError::Metrics)?;
    crate::metrics::count_by_consumer(settings.metrics_consumers);
    let node_id = settings.node_id.clone().unwrap_or_else(|| default_node_id(&settings.gateway, settings.listen));
    if let Some(endpoint) = &settings.otlp_endpoint {
        crate::telemetry::start(portico_shared::telemetry::TraceSettings {
            endpoint,
            protocol: settings.otlp_protocol,
            sampling: settings.otlp_sampling,
            service: "portico-dp",
            resource: vec![
                opentelemetry::KeyValue::new("service.instance.id", node_id.clone()),
                opentelemetry::KeyValue::new("portico.node_id", node_id.clone()),
                opentelemetry::KeyValue::new("portico.gateway", settings.gateway.clone()),
            ],
            config_version: Some(&crate::telemetry::CONFIG_VERSION),
        })
        .map_err(StartError::Config)?;
    }
    let http = reqwest::Client::builder()
        .user_agent(concat!("portico-dp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Config(format!("cannot set up the HTTP client for JWKS: {e}")))?;
    let auth = AuthSettings { keys: KeyHasher::from_cluster_token(&cluster_token), token_cache_capacity: settings.token_cache_size, http };
    let redis = match &settings.redis_url {
        Some(url) => {
            let timeout = Duration::from_millis(settings.redis_timeout_ms);
            Some(Arc::new(RedisBackend::new(url, timeout, &node_id, settings.expected_nodes).map_err(StartError::Config)?))
        }
        None => None,
    };
    let limits = LimitSettings { redis: redis.clone(), gateway: settings.gateway.clone() };
    let access_log = match Destination::parse(&settings.access_log) {
        Some(destination) => {
            let capacity = usize::try_from(settings.access_log_buffer).unwrap_or(usize::MAX);
            let to_file = matches!(destination, Destination::File(_));
            let log = AccessLog::start(destination, capacity, &settings.gateway)
                .map_err(|e| StartError::Config(format!("--access-log: cannot open {e}")))?;
            if to_file {
                tokio::spawn(reopen_on_hangup(log.clone()));
            }
            Some(log)
        }
        None => None,
    };
    let node = Arc::new(NodeState::new(
        &settings.gateway,
        &node_id,
        Context { auth, limits },
        ResponseCache::new(settings.cache_memory_mb * 1024 * 1024),
        access_log.clone(),
    ));

    let proxy_listener = bind(settings.listen).await?;
    let tls_listener = match settings.tls_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let acceptor = crate::tls::server_config(node.clone()).map_err(StartError::Config)?;
    let status_listener = bind(settings.status_listen).await?;
    let client = ConfigClient {
        node: node.clone(),
        control_plane: settings.control_plane.clone(),
        cluster_token,
        tls: control_plane_tls(&settings)?,
        labels: settings.labels.clone(),
        cache: settings.cache_dir.as_deref().map(|dir| SnapshotCache::new(dir, &settings.gateway)),
        cache_writes: Arc::default(),
    };
    let cache_writes = client.cache_writes.clone();
    client.restore_from_cache().await;
    tracing::info!(node = %node_id, gateway = %settings.gateway, listen = %settings.listen, status = %settings.status_listen,
        control_plane = %settings.control_plane, "portico-dp started");

    let (stop_tx, stop_rx) = watch::channel(false);
    let config_task = tokio::spawn(client.run(stop_rx.clone()));
    if let Some(redis) = redis {
        tokio::spawn(crate::ratelimit::fleet::run(redis, stop_rx.clone()));
    }
    let status_task = tokio::spawn({
        let mut stop = stop_rx.clone();
        let app = crate::status::router(node.clone(), metrics);
        async move {
            let _ = axum::serve(status_listener, app).with_graceful_shutdown(async move { stopped(&mut stop).await }).await;
        }
    });
    let options = ServeOptions {
        header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        drain: Duration::from_millis(settings.drain_timeout_ms),
        client_idle: Duration::from_millis(settings.client_idle_timeout_ms),
    };
    let tls_task = tls_listener.map(|listener| {
        let acceptor = tokio_rustls::TlsAcceptor::from(acceptor);
        tokio::spawn(serve_proxy(listener, node.clone(), stop_rx.clone(), options, Some(acceptor)))
    });
    let proxy_task = tokio::spawn(serve_proxy(proxy_listener, node, stop_rx, options, None));

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    let _ = proxy_task.await;
    if let Some(tls_task) = tls_task {
        let _ = tls_task.await;
    }
    let _ = tokio::join!(config_task, status_task);
    cache_writes.flush(Duration::from_secs(5)).await;
    if let Some(log) = access_log {
        let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
    }
    let _ = tokio::task::spawn_blocking(crate::telemetry::shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// HTTP/2 limits of the proxy listener, each set explicitly rather than left
/// to hyper's or h2's defaults (README, "HTTP/2 limits", says what a client
/// sees past each).
mod h2_limits {
    use std::time::Duration;

    use crate::proxy::headers::{MAX_HEADER_BYTES, MAX_HEADERS};

    /// Streams open at once per connection (advertised): RFC 9113 asks for at
    /// least 100 and Envoy's edge guide sets 100; a stream past it gets
    /// `RST_STREAM(REFUSED_STREAM)` and counts as a local error reset.
    pub(super) const MAX_CONCURRENT_STREAMS: u32 = 100;
    /// Decoded header list (names + values + 32 per field, pseudo-headers
    /// included; advertised): the codec cap, above the pipeline's JSON `431`.
    /// Up to 4x over it h2 answers `431` and resets the stream; further, GOAWAY
    /// `ENHANCE_YOUR_CALM`. It also bounds CONTINUATION frames (h2 0.4.20
    /// `codec/framed_read.rs`): a header block may span at most
    /// max(list / frame size * 5/4, 5) = 20 CONTINUATION frames without
    /// END_HEADERS (counted, whatever their size), so a block is at most 21
    /// frames of 16 KiB; one more and it is GOAWAY `ENHANCE_YOUR_CALM`
    /// ("too_many_continuations"). Past the list size the undecoded remainder
    /// may not exceed it either (GOAWAY `COMPRESSION_ERROR`).
    pub(super) const MAX_HEADER_LIST_SIZE: u32 = super::CODEC_MAX_HEADER_BYTES as u32;
    /// Streams the client reset before the server accepted them, pending at
    /// once (rapid reset, CVE-2023-44487): h2's own default, 20; past it GOAWAY
    /// `ENHANCE_YOUR_CALM`.
    pub(super) const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
    /// Streams the server resets because of the client's errors (refused
    /// streams included), per connection for its lifetime ("MadeYouReset",
    /// CVE-2025-8671): a well-behaved client causes none, so one connection's
    /// worth of streams, not hyper's 1024; past it GOAWAY `ENHANCE_YOUR_CALM`.
    pub(super) const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 100;
    /// Request body bytes a stream may send unread (advertised
    /// `INITIAL_WINDOW_SIZE`): hyper's 1 MiB, what the benchmarks measured.
    pub(super) const INITIAL_STREAM_WINDOW: u32 = 1024 * 1024;
    /// Unread request body bytes for the whole connection: 1 MiB, the most
    /// one client connection makes the gateway buffer.
    pub(super) const INITIAL_CONNECTION_WINDOW: u32 = 1024 * 1024;
    /// Off: the BDP-adaptive window would override both windows and grow
    /// them (to 16 MiB) with the client's say, undoing the memory bound.
    pub(super) const ADAPTIVE_WINDOW: bool = false;
    /// Largest frame payload the server accepts (advertised): the RFC's
    /// 16 KiB; bigger frames buy a proxy nothing and the client gets GOAWAY
    /// `FRAME_SIZE_ERROR`.
    pub(super) const MAX_FRAME_SIZE: u32 = 16 * 1024;
    /// Response bytes queued per stream for a slow reader: hyper's 400 KiB.
    pub(super) const MAX_SEND_BUF_SIZE: usize = 400 * 1024;
    /// A PING this often finds dead peers behind NATs and load balancers.
    pub(super) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
    /// A peer that does not answer a PING within this is gone: the
    /// connection is closed (hyper's default is 20 s).
    pub(super) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

    // Every head the pipeline's JSON `431` lets through (fields counted by h2
    // with 32 bytes each of overhead) fits the codec's list size.
    const _: () = assert!(MAX_HEADER_BYTES + 32 * MAX_HEADERS < MAX_HEADER_LIST_SIZE as usize);
    const _: () = assert!(super::CODEC_MAX_HEADER_BYTES <= u32::MAX as usize);
}

/// Accepts connections (over TLS with `tls`) until `stop`, then waits up to
/// `options.drain` for the requests in flight.
pub async fn serve_proxy(
    listener: TcpListener,
    node: Arc<NodeState>,
    mut stop: watch::Receiver<bool>,
    options: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let builders = Builders::new();
    let connections = TaskTracker::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let (node, builders, tls, stop) = (node.clone(), builders.clone(), tls.clone(), stop.clone());
        let (first_byte, idle) = (options.header_read_timeout, options.client_idle);
        connections.spawn(async move {
            let activity = Activity::new();
            let verdicts = Verdicts::new();
            let protocol = verdicts.clone();
            // An HTTP/1 connection with no request in flight is waiting for
            // or reading a request head: it has the header read timeout
            // (from the end of its last response, however the head's bytes
            // trickle in); HTTP/2 connections have the idle one.
            let quiet_limit = move || if protocol.http1() { first_byte.min(idle) } else { idle };
            let connection = Connection { builders, stop, activity: activity.clone(), verdicts };
            if let Some(acceptor) = tls {
                // The handshake must be done within the header read timeout.
                let Ok(Ok(stream)) = tokio::time::timeout(first_byte, acceptor.accept(stream)).await else { return };
                activity.restart();
                let peer = Peer::new(client).with_tls(TlsInfo::of(stream.get_ref().1));
                connection.serve(stream, Responder::new(node, peer, activity), quiet_limit).await;
                return;
            }
            // The protocol-sniffing read has no timeout of its own: a client
            // must start talking within the header read timeout.
            let started = tokio::time::timeout(first_byte, stream.peek(&mut [0u8; 1])).await;
            if !matches!(started, Ok(Ok(n)) if n > 0) {
                return;
            }
            activity.restart();
            connection.serve(stream, Responder::new(node, Peer::new(client), activity), quiet_limit).await;
        });
    }
    drop(listener);
    connections.close();
    let drained = async {
        connections.wait().await;
        node.tunnels.closed().await;
    };
    if tokio::time::timeout(options.drain, drained).await.is_err() {
        tracing::warn!(drain = ?options.drain, "drain timed out; closing the remaining connections and tunnels");
    }
}

/// hyper's servers, for the requests Portico's own HTTP/1 server leaves to
/// them: from a connection's start (which may be HTTP/2), or after
/// requests it served (HTTP/1 only: the HTTP/2 preface is no request there).
#[derive(Clone)]
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
}

impl Builders {
    fn new() -> Self {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        // The header read timeout is kept by `until_quiet` (see `crate::idle`).
        auto.http1().header_read_timeout(None).max_buf_size(CODEC_MAX_HEADER_BYTES);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(h2_limits::MAX_CONCURRENT_STREAMS)
            .max_header_list_size(h2_limits::MAX_HEADER_LIST_SIZE)
            .max_pending_accept_reset_streams(h2_limits::MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(h2_limits::MAX_LOCAL_ERROR_RESET_STREAMS)
            .initial_stream_window_size(h2_limits::INITIAL_STREAM_WINDOW)
            .initial_connection_window_size(h2_limits::INITIAL_CONNECTION_WINDOW)
            .adaptive_window(h2_limits::ADAPTIVE_WINDOW)
            .max_frame_size(h2_limits::MAX_FRAME_SIZE)
            .max_send_buf_size(h2_limits::MAX_SEND_BUF_SIZE)
            .keep_alive_interval(h2_limits::KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(h2_limits::KEEP_ALIVE_TIMEOUT);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1.header_read_timeout(None).max_buf_size(CODEC_MAX_HEADER_BYTES);
        Self { auto, http1 }
    }
}

/// One client connection, until it closes.
struct Connection {
    builders: Builders,
    stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
    verdicts: Arc<Verdicts>,
}

impl Connection {
    /// Serves `io`'s requests with Portico's own HTTP/1 server
    /// ([`crate::http1::server`]) until one comes that hyper's server is to
    /// serve, which then serves the rest; `quiet_limit` closes the
    /// connection once it has had no request in flight for that long. Once
    /// the node stops, requests in flight finish and the connection closes.
    async fn serve<IO>(self, io: IO, responder: Responder, quiet_limit: impl Fn() -> Duration)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self { builders, stop, activity, verdicts } = self;
        // Every request it serves kept the wire rules (it checks them itself).
        let own = http1::server::serve(io, |request| responder.respond(request, Verdict::Pass), stop.clone());
        let Some(Ended::HandOff { io, opening }) = until_quiet(own, activity.clone(), &quiet_limit).await else { return };
        let service = {
            let verdicts = verdicts.clone();
            service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let respond = responder.respond(request.map(RequestBody::Hyper), verdicts.next_request());
                async move { Ok::<_, Infallible>(respond.await) }
            })
        };
        if opening {
            let io = TokioIo::new(Guarded::client(io, verdicts));
            let connection = builders.auto.serve_connection_with_upgrades(io, service);
            let _ = until_quiet(until_stopped(connection, stop, |c| c.graceful_shutdown()), activity, quiet_limit).await;
        } else {
            let io = TokioIo::new(Guarded::resumed_client(io, verdicts));
            let connection = builders.http1.serve_connection(io, service).with_upgrades();
            let _ = until_quiet(until_stopped(connection, stop, |c| c.graceful_shutdown()), activity, quiet_limit).await;
        }
    }
}

/// Runs a hyper server `connection` until it ends; once `stop` turns true
/// it is asked (`shutdown`) to finish the requests in flight and close.
async fn until_stopped<C: Future>(connection: C, mut stop: watch::Receiver<bool>, shutdown: impl FnOnce(Pin<&mut C>)) {
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stopped(&mut stop) => shutdown(connection.as_mut()),
    }
    let _ = connection.await;
}

/// Answers the requests of one client connection from `peer` through the
/// pipeline, each counted in flight on `activity` until its response body
/// is done (and then logged, if it is to be).
#[derive(Clone)]
struct Responder {
    node: Arc<NodeState>,
    peer: Arc<Peer>,
    activity: Arc<Activity>,
}

impl Responder {
    fn new(node: Arc<NodeState>, peer: Peer, activity: Arc<Activity>) -> Self {
        Self { node, peer: Arc::new(peer), activity }
    }

    fn respond(
        &self,
        request: http::Request<RequestBody>,
        verdict: Verdict,
    ) -> impl Future<Output = http::Response<Counted>> + Send + use<> {
        let (node, peer, in_flight) = (self.node.clone(), self.peer.clone(), self.activity.start());
        async move {
            // Boxed once here: the server moves the request's future as it
            // stores and polls it, and the proxy's is most of a KiB.
            let (parts, body) = request.into_parts();
            let (response, epilogue) = Box::pin(crate::proxy::handle(node, parts, body, &peer, verdict)).await;
            response.map(|body| Counted::new(body, in_flight, epilogue))
        }
    }
}

/// TLS towards the control plane, from the flags.
fn control_plane_tls(settings: &Settings) -> Result<Option<tonic::transport::ClientTlsConfig>, StartError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Config(format!("{flag}: cannot read {}: {e}", path.display())))
    };
    let https = settings.control_plane.starts_with("https://");
    if !https && (settings.control_plane_ca.is_some() || settings.control_plane_cert.is_some()) {
        return Err(StartError::Config("--control-plane-ca and --control-plane-cert need an https:// --control-plane".into()));
    }
    if !https {
        return Ok(None);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    tls = match &settings.control_plane_ca {
        Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(read("--control-plane-ca", ca)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&settings.control_plane_cert, &settings.control_plane_key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(read("--control-plane-cert", cert)?, read("--control-plane-key", key)?));
    }
    Ok(Some(tls))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Has `log` reopen its file on every SIGHUP (log rotation renames it first).
async fn reopen_on_hangup(log: Arc<AccessLog>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the access log will not be reopened");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening the access log");
            log.reopen();
        }
    }
    #[cfg(not(unix))]
    let _ = log;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
