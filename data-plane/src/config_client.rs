//! The config client: keeps one stream open to the control plane,
//! reconnecting with exponential backoff and full jitter; verifies, compiles
//! and swaps in each snapshot off the request path and answers ACK, or NACK
//! with the reason while the old runtime keeps serving; writes each applied
//! snapshot to the cache; heartbeats at the control plane's interval.
//! Cache purges arrive on the same stream, in order: each is applied to
//! the response cache and answered with a PurgeAck saying how many stored
//! responses it removed. The hello says the cache's purge cursor (the last
//! purge applied or cursor given), none while the cache is new: the control
//! plane then gives it a PurgeCursor first, and the cache, given its first,
//! drops what it stored before connecting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use portico_proto::v1::config_discovery_client::ConfigDiscoveryClient;
use portico_proto::v1::{
    Ack, Heartbeat, Hello, Nack, NodeMessage, Purge, PurgeAck, PurgeCursor, Snapshot as WireSnapshot, control_message, node_message, purge,
};
use portico_shared::Snapshot;
use portico_shared::model::policy::cache::CachePurge;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use crate::cache::SnapshotCache;
use crate::runtime::Runtime;
use crate::state::{NodeState, stopped};

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
const MAX_HEARTBEAT: Duration = Duration::from_secs(60);

fn heartbeats(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Connects this node to its control plane.
pub struct ConfigClient {
    pub node: Arc<NodeState>,
    pub control_plane: String,
    pub cluster_token: String,
    /// TLS towards an https:// control plane (its CA, and a client certificate for mTLS).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub labels: BTreeMap<String, String>,
    pub cache: Option<SnapshotCache>,
    /// Cache writes, in install order: the sequence number of the last
    /// written install (an older one arriving late is skipped).
    pub cache_writes: Arc<CacheWrites>,
}

/// Orders background cache writes.
#[derive(Debug, Default)]
pub struct CacheWrites {
    installed: std::sync::atomic::AtomicU64,
    written: tokio::sync::Mutex<u64>,
}

impl CacheWrites {
    /// Waits (up to `limit`) until the newest install is on disk.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while *self.written.lock().await < self.installed.load(std::sync::atomic::Ordering::SeqCst)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl ConfigClient {
    /// Serves from the cache, if there is a valid one. A corrupt cache is
    /// reported and ignored.
    pub async fn restore_from_cache(&self) {
        let Some(cache) = self.cache.clone() else { return };
        let loaded = tokio::task::spawn_blocking(move || cache.load()).await;
        let cached = match loaded {
            Ok(Ok(Some(cached))) => cached,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "not serving from the snapshot cache");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the snapshot cache failed");
                return;
            }
        };
        if cached.gateway != self.node.gateway {
            tracing::error!(cached = %cached.gateway, gateway = %self.node.gateway, "the snapshot cache belongs to another gateway; ignored");
            return;
        }
        match self.compile(cached.version, &cached.hash, cached.bytes).await {
            Ok((runtime, _)) => {
                tracing::info!(version = runtime.version, "serving the cached config until the control plane answers");
                self.install(runtime, None).await;
            }
            Err(reason) => tracing::error!(%reason, "the cached snapshot does not compile; not served"),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
        loop {
            let outcome = tokio::select! {
                outcome = self.session(&mut backoff) => outcome,
                () = stopped(&mut shutdown) => return,
            };
            match outcome {
                Ok(()) => tracing::warn!(control_plane = %self.control_plane, "config stream ended; reconnecting"),
                Err(e) => tracing::warn!(control_plane = %self.control_plane, error = %e, "config stream failed; reconnecting"),
            }
            let delay = rand::rng().random_range(Duration::ZERO..=backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    /// One stream, from hello to its end. `backoff` is reset once the
    /// control plane has sent something on it.
    async fn session(&self, backoff: &mut Duration) -> Result<(), String> {
        let endpoint = Endpoint::from_shared(self.control_plane.clone())
            .map_err(|e| format!("bad control plane address: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        let endpoint = match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(|e| format!("control plane TLS: {e}"))?,
            None => endpoint,
        };
        let channel = endpoint.connect().await.map_err(|e| format!("cannot connect: {e}"))?;
        let mut client = ConfigDiscoveryClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
        let (outbound, rx) = mpsc::channel(16);
        let current = self.node.runtime();
        let hello = Hello {
            node_id: self.node.node_id.clone(),
            gateway: self.node.gateway.clone(),
            labels: self.labels.clone().into_iter().collect(),
            version: current.as_ref().map_or(0, |r| r.version),
            hash: current.as_ref().map(|r| r.hash.clone()).unwrap_or_default(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            purge_id: self.node.cache.last_purge(),
        };
        send(&outbound, node_message::Message::Hello(hello)).await?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let token =
            MetadataValue::try_from(format!("Bearer {}", self.cluster_token)).map_err(|_| "the cluster token is not ASCII".to_owned())?;
        request.metadata_mut().insert("authorization", token);
        let mut inbound = client.stream(request).await.map_err(|status| format!("{}: {}", status.code(), status.message()))?.into_inner();
        tracing::info!(control_plane = %self.control_plane, "config stream open");

        let mut interval = DEFAULT_HEARTBEAT;
        let mut heartbeat = heartbeats(interval);
        loop {
            tokio::select! {
                message = inbound.message() => {
                    let Some(message) = message.map_err(|s| format!("{}: {}", s.code(), s.message()))? else { return Ok(()) };
                    // The control plane is talking to us: the next failure starts a fresh backoff.
                    *backoff = BACKOFF_START;
                    match message.message {
                        Some(control_message::Message::Snapshot(snapshot)) => {
                            // Compiling may take a while: keep heartbeating meanwhile.
                            let apply = self.apply(snapshot);
                            tokio::pin!(apply);
                            let reply = loop {
                                tokio::select! {
                                    reply = &mut apply => break reply,
                                    _ = heartbeat.tick() => send(&outbound, node_message::Message::Heartbeat(Heartbeat { interval_ms: 0 })).await?,
                                }
                            };
                            send(&outbound, reply).await?;
                        }
                        Some(control_message::Message::Purge(purge)) => {
                            let ack = self.purge(purge).await;
                            send(&outbound, node_message::Message::PurgeAck(ack)).await?;
                        }
                        Some(control_message::Message::PurgeCursor(cursor)) => self.purge_cursor(cursor).await,
                        Some(control_message::Message::Heartbeat(beat)) if beat.interval_ms > 0 => {
                            let wanted = Duration::from_millis(u64::from(beat.interval_ms)).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
                            if wanted != interval {
                                interval = wanted;
                                heartbeat = heartbeats(interval);
                            }
                        }
                        _ => {}
                    }
                }
                _ = heartbeat.tick() => send(&outbound, node_message::Message::Heartbeat(Heartbeat { interval_ms: 0 })).await?,
            }
        }
    }

    /// Verifies, compiles and swaps in one snapshot; the reply to send.
    async fn apply(&self, snapshot: WireSnapshot) -> node_message::Message {
        let (version, hash) = (snapshot.version, snapshot.hash.clone());
        let result = if snapshot.gateway == self.node.gateway {
            self.compile(version, &hash, snapshot.config).await
        } else {
            Err(format!("snapshot is for gateway '{}', this node serves '{}'", snapshot.gateway, self.node.gateway))
        };
        match result {
            Ok((runtime, bytes)) => {
                self.install(runtime, Some(bytes)).await;
                node_message::Message::Ack(Ack { version, hash })
            }
            Err(reason) => {
                tracing::warn!(version, %reason, "rejected config; the previous one keeps serving");
                crate::metrics::config_rejected();
                node_message::Message::Nack(Nack { version, hash, reason })
            }
        }
    }

    /// Applies one purge to the response cache (on a blocking thread: it
    /// walks the entries) and says how many stored responses it removed.
    /// One this node cannot read
    /// is answered too, removing nothing, so the control plane does not
    /// wait on it.
    async fn purge(&self, purge: Purge) -> PurgeAck {
        let id = purge.id;
        let removed = match cache_purge(purge.target) {
            Ok(target) => {
                let cache = self.node.cache.clone();
                let applied = tokio::task::spawn_blocking(move || {
                    let removed = cache.purge(id, &target);
                    (target, removed)
                })
                .await;
                match applied {
                    Ok((target, removed)) => {
                        tracing::info!(purge = id, kind = target.field(), value = target.value(), removed, "cache purge applied");
                        removed
                    }
                    Err(e) => {
                        tracing::error!(purge = id, error = %e, "cache purge failed");
                        0
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(purge = id, %reason, "ignoring a cache purge this node cannot read");
                0
            }
        };
        PurgeAck { id, removed }
    }

    /// Takes the control plane's purge cursor (on a blocking thread: the
    /// first one empties the cache).
    async fn purge_cursor(&self, PurgeCursor { id }: PurgeCursor) {
        let cache = self.node.cache.clone();
        match tokio::task::spawn_blocking(move || cache.purge_cursor(id)).await {
            Ok(()) => tracing::info!(purge = id, "cache purge cursor taken: the purges after it will be sent"),
            Err(e) => tracing::error!(purge = id, error = %e, "taking the cache purge cursor failed"),
        }
    }

    /// Decodes and compiles on a blocking thread, away from request handling.
    /// The runtime comes back with `bytes`, the canonical snapshot (decoding
    /// checked that they are), for the cache file: the runtime does not keep them.
    async fn compile(&self, version: u64, hash: &str, bytes: Vec<u8>) -> Result<(Runtime, Vec<u8>), String> {
        let previous = self.node.runtime();
        let (node, hash) = (self.node.clone(), hash.to_owned());
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let snapshot = Snapshot::decode(&bytes, &hash).map_err(|e| e.to_string())?;
            let runtime = Runtime::compile(&node.gateway, version, snapshot, previous.as_deref(), &node.context);
            crate::metrics::config_compiled(started.elapsed());
            runtime.map(|runtime| (runtime, bytes))
        })
        .await
        .map_err(|e| format!("compilation panicked: {e}"))?
    }

    /// Swaps `runtime` in and, given its snapshot `bytes` (when it came
    /// from the control plane), caches them in the background (the ACK does
    /// not wait for the disk) and lets them go. Cache writes go one at a time
    /// and an older install never overwrites a newer.
    async fn install(&self, runtime: Runtime, bytes: Option<Vec<u8>>) {
        let runtime = Arc::new(runtime);
        self.node.swap(runtime.clone());
        crate::metrics::config_applied(runtime.version, runtime.route_count());
        crate::telemetry::CONFIG_VERSION.store(runtime.version, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(version = runtime.version, hash = %runtime.hash, routes = runtime.route_count(), "config applied");
        if let (Some(bytes), Some(cache)) = (bytes, self.cache.clone()) {
            let writes = self.cache_writes.clone();
            let sequence = writes.installed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            // What the file names, not the runtime: a write waiting its turn
            // keeps no replaced config alive.
            let (gateway, version, hash) = (runtime.gateway.clone(), runtime.version, runtime.hash.clone());
            tokio::spawn(async move {
                let mut written_up_to = writes.written.lock().await;
                if *written_up_to > sequence {
                    return;
                }
                *written_up_to = sequence;
                let store = move || cache.store(&gateway, version, &hash, &bytes);
                match tokio::task::spawn_blocking(store).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "could not cache the config"),
                    Err(e) => tracing::error!(error = %e, "caching the config failed"),
                }
            });
        }
    }
}

async fn send(outbound: &mpsc::Sender<NodeMessage>, message: node_message::Message) -> Result<(), String> {
    outbound.send(NodeMessage { message: Some(message) }).await.map_err(|_| "the stream closed".to_owned())
}

/// A purge as the wire carries it, checked as the admin API checked it.
fn cache_purge(target: Option<purge::Target>) -> Result<CachePurge, String> {
    let purge = match target.ok_or("it names nothing to purge")? {
        purge::Target::Url(url) => CachePurge::Url(url),
        purge::Target::Prefix(prefix) => CachePurge::Prefix(prefix),
        purge::Target::Tag(tag) => CachePurge::Tag(tag),
    };
    purge.validate().map_err(|e| format!("{}: {}", e.field(), e.message()))?;
    Ok(purge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_purges_become_cache_purges_and_unreadable_ones_are_refused() {
        assert_eq!(cache_purge(Some(purge::Target::Prefix("/users".into()))), Ok(CachePurge::Prefix("/users".into())));
        assert_eq!(cache_purge(Some(purge::Target::Tag("user-7".into()))), Ok(CachePurge::Tag("user-7".into())));
        assert!(cache_purge(None).is_err());
        assert_eq!(cache_purge(Some(purge::Target::Url("users/7".into()))).unwrap_err().split(':').next(), Some("url"));
    }
}
