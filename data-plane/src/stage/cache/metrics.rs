//! A cached route's metrics, with their handles made once per config
//! version (a registry lookup per request costs more than the count).

use std::sync::Arc;

use metrics::{Counter, Gauge, SharedString, counter, gauge};

/// The cache metrics of one route.
#[derive(Debug)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    /// Stale responses served (while revalidating, or for an upstream error).
    pub stale: Counter,
    /// Requests that waited for another's upstream request.
    pub coalesced: Counter,
    pub stored_bytes: Gauge,
    evicted_for_space: Counter,
    expired: Counter,
}

impl CacheMetrics {
    pub fn new(route: &Arc<str>) -> Self {
        let route = || SharedString::from_shared(route.clone());
        Self {
            hits: counter!("portico_cache_hits_total", "route" => route()),
            misses: counter!("portico_cache_misses_total", "route" => route()),
            stale: counter!("portico_cache_stale_served_total", "route" => route()),
            coalesced: counter!("portico_cache_coalesced_total", "route" => route()),
            stored_bytes: gauge!("portico_cache_stored_bytes", "route" => route()),
            evicted_for_space: counter!("portico_cache_evictions_total", "route" => route(), "cause" => "size"),
            expired: counter!("portico_cache_evictions_total", "route" => route(), "cause" => "expired"),
        }
    }

    /// An entry left the store for space (else because it was of no more use).
    pub fn evicted(&self, for_space: bool) {
        if for_space { &self.evicted_for_space } else { &self.expired }.increment(1);
    }
}
