//! `portico`: parses flags and runs one admin command against the control
//! plane's REST API. Exit status: 0 done, 1 error, 2 `diff --exit-code`
//! found changes, 3 `apply --wait` published but the fleet did not take it.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = portico_cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match portico_cli::run(cli).await {
        Ok(portico_cli::Outcome::Done) => std::process::ExitCode::SUCCESS,
        Ok(portico_cli::Outcome::Changes) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("portico: error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
