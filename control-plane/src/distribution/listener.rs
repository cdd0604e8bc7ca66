//! Keeps the [`Hub`] in step with the store: on Postgres it listens on
//! [`NOTIFY_CHANNEL`] (`gateway:version`, version 0 for a deleted gateway;
//! reconnecting as needed) and resyncs the followed
//! gateways' versions after every reconnect and every few seconds, so a
//! notification lost in between delays a version by one resync at most.
//! SQLite has one writer process, whose publishes reach the hub directly.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::Hub;
use crate::store::{Backend, NOTIFY_CHANNEL, Store};

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
    listener.listen(NOTIFY_CHANNEL).await?;
    resync(store, hub).await;
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    loop {
        tokio::select! {
            notification = listener.try_recv() => match notification? {
                Some(n) => match n.payload().rsplit_once(':').and_then(|(g, v)| Some((g, v.parse::<u64>().ok()?))) {
                    Some((gateway, 0)) => hub.forget(gateway),
                    Some((gateway, version)) => hub.published(gateway, version),
                    None => tracing::warn!(payload = n.payload(), "ignoring malformed config notification"),
                },
                // The connection dropped and was re-established: some notifications may be lost.
                None => resync(store, hub).await,
            },
            _ = tick.tick() => resync(store, hub).await,
        }
    }
}

async fn resync(store: &Store, hub: &Hub) {
    for gateway in hub.followed() {
        match store.gateway(&gateway).await {
            Ok(Some(record)) => hub.published(&gateway, record.current_version),
            Ok(None) => hub.forget(&gateway),
            Err(e) => tracing::warn!(gateway, error = %e, "could not resync gateway version"),
        }
    }
}
