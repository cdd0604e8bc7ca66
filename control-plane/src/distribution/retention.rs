//! Forgets data planes that are gone for good: a node not heard from for
//! [`NODE_RETENTION`] leaves the fleet view. Every replica checks every
//! minute; removing the same rows twice is harmless.

use std::time::Duration;

use chrono::Utc;

use crate::store::Store;

/// How long the fleet view keeps a node that stopped talking.
pub const NODE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Runs until the task is aborted.
pub async fn forget_gone_nodes(store: Store) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        match store.forget_nodes_silent_since(Utc::now() - NODE_RETENTION).await {
            Ok(0) => {}
            Ok(nodes) => tracing::info!(nodes, "forgot data planes silent for 24 hours"),
            Err(e) => tracing::warn!(error = %e, "could not forget silent data planes"),
        }
    }
}
