//! `portico`: parses flags and runs one admin command against the control
//! plane's REST API, or `portico dev`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli: portico_cli::Cli = portico_shared::command_line::parse(portico_cli::Cli::command_line());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match portico_cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
