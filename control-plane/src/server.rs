//! Starting and stopping the control plane: connect and migrate the store,
//! check credentials, bind both listeners, serve until SIGTERM or Ctrl-C,
//! then stop accepting and drain (bounded).

use std::time::Duration;

use portico_proto::v1::config_discovery_server::ConfigDiscoveryServer;
use portico_shared::secret::KeyHasher;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::auth::Authenticator;
use crate::api::{self, AppState};
use crate::distribution::{ConfigStreams, Hub, follow_store, forget_old_records};
use crate::publish::Publisher;
use crate::settings::{MIN_TOKEN_LEN, Settings};
use crate::store::{Store, StoreError, redact};

/// How long in-flight requests and open streams get after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database at {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("{0}")]
    Credentials(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(String),
    #[error("{0}")]
    Tls(String),
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
}

/// The gRPC listener's TLS, from the flags: a certificate, and the client
/// CA that makes it mutual.
fn grpc_tls(settings: &Settings) -> Result<Option<tonic::transport::ServerTlsConfig>, StartError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Tls(format!("{flag}: cannot read {}: {e}", path.display())))
    };
    let (Some(cert), Some(key)) = (&settings.grpc_tls_cert, &settings.grpc_tls_key) else { return Ok(None) };
    let identity = tonic::transport::Identity::from_pem(read("--grpc-tls-cert", cert)?, read("--grpc-tls-key", key)?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &settings.grpc_client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read("--grpc-client-ca", ca)?));
    }
    Ok(Some(tls))
}

/// Connects to the store and applies migrations.
pub async fn open_store(settings: &Settings) -> Result<Store, StartError> {
    let wrap = |source| StartError::Store { url: redact(&settings.database_url), source };
    let store = Store::connect(&settings.database_url).await.map_err(wrap)?;
    store.migrate().await.map_err(wrap)?;
    Ok(store)
}

/// Runs the control plane until a shutdown signal.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let cluster_token = checked_token("--cluster-token (PORTICO_CLUSTER_TOKEN)", settings.cluster_token.as_deref())?.ok_or_else(|| {
        StartError::Credentials("--cluster-token (PORTICO_CLUSTER_TOKEN) is required: data planes must present it".into())
    })?;
    let admin_token = checked_token("--admin-token (PORTICO_ADMIN_TOKEN)", settings.admin_token.as_deref())?;
    let metrics = crate::metrics::install().map_err(StartError::Metrics)?;
    let store = open_store(&settings).await?;
    let wrap = |source| StartError::Store { url: redact(&settings.database_url), source };
    store.ensure_default_gateway().await.map_err(wrap)?;
    if admin_token.is_none() && store.tokens().await.map_err(wrap)?.is_empty() {
        return Err(StartError::Credentials(
            "no admin credentials: pass --admin-token (PORTICO_ADMIN_TOKEN), at least 16 characters".into(),
        ));
    }

    let heartbeat = Duration::from_millis(settings.heartbeat_interval_ms);
    let hub = Hub::default();
    let state = AppState {
        store: store.clone(),
        publisher: Publisher::new(store.clone(), hub.clone()),
        auth: Authenticator::new(admin_token, store.clone()),
        keys: KeyHasher::from_cluster_token(cluster_token),
        heartbeat,
        metrics,
    };
    let admin = bind(settings.admin_listen).await?;
    let grpc = bind(settings.grpc_listen).await?;
    if !settings.admin_listen.ip().is_loopback() {
        tracing::warn!(addr = %settings.admin_listen, "the admin API listens beyond loopback; put TLS in front of it");
    }
    tracing::info!(admin = %settings.admin_listen, grpc = %settings.grpc_listen, database = %redact(&settings.database_url), "portico-cp started");

    let listener_task = tokio::spawn(follow_store(store.clone(), hub.clone()));
    let audit_retention =
        (settings.audit_retention_days > 0).then(|| Duration::from_secs(u64::from(settings.audit_retention_days) * 24 * 60 * 60));
    let retention_task = tokio::spawn(forget_old_records(store.clone(), audit_retention));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let streams = ConfigStreams::new(store, hub, cluster_token, heartbeat, stop_rx.clone());
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Connect info gives the audit log each write's client address.
    let admin_service = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let admin_server = axum::serve(admin, admin_service).with_graceful_shutdown(stopped(stop_rx.clone()));
    let mut grpc_builder = tonic::transport::Server::builder();
    if let Some(tls) = grpc_tls(&settings)? {
        grpc_builder = grpc_builder.tls_config(tls).map_err(|e| StartError::Tls(format!("gRPC TLS: {e}")))?;
    }
    let grpc_server = grpc_builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ConfigDiscoveryServer::new(streams))
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), stopped(stop_rx));
    let admin_task = tokio::spawn(async move { admin_server.await.map_err(|e| e.to_string()) });
    let grpc_task = tokio::spawn(async move { grpc_server.await.map_err(|e| e.to_string()) });

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let (admin, grpc) = tokio::join!(admin_task, grpc_task);
        for result in [admin, grpc] {
            if let Ok(Err(e)) = result {
                return Err(StartError::Serve(e));
            }
        }
        Ok(())
    })
    .await;
    listener_task.abort();
    retention_task.abort();
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("drain timed out; closing the remaining connections");
            Ok(())
        }
    }
}

fn checked_token<'a>(flag: &str, token: Option<&'a str>) -> Result<Option<&'a str>, StartError> {
    match token {
        Some(t) if t.len() < MIN_TOKEN_LEN => Err(StartError::Credentials(format!("{flag} must be at least {MIN_TOKEN_LEN} characters"))),
        other => Ok(other),
    }
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
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
