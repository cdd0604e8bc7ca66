//! `portico`: parses flags and runs one admin command against the control
//! plane's REST API.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = portico_cli::Cli::parse();
    match portico_cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
