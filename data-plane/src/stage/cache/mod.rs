//! The response cache (the `cache` policy): RFC 9111 shared-cache storage
//! and reuse of upstream responses, keyed so that no two requests that
//! differ in what the key holds can meet, coalescing concurrent misses,
//! serving stale responses while refreshing or when the upstream fails,
//! and purged from the control plane. The store is the node's
//! ([`ResponseCache`], bounded in bytes); each route compiles its policy
//! into a [`CacheStage`].

pub mod store;

pub use store::ResponseCache;
