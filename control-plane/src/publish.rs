//! Publishing: every config write reads the gateway's current config, applies
//! an edit, compiles the result with the same compiler data planes use, and
//! appends it as the next version, with its audit entry, in one
//! transaction, then wakes the local streams. A write whose result equals
//! the current config publishes nothing (and leaves no audit entry).
//! Writers of one process take turns; across replicas they are ordered by
//! optimistic concurrency: a writer that lost the race re-reads and
//! re-applies its edit. A cache purge is not config: it is recorded as it
//! is and wakes the same streams.

use std::sync::Arc;

use portico_shared::model::policy::cache::CachePurge;
use portico_shared::{ConfigError, ConfigErrors, GatewayConfig, Snapshot};
use tokio::sync::Mutex;

use crate::distribution::Hub;
use crate::store::{Change, Current, Publication, Store, StoreError};

/// How often a write is re-applied after losing a race before giving up.
const MAX_ATTEMPTS: usize = 16;

/// The outcome of a write.
#[derive(Debug, Clone)]
pub struct Published {
    /// The gateway's config after the write, normalized.
    pub config: GatewayConfig,
    /// The version now current: the new one, or the old one if nothing changed.
    pub version: u64,
    pub hash: String,
    /// Whether a new version was appended.
    pub created: bool,
}

/// Applies edits to gateways' configs and publishes the results.
#[derive(Clone)]
pub struct Publisher {
    store: Store,
    hub: Hub,
    /// Writes of this process go one at a time: they would only race each
    /// other (and, on SQLite, wait on the one write lock) otherwise.
    writing: Arc<Mutex<()>>,
}

impl Publisher {
    pub fn new(store: Store, hub: Hub) -> Self {
        Self { store, hub, writing: Arc::default() }
    }

    /// Ends the config streams of a deleted gateway on this replica (other
    /// replicas learn it from the store notification).
    pub fn gateway_deleted(&self, gateway: &str) {
        self.hub.forget(gateway);
    }

    /// Records `purge` for every data plane of `gateway` (and `change` in
    /// the audit log) and wakes this replica's streams of it (other
    /// replicas learn it from the store notification); returns its id.
    pub async fn purge(&self, gateway: &str, purge: &CachePurge, change: &Change<'_>) -> Result<u64, StoreError> {
        let id = self.store.record_purge(gateway, purge, change).await?;
        // A URL's query may hold keys: logs (and traces) get its path only.
        let value = purge.value();
        let value = value.split_once('?').map_or(value, |(path, _)| path);
        tracing::info!(gateway, purge = id, kind = purge.field(), value, "cache purge recorded");
        self.hub.purged(gateway, id);
        Ok(id)
    }

    /// Applies `edit` to the current config of `gateway` and publishes the
    /// result. `edit` may run more than once (after a lost race), always on
    /// the freshest config.
    #[tracing::instrument(name = "publish", skip_all, fields(gateway = gateway))]
    pub async fn change<E>(
        &self,
        gateway: &str,
        publication: &Publication<'_>,
        mut edit: impl FnMut(&Current) -> Result<GatewayConfig, E>,
    ) -> Result<Published, E>
    where
        E: From<ConfigErrors> + From<StoreError>,
    {
        let _one_writer = self.writing.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let current = self.store.current(gateway).await?.ok_or(StoreError::NotFound)?;
            let next = edit(&current)?;
            fresh_certificates(&current.config, &next)?;
            let snapshot = Snapshot::compile(next)?;
            if snapshot.hash == current.hash {
                return Ok(Published { config: snapshot.config, version: current.version, hash: current.hash, created: false });
            }
            match self.store.publish(gateway, current.version, &snapshot, publication).await {
                Ok(record) => {
                    tracing::info!(gateway, version = record.version, hash = %record.hash, author = publication.change.author, "published");
                    self.hub.published(gateway, record.version);
                    crate::metrics::config_published(gateway);
                    return Ok(Published { config: snapshot.config, version: record.version, hash: snapshot.hash, created: true });
                }
                Err(StoreError::Stale) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Stale.into())
    }
}

/// Certificates a write adds or changes must not have expired (ones it
/// leaves as they are may: data planes keep serving what they have).
fn fresh_certificates(current: &GatewayConfig, next: &GatewayConfig) -> Result<(), ConfigErrors> {
    let now = chrono::Utc::now().timestamp();
    let mut errors = Vec::new();
    for (i, certificate) in next.certificates.iter().enumerate() {
        if current.certificates.iter().any(|c| c.name == certificate.name && c.cert == certificate.cert) {
            continue;
        }
        match portico_shared::tls::parse_certificate(&certificate.cert, None) {
            Err(e) => errors.push(e.within(&format!("certificates[{i}]"))),
            Ok(parsed) if parsed.not_after <= now => {
                let expired = chrono::DateTime::from_timestamp(parsed.not_after, 0).map(|t| t.to_rfc3339()).unwrap_or_default();
                errors.push(ConfigError::invalid(format!("certificates[{i}].cert"), format!("expired at {expired}")));
            }
            Ok(_) => {}
        }
    }
    ConfigErrors::from_vec(errors).map_or(Ok(()), Err)
}
