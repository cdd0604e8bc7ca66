//! Version history: the list, one version's content, the difference
//! between two versions (computed here with the control plane's own diff),
//! and rollback, which prints what it changed.

use clap::Subcommand;
use portico_shared::GatewayConfig;
use portico_shared::diff::{ConfigDiff, diff};
use serde_json::Value;

use crate::client::{AdminClient, CliError};
use crate::{Outcome, pretty, print_block, render};

#[derive(Debug, Subcommand)]
pub enum VersionsCommand {
    /// Version N: who published it and when, then its config as YAML (a file `apply -f` takes); the API's JSON with --json.
    Show {
        /// The version to show.
        version: u64,
    },
    /// What changed from version N to version M (the diff `apply` prints).
    Diff {
        /// The version to compare from (N).
        from: u64,
        /// The version to compare to (M).
        to: u64,
    },
}

pub(crate) async fn run(client: &AdminClient, json: bool, limit: u32, command: Option<VersionsCommand>) -> Result<Outcome, CliError> {
    let text = match command {
        None => {
            let versions = client.versions(limit).await?;
            if json { pretty(&versions) } else { render::versions(&versions) }
        }
        Some(VersionsCommand::Show { version }) => {
            let shown = client.version(version).await?;
            if json {
                pretty(&shown)
            } else {
                let yaml = serde_yaml_ng::to_string(&snapshot(&shown)?.declarative())
                    .map_err(|e| CliError::Usage(format!("cannot encode the config: {e}")))?;
                render::version(&shown, &yaml)
            }
        }
        Some(VersionsCommand::Diff { from, to }) => {
            let changes = between(client, from, to).await?;
            if json { pretty(&changes) } else { render::diff(&to_json(&changes)) }
        }
    };
    print_block(&text);
    Ok(Outcome::Done)
}

pub(crate) async fn rollback(client: &AdminClient, json: bool, target: u64, message: Option<&str>) -> Result<Outcome, CliError> {
    let written = client.rollback(target, message).await?;
    let text = if json {
        pretty(&written.body)
    } else {
        let published = written.body["version"].as_u64().unwrap_or(0);
        // History is linear: the version before the new one is what it replaced.
        let changes = if written.created { to_json(&between(client, published.saturating_sub(1), published).await?) } else { Value::Null };
        render::rollback(target, &written.body, written.created, &changes)
    };
    print_block(&text);
    Ok(Outcome::Done)
}

/// What changed from version `from` to version `to`.
async fn between(client: &AdminClient, from: u64, to: u64) -> Result<ConfigDiff, CliError> {
    let (old, new) = tokio::try_join!(client.version(from), client.version(to))?;
    Ok(diff(&snapshot(&old)?, &snapshot(&new)?))
}

fn snapshot(version: &Value) -> Result<GatewayConfig, CliError> {
    serde_json::from_value(version["config"].clone()).map_err(|e| CliError::Usage(format!("unreadable snapshot: {e}")))
}

fn to_json(changes: &ConfigDiff) -> Value {
    serde_json::to_value(changes).unwrap_or(Value::Null)
}
