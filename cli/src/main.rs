//! `portico`: parses flags and runs one admin command against the control
//! plane's REST API. Exit status: 0 done, 1 error, 2 `diff --exit-code`
//! found changes, 3 `apply --wait` published but the fleet did not take it.

use std::io::IsTerminal;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // clap exits 2 on a bad flag; here 2 means "the diff has changes", so a
    // usage error is 1 like every other error (help and version stay 0).
    let cli = match portico_cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS };
        }
    };
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
