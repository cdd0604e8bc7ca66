//! `portico-dp`: parses flags, sets up logging and the runtime, runs the data plane.

use std::io::IsTerminal;

use clap::CommandFactory;
use portico_dp::settings::Cli;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: a proxied request allocates
/// a few dozen small blocks, and glibc's malloc spent about a tenth of the
/// data plane's instructions on them. Its v2 line (see Cargo.toml); blocks
/// up to 1 KiB come from its fast path, which is why the pipeline keeps
/// each boxed future under that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli: Cli = portico_shared::command_line::parse(Cli::command());
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("portico-dp: error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    if settings.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    // One worker: a current-thread runtime, which skips the work-stealing machinery.
    let mut runtime = match settings.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(usize::from(threads));
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let result = match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(portico_dp::server::run(settings)).map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico-dp: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
