//! Idle timeouts on both sides of the gateway, end to end.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::{Duration, Instant};

use portico_test_support::serve_config;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers with a 100-byte body but sends only 10 bytes of it.
async fn stalling_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_after_idle_ms() {
    let upstream = stalling_upstream().await;
    let config = json!({"services": [{"name": "app", "targets": [{"url": upstream}], "timeouts": {"idle_ms": 500}}],
        "routes": [{"name": "r", "service": "app", "paths": ["/"]}]});
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}/x", dp.proxy_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the headers came in time");
    let started = Instant::now();
    assert!(response.bytes().await.is_err(), "the body is cut, not completed");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "cut after the idle timeout, not after the upstream's 30 s: {waited:?}");
}

#[tokio::test]
async fn a_silent_http2_client_connection_is_closed() {
    let config = json!({"services": [], "routes": []});
    let (_db, _cp, dp) = serve_config(&config, &["--client-idle-timeout-ms", "2000"]).await;
    let mut stream = TcpStream::connect(dp.proxy_url.trim_start_matches("http://")).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was never closed");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed by the 2 s idle timeout (not the 1 s header read timeout): {:?}",
        started.elapsed()
    );
}
