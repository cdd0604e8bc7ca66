//! `cache purge`: removes stored responses from every data plane of the
//! gateway (`POST …/cache/purge`) and says how many applied it. A connected
//! data plane that does not confirm it in time fails the command (exit 3);
//! disconnected ones are listed but do not (one that kept running gets the
//! purge when it reconnects, a restarted one starts past it), nor do those
//! that connected after it (their caches hold nothing older).

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{AdminClient, CliError};
use crate::{Outcome, pretty, print_block, render};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove stored responses from every data plane of the gateway: every variant of a URL, everything under a path prefix, or every response with a tag.
    Purge {
        #[command(flatten)]
        target: PurgeTarget,
        /// How long to wait for the connected data planes to apply it, in milliseconds (0 to 30000; the control plane's default is 5000).
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=30_000))]
        timeout_ms: Option<u64>,
    },
}

/// What a purge removes: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PurgeTarget {
    /// A path (`/users/7?page=2`, any host) or an absolute http(s) URL (that host only): every stored variant of it.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// A path: every stored response under it.
    #[arg(long, value_name = "PATH")]
    prefix: Option<String>,
    /// Every stored response tagged so (by its `Cache-Tag` header, or the header the cache policy names).
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
}

impl PurgeTarget {
    /// The request body: `{"url": …}`, `{"prefix": …}` or `{"tag": …}`.
    fn body(self) -> Value {
        match (self.url, self.prefix, self.tag) {
            (Some(url), _, _) => json!({ "url": url }),
            (_, Some(prefix), _) => json!({ "prefix": prefix }),
            (_, _, tag) => json!({ "tag": tag }),
        }
    }
}

pub(crate) async fn run(client: &AdminClient, json: bool, command: CacheCommand) -> Result<Outcome, CliError> {
    let CacheCommand::Purge { target, timeout_ms } = command;
    let answer = client.purge(&target.body(), timeout_ms).await?;
    print_block(&if json { pretty(&answer) } else { render::purge(&answer) });
    let silent = answer["not_applied"].as_array().into_iter().flatten().filter(|node| node["reason"] == "no_answer").count();
    if silent > 0 {
        let nodes = if silent == 1 { "1 connected data plane".to_owned() } else { format!("{silent} connected data planes") };
        return Err(CliError::Fleet(format!(
            "purge {} was sent, but {nodes} did not confirm it within {} ms",
            answer["id"], answer["timeout_ms"]
        )));
    }
    Ok(Outcome::Done)
}
