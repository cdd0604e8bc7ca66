//! The node's response store: bounded in bytes, shared by every route.

use std::sync::atomic::{AtomicU64, Ordering};

use portico_shared::model::policy::cache::CachePurge;

/// Every route's stored responses on this node.
#[derive(Debug)]
pub struct ResponseCache {
    last_purge: AtomicU64,
}

impl ResponseCache {
    /// A store of at most `memory_bytes`.
    pub fn new(memory_bytes: u64) -> Self {
        let _ = memory_bytes;
        Self { last_purge: AtomicU64::new(0) }
    }

    /// Applies purge `id`; the number of stored responses it removed.
    pub fn purge(&self, id: u64, purge: &CachePurge) -> u64 {
        let _ = purge;
        self.last_purge.fetch_max(id, Ordering::SeqCst);
        0
    }

    /// The last purge applied, 0 when none.
    pub fn last_purge(&self) -> u64 {
        self.last_purge.load(Ordering::SeqCst)
    }
}
