//! A man in the middle of the config stream: relays a data plane's stream
//! to the real control plane and back, flipping a byte in the snapshots of
//! chosen versions. The data plane must refuse those (hash mismatch) and
//! say so with a NACK, which reaches the real control plane's fleet view.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use portico_proto::v1::config_discovery_client::ConfigDiscoveryClient;
use portico_proto::v1::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use portico_proto::v1::{ControlMessage, NodeMessage, control_message};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// A running relay.
pub struct TamperingRelay {
    /// What data planes should use as `--control-plane`.
    pub url: String,
    corrupt: Arc<Mutex<HashSet<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TamperingRelay {
    /// Relays to the control plane at `control_plane` (its gRPC URL).
    pub async fn start(control_plane: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let url = format!("http://{}", listener.local_addr().expect("relay address"));
        let corrupt = Arc::new(Mutex::new(HashSet::new()));
        let relay = Relay { control_plane: control_plane.to_owned(), corrupt: corrupt.clone() };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ConfigDiscoveryServer::new(relay))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self { url, corrupt, task }
    }

    /// Snapshots of `version` will arrive corrupted.
    pub fn corrupt_version(&self, version: u64) {
        self.corrupt.lock().expect("relay lock").insert(version);
    }
}

impl Drop for TamperingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Relay {
    control_plane: String,
    corrupt: Arc<Mutex<HashSet<u64>>>,
}

type ControlStream = Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for Relay {
    type StreamStream = ControlStream;

    async fn stream(&self, request: Request<Streaming<NodeMessage>>) -> Result<Response<ControlStream>, Status> {
        let token = request.metadata().get("authorization").cloned();
        let from_node = request.into_inner().filter_map(Result::ok);
        let mut client =
            ConfigDiscoveryClient::connect(self.control_plane.clone()).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let mut upstream = Request::new(from_node);
        if let Some(token) = token {
            upstream.metadata_mut().insert("authorization", token);
        }
        let to_node = client.stream(upstream).await?.into_inner();
        let corrupt = self.corrupt.clone();
        let tampered = to_node.map(move |message| {
            message.map(|mut message| {
                if let Some(control_message::Message::Snapshot(snapshot)) = &mut message.message
                    && corrupt.lock().expect("relay lock").contains(&snapshot.version)
                    && let Some(byte) = snapshot.config.last_mut()
                {
                    *byte ^= 0x20;
                }
                message
            })
        });
        Ok(Response::new(Box::pin(tampered)))
    }
}
