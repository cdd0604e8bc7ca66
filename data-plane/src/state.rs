//! What the listeners and the config client share: who this node is and
//! the runtime it serves, swapped whole with one `ArcSwap` store so no
//! request ever sees half of two versions.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::access_log::AccessLog;
use crate::runtime::{Context, Runtime};
use crate::stage::cache::ResponseCache;

/// This node.
#[derive(Debug)]
pub struct NodeState {
    pub gateway: String,
    pub node_id: String,
    /// What compiling a config needs (credentials hashing, Redis, …).
    pub context: Context,
    runtime: ArcSwapOption<Runtime>,
    /// Stored responses of every route with a `cache` policy.
    pub cache: Arc<ResponseCache>,
    /// Upgraded (WebSocket) connections, which the HTTP server no longer
    /// tracks: the drain waits for them too.
    pub tunnels: Tunnels,
    /// Where requests' access log lines go (`--access-log`), if anywhere.
    pub access_log: Option<Arc<AccessLog>>,
}

impl NodeState {
    pub fn new(gateway: &str, node_id: &str, context: Context, cache: ResponseCache, access_log: Option<Arc<AccessLog>>) -> Self {
        Self {
            gateway: gateway.to_owned(),
            node_id: node_id.to_owned(),
            context,
            cache: Arc::new(cache),
            runtime: ArcSwapOption::empty(),
            tunnels: Tunnels::default(),
            access_log,
        }
    }

    /// The runtime requests starting now use; `None` before the first config.
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        self.runtime.load_full()
    }

    /// Makes `runtime` current; requests already running keep theirs.
    /// Stored responses of routes whose cache scope it lacks go.
    pub fn swap(&self, runtime: Arc<Runtime>) {
        self.cache.keep_scopes(runtime.cache_scopes());
        self.runtime.store(Some(runtime));
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Counts open tunnels; [`Tunnels::closed`] resolves when none is left.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

/// Held by a running tunnel; dropping it closes the tunnel's count.
#[derive(Debug)]
pub struct TunnelGuard<'a>(&'a Tunnels);

impl Tunnels {
    pub fn open(&self) -> TunnelGuard<'_> {
        self.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        TunnelGuard(self)
    }

    /// Resolves once no tunnel is open.
    pub async fn closed(&self) {
        loop {
            let notified = self.changed.notified();
            if self.open.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TunnelGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}
