//! `portico`: parses flags and runs one admin command against the control
//! plane's REST API.

use std::io::IsTerminal;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = portico_cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    match portico_cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
