//! `portico-dp`: parses flags, sets up logging, runs the data plane.

use clap::Parser;
use portico_dp::settings::Settings;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if settings.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    match portico_dp::server::run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico-dp: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
