//! The Redis server tests use: `PORTICO_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`, which `./scripts/test` makes sure answers).
//! Tests fail, never skip, when it does not.

use std::net::SocketAddr;

/// The URL of the test Redis.
pub fn redis_url() -> String {
    std::env::var("PORTICO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The address of the test Redis, after checking that it answers `PING`.
pub async fn redis_addr() -> SocketAddr {
    let url = redis_url();
    let host_port =
        url.trim_start_matches("redis://").split('/').next().unwrap_or_default().rsplit('@').next().unwrap_or_default().to_owned();
    let addr: SocketAddr = tokio::net::lookup_host(&host_port)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve Redis at {host_port}"));
    let answers = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        (&reply == b"+PONG\r\n").then_some(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(3), answers).await.ok().flatten().is_none() {
        panic!("Redis does not answer at {url}; run ./scripts/test, which starts one, or set PORTICO_TEST_REDIS_URL");
    }
    addr
}
