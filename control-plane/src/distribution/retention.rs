//! Forgets what is no longer needed: a data plane not heard from for
//! [`NODE_RETENTION`] leaves the fleet view, cache purges older than
//! [`PURGE_RETENTION`] go with their answers (a node away for longer than
//! that is not sent the purges it missed), and audit entries older than
//! `--audit-retention-days` are removed (never, with 0). Every replica
//! checks every minute; removing the same rows twice is harmless.

use std::time::Duration;

use chrono::Utc;

use crate::store::Store;

/// How long the fleet view keeps a node that stopped talking.
pub const NODE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a cache purge is kept for nodes that reconnect.
pub const PURGE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Runs until the task is aborted; `audit_retention` `None` keeps the audit log whole.
pub async fn forget_old_records(store: Store, audit_retention: Option<Duration>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        match store.forget_nodes_silent_since(Utc::now() - NODE_RETENTION).await {
            Ok(0) => {}
            Ok(nodes) => tracing::info!(nodes, "forgot data planes silent for 24 hours"),
            Err(e) => tracing::warn!(error = %e, "could not forget silent data planes"),
        }
        match store.forget_purges_before(Utc::now() - PURGE_RETENTION).await {
            Ok(0) => {}
            Ok(purges) => tracing::debug!(purges, "forgot cache purges older than 24 hours"),
            Err(e) => tracing::warn!(error = %e, "could not forget old cache purges"),
        }
        if let Some(retention) = audit_retention {
            match store.forget_audit_before(Utc::now() - retention).await {
                Ok(0) => {}
                Ok(entries) => tracing::info!(entries, "forgot audit entries past their retention"),
                Err(e) => tracing::warn!(error = %e, "could not forget old audit entries"),
            }
        }
    }
}
