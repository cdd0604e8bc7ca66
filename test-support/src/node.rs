//! A gRPC client that stands in for a data plane: says hello, receives
//! snapshots, cache purges and purge cursors, answers ACK, NACK or PurgeAck, and
//! heartbeats in the background like a real node until dropped.

use std::time::Duration;

use portico_proto::v1::config_discovery_client::ConfigDiscoveryClient;
use portico_proto::v1::{
    Ack, ControlMessage, Heartbeat, Hello, Nack, NodeMessage, Purge, PurgeAck, Snapshot, control_message, node_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::metadata::MetadataValue;

/// One connected test node.
pub struct TestNode {
    pub node_id: String,
    outbound: mpsc::Sender<NodeMessage>,
    inbound: Streaming<ControlMessage>,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

impl TestNode {
    /// Connects and says hello with the given version and hash (0 and "" for
    /// none), as a node whose cache is new (no purge cursor).
    pub async fn connect(
        grpc_url: &str,
        token: &str,
        node_id: &str,
        gateway: &str,
        version: u64,
        hash: &str,
    ) -> Result<Self, tonic::Status> {
        Self::connect_after_purge(grpc_url, token, node_id, gateway, version, hash, None).await
    }

    /// Like [`TestNode::connect`], saying `purge_id` as its purge cursor
    /// (`None`: a new cache).
    pub async fn connect_after_purge(
        grpc_url: &str,
        token: &str,
        node_id: &str,
        gateway: &str,
        version: u64,
        hash: &str,
        purge_id: Option<u64>,
    ) -> Result<Self, tonic::Status> {
        let mut client =
            ConfigDiscoveryClient::connect(grpc_url.to_owned()).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (outbound, rx) = mpsc::channel(16);
        let hello = Hello {
            node_id: node_id.to_owned(),
            gateway: gateway.to_owned(),
            labels: [("test".to_owned(), "true".to_owned())].into(),
            version,
            hash: hash.to_owned(),
            software_version: "test-node".to_owned(),
            purge_id,
        };
        outbound.send(NodeMessage { message: Some(node_message::Message::Hello(hello)) }).await.expect("queue hello");
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("token is ASCII");
        request.metadata_mut().insert("authorization", value);
        let inbound = client.stream(request).await?.into_inner();
        let beats = outbound.clone();
        let heartbeats = tokio::spawn(async move {
            let beat = || NodeMessage { message: Some(node_message::Message::Heartbeat(Heartbeat { interval_ms: 0 })) };
            let mut tick = tokio::time::interval(Duration::from_millis(crate::process::HEARTBEAT_MS / 3));
            while beats.send(beat()).await.is_ok() {
                tick.tick().await;
            }
        });
        Ok(Self { node_id: node_id.to_owned(), outbound, inbound, heartbeats })
    }

    /// The next snapshot, skipping heartbeats and purges; `None` if none comes within `within`.
    pub async fn next_snapshot(&mut self, within: Duration) -> Option<Snapshot> {
        self.next(within, |message| match message {
            control_message::Message::Snapshot(snapshot) => Some(snapshot),
            _ => None,
        })
        .await
    }

    /// The next cache purge, skipping heartbeats and snapshots; `None` if none comes within `within`.
    pub async fn next_purge(&mut self, within: Duration) -> Option<Purge> {
        self.next(within, |message| match message {
            control_message::Message::Purge(purge) => Some(purge),
            _ => None,
        })
        .await
    }

    /// The next message of any kind, heartbeats included; `None` if none comes within `within`.
    pub async fn next_message(&mut self, within: Duration) -> Option<control_message::Message> {
        self.next(within, Some).await
    }

    /// The next message that `pick` takes, within `within`.
    async fn next<T>(&mut self, within: Duration, pick: impl Fn(control_message::Message) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.inbound.message()).await.ok()?;
            if let Some(picked) = message.expect("stream error").expect("stream ended").message.and_then(&pick) {
                return Some(picked);
            }
        }
    }

    /// Reads until the stream ends and returns the status it ended with
    /// (`None` for a clean end); panics if it is still open after `within`.
    pub async fn end_status(&mut self, within: Duration) -> Option<tonic::Status> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message()).await.expect("the stream to end") {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    }

    pub async fn ack(&self, snapshot: &Snapshot) {
        self.send(node_message::Message::Ack(Ack { version: snapshot.version, hash: snapshot.hash.clone() })).await;
    }

    pub async fn nack(&self, snapshot: &Snapshot, reason: &str) {
        self.send(node_message::Message::Nack(Nack { version: snapshot.version, hash: snapshot.hash.clone(), reason: reason.to_owned() }))
            .await;
    }

    /// Answers a purge, as having removed `removed` stored responses.
    pub async fn ack_purge(&self, purge: &Purge, removed: u64) {
        self.send(node_message::Message::PurgeAck(PurgeAck { id: purge.id, removed })).await;
    }

    async fn send(&self, message: node_message::Message) {
        self.outbound.send(NodeMessage { message: Some(message) }).await.expect("stream open");
    }
}
