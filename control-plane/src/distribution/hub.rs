//! The in-process fan-out of "gateway G is now at version N" and "G's
//! newest cache purge is P" to the gRPC streams of this replica. Fed by
//! this replica's own publishes and purges and, on Postgres, by every
//! replica's through `LISTEN/NOTIFY`; a periodic resync with the store
//! covers notifications lost while the listener reconnected. Only the
//! newest of each matters (a stream reads the purges it has not sent from
//! the store), so it is a `watch` per gateway and a slow stream simply
//! skips to the latest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// What the streams of a gateway follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latest {
    /// The published version, 0 until something is known.
    pub version: u64,
    /// The newest cache purge's id, 0 until something is known.
    pub purge: u64,
}

/// Latest published version and purge per gateway.
#[derive(Clone, Default)]
pub struct Hub {
    gateways: Arc<Mutex<HashMap<String, watch::Sender<Latest>>>>,
}

impl Hub {
    /// Follows `gateway`.
    pub fn subscribe(&self, gateway: &str) -> watch::Receiver<Latest> {
        let mut gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        gateways.entry(gateway.to_owned()).or_insert_with(|| watch::channel(Latest::default()).0).subscribe()
    }

    /// `gateway` reached `version`; older news is ignored.
    pub fn published(&self, gateway: &str, version: u64) {
        self.advance(gateway, |latest| &mut latest.version, version);
    }

    /// `gateway`'s newest purge is `id`; older news is ignored.
    pub fn purged(&self, gateway: &str, id: u64) {
        self.advance(gateway, |latest| &mut latest.purge, id);
    }

    fn advance(&self, gateway: &str, field: impl Fn(&mut Latest) -> &mut u64, value: u64) {
        let gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = gateways.get(gateway) {
            sender.send_if_modified(|latest| {
                let current = field(latest);
                let newer = value > *current;
                if newer {
                    *current = value;
                }
                newer
            });
        }
    }

    /// `gateway` is gone: its streams end (their `changed()` fails), and a
    /// gateway of the same name created later starts afresh.
    pub fn forget(&self, gateway: &str) {
        self.gateways.lock().unwrap_or_else(PoisonError::into_inner).remove(gateway);
    }

    /// The gateways some stream follows.
    pub fn followed(&self) -> Vec<String> {
        let mut gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        gateways.retain(|_, sender| sender.receiver_count() > 0);
        gateways.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_only_newer_versions_and_purges() {
        let hub = Hub::default();
        let mut rx = hub.subscribe("default");
        hub.published("default", 3);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().version, 3);
        hub.published("default", 2);
        hub.published("other", 9);
        assert!(!rx.has_changed().unwrap());
        hub.purged("default", 7);
        hub.purged("default", 5);
        assert_eq!(*rx.borrow_and_update(), Latest { version: 3, purge: 7 }, "versions and purges each only move forward");
        assert_eq!(hub.followed(), ["default"]);
        drop(rx);
        assert!(hub.followed().is_empty());
    }

    #[tokio::test]
    async fn forgetting_a_gateway_ends_its_followers_and_starts_afresh() {
        let hub = Hub::default();
        let mut rx = hub.subscribe("mobile");
        hub.published("mobile", 7);
        assert_eq!(rx.borrow_and_update().version, 7);
        hub.forget("mobile");
        assert!(rx.changed().await.is_err(), "followers of a deleted gateway stop");
        let mut again = hub.subscribe("mobile");
        hub.published("mobile", 1);
        assert_eq!(again.borrow_and_update().version, 1, "a recreated gateway counts from its own versions");
    }
}
