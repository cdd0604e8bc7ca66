//! Keeps the [`Hub`] in step with the store: on Postgres it listens on
//! [`NOTIFY_CHANNEL`] (`gateway:version`, version 0 for a deleted gateway)
//! and [`PURGE_CHANNEL`] (`gateway:purge id`), reconnecting as needed, and
//! resyncs the followed gateways' versions and newest purges after every
//! reconnect and every few seconds, so a notification lost in between
//! delays a version or a purge by one resync at most. SQLite has one writer
//! process, whose publishes and purges reach the hub directly.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::Hub;
use crate::store::{Backend, NOTIFY_CHANNEL, PURGE_CHANNEL, Store};

const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// Runs until the task is aborted.
pub async fn follow_store(store: Store, hub: Hub) {
    if store.backend() != Backend::Postgres {
        return;
    }
    loop {
        match listen(&store, &hub).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "config change listener failed; reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen(store: &Store, hub: &Hub) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(store.url()).await?;
    listener.listen_all([NOTIFY_CHANNEL, PURGE_CHANNEL]).await?;
    resync(store, hub).await;
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    loop {
        tokio::select! {
            notification = listener.try_recv() => match notification? {
                Some(n) => match (n.channel(), n.payload().rsplit_once(':').and_then(|(g, v)| Some((g, v.parse::<u64>().ok()?)))) {
                    // Checked against the store: a gateway deleted and created again
                    // before this notice arrived has followers that must stay.
                    (NOTIFY_CHANNEL, Some((gateway, 0))) => settle(store, hub, gateway).await,
                    (NOTIFY_CHANNEL, Some((gateway, version))) => hub.published(gateway, version),
                    (PURGE_CHANNEL, Some((gateway, id))) => hub.purged(gateway, id),
                    _ => tracing::warn!(channel = n.channel(), payload = n.payload(), "ignoring malformed notification"),
                },
                // The connection dropped and was re-established: some notifications may be lost.
                None => resync(store, hub).await,
            },
            _ = tick.tick() => resync(store, hub).await,
        }
    }
}

/// Brings `gateway` in the hub to what the store holds: its current
/// version, or forgotten (its streams end) when it no longer exists.
async fn settle(store: &Store, hub: &Hub, gateway: &str) {
    match store.gateway(gateway).await {
        Ok(Some(record)) => hub.published(gateway, record.current_version),
        Ok(None) => hub.forget(gateway),
        Err(e) => tracing::warn!(gateway, error = %e, "could not resync gateway version"),
    }
}

async fn resync(store: &Store, hub: &Hub) {
    let followed = hub.followed();
    if followed.is_empty() {
        return;
    }
    for gateway in &followed {
        settle(store, hub, gateway).await;
    }
    match store.latest_purges().await {
        Ok(latest) => latest.iter().filter(|(gateway, _)| followed.contains(gateway)).for_each(|(gateway, id)| hub.purged(gateway, *id)),
        Err(e) => tracing::warn!(error = %e, "could not resync cache purges"),
    }
}
