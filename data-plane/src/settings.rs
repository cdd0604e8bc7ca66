//! Command-line flags, each with an environment variable (see CONTRACT).
//! The cluster token may come from a file instead (`--cluster-token-file`),
//! so it need not appear in `ps`; [`Cli::settings`] reads it into the
//! [`Settings`] the data plane runs with. A node started without
//! `--node-id` is named by [`default_node_id`]: the host name (from
//! `whoami`, which asks the OS rather than trusting `$HOSTNAME`) and a
//! short hash of its gateway and listen address, so a restarted node keeps
//! its row in the fleet view and two nodes on one host still differ.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};
use portico_shared::secret_file::{self, SecretFileError};
use sha2::{Digest, Sha256};

/// The flags as given.
#[derive(Debug, Clone, Parser)]
#[command(name = "portico-dp", version, about = "Portico data plane: serves the config the control plane streams to it")]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    /// File holding the cluster token, instead of --cluster-token (the token alone; a trailing newline is ignored).
    #[arg(long, env = "PORTICO_CLUSTER_TOKEN_FILE", conflicts_with = "cluster_token")]
    pub cluster_token_file: Option<PathBuf>,
}

impl Cli {
    /// The settings, with the token of the secret file read in.
    pub fn settings(self) -> Result<Settings, SecretFileError> {
        let mut settings = self.settings;
        if let Some(path) = &self.cluster_token_file {
            settings.cluster_token = Some(secret_file::read("--cluster-token-file", path)?);
        }
        Ok(settings)
    }
}

/// What the data plane runs with.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// URL of the control plane's config stream (gRPC; http:// or https://).
    #[arg(long, env = "PORTICO_CONTROL_PLANE", default_value = "http://127.0.0.1:9090")]
    pub control_plane: String,
    /// PEM CA that the control plane's certificate must chain to (for an https:// --control-plane).
    #[arg(long, env = "PORTICO_CONTROL_PLANE_CA")]
    pub control_plane_ca: Option<std::path::PathBuf>,
    /// PEM client certificate presented to the control plane (mTLS, with --control-plane-key).
    #[arg(long, env = "PORTICO_CONTROL_PLANE_CERT", requires = "control_plane_key")]
    pub control_plane_cert: Option<std::path::PathBuf>,
    /// PEM private key of --control-plane-cert.
    #[arg(long, env = "PORTICO_CONTROL_PLANE_KEY", requires = "control_plane_cert")]
    pub control_plane_key: Option<std::path::PathBuf>,
    /// The gateway this node serves.
    #[arg(long, env = "PORTICO_GATEWAY", default_value = "default")]
    pub gateway: String,
    /// Address for client traffic (HTTP/1.1 and HTTP/2 cleartext).
    #[arg(long, env = "PORTICO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address for client traffic over TLS (HTTP/1.1 and HTTP/2 by ALPN), with the config's certificates chosen by SNI.
    #[arg(long, env = "PORTICO_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Address of /healthz, /readyz, /status and /metrics.
    #[arg(long, env = "PORTICO_STATUS_LISTEN", default_value = "127.0.0.1:8100")]
    pub status_listen: SocketAddr,
    /// This node's id in the fleet view (default: generated from the host name and a hash of --gateway and --listen, so it stays the same across restarts).
    #[arg(long, env = "PORTICO_NODE_ID")]
    pub node_id: Option<String>,
    /// Where the last good config is kept, to serve from when restarted while the control plane is down.
    #[arg(long, env = "PORTICO_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Redis for shared rate-limit state (`redis://` or `rediss://`); needed by `backend: redis` limits.
    #[arg(long, env = "PORTICO_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// How long a Redis call may take before `on_backend_failure` decides (a decision that joins its key's call in flight waits for that one and the next: at most twice this).
    #[arg(long, env = "PORTICO_REDIS_TIMEOUT_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub redis_timeout_ms: u64,
    /// Data planes sharing a Redis-backed limit until Redis has counted them (it does while it answers): on its local fallback a node admits `limit / nodes`.
    #[arg(long, env = "PORTICO_EXPECTED_NODES", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub expected_nodes: u64,
    /// Secret shared with the control plane, which refuses data planes without it (at least 16 characters). Required.
    #[arg(long, env = "PORTICO_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// Labels shown in the fleet view, `key=value,key=value`.
    #[arg(long, env = "PORTICO_LABELS", value_parser = parse_labels, default_value = "")]
    pub labels: BTreeMap<String, String>,
    /// Time a client has to start and then finish sending a request head.
    #[arg(long, env = "PORTICO_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,
    /// A client connection with no request in flight for this long is closed (HTTP/1 connections waiting for a request go sooner, by the header read timeout).
    #[arg(long, env = "PORTICO_CLIENT_IDLE_TIMEOUT_MS", default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    pub client_idle_timeout_ms: u64,
    /// How long in-flight requests and WebSocket tunnels may take to finish after SIGTERM.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    /// Threads serving traffic (default: one per core).
    #[arg(long, env = "PORTICO_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// Verified JWTs remembered per config version, so each token's signature is checked once (0 turns the cache off).
    #[arg(long, env = "PORTICO_TOKEN_CACHE_SIZE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub token_cache_size: u64,
    /// Memory for stored responses of routes with a `cache` policy, in MiB, shared by all routes (0 stores nothing).
    #[arg(long, env = "PORTICO_CACHE_MEMORY_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub cache_memory_mb: u64,
    /// Access log: `off`, `stdout`, or a file path (appended to; reopened on SIGHUP, for log rotation). One JSON line per request; the `access-log` policy picks which requests and fields.
    #[arg(long, env = "PORTICO_ACCESS_LOG", default_value = "off")]
    pub access_log: String,
    /// Access log lines that may wait for the writer; past that, lines are dropped (counted in `portico_access_log_dropped_total`), never requests slowed.
    #[arg(long, env = "PORTICO_ACCESS_LOG_BUFFER", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub access_log_buffer: u64,
    /// OpenTelemetry collector to send traces to (`http://host:4317` for gRPC, `http://host:4318` for HTTP); none: no traces.
    #[arg(long, env = "PORTICO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http` (protobuf bodies to `<endpoint>/v1/traces`).
    #[arg(long, env = "PORTICO_OTLP_PROTOCOL", value_enum, default_value = "grpc")]
    pub otlp_protocol: crate::telemetry::OtlpProtocol,
    /// Share of new traces sampled, 0 to 1; a client's traceparent decides for its own trace, except at 0, which sends nothing.
    #[arg(long, env = "PORTICO_OTLP_SAMPLING", default_value_t = 1.0, value_parser = portico_shared::command_line::share)]
    pub otlp_sampling: f64,
    /// Also count requests by consumer (`portico_consumer_requests_total`): one series per consumer, route and status, so off by default.
    #[arg(long, env = "PORTICO_METRICS_CONSUMERS")]
    pub metrics_consumers: bool,
    /// Log format: `text` or `json`.
    #[arg(long, env = "PORTICO_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// The id of a node started without `--node-id`: `<host>-<8 hex digits>`,
/// the digits from the gateway and listen address.
pub fn default_node_id(gateway: &str, listen: SocketAddr) -> String {
    let host = whoami::hostname().unwrap_or_default();
    let host: String = host.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    let host = if host.is_empty() { "portico-dp".to_owned() } else { host };
    let digest = Sha256::digest(format!("{gateway}\n{listen}"));
    format!("{host}-{}", &hex::encode(digest)[..8])
}

fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, String> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("label '{pair}' is not key=value"))?;
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_node_id_is_stable_per_gateway_and_listen_address() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let id = default_node_id("default", listen);
        assert_eq!(id, default_node_id("default", listen), "a restart keeps its id");
        assert_ne!(id, default_node_id("default", "127.0.0.1:8081".parse().unwrap()), "two nodes on one host differ");
        assert_ne!(id, default_node_id("mobile", listen));
        assert!(id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()), "{id}");
    }

    #[test]
    fn the_token_file_conflicts_with_the_token_flag() {
        let error = Cli::try_parse_from(["portico-dp", "--cluster-token", "x", "--cluster-token-file", "/f"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
