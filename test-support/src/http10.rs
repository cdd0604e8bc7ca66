//! An HTTP/1.0 upstream, as old or minimal servers answer: `HTTP/1.0 200
//! OK`, no keep-alive (the connection closes after each response), the body
//! framed by `Content-Length` or, with [`Framing::Close`], by the close
//! itself. Raw TCP, so the bytes are exactly these whatever a server crate
//! would do. The body is `hello from HTTP/1.0 <path>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the upstream frames its response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`, then the connection closes.
    Length,
    /// No length: the body ends when the connection closes.
    Close,
}

/// A running HTTP/1.0 upstream.
pub struct Http10Upstream {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Http10Upstream {
    pub async fn start(framing: Framing) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let path = String::from_utf8_lossy(&head).split(' ').nth(1).unwrap_or("/").to_owned();
                    let body = format!("hello from HTTP/1.0 {path}");
                    let length = match framing {
                        Framing::Length => format!("Content-Length: {}\r\n", body.len()),
                        Framing::Close => String::new(),
                    };
                    let response = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n{length}\r\n{body}");
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, requests, task }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Http10Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
