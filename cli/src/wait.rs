//! `apply --wait`: after a publish, polls the fleet (`GET …/data-planes`)
//! until every connected data plane serves the new version (or a later
//! one). A node that rejected it (NACK) fails the wait with its reason once
//! the others have settled; so does the deadline, naming the nodes behind.
//! Disconnected nodes are not waited for; with none connected there is
//! nothing to wait for, and the wait ends at once (a node that connects
//! later gets the current version on connecting, and `portico data-planes`
//! shows its verdict).

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{AdminClient, CliError};

const POLL: Duration = Duration::from_millis(500);

/// Where one connected node stands against `version`.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    Serving,
    Behind(Option<u64>),
    Rejected(String),
}

fn standing(node: &Value, version: u64) -> Option<Standing> {
    if node["status"] == "disconnected" {
        return None;
    }
    let serves = node["version"].as_u64();
    let rejection = &node["last_rejection"];
    Some(if serves.is_some_and(|v| v >= version) {
        Standing::Serving
    } else if node["status"] == "rejected" || rejection["version"].as_u64() == Some(version) {
        Standing::Rejected(rejection["reason"].as_str().unwrap_or("no reason given").to_owned())
    } else {
        Standing::Behind(serves)
    })
}

/// Waits until the fleet serves `version`; the line to print when it does.
pub(crate) async fn fleet(client: &AdminClient, version: u64, timeout: Duration) -> Result<String, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        // The version is out: a fleet view that cannot be read for a while
        // (the control plane restarting, its store reconnecting) is waited
        // through, and at the deadline it is the fleet's failure (exit 3),
        // never "nothing was published" (exit 1).
        let nodes = match client.nodes().await {
            Ok(nodes) => nodes,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "the fleet view did not answer; trying again");
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(e) => return Err(CliError::Fleet(format!("version {version} was published, but the fleet view could not be read: {e}"))),
        };
        let standings: Vec<(&str, Standing)> =
            nodes.iter().filter_map(|node| Some((node["node_id"].as_str().unwrap_or("?"), standing(node, version)?))).collect();
        let behind = standings.iter().any(|(_, s)| matches!(s, Standing::Behind(_)));
        let rejected = standings.iter().any(|(_, s)| matches!(s, Standing::Rejected(_)));
        if !behind && !rejected {
            return Ok(match standings.len() {
                0 => format!("no data plane is connected; version {version} goes to nodes as they connect"),
                1 => format!("1 data plane serves version {version}"),
                n => format!("{n} data planes serve version {version}"),
            });
        }
        if !behind || Instant::now() >= deadline {
            return Err(CliError::Fleet(report(version, timeout, &standings)));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why the wait failed: each node that rejected the version, with its
/// reason, and each one still behind.
fn report(version: u64, timeout: Duration, standings: &[(&str, Standing)]) -> String {
    let rejected: Vec<_> =
        standings.iter().filter_map(|(id, s)| if let Standing::Rejected(r) = s { Some((id, r)) } else { None }).collect();
    let behind: Vec<_> = standings.iter().filter_map(|(id, s)| if let Standing::Behind(v) = s { Some((id, v)) } else { None }).collect();
    let mut out = format!("version {version} was published, but the fleet does not serve it:");
    for (id, reason) in rejected {
        let _ = write!(out, "\n  {id}: rejected it: {reason}");
    }
    for (id, serves) in behind {
        let serves = serves.map_or_else(|| "no version".to_owned(), |v| format!("version {v}"));
        let _ = write!(out, "\n  {id}: still serves {serves} after {}s", timeout.as_secs_f64());
    }
    out
}

/// `--wait`'s value: seconds, or a number with `ms`, `s` or `m`.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration such as 90, 90s, 500ms or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("'{text}' is not a duration such as 90, 90s, 500ms or 2m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_serves_the_version_or_a_later_one() {
        assert_eq!(standing(&json!({"status": "in_sync", "version": 5}), 5), Some(Standing::Serving));
        assert_eq!(standing(&json!({"status": "behind", "version": 6}), 5), Some(Standing::Serving));
        assert_eq!(standing(&json!({"status": "behind", "version": 4}), 5), Some(Standing::Behind(Some(4))));
        assert_eq!(standing(&json!({"status": "disconnected", "version": 4}), 5), None);
        let nacked = json!({"status": "rejected", "version": 4, "last_rejection": {"version": 5, "reason": "bad cert"}});
        assert_eq!(standing(&nacked, 5), Some(Standing::Rejected("bad cert".into())));
        let old_nack = json!({"status": "in_sync", "version": 5, "last_rejection": {"version": 3, "reason": "old"}});
        assert_eq!(standing(&old_nack, 5), Some(Standing::Serving));
    }

    #[test]
    fn timeouts_read_as_seconds_or_with_a_unit() {
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("5h").is_err());
    }
}
