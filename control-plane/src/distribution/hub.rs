//! The in-process fan-out of "gateway G is now at version N" to the gRPC
//! streams of this replica. Fed by this replica's own publishes and, on
//! Postgres, by every replica's publishes through `LISTEN/NOTIFY`; a
//! periodic resync with the store covers notifications lost while the
//! listener reconnected. Only the newest version matters, so it is a
//! `watch` per gateway and a slow stream simply skips to the latest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// Latest published version per gateway.
#[derive(Clone, Default)]
pub struct Hub {
    gateways: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl Hub {
    /// Follows the version of `gateway` (0 until something is known).
    pub fn subscribe(&self, gateway: &str) -> watch::Receiver<u64> {
        let mut gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        gateways.entry(gateway.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// `gateway` reached `version`; older news is ignored.
    pub fn published(&self, gateway: &str, version: u64) {
        let gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = gateways.get(gateway) {
            sender.send_if_modified(|current| {
                let newer = version > *current;
                if newer {
                    *current = version;
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
    fn subscribers_see_only_newer_versions() {
        let hub = Hub::default();
        let mut rx = hub.subscribe("default");
        hub.published("default", 3);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 3);
        hub.published("default", 2);
        hub.published("other", 9);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(hub.followed(), ["default"]);
        drop(rx);
        assert!(hub.followed().is_empty());
    }

    #[tokio::test]
    async fn forgetting_a_gateway_ends_its_followers_and_starts_afresh() {
        let hub = Hub::default();
        let mut rx = hub.subscribe("mobile");
        hub.published("mobile", 7);
        assert_eq!(*rx.borrow_and_update(), 7);
        hub.forget("mobile");
        assert!(rx.changed().await.is_err(), "followers of a deleted gateway stop");
        let mut again = hub.subscribe("mobile");
        hub.published("mobile", 1);
        assert_eq!(*again.borrow_and_update(), 1, "a recreated gateway counts from its own versions");
    }
}
