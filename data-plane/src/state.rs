//! What the listeners and the config client share: who this node is and
//! the runtime it serves, swapped whole with one `ArcSwap` store so no
//! request ever sees half of two versions.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::runtime::Runtime;

/// This node.
#[derive(Debug)]
pub struct NodeState {
    pub gateway: String,
    pub node_id: String,
    runtime: ArcSwapOption<Runtime>,
}

impl NodeState {
    pub fn new(gateway: &str, node_id: &str) -> Self {
        Self { gateway: gateway.to_owned(), node_id: node_id.to_owned(), runtime: ArcSwapOption::empty() }
    }

    /// The runtime requests starting now use; `None` before the first config.
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        self.runtime.load_full()
    }

    /// Makes `runtime` current; requests already running keep theirs.
    pub fn swap(&self, runtime: Arc<Runtime>) {
        self.runtime.store(Some(runtime));
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
