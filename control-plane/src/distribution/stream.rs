//! The `ConfigDiscovery.Stream` service: one bidirectional stream per
//! data-plane node. The node must present the cluster token and open with a
//! Hello; it then receives the current snapshot unless it already has that
//! version, and every newer version as it is published. Its ACKs, NACKs and
//! heartbeats are recorded for the fleet view; open streams, ACKs and
//! NACKs are counted in the metrics (`crate::metrics`).
//!
//! Cache purges travel on the same stream, in id order: every purge of the
//! gateway recorded after the node's Hello `purge_id`, 0 included (a node
//! that kept running through a disconnect gets those it missed). A node
//! without one (its cache is new), or with an id this store never issued
//! (a replaced database), is first given a PurgeCursor at the gateway's
//! newest purge, then sent every purge recorded after it; a new cache's
//! cursor is recorded with the node, so a purge's answer knows the node
//! needs none up to it. Each PurgeAck is recorded.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use portico_proto::v1::config_discovery_server::ConfigDiscovery;
use portico_proto::v1::{
    ControlMessage, Heartbeat, Hello, NodeMessage, Purge, PurgeCursor, Snapshot, control_message, node_message, purge,
};
use portico_shared::model::policy::cache::CachePurge;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::hub::{Hub, Latest};
use super::refusals::Refusals;
use crate::metrics::OpenStream;
use crate::store::{NodeHello, PurgeRecord, Store};

/// A node is shown `disconnected` when not heard from for this many heartbeat intervals.
pub const NODE_STALE_AFTER_HEARTBEATS: u32 = 3;

/// How long a node may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused node's hello is awaited, to name it in the log.
const REFUSED_HELLO_TIMEOUT: Duration = Duration::from_secs(1);

/// The gRPC service.
#[derive(Clone)]
pub struct ConfigStreams {
    store: Store,
    hub: Hub,
    cluster_token: [u8; 32],
    heartbeat: Duration,
    shutdown: watch::Receiver<bool>,
    refusals: Arc<Refusals>,
}

impl ConfigStreams {
    /// Streams end, telling nodes to reconnect, once `shutdown` turns true.
    pub fn new(store: Store, hub: Hub, cluster_token: &str, heartbeat: Duration, shutdown: watch::Receiver<bool>) -> Self {
        Self { store, hub, cluster_token: Sha256::digest(cluster_token.as_bytes()).into(), heartbeat, shutdown, refusals: Arc::default() }
    }

    fn check_token<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing cluster token (authorization: Bearer <token>)"))?;
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(presented.ct_eq(&self.cluster_token)) { Ok(()) } else { Err(Status::unauthenticated("wrong cluster token")) }
    }

    /// Logs a node refused with `status` (rate-limited per peer address),
    /// naming its gateway and node id when its hello comes in time.
    async fn log_refusal(&self, request: Request<Streaming<NodeMessage>>, status: &Status) {
        let peer = request.remote_addr();
        let Some(attempts) = self.refusals.record(peer.map(|p| p.ip()), Instant::now()) else { return };
        let hello = match tokio::time::timeout(REFUSED_HELLO_TIMEOUT, request.into_inner().message()).await {
            Ok(Ok(Some(NodeMessage { message: Some(node_message::Message::Hello(hello)) }))) => Some(hello),
            _ => None,
        };
        let (gateway, node) = hello.map(|h| (printable(&h.gateway, 64), printable(&h.node_id, 128))).unwrap_or_default();
        let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        tracing::warn!(peer = %peer, gateway = %gateway, node = %node, attempts, problem = status.message(),
            "data plane refused: wrong or missing cluster token");
    }
}

type ControlStream = Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for ConfigStreams {
    type StreamStream = ControlStream;

    async fn stream(&self, request: Request<Streaming<NodeMessage>>) -> Result<Response<ControlStream>, Status> {
        if let Err(status) = self.check_token(&request) {
            self.log_refusal(request, &status).await;
            return Err(status);
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(NodeMessage { message: Some(node_message::Message::Hello(hello)) }))) => hello,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello received in time")),
            Ok(_) => {
                return Err(Status::invalid_argument("the first message must be a Hello"));
            }
        };
        let node_cursor = hello.purge_id;
        let mut hello = node_hello(hello)?;
        // Subscribe before reading the current version and purge, so a publish or purge in between is not missed.
        let updates = self.hub.subscribe(&hello.gateway);
        let current = self.store.gateway(&hello.gateway).await.map_err(unavailable)?;
        let Some(current) = current else {
            return Err(Status::not_found(format!("gateway '{}' does not exist", hello.gateway)));
        };
        let purges = self.store.purge_ids(&hello.gateway).await.map_err(unavailable)?;
        let cursor = match node_cursor {
            // Resumes after the purge it names.
            Some(id) if id <= purges.newest => None,
            // A purge id from another store (a restored or recreated
            // database) says nothing about this one's purges: it starts afresh.
            Some(_) => Some(purges.gateway_latest),
            // A new cache needs none of the purges recorded so far (it drops
            // what it stored before this cursor); the answers of those purges
            // may count on that.
            None => {
                hello.purge_cursor = Some(purges.gateway_latest);
                Some(purges.gateway_latest)
            }
        };
        let purges_done = cursor.or(node_cursor).unwrap_or_default();
        self.store.node_connected(&hello).await.map_err(unavailable)?;
        tracing::info!(node = %hello.node_id, gateway = %hello.gateway, version = hello.version, purge = purges_done,
            cursor_given = cursor.is_some(), "data plane connected");
        self.hub.published(&hello.gateway, current.current_version);
        self.hub.purged(&hello.gateway, purges.gateway_latest);
        let (tx, rx) = mpsc::channel(4);
        if let Some(id) = cursor {
            // The stream's first message, before any snapshot or purge.
            let cursor = ControlMessage { message: Some(control_message::Message::PurgeCursor(PurgeCursor { id })) };
            tx.try_send(Ok(cursor)).expect("a new channel has room");
        }
        let session = Session { store: self.store.clone(), hello, heartbeat: self.heartbeat, purges_done };
        let span = tracing::info_span!("config_stream", node = %session.hello.node_id, gateway = %session.hello.gateway);
        tokio::spawn(session.run(inbound, updates, self.shutdown.clone(), tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn node_hello(hello: Hello) -> Result<NodeHello, Status> {
    let visible = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
    if hello.node_id.is_empty() || hello.node_id.len() > 128 || !visible(&hello.node_id) {
        return Err(Status::invalid_argument("node_id must be 1 to 128 visible ASCII characters"));
    }
    if portico_shared::validate::name("gateway", &hello.gateway).is_err() {
        return Err(Status::invalid_argument(format!("'{}' is not a valid gateway name", hello.gateway)));
    }
    Ok(NodeHello {
        node_id: hello.node_id,
        gateway: hello.gateway,
        labels: hello.labels.into_iter().map(|(k, v)| (printable(&k, 128), printable(&v, 256))).collect(),
        version: hello.version,
        hash: printable(&hello.hash, 64),
        software_version: printable(&hello.software_version, 64),
        session_id: uuid::Uuid::new_v4().to_string(),
        purge_cursor: None,
    })
}

/// Text from a node, bounded and without control characters, fit to store and show.
fn printable(text: &str, max_chars: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max_chars).collect()
}

fn unavailable(error: crate::store::StoreError) -> Status {
    Status::unavailable(format!("control plane store: {error}"))
}

/// One node's stream.
struct Session {
    store: Store,
    hello: NodeHello,
    heartbeat: Duration,
    /// The newest purge the node has applied or needs not apply.
    purges_done: u64,
}

impl Session {
    async fn run(
        self,
        mut inbound: Streaming<NodeMessage>,
        mut updates: watch::Receiver<Latest>,
        mut shutdown: watch::Receiver<bool>,
        tx: mpsc::Sender<Result<ControlMessage, Status>>,
    ) {
        let (gateway, node) = (self.hello.gateway.as_str(), self.hello.node_id.as_str());
        let _open = OpenStream::opened(gateway);
        let mut node_version = self.hello.version;
        let mut purge_sent = self.purges_done;
        if node_version != 0 && !self.has_same_content(node_version).await {
            // Same number, other content (a recreated gateway, a restored database): resend.
            node_version = 0;
        }
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        loop {
            let latest = *updates.borrow_and_update();
            if latest.version != 0 && latest.version != node_version {
                match self.snapshot(latest.version).await {
                    Ok(snapshot) => {
                        if tx.send(Ok(snapshot)).await.is_err() {
                            break;
                        }
                        node_version = latest.version;
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            if latest.purge > purge_sent {
                match self.send_purges(&mut purge_sent, latest.purge, &tx).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { break },
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.record(message).await,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node, error = %status, "stream error");
                        break;
                    }
                },
                _ = heartbeat.tick() => {
                    let interval_ms = u32::try_from(self.heartbeat.as_millis()).unwrap_or(u32::MAX);
                    let beat = ControlMessage { message: Some(control_message::Message::Heartbeat(Heartbeat { interval_ms })) };
                    if tx.send(Ok(beat)).await.is_err() { break }
                }
                () = tx.closed() => break,
                () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                    let _ = tx.send(Err(Status::unavailable("control plane shutting down; reconnect"))).await;
                    break;
                }
            }
        }
        tracing::info!(node, gateway, "data plane disconnected");
        if let Err(e) = self.store.node_seen(gateway, node, &self.hello.session_id, false).await {
            tracing::warn!(node, error = %e, "could not record the disconnect");
        }
    }

    /// Whether the version the node says it has is, by hash, ours.
    async fn has_same_content(&self, version: u64) -> bool {
        match self.store.version(&self.hello.gateway, version).await {
            Ok(Some((record, _))) => record.hash == self.hello.hash,
            _ => false,
        }
    }

    /// Sends, in id order, every purge after `sent` up to at least `latest`
    /// (all recorded, so readable: ids of a gateway are assigned in commit
    /// order), moving `sent` on. `Ok(false)` when the node is gone.
    async fn send_purges(&self, sent: &mut u64, latest: u64, tx: &mpsc::Sender<Result<ControlMessage, Status>>) -> Result<bool, Status> {
        while *sent < latest {
            let purges = self.store.purges_after(&self.hello.gateway, *sent).await.map_err(unavailable)?;
            let Some(last) = purges.last().map(|p| p.id) else { break };
            for record in purges {
                tracing::debug!(node = %self.hello.node_id, gateway = %self.hello.gateway, purge = record.id, "sending cache purge");
                if tx.send(Ok(purge_message(record))).await.is_err() {
                    return Ok(false);
                }
            }
            *sent = last;
        }
        // Those up to `latest` that were not there are gone (pruned, or the gateway was recreated).
        *sent = (*sent).max(latest);
        Ok(true)
    }

    async fn snapshot(&self, version: u64) -> Result<ControlMessage, Status> {
        let gateway = &self.hello.gateway;
        let (record, config) = self
            .store
            .version(gateway, version)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("gateway '{gateway}' has no version {version}")))?;
        tracing::debug!(node = %self.hello.node_id, gateway, version, "sending snapshot");
        Ok(ControlMessage {
            message: Some(control_message::Message::Snapshot(Snapshot { gateway: gateway.clone(), version, hash: record.hash, config })),
        })
    }

    async fn record(&self, message: NodeMessage) {
        let (gateway, node) = (self.hello.gateway.as_str(), self.hello.node_id.as_str());
        let result = match message.message {
            Some(node_message::Message::Ack(ack)) => {
                tracing::info!(node, gateway, version = ack.version, "data plane applied version");
                crate::metrics::config_acked(gateway);
                self.store.node_acked(gateway, node, ack.version, &printable(&ack.hash, 64)).await
            }
            Some(node_message::Message::Nack(nack)) => {
                let reason = printable(&nack.reason, 2_000);
                tracing::warn!(node, gateway, version = nack.version, reason = %reason, "data plane rejected version");
                crate::metrics::config_nacked(gateway);
                self.store.node_nacked(gateway, node, nack.version, &reason).await
            }
            Some(node_message::Message::Heartbeat(_)) => self.store.node_seen(gateway, node, &self.hello.session_id, true).await,
            Some(node_message::Message::PurgeAck(ack)) => {
                tracing::info!(node, gateway, purge = ack.id, removed = ack.removed, "data plane applied cache purge");
                self.store.record_purge_ack(gateway, node, ack.id, ack.removed).await
            }
            Some(node_message::Message::Hello(_)) | None => {
                tracing::debug!(node, "ignoring unexpected message");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(node, error = %e, "could not record data plane state");
        }
    }
}

fn purge_message(record: PurgeRecord) -> ControlMessage {
    let target = match record.purge {
        CachePurge::Url(url) => purge::Target::Url(url),
        CachePurge::Prefix(prefix) => purge::Target::Prefix(prefix),
        CachePurge::Tag(tag) => purge::Target::Tag(tag),
    };
    ControlMessage { message: Some(control_message::Message::Purge(Purge { id: record.id, target: Some(target) })) }
}
