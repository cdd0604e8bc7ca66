//! `apply`, `diff` and `export`: the gateway's whole config, declaratively,
//! or the part of it a `--select-tag` selection covers.

use std::io::IsTerminal;
use std::time::Duration;

use crate::client::{AdminClient, CliError};
use crate::document::{Document, Source};
use crate::select::{Selection, entity_count};
use crate::{Format, Outcome, confirm, pretty, print_block, render, wait};

/// How `apply` goes about it.
pub(crate) struct ApplyOptions<'a> {
    pub(crate) message: Option<&'a str>,
    /// Delete without asking.
    pub(crate) yes: bool,
    /// Wait this long for the fleet to serve the new version.
    pub(crate) wait: Option<Duration>,
}

/// The document to send; with a selection, the hash of the config it was
/// merged into and how many entities the file holds.
struct Prepared {
    document: Document,
    base_hash: Option<String>,
    in_file: Option<usize>,
}

async fn prepare(client: &AdminClient, source: &Source, selection: &Selection) -> Result<Prepared, CliError> {
    let document = source.read()?;
    if selection.is_empty() {
        return Ok(Prepared { document, base_hash: None, in_file: None });
    }
    let file = document.parse()?;
    let in_file = entity_count(&file);
    let (current, hash) = client.config().await?;
    let merged =
        selection.scope(&current, file).map_err(|problems| CliError::File { file: source.file.display().to_string(), problems })?;
    Ok(Prepared { document: document.replaced(&merged)?, base_hash: Some(hash), in_file: Some(in_file) })
}

pub(crate) async fn diff(
    client: &AdminClient,
    json: bool,
    source: &Source,
    selection: &Selection,
    exit_code: bool,
) -> Result<Outcome, CliError> {
    let prepared = prepare(client, source, selection).await?;
    let mut diff = client.diff(prepared.document.body, prepared.document.content_type).await?;
    if let Some(in_file) = prepared.in_file {
        selection.rescope_summary(&mut diff, in_file);
    }
    print_block(&if json { pretty(&diff) } else { render::diff(&diff) });
    let changed = diff["changes"].as_array().is_some_and(|changes| !changes.is_empty());
    Ok(if exit_code && changed { Outcome::Changes } else { Outcome::Done })
}

pub(crate) async fn apply(
    client: &AdminClient,
    json: bool,
    source: &Source,
    selection: &Selection,
    options: ApplyOptions<'_>,
) -> Result<Outcome, CliError> {
    let Prepared { document, mut base_hash, in_file } = prepare(client, source, selection).await?;
    if !options.yes && std::io::stdin().is_terminal() {
        let preview = client.diff(document.body.clone(), document.content_type).await?;
        let deletions = confirm::deletions(&preview);
        if !deletions.is_empty() {
            let confirmed = confirm::ask(&deletions, &mut std::io::stdin().lock(), &mut std::io::stderr())
                .map_err(|e| CliError::Usage(format!("cannot read the answer: {e}")))?;
            if !confirmed {
                return Err(CliError::Declined("nothing applied: the deletions were not confirmed (--yes applies without asking)".into()));
            }
        }
        // What was confirmed is what gets applied: a change since is a 409.
        base_hash = base_hash.or_else(|| preview["base_hash"].as_str().map(str::to_owned));
    }
    let mut applied = client.apply_if_match(document.body, document.content_type, options.message, base_hash.as_deref()).await?;
    if let Some(in_file) = in_file {
        selection.rescope_summary(&mut applied["diff"], in_file);
    }
    print_block(&if json { pretty(&applied) } else { render::applied(&applied) });
    if let Some(timeout) = options.wait {
        let version = applied["version"]
            .as_u64()
            .ok_or_else(|| CliError::Fleet("applied, but the control plane did not say which version is current".into()))?;
        let done = wait::fleet(client, version, timeout).await?;
        // Keep stdout one JSON document under --json.
        if json { eprintln!("{done}") } else { println!("{done}") }
    }
    Ok(Outcome::Done)
}

pub(crate) async fn export(client: &AdminClient, format: Format, selection: &Selection) -> Result<Outcome, CliError> {
    let text = if selection.is_empty() {
        client.export(format).await?
    } else {
        let (config, _) = client.config().await?;
        let selected = selection.filter(config);
        let encoded = match format {
            Format::Yaml => serde_yaml_ng::to_string(&selected).map_err(|e| e.to_string()),
            Format::Json => serde_json::to_string_pretty(&selected).map_err(|e| e.to_string()),
        };
        encoded.map_err(|e| CliError::Usage(format!("cannot encode the config: {e}")))?
    };
    print_block(&text);
    Ok(Outcome::Done)
}
