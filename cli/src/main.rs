//! `portico`: parses flags and runs one admin command against the control
//! plane's REST API, or `portico dev`. Exit status: 0 done, 1 error (a bad
//! flag too), 2 `diff --exit-code` found changes, 3 `apply --wait`
//! published but the fleet did not take it, or `cache purge` was sent but a
//! connected data plane did not confirm it in time.

use std::io::IsTerminal;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli: portico_cli::Cli = portico_shared::command_line::parse(portico_cli::Cli::command_line());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    match portico_cli::run(cli).await {
        Ok(portico_cli::Outcome::Done) => std::process::ExitCode::SUCCESS,
        Ok(portico_cli::Outcome::Changes) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("portico: error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
