//! Shared test code: throwaway databases and brokers, `eventually`, ephemeral ports,
//! spawning the real binaries, driving a real browser and receiving their
//! traces over OTLP. Tests need the real services; when one is missing they
//! fail with a message saying how to get it (the test script starts them),
//! never skip.

pub mod amqp;
pub mod browser;
pub mod db;
pub mod documents;
pub mod grpc;
pub mod grpc_peer;
pub mod h2frames;
pub mod http10;
pub mod jwt;
pub mod node;
pub mod origin;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod relay;
pub mod silent;
pub mod smuggling;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::time::{Duration, Instant};

pub use amqp::{Consumer, ThrowawayBroker};
pub use browser::StaticPage;
pub use db::TestDb;
pub use documents::DocumentUpstream;
pub use grpc::GrpcUpstream;
pub use grpc_peer::GrpcPeer;
pub use http10::Http10Upstream;
pub use jwt::TestIdp;
pub use node::TestNode;
pub use otlp::OtlpReceiver;
pub use process::{ControlPlane, DataPlane, free_port, refusing_url, serve_config, serve_service};
pub use proxy::TcpProxy;
pub use relay::TamperingRelay;
pub use silent::SilentUpstream;
pub use upstream::TestUpstream;

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_explained(deadline, check, || what.to_owned()).await
}

/// Like [`eventually`], with the failure's description (say, a process's
/// log) made only when the deadline has passed, so it shows the latest state.
pub async fn eventually_explained<T, F, Fut>(deadline: Duration, mut check: F, explain: impl FnOnce() -> String) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {}", explain());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
