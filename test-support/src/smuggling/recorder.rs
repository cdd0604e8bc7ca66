//! The recording upstream: logs the exact bytes of every connection and
//! answers each request it can parse strictly ([`super::wire`]) with a 200
//! whose `X-Recorder-Saw` header and body name the request
//! (`recorder saw GET /path`); an `Upgrade` request gets a 101 and the rest
//! of the connection is logged as tunnel bytes. On bytes it cannot parse it
//! stops answering and closes its side, so the proxy sees a failure.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::wire::{Parse, Rules, parse_request};

/// What one upstream connection carried.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// `(method, target)` of each cleanly framed request, in order.
    pub requests: Vec<(String, String)>,
    /// Why the bytes after the last clean request are not one.
    pub error: Option<String>,
    /// Bytes received after the last clean request that do not (yet) form one.
    pub pending: usize,
    /// A 101 was sent: later bytes are tunnel data.
    pub tunnel: bool,
    /// The proxy closed its side.
    pub closed: bool,
}

struct Conn {
    log: Mutex<ConnLog>,
    shutdown: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running recording upstream on 127.0.0.1.
pub struct Recorder {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Binds 127.0.0.1:0 and starts accepting.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the recorder on an ephemeral port");
        let addr = listener.local_addr().expect("the recorder's address");
        let conns: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        let registry = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (shutdown, watch) = watch::channel(false);
                let conn = Arc::new(Conn { log: Mutex::default(), shutdown });
                lock(&registry).push(conn.clone());
                tokio::spawn(serve(stream, conn, watch));
            }
        });
        Self { addr, conns, task }
    }

    /// The URL a proxy's upstream should point at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection opened since the last call, waits (polling, up
    /// to `deadline`) until the proxy has closed each of its side too, and
    /// returns what they carried. Later connections start a fresh log.
    pub async fn take(&self, deadline: Duration) -> Vec<ConnLog> {
        let conns = std::mem::take(&mut *lock(&self.conns));
        for conn in &conns {
            let _ = conn.shutdown.send(true);
        }
        let start = Instant::now();
        while !conns.iter().all(|c| lock(&c.log).closed) && start.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        conns.iter().map(|c| lock(&c.log).clone()).collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response(method: &str, target: &str, upgrade: Option<&[u8]>) -> Vec<u8> {
    let saw = format!("{method} {target}");
    if let Some(protocol) = upgrade {
        let mut out = format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nX-Recorder-Saw: {saw}\r\nUpgrade: ").into_bytes();
        out.extend_from_slice(protocol);
        out.extend_from_slice(b"\r\n\r\n");
        return out;
    }
    let body = format!("recorder saw {saw}\n");
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Recorder-Saw: {saw}\r\n\r\n", body.len());
    if method != "HEAD" {
        out.push_str(&body);
    }
    out.into_bytes()
}

async fn serve(mut stream: TcpStream, conn: Arc<Conn>, mut shutdown: watch::Receiver<bool>) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut parsed = 0; // bytes consumed by clean requests
    let mut continued = usize::MAX; // the offset a 100 Continue was sent for
    let mut stopped = false; // no more parsing: tunnel or error
    let mut closing: Option<Instant> = None;
    loop {
        let read = tokio::select! {
            read = stream.read(&mut chunk) => read,
            _ = shutdown.changed(), if closing.is_none() => {
                let _ = stream.shutdown().await;
                closing = Some(Instant::now());
                continue;
            }
            _ = tokio::time::sleep(Duration::from_secs(3)), if closing.is_some() => break,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut replies = Vec::new();
        {
            let mut log = lock(&conn.log);
            log.bytes.extend_from_slice(&chunk[..n]);
            while !stopped {
                match parse_request(&log.bytes[parsed..], Rules { require_host: true }) {
                    Parse::Complete(request, used) => {
                        parsed += used;
                        let upgrade = request.upgrades().then(|| request.values("upgrade").next().unwrap_or_default().to_vec());
                        replies.push(response(&request.method, &request.target, upgrade.as_deref()));
                        log.requests.push((request.method, request.target));
                        if upgrade.is_some() {
                            log.tunnel = true;
                            stopped = true;
                        }
                    }
                    Parse::Incomplete => {
                        let rest = &log.bytes[parsed..];
                        let head_done = rest.windows(4).any(|w| w == b"\r\n\r\n");
                        let expects = String::from_utf8_lossy(rest).to_ascii_lowercase().contains("expect: 100-continue");
                        if head_done && expects && continued != parsed {
                            continued = parsed;
                            replies.push(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec());
                        }
                        break;
                    }
                    Parse::Invalid(reason) => {
                        log.error = Some(reason);
                        stopped = true;
                    }
                }
            }
            log.pending = if log.tunnel { 0 } else { log.bytes.len() - parsed };
        }
        for reply in replies {
            if stream.write_all(&reply).await.is_err() {
                break;
            }
        }
        if lock(&conn.log).error.is_some() && closing.is_none() {
            let _ = stream.shutdown().await;
            closing = Some(Instant::now());
        }
    }
    lock(&conn.log).closed = true;
}
