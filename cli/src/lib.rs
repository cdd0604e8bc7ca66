//! The `portico` admin command line: declarative `apply`, `export`, `diff`,
//! version history, rollback and the fleet view, over the admin REST API
//! (`PORTICO_ADMIN_URL`, `PORTICO_ADMIN_TOKEN`), and `portico dev`, the
//! whole product on loopback for trying it out.

mod client;
pub mod dev;
mod render;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

pub use client::{AdminClient, CliError};

#[derive(Debug, Parser)]
#[command(name = "portico", version, about = "Portico admin command line")]
pub struct Cli {
    /// Base URL of the control plane's admin API.
    #[arg(long, env = "PORTICO_ADMIN_URL", default_value = "http://127.0.0.1:9080", global = true)]
    pub admin_url: String,
    /// Admin API token.
    #[arg(long, env = "PORTICO_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
    /// Gateway to work on.
    #[arg(long, short, env = "PORTICO_GATEWAY", default_value = "default", global = true)]
    pub gateway: String,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replace the gateway's config with a file (JSON or YAML); prints the diff and the new version.
    Apply {
        /// The config file: YAML, or JSON when its name ends in .json.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Recorded with the version (Portico-Change-Message).
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Print the gateway's config.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
    /// Show what applying a file would change.
    Diff {
        /// The config file to compare with the gateway's: YAML, or JSON when its name ends in .json.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List published versions, newest first.
    Versions {
        /// How many versions to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Publish version N's content as a new version.
    Rollback {
        /// The version whose content to publish again.
        version: u64,
        /// Recorded with the new version (Portico-Change-Message).
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Show the gateway's data planes and whether they serve the current version.
    DataPlanes,
    /// Run a control plane (embedded SQLite), a data plane, a demo upstream and the example config, all on loopback.
    Dev(dev::DevArgs),
}

impl Cli {
    /// The command line as `main` parses it: `portico dev` runs its own
    /// control plane, so its `--help` hides the admin API's global flags.
    pub fn command_line() -> clap::Command {
        let mut command = <Self as clap::CommandFactory>::command();
        command.build();
        let global: Vec<clap::Id> = command.get_arguments().filter(|arg| arg.is_global_set()).map(|arg| arg.get_id().clone()).collect();
        command.mut_subcommand("dev", |dev| dev.mut_args(|arg| if global.contains(arg.get_id()) { arg.hide(true) } else { arg }))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// Runs one command, printing its result to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Dev(args) = cli.command {
        return dev::run(args).await;
    }
    let token = cli
        .admin_token
        .clone()
        .ok_or_else(|| CliError::Usage("an admin token is required: set PORTICO_ADMIN_TOKEN or pass --admin-token".into()))?;
    let client = AdminClient::new(&cli.admin_url, &token, &cli.gateway)?;
    let output = match cli.command {
        Command::Apply { file, message } => {
            let (body, content_type) = read_config(&file)?;
            let applied = client.apply(body, content_type, message.as_deref()).await?;
            if cli.json { pretty(&applied) } else { render::applied(&applied) }
        }
        Command::Export { format } => client.export(format).await?,
        Command::Diff { file } => {
            let (body, content_type) = read_config(&file)?;
            let diff = client.diff(body, content_type).await?;
            if cli.json { pretty(&diff) } else { render::diff(&diff) }
        }
        Command::Versions { limit } => {
            let versions = client.versions(limit).await?;
            if cli.json { pretty(&versions) } else { render::versions(&versions) }
        }
        Command::Rollback { version, message } => {
            let rolled = client.rollback(version, message.as_deref()).await?;
            if cli.json { pretty(&rolled) } else { render::rollback(version, &rolled) }
        }
        Command::DataPlanes => {
            let fleet = client.data_planes().await?;
            if cli.json { pretty(&fleet) } else { render::fleet(&fleet) }
        }
        Command::Dev(_) => unreachable!("handled above"),
    };
    print!("{output}");
    if !output.ends_with('\n') {
        println!();
    }
    Ok(())
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A config file and its content type, chosen by extension (YAML unless `.json`).
fn read_config(path: &Path) -> Result<(Vec<u8>, &'static str), CliError> {
    let body = std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let json = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    Ok((body, if json { "application/json" } else { "application/yaml" }))
}
