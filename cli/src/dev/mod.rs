//! `portico dev`: a whole gateway in one process for trying Portico out: a
//! control plane on an embedded SQLite store, one data plane, a demo
//! upstream, and the example config from `deploy/examples/default.yaml`.
//! Tokens are random per run and printed; Ctrl-C stops everything.

mod echo;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::client::{AdminClient, CliError};

/// The example config `portico dev` applies.
const EXAMPLE: &str = include_str!("../../../deploy/examples/default.yaml");

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the SQLite store and the data plane's cache live.
    #[arg(long, default_value = ".portico-dev")]
    pub data_dir: PathBuf,
    /// Port for client traffic through the gateway.
    #[arg(long, default_value_t = 8080)]
    pub proxy_port: u16,
    /// Port of the admin API.
    #[arg(long, default_value_t = 9080)]
    pub admin_port: u16,
    /// Port of the control plane's config stream.
    #[arg(long, default_value_t = 9090)]
    pub grpc_port: u16,
    /// Port of the data plane's status listener.
    #[arg(long, default_value_t = 8100)]
    pub status_port: u16,
    /// Port of the demo upstream (the example config sends /api to it).
    #[arg(long, default_value_t = 9180)]
    pub demo_port: u16,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| CliError::Usage(format!("cannot create {}: {e}", args.data_dir.display())))?;
    let admin_token = portico_cp::api::auth::generate_token();
    let cluster_token = portico_cp::api::auth::generate_token();
    let database_url = format!("sqlite://{}", args.data_dir.join("portico.db").display());

    let demo = tokio::net::TcpListener::bind(loopback(args.demo_port))
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {} for the demo upstream: {e}", loopback(args.demo_port))))?;
    tokio::spawn(echo::serve(demo));

    let cp_settings = portico_cp::Settings {
        database_url: database_url.clone(),
        admin_listen: loopback(args.admin_port),
        grpc_listen: loopback(args.grpc_port),
        admin_token: Some(admin_token.clone()),
        cluster_token: Some(cluster_token.clone()),
        grpc_tls_cert: None,
        grpc_tls_key: None,
        grpc_client_ca: None,
        heartbeat_interval_ms: 5_000,
        log_format: "text".into(),
    };
    let control_plane = tokio::spawn(portico_cp::run(cp_settings));
    let admin_url = format!("http://{}", loopback(args.admin_port));
    let admin = AdminClient::new(&admin_url, &admin_token, "default")?;
    wait_until("control plane", &control_plane, async || admin.versions(1).await.is_ok()).await?;
    // The example sends its service to the demo upstream's default port.
    let example = EXAMPLE.replace("http://127.0.0.1:9180", &format!("http://{}", loopback(args.demo_port)));
    let applied = admin.apply(example.into_bytes(), "application/yaml", Some("portico dev example")).await?;

    let dp_settings = portico_dp::settings::Settings {
        control_plane: format!("http://{}", loopback(args.grpc_port)),
        gateway: "default".into(),
        listen: loopback(args.proxy_port),
        tls_listen: None,
        status_listen: loopback(args.status_port),
        node_id: Some("dev".into()),
        cache_dir: Some(args.data_dir.join("cache")),
        redis_url: None,
        control_plane_ca: None,
        control_plane_cert: None,
        control_plane_key: None,
        redis_timeout_ms: 100,
        expected_nodes: 1,
        cluster_token: Some(cluster_token),
        labels: [("mode".to_owned(), "dev".to_owned())].into(),
        header_read_timeout_ms: 10_000,
        drain_timeout_ms: 5_000,
        client_idle_timeout_ms: 120_000,
        worker_threads: None,
        token_cache_size: 10_000,
        log_format: "text".into(),
    };
    let data_plane = tokio::spawn(portico_dp::server::run(dp_settings));
    let readyz = format!("http://{}/readyz", loopback(args.status_port));
    let http = reqwest::Client::new();
    wait_until("data plane", &data_plane, async || http.get(&readyz).send().await.is_ok_and(|r| r.status().is_success())).await?;

    println!("Portico dev is running (config version {}); Ctrl-C stops it.", applied["version"]);
    println!();
    println!("  gateway (proxy)   http://{}", loopback(args.proxy_port));
    println!("  admin API         {admin_url}   (token below)");
    println!("  data plane status http://{}/status", loopback(args.status_port));
    println!("  demo upstream     http://{}", loopback(args.demo_port));
    println!("  store             {database_url}");
    println!();
    println!("Try:");
    println!("  curl -i http://{}/api/hello", loopback(args.proxy_port));
    println!("  export PORTICO_ADMIN_URL={admin_url} PORTICO_ADMIN_TOKEN={admin_token}");
    println!("  portico export");
    println!("  portico data-planes");

    // Both stop on Ctrl-C or SIGTERM; if one fails first, report it at once.
    let control_plane = async move {
        match control_plane.await {
            Ok(result) => result.map_err(|e| format!("control plane: {e}")),
            Err(e) => Err(format!("the control plane stopped unexpectedly: {e}")),
        }
    };
    let data_plane = async move {
        match data_plane.await {
            Ok(result) => result.map_err(|e| format!("data plane: {e}")),
            Err(e) => Err(format!("the data plane stopped unexpectedly: {e}")),
        }
    };
    tokio::try_join!(control_plane, data_plane).map(|_| ()).map_err(CliError::Usage)
}

/// Waits up to 10 s until `ready` says yes, failing early if `component`'s
/// task has ended (it failed to start; its error is logged).
async fn wait_until<T>(component: &str, task: &tokio::task::JoinHandle<T>, mut ready: impl AsyncFnMut() -> bool) -> Result<(), CliError> {
    for _ in 0..200 {
        if task.is_finished() {
            return Err(CliError::Usage(format!("the {component} stopped during start; see the error above")));
        }
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(CliError::Usage(format!("the {component} was not ready within 10 s")))
}
