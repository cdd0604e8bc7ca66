//! Idle timeouts on both sides of the gateway, end to end.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::{Duration, Instant};

use portico_test_support::raw::{closes_within, read_response};
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
    assert!(closes_within(&mut stream, Duration::from_secs(10)).await, "the idle connection was never closed");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed by the 2 s idle timeout (not the 1 s header read timeout): {:?}",
        started.elapsed()
    );
}

// The test data planes run with a 1 s header read timeout and the default
// 120 s client idle timeout.

#[tokio::test]
async fn an_http1_connection_waiting_for_its_next_request_goes_at_the_header_read_timeout() {
    let (_db, _cp, dp) = serve_config(&json!({"services": [], "routes": []}), &[]).await;
    let mut stream = TcpStream::connect(dp.proxy_url.trim_start_matches("http://")).await.unwrap();
    for _ in 0..2 {
        stream.write_all(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 404"));
        tokio::time::sleep(Duration::from_millis(600)).await; // each wait under the timeout: the connection stays
    }
    // Timed from before the last request: its response ends later than that.
    let started = Instant::now();
    stream.write_all(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 404"), "the connection outlived two waits under 1 s");
    assert!(closes_within(&mut stream, Duration::from_secs(20)).await, "the waiting connection is closed");
    let closed = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(8)).contains(&closed),
        "closed by the 1 s header read timeout, not the 120 s idle one: {closed:?}"
    );
}

#[tokio::test]
async fn a_request_head_trickling_in_is_cut_at_the_header_read_timeout() {
    let (_db, _cp, dp) = serve_config(&json!({"services": [], "routes": []}), &[]).await;
    let stream = TcpStream::connect(dp.proxy_url.trim_start_matches("http://")).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        writer.write_all(b"GET /x HTTP/1.1\r\nHost: gw\r\nX-Slow: ").await?;
        // A byte every 200 ms: each read is well within the timeout, the head never is.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer.write_all(b"a").await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), reader.read(&mut buffer)).await.expect("the slow head is cut");
    let closed = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "no response to a head never finished: {read:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(8)).contains(&closed),
        "cut by the 1 s header read timeout, however often a byte comes: {closed:?}"
    );
    trickle.abort();
}
