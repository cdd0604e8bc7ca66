//! An upstream that reads a request and never answers, and notes when the
//! peer closes each connection: to see that the gateway gave up on a
//! request by closing its connection rather than waiting on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[derive(Debug, Default)]
struct Noted {
    /// When each request's head was read.
    requests: Vec<Instant>,
    /// When each connection was closed by the peer.
    closes: Vec<Instant>,
}

/// A running silent upstream.
pub struct SilentUpstream {
    pub addr: SocketAddr,
    noted: Arc<Mutex<Noted>>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the silent upstream");
        let addr = listener.local_addr().expect("bound");
        let noted: Arc<Mutex<Noted>> = Arc::default();
        let noting = noted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let noting = noting.clone();
                tokio::spawn(async move {
                    let note = |what: fn(&mut Noted) -> &mut Vec<Instant>| {
                        what(&mut noting.lock().unwrap_or_else(PoisonError::into_inner)).push(Instant::now())
                    };
                    let mut read = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let mut head_seen = false;
                    // Reads (and keeps silent) until the peer closes or resets.
                    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                        read.extend_from_slice(&buffer[..n]);
                        if !head_seen && read.windows(4).any(|w| w == b"\r\n\r\n") {
                            head_seen = true;
                            note(|noted| &mut noted.requests);
                        }
                    }
                    note(|noted| &mut noted.closes);
                });
            }
        });
        Self { addr, noted, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// When each request it received arrived.
    pub fn requests(&self) -> Vec<Instant> {
        self.noted.lock().unwrap_or_else(PoisonError::into_inner).requests.clone()
    }

    /// When the peer closed each connection it closed.
    pub fn closes(&self) -> Vec<Instant> {
        self.noted.lock().unwrap_or_else(PoisonError::into_inner).closes.clone()
    }
}

impl Drop for SilentUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
