//! How many data planes share each Redis-backed limit, so that its local
//! fallback (`on_backend_failure: local`) admits this node's share of it
//! without a hand-kept node count beside an autoscaler.
//!
//! While Redis answers, every [`REFRESH`] each node marks each of its
//! Redis-backed limits in a sorted set beside the limit's counters (member:
//! this process, score: Redis's clock) and reads how many members were
//! marked within [`TTL`]: a node that stops, or no longer has the limit,
//! falls out after it. When Redis stops answering the last count stays, so
//! the fallback divides by the fleet as it was just before. A limit not
//! counted yet (Redis down since it was created, or created less than
//! [`REFRESH`] ago) uses `--expected-nodes`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::redis::RedisBackend;

/// How often a node marks its limits and reads the counts.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How long a mark counts: three refreshes, so one slow round does not
/// drop a node.
pub const TTL: Duration = Duration::from_secs(15);

/// The number of nodes sharing one limit, as last counted.
#[derive(Debug)]
pub struct FleetCount {
    /// The limit's sorted set of nodes in Redis.
    key: String,
    pub(super) nodes: AtomicU64,
}

impl FleetCount {
    /// Nodes sharing the limit (at least 1).
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed)
    }
}

/// This node's Redis-backed limits, counted while they live.
#[derive(Debug)]
pub struct Membership {
    /// What a limit assumes before its first count.
    initial: u64,
    counts: Mutex<Vec<Weak<FleetCount>>>,
}

impl Membership {
    pub fn new(initial: u64) -> Self {
        Self { initial: initial.max(1), counts: Mutex::default() }
    }

    /// Counts the nodes sharing the limit whose node set is `key`, from the
    /// next refresh on, for as long as the returned count is held.
    pub fn join(&self, key: String) -> Arc<FleetCount> {
        let count = Arc::new(FleetCount { key, nodes: AtomicU64::new(self.initial) });
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Arc::downgrade(&count));
        count
    }

    /// The limits still held (dropped ones are forgotten).
    fn live(&self) -> Vec<Arc<FleetCount>> {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.retain(|count| count.strong_count() > 0);
        counts.iter().filter_map(Weak::upgrade).collect()
    }

    /// Marks every live limit once and stores the counts Redis answers;
    /// the fewest nodes any limit counted, when Redis answered for one.
    pub async fn refresh(&self, redis: &RedisBackend) -> Option<u64> {
        let counts = self.live();
        let answers = futures::future::join_all(counts.iter().map(|count| redis.mark_member(&count.key, TTL))).await;
        let mut fewest = None;
        for (count, answer) in counts.iter().zip(answers) {
            match answer {
                Ok(nodes) => {
                    let nodes = nodes.max(1);
                    count.nodes.store(nodes, Ordering::Relaxed);
                    fewest = Some(fewest.map_or(nodes, |f: u64| f.min(nodes)));
                }
                Err(reason) => tracing::debug!(%reason, key = %count.key, "cannot count the nodes sharing a limit; keeping the last count"),
            }
        }
        fewest
    }
}

/// Refreshes `redis`'s limits every [`REFRESH`] until `stop`.
pub async fn run(redis: Arc<RedisBackend>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = crate::state::stopped(&mut stop) => return,
        }
        if let Some(nodes) = redis.fleet().refresh(&redis).await {
            crate::metrics::rate_limit_fleet_nodes(nodes);
        }
    }
}
