//! `portico-cp`: parses flags, sets up logging, runs the control plane.

use std::io::IsTerminal;

use clap::CommandFactory;
use portico_cp::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Every flag also after `serve` or `migrate`, whichever flags the settings gain.
    let cli: Cli = portico_shared::command_line::parse(Cli::command().mut_args(|arg| arg.global(true)));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    if cli.settings.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match cli.settings() {
            Ok(settings) => portico_cp::run(settings).await,
            Err(e) => Err(portico_cp::StartError::Credentials(e.to_string())),
        },
        Command::Migrate => portico_cp::open_store(&cli.settings).await.map(|_| tracing::info!("migrations applied")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico-cp: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
