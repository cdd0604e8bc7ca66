//! Command-line flags, each with an environment variable (see CONTRACT).
//! Secrets may come from files instead ([`SecretFiles`]), so they need not
//! appear in `ps`; [`Cli::settings`] reads them into the [`Settings`] the
//! control plane runs with.

use std::net::SocketAddr;
use std::path::PathBuf;

use portico_shared::secret_file::{self, SecretFileError};

use clap::{Args, Parser, Subcommand};

/// Shortest accepted admin or cluster token.
pub const MIN_TOKEN_LEN: usize = 16;

/// How long the audit log keeps an entry by default: a year.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;

// The flags are accepted before or after the subcommand (`portico-cp
// --admin-listen … serve` and `portico-cp serve --admin-listen …`): `main`
// makes every one global. (A `///` here would become `--help`'s long about.)
#[derive(Debug, Parser)]
#[command(name = "portico-cp", version, about = "Portico control plane: config store, admin API and config distribution to data planes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(flatten)]
    pub secret_files: SecretFiles,
}

impl Cli {
    /// The settings, with the tokens of the secret files read in.
    pub fn settings(&self) -> Result<Settings, SecretFileError> {
        let mut settings = self.settings.clone();
        if let Some(path) = &self.secret_files.admin_token_file {
            settings.admin_token = Some(secret_file::read("--admin-token-file", path)?);
        }
        if let Some(path) = &self.secret_files.cluster_token_file {
            settings.cluster_token = Some(secret_file::read("--cluster-token-file", path)?);
        }
        Ok(settings)
    }
}

/// Tokens read from files (a mounted Kubernetes Secret, a Docker secret),
/// so they never appear in `ps` or `/proc/<pid>/cmdline`.
#[derive(Debug, Clone, Default, Args)]
pub struct SecretFiles {
    /// File holding the bootstrap admin token, instead of --admin-token (the token alone; a trailing newline is ignored).
    #[arg(long, env = "PORTICO_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the cluster token, instead of --cluster-token (the token alone; a trailing newline is ignored).
    #[arg(long, env = "PORTICO_CLUSTER_TOKEN_FILE", conflicts_with = "cluster_token")]
    pub cluster_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Run the control plane (the default when no command is given).
    Serve,
    /// Apply pending database migrations to --database-url and exit.
    Migrate,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// `postgres://user@host/db` or `sqlite://path` (created if missing).
    #[arg(long, env = "PORTICO_DATABASE_URL", default_value = "sqlite://portico.db")]
    pub database_url: String,
    /// Address of the admin REST API. Keep it on loopback unless it sits behind TLS.
    #[arg(long, env = "PORTICO_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    pub admin_listen: SocketAddr,
    /// Address of the gRPC config stream that data planes connect to.
    #[arg(long, env = "PORTICO_GRPC_LISTEN", default_value = "127.0.0.1:9090")]
    pub grpc_listen: SocketAddr,
    /// Bootstrap admin token (at least 16 characters). Required unless tokens already exist in the store.
    #[arg(long, env = "PORTICO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Secret that data planes must present (at least 16 characters). Required.
    #[arg(long, env = "PORTICO_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// PEM certificate (chain) the gRPC listener serves TLS with (with --grpc-tls-key).
    #[arg(long, env = "PORTICO_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "PORTICO_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<std::path::PathBuf>,
    /// PEM CA whose client certificates data planes must present (mTLS; needs --grpc-tls-cert).
    #[arg(long, env = "PORTICO_GRPC_CLIENT_CA", requires = "grpc_tls_cert")]
    pub grpc_client_ca: Option<std::path::PathBuf>,
    /// How often the config stream sends heartbeats; a node silent for three is shown disconnected.
    #[arg(long, env = "PORTICO_HEARTBEAT_INTERVAL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub heartbeat_interval_ms: u64,
    /// Days the audit log keeps an entry; 0 keeps every entry forever.
    #[arg(long, env = "PORTICO_AUDIT_RETENTION_DAYS", default_value_t = DEFAULT_AUDIT_RETENTION_DAYS, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub audit_retention_days: u32,
    /// Log format: `text` or `json`.
    #[arg(long, env = "PORTICO_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// OpenTelemetry collector to send traces of admin requests and publishes to (`http://host:4317` for gRPC, `http://host:4318` for HTTP); none: no traces.
    #[arg(long, env = "PORTICO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http` (protobuf bodies to `<endpoint>/v1/traces`).
    #[arg(long, env = "PORTICO_OTLP_PROTOCOL", value_enum, default_value = "grpc")]
    pub otlp_protocol: portico_shared::telemetry::OtlpProtocol,
    /// Share of new traces sampled, 0 to 1; a client's traceparent decides for its own trace, except at 0, which sends nothing.
    #[arg(long, env = "PORTICO_OTLP_SAMPLING", default_value_t = 1.0, value_parser = portico_shared::command_line::share)]
    pub otlp_sampling: f64,
}
