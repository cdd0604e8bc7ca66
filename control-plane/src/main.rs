//! `portico-cp`: parses flags, sets up logging, runs the control plane.

use std::io::IsTerminal;

use clap::CommandFactory;
use opentelemetry::trace::TracerProvider as _;
use portico_cp::{Cli, Command};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Every flag also after `serve` or `migrate`, whichever flags the settings gain.
    let cli: Cli = portico_shared::command_line::parse(Cli::command().mut_args(|arg| arg.global(true)));
    // Traces (admin requests, publishes) go to the collector through the `tracing` spans.
    let traces = match cli.settings.otlp_endpoint.as_deref().map(|endpoint| portico_cp::telemetry::provider(&cli.settings, endpoint)) {
        Some(Ok(provider)) => Some(provider),
        Some(Err(e)) => {
            eprintln!("portico-cp: error: {e}");
            return std::process::ExitCode::FAILURE;
        }
        None => None,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Only the spans meant as traces, whatever RUST_LOG says (and never the
    // exporter's own, which would trace itself).
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("portico-cp")).with_filter(portico_cp::telemetry::traced())
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(otel);
    if cli.settings.log_format == "json" {
        registry.with(logs.json().with_filter(filter)).init();
    } else {
        registry.with(logs.with_filter(filter)).init();
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match cli.settings() {
            Ok(settings) => portico_cp::run(settings).await,
            Err(e) => Err(portico_cp::StartError::Credentials(e.to_string())),
        },
        Command::Migrate => portico_cp::open_store(&cli.settings).await.map(|_| tracing::info!("migrations applied")),
    };
    if let Some(provider) = traces {
        // Sends the spans still waiting; it blocks, so not on a runtime thread.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico-cp: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
