//! Consumers and their API keys, thin over the admin API
//! (`/consumers`, `/consumers/{c}/credentials`). A generated or given key
//! is printed once, by `keys create` (the only answer that holds it); lists
//! never show keys or their hashes.

use clap::Subcommand;
use portico_shared::model::{Consumer, Entity};
use serde_json::{Value, json};

use crate::client::{AdminClient, CliError, Written};
use crate::{Outcome, pretty, print_block, render};

#[derive(Debug, Subcommand)]
pub enum ConsumersCommand {
    /// List the gateway's consumers.
    List,
    /// Create a consumer.
    Create {
        /// Its username: 1 to 128 of A-Z a-z 0-9 . _ @ + -, unique in the gateway.
        username: String,
        /// Your own id for it, sent upstream as X-User-Id.
        #[arg(long)]
        custom_id: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Show a consumer (by username or id).
    Get {
        /// The consumer's username or id.
        consumer: String,
    },
    /// Delete a consumer (by username or id).
    Delete {
        /// The consumer's username or id (delete its credentials first: a consumer still holding any is refused).
        consumer: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a consumer and print it: it is shown this once and cannot be read back.
    Create {
        /// The consumer (username or id).
        #[arg(long)]
        consumer: String,
        /// The key to set (16 to 256 visible ASCII characters); generated when left out. Shows in `ps`: prefer --key-file.
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        /// A file holding the key to set, alone (a trailing newline is ignored), so it stays out of `ps`.
        #[arg(long, value_name = "FILE")]
        key_file: Option<std::path::PathBuf>,
        /// The credential's name; derived from the key when left out.
        #[arg(long)]
        name: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// List a consumer's API keys: their names, never the keys.
    List {
        /// The consumer (username or id).
        #[arg(long)]
        consumer: String,
    },
    /// Delete one of a consumer's API keys (by name or id).
    Delete {
        /// The key's credential name or id (as `keys list` shows).
        name: String,
        /// The consumer (username or id).
        #[arg(long)]
        consumer: String,
    },
}

pub(crate) async fn consumers(client: &AdminClient, json: bool, command: ConsumersCommand) -> Result<Outcome, CliError> {
    let text = match command {
        ConsumersCommand::List => {
            let list = client.all(&["consumers"]).await?;
            if json { pretty(&list) } else { render::consumers(&list) }
        }
        ConsumersCommand::Create { username, custom_id, tags } => {
            let written = client.create(&["consumers"], &json!({"username": username, "custom_id": custom_id, "tags": tags})).await?;
            if json { pretty(&written.body) } else { format!("created consumer {username}{}", published(&written)) }
        }
        ConsumersCommand::Get { consumer } => {
            let found = client.get(&["consumers", &consumer]).await?;
            if json { pretty(&found) } else { yaml::<Consumer>(found)? }
        }
        ConsumersCommand::Delete { consumer } => {
            let written = client.delete(&["consumers", &consumer]).await?;
            format!("deleted consumer {consumer}{}", published(&written))
        }
    };
    print_block(&text);
    Ok(Outcome::Done)
}

pub(crate) async fn keys(client: &AdminClient, json: bool, command: KeysCommand) -> Result<Outcome, CliError> {
    let text = match command {
        KeysCommand::Create { consumer, key, key_file, name, tags } => {
            let key = match key_file {
                Some(path) => Some(portico_shared::secret_file::read("--key-file", &path).map_err(|e| CliError::Usage(e.to_string()))?),
                None => key,
            };
            let mut body = json!({"type": "key-auth", "tags": tags});
            if let Some(key) = key {
                body["key"] = Value::from(key);
            }
            if let Some(name) = name {
                body["name"] = Value::from(name);
            }
            let written = client.create(&["consumers", &consumer, "credentials"], &body).await?;
            if json {
                pretty(&written.body)
            } else {
                // The key alone on stdout, so `KEY=$(portico keys create …)` works.
                eprintln!(
                    "created API key {} for consumer {consumer}{}; the key is shown only now",
                    written.body["name"].as_str().unwrap_or(""),
                    published(&written)
                );
                written.body["key"].as_str().unwrap_or("").to_owned()
            }
        }
        KeysCommand::List { consumer } => {
            let mut list = client.all(&["consumers", &consumer, "credentials"]).await?;
            list.retain(|credential| credential["type"] == "key-auth");
            // Names only: not even the hash of a key, in either format.
            list.iter_mut().filter_map(Value::as_object_mut).for_each(|credential| drop(credential.remove("key_hash")));
            if json { pretty(&list) } else { render::keys(&list) }
        }
        KeysCommand::Delete { name, consumer } => {
            let written = client.delete(&["consumers", &consumer, "credentials", &name]).await?;
            format!("deleted API key {name} of consumer {consumer}{}", published(&written))
        }
    };
    print_block(&text);
    Ok(Outcome::Done)
}

fn published(written: &Written) -> String {
    written.version.map(|v| format!(" (version {v})")).unwrap_or_default()
}

/// An entity as YAML, its fields in the model's order.
fn yaml<E: Entity>(value: Value) -> Result<String, CliError> {
    let entity: E = serde_json::from_value(value).map_err(|e| CliError::Usage(format!("unreadable {}: {e}", E::KIND.as_str())))?;
    serde_yaml_ng::to_string(&entity).map_err(|e| CliError::Usage(format!("cannot encode: {e}")))
}
