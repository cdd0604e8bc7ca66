//! The `portico` admin command line: declarative `apply`, `export`, `diff`
//! (fit for CI: exit codes, no prompt without a terminal, `--select-tag`,
//! `--wait` for the fleet, `--env-subst`), version history, rollback, the
//! fleet view, consumers and their API keys, cache purges, the audit log, over the admin REST API
//! (`PORTICO_ADMIN_URL`, `PORTICO_ADMIN_TOKEN`), and `portico dev`, the
//! whole product on loopback for trying it out.

mod client;
mod commands;
mod confirm;
pub mod dev;
mod document;
mod envsubst;
mod render;
mod select;
mod wait;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub use client::{AdminClient, CliError};
pub use commands::cache::{CacheCommand, PurgeTarget};
pub use commands::entities::{ConsumersCommand, KeysCommand};
pub use commands::versions::VersionsCommand;
pub use document::Source;
pub use select::Selection;

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
        #[command(flatten)]
        source: Source,
        /// Recorded with the version (Portico-Change-Message).
        #[arg(short, long)]
        message: Option<String>,
        /// Delete without asking (apply asks on a terminal when it would delete; elsewhere it never asks).
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        selection: Selection,
        /// After publishing, wait until every connected data plane serves the new version (default 60s; e.g. 90s, 2m); exit 3 if one rejects it or the time runs out.
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true, default_missing_value = "60s", value_parser = wait::parse_timeout)]
        wait: Option<Duration>,
    },
    /// Print the gateway's config.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
        #[command(flatten)]
        selection: Selection,
    },
    /// Show what applying a file would change.
    Diff {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        selection: Selection,
        /// Exit 2 when there are changes, 0 when there are none (1 stays an error), as `git diff --exit-code`.
        #[arg(long, alias = "non-zero-exit-code")]
        exit_code: bool,
    },
    /// List published versions, newest first; `show N` and `diff N M` look into them.
    Versions {
        /// How many versions to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(subcommand)]
        command: Option<VersionsCommand>,
    },
    /// Publish version N's content as a new version; prints what that changed.
    Rollback {
        /// The version whose content to publish again.
        version: u64,
        /// Recorded with the new version (Portico-Change-Message).
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Show the gateway's data planes and whether they serve the current version.
    DataPlanes,
    /// Show who changed what, when and from where (admin tokens only), newest first: the gateway's changes, or every one with --all-gateways.
    Audit {
        /// Only the changes made with this token name.
        #[arg(long)]
        author: Option<String>,
        /// Only this action (service.create) or every action of a subject (service).
        #[arg(long)]
        action: Option<String>,
        /// Every gateway's changes and token changes, not only --gateway's.
        #[arg(long)]
        all_gateways: bool,
        /// How many entries to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The gateway's consumers (who calls).
    #[command(subcommand)]
    Consumers(ConsumersCommand),
    /// A consumer's API keys (key-auth credentials).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The data planes' response caches.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Run a control plane (embedded SQLite), a data plane, a demo upstream and the example config, all on loopback.
    Dev(dev::DevArgs),
    /// Run only portico dev's demo upstream, which answers every request with what it received (for the example config without portico dev).
    DemoUpstream {
        /// Address to listen on (the example config sends /api here).
        #[arg(long, env = "PORTICO_DEMO_LISTEN", default_value = "127.0.0.1:9180")]
        listen: std::net::SocketAddr,
    },
}

impl Cli {
    /// The command line as `main` parses it: `portico dev` and
    /// `demo-upstream` do not talk to an admin API, so their `--help` hides
    /// the admin API's global flags.
    pub fn command_line() -> clap::Command {
        let mut command = <Self as clap::CommandFactory>::command();
        command.build();
        let global: Vec<clap::Id> = command.get_arguments().filter(|arg| arg.is_global_set()).map(|arg| arg.get_id().clone()).collect();
        ["dev", "demo-upstream"].into_iter().fold(command, |command, name| {
            command.mut_subcommand(name, |sub| sub.mut_args(|arg| if global.contains(arg.get_id()) { arg.hide(true) } else { arg }))
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// How a command that succeeded ends the process: exit 0, or 2 for
/// `diff --exit-code` when there are changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Changes,
}

/// Runs one command, printing its result to stdout.
pub async fn run(cli: Cli) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Dev(args) => return dev::run(args).await.map(|()| Outcome::Done),
        Command::DemoUpstream { listen } => return dev::demo_upstream(listen).await.map(|()| Outcome::Done),
        _ => {}
    }
    let token = cli
        .admin_token
        .clone()
        .ok_or_else(|| CliError::Usage("an admin token is required: set PORTICO_ADMIN_TOKEN or pass --admin-token".into()))?;
    let client = AdminClient::new(&cli.admin_url, &token, &cli.gateway)?;
    let json = cli.json;
    match cli.command {
        Command::Apply { source, message, yes, selection, wait } => {
            let options = commands::config::ApplyOptions { message: message.as_deref(), yes, wait };
            commands::config::apply(&client, json, &source, &selection, options).await
        }
        Command::Export { format, selection } => commands::config::export(&client, format, &selection).await,
        Command::Diff { source, selection, exit_code } => commands::config::diff(&client, json, &source, &selection, exit_code).await,
        Command::Versions { limit, command } => commands::versions::run(&client, json, limit, command).await,
        Command::Rollback { version, message } => commands::versions::rollback(&client, json, version, message.as_deref()).await,
        Command::DataPlanes => {
            let fleet = client.data_planes().await?;
            print_block(&if json { pretty(&fleet) } else { render::fleet(&fleet) });
            Ok(Outcome::Done)
        }
        Command::Audit { author, action, all_gateways, limit } => {
            let log = client.audit(all_gateways, author.as_deref(), action.as_deref(), limit).await?;
            print_block(&if json { pretty(&log) } else { render::audit(&log) });
            Ok(Outcome::Done)
        }
        Command::Consumers(command) => commands::entities::consumers(&client, json, command).await,
        Command::Keys(command) => commands::entities::keys(&client, json, command).await,
        Command::Cache(command) => commands::cache::run(&client, json, command).await,
        Command::Dev(_) | Command::DemoUpstream { .. } => unreachable!("handled above"),
    }
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Prints `text` to stdout, ending it with a newline if it has none.
fn print_block(text: &str) {
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
}
