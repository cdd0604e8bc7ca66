//! `portico dev`: a whole gateway in one process for trying Portico out: a
//! control plane on an embedded SQLite store, one data plane, a demo
//! upstream, and the example config from `deploy/examples/default.yaml`.
//! Restarts keep your work: the store lives in `--data-dir` and the example
//! is applied only to a new one; the cluster token (which API keys are
//! hashed under) and the admin token are kept there too (`secrets`). A part
//! that fails to start ends the run with that part's own error, and one that
//! is not ready within [`START_TIMEOUT`] with the answer it last gave.
//! Ctrl-C stops everything.

mod echo;
mod secrets;

use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use portico_cp::store::DEFAULT_GATEWAY;
use tokio::task::{JoinError, JoinHandle};

use crate::client::{AdminClient, CliError};
use secrets::{Origin, Token};

/// The example config `portico dev` applies to a new store.
const EXAMPLE: &str = include_str!("../../../deploy/examples/default.yaml");

/// How long each part has to be ready after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one readiness probe may wait for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the SQLite store, the tokens and the data plane's cache are kept across restarts.
    #[arg(long, default_value = ".portico-dev")]
    pub data_dir: PathBuf,
    /// Port for client traffic through the gateway.
    #[arg(long, default_value_t = 8080)]
    pub proxy_port: u16,
    /// Port of the admin API.
    #[arg(long, default_value_t = 9080)]
    pub admin_port: u16,
    /// Port of the control plane's config stream (gRPC), which data planes join.
    #[arg(long, default_value_t = 9090)]
    pub grpc_port: u16,
    /// Port of the data plane's status listener.
    #[arg(long, default_value_t = 8100)]
    pub status_port: u16,
    /// Port of the demo upstream (the example config sends /api to it).
    #[arg(long, default_value_t = 9180)]
    pub demo_port: u16,
    /// Replace the admin token kept in --data-dir with a new one; the previous one stops working.
    #[arg(long)]
    pub rotate_admin_token: bool,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// What `portico dev` found in the store at start.
enum Config {
    /// A new store: the example was applied as this version.
    Example(serde_json::Value),
    /// The store already held a config: kept, at this version.
    Kept(u64),
}

/// `portico demo-upstream`: the demo upstream alone, until the process is
/// stopped (it holds no state, so Ctrl-C and SIGTERM keep their default).
pub async fn demo_upstream(listen: SocketAddr) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
    println!("demo upstream on http://{listen}: answers every request with what it received");
    echo::serve(listener).await;
    Ok(())
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| CliError::Usage(format!("cannot create {}: {e}", args.data_dir.display())))?;
    let cluster_token = secrets::load_or_create(&args.data_dir.join("cluster-token"), false)?;
    let admin_token = secrets::load_or_create(&args.data_dir.join("admin-token"), args.rotate_admin_token)?;
    let database_url = format!("sqlite://{}", args.data_dir.join("portico.db").display());

    let demo = tokio::net::TcpListener::bind(loopback(args.demo_port))
        .await
        .map_err(|e| CliError::Usage(format!("demo upstream: cannot listen on {}: {e}", loopback(args.demo_port))))?;
    tokio::spawn(echo::serve(demo));

    let cp_settings = portico_cp::Settings {
        database_url: database_url.clone(),
        admin_listen: loopback(args.admin_port),
        grpc_listen: loopback(args.grpc_port),
        admin_token: Some(admin_token.value.clone()),
        cluster_token: Some(cluster_token.value.clone()),
        grpc_tls_cert: None,
        grpc_tls_key: None,
        grpc_client_ca: None,
        heartbeat_interval_ms: 5_000,
        audit_retention_days: portico_cp::settings::DEFAULT_AUDIT_RETENTION_DAYS,
        log_format: "text".into(),
        otlp_endpoint: None,
        otlp_protocol: portico_shared::telemetry::OtlpProtocol::Grpc,
        otlp_sampling: 1.0,
    };
    let stored = stored_version(&cp_settings).await?;
    let mut control_plane = tokio::spawn(portico_cp::run(cp_settings));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
    let admin_url = format!("http://{}", loopback(args.admin_port));
    let healthz = format!("{admin_url}/healthz");
    started("control plane", &mut control_plane, async || probe(&client, &healthz).await).await?;
    let config = match stored {
        Some(version) => Config::Kept(version),
        None => {
            let admin = AdminClient::new(&admin_url, &admin_token.value, DEFAULT_GATEWAY)?;
            // The example sends its service to the demo upstream's default port.
            let example = EXAMPLE.replace("http://127.0.0.1:9180", &format!("http://{}", loopback(args.demo_port)));
            let applied = admin.apply(example.into_bytes(), "application/yaml", Some("portico dev example")).await?;
            Config::Example(applied["version"].clone())
        }
    };

    let dp_settings = portico_dp::settings::Settings {
        control_plane: format!("http://{}", loopback(args.grpc_port)),
        gateway: DEFAULT_GATEWAY.into(),
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
        cluster_token: Some(cluster_token.value.clone()),
        labels: [("mode".to_owned(), "dev".to_owned())].into(),
        header_read_timeout_ms: 10_000,
        drain_timeout_ms: 5_000,
        client_idle_timeout_ms: 120_000,
        worker_threads: None,
        token_cache_size: 10_000,
        cache_memory_mb: 64,
        log_format: "text".into(),
        access_log: "off".into(),
        access_log_buffer: 16_384,
        otlp_endpoint: None,
        otlp_protocol: portico_dp::telemetry::OtlpProtocol::Grpc,
        otlp_sampling: 1.0,
        metrics_consumers: false,
    };
    let mut data_plane = tokio::spawn(portico_dp::server::run(dp_settings));
    let readyz = format!("http://{}/readyz", loopback(args.status_port));
    started("data plane", &mut data_plane, async || probe(&client, &readyz).await).await?;

    print_banner(&args, &config, &admin_url, &admin_token, &cluster_token, &database_url);

    // Both stop on Ctrl-C or SIGTERM; if one fails first, report it at once.
    let control_plane = async move { finished("control plane", control_plane.await) };
    let data_plane = async move { finished("data plane", data_plane.await) };
    tokio::try_join!(control_plane, data_plane).map(|_| ()).map_err(CliError::Usage)
}

/// The default gateway's version when the store already holds a config
/// beyond the empty first version; `None` for a new store.
async fn stored_version(settings: &portico_cp::Settings) -> Result<Option<u64>, CliError> {
    let failed = |e: &dyn Display| CliError::Usage(format!("control plane: {e}"));
    let store = portico_cp::open_store(settings).await.map_err(|e| failed(&e))?;
    let gateway = store.gateway(DEFAULT_GATEWAY).await.map_err(|e| failed(&e))?;
    Ok(gateway.map(|gateway| gateway.current_version).filter(|&version| version > 1))
}

/// Whether `url` answers 2xx within the probe timeout, and if not, why.
async fn probe(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("{url} answers {} (see the log above)", response.status())),
        Err(e) if e.is_timeout() => Err(format!("{url} does not answer; is another program holding that port?")),
        Err(e) => Err(format!("{url} does not answer: {e}")),
    }
}

/// Waits until `ready` says yes. Ends with the part's own error if its task
/// ends first, and with the last probe's answer when the part is not ready
/// within [`START_TIMEOUT`] (another program may hold the port and never
/// answer, or the part may refuse its config).
async fn started<E: Display>(
    part: &str,
    task: &mut JoinHandle<Result<(), E>>,
    mut ready: impl AsyncFnMut() -> Result<(), String>,
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let polled = async {
        loop {
            match ready().await {
                Ok(()) => return Ok(()),
                Err(why) if tokio::time::Instant::now() >= deadline => return Err(why),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    tokio::select! {
        ended = &mut *task => {
            finished(part, ended).map_err(CliError::Usage)?;
            Err(CliError::Usage(format!("{part}: stopped during start")))
        }
        polled = polled => polled.map_err(|why| CliError::Usage(format!("{part}: not ready after {} s: {why}", START_TIMEOUT.as_secs()))),
    }
}

/// A part's task's end, as `portico dev` reports it.
fn finished<E: Display>(part: &str, ended: Result<Result<(), E>, JoinError>) -> Result<(), String> {
    match ended {
        Ok(result) => result.map_err(|e| format!("{part}: {e}")),
        Err(e) => Err(format!("{part}: stopped unexpectedly: {e}")),
    }
}

fn print_banner(args: &DevArgs, config: &Config, admin_url: &str, admin_token: &Token, cluster_token: &Token, database_url: &str) {
    let proxy = format!("http://{}", loopback(args.proxy_port));
    let grpc = format!("http://{}", loopback(args.grpc_port));
    println!("Portico dev is running; Ctrl-C stops it.");
    match config {
        Config::Example(version) => {
            println!("A new store: applied the example config (deploy/examples/default.yaml) as version {version}.")
        }
        Config::Kept(version) => println!("Kept the stored config at version {version} (the example is applied only to a new store)."),
    }
    let admin_origin = match admin_token.origin {
        Origin::Created => format!("new, saved in {}", admin_token.path.display()),
        Origin::Reused => format!("from {}; --rotate-admin-token makes a new one", admin_token.path.display()),
        Origin::Rotated => format!("new, saved in {}; the previous one no longer works", admin_token.path.display()),
    };
    println!();
    println!("  gateway (proxy)   {proxy}");
    println!("  admin API         {admin_url}");
    println!("  admin token       {}   ({admin_origin})", admin_token.value);
    println!("  config stream     {grpc}   (gRPC, for data planes)");
    println!("  cluster token     in {}", cluster_token.path.display());
    println!("  data plane status http://{}/status", loopback(args.status_port));
    println!("  demo upstream     http://{}", loopback(args.demo_port));
    println!("  store             {database_url}");
    println!();
    println!("Try:");
    println!("  curl -i {proxy}/api/hello");
    println!("  curl -i {proxy}/dashboard   (an aggregate: two upstream calls, one JSON answer)");
    println!("  export PORTICO_ADMIN_URL={admin_url} PORTICO_ADMIN_TOKEN={}", admin_token.value);
    println!("  portico export");
    println!("  portico data-planes");
    println!();
    println!("Join a second data plane:");
    println!("  {}", join_line(args, &grpc, &cluster_token.path));
}

/// The shell line that starts a second data plane of the dev gateway, on
/// the ports after the first one's.
fn join_line(args: &DevArgs, grpc: &str, cluster_token: &Path) -> String {
    let next = |port: u16| port.checked_add(1).unwrap_or(port - 1);
    let token_file = std::path::absolute(cluster_token).unwrap_or_else(|_| cluster_token.to_owned());
    format!(
        "portico-dp --control-plane {grpc} --cluster-token-file {} --gateway {DEFAULT_GATEWAY} --listen {} --status-listen {} --node-id dev-2",
        shell_quoted(&token_file.display().to_string()),
        loopback(next(args.proxy_port)),
        loopback(next(args.status_port)),
    )
}

/// `text` as one single-quoted shell word.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
