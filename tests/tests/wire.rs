//! The strict HTTP/1 wire end to end: raw bytes from a client socket to a
//! real data plane, and raw bytes from a malicious upstream back to it.
//! Every refusal is the client's `400` (or `408`) or the upstream's `502`,
//! and a client's fault never counts against a target.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_test_support::raw::read_response;
use portico_test_support::{DataPlane, TestUpstream, serve_service};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn proxy_addr(dp: &DataPlane) -> SocketAddr {
    dp.proxy_url.trim_start_matches("http://").parse().unwrap()
}

/// Sends `bytes` on a new connection and reads what comes back until the
/// gateway closes it (`true`), or for at most 10 s (`false`: left open).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await.is_ok();
    (String::from_utf8_lossy(&received).into_owned(), closed)
}

/// Response heads in `text` (status lines at the start of a line).
fn responses(text: &str) -> usize {
    text.match_indices("HTTP/1.1 ").filter(|(at, _)| *at == 0 || text.as_bytes()[at - 1] == b'\n').count()
}

async fn get(dp: &DataPlane, path: &str) -> reqwest::Response {
    reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}{path}", dp.proxy_url)).send().await.unwrap()
}

#[tokio::test]
async fn framing_that_parsers_read_two_ways_is_refused_with_400_and_a_close() {
    let upstream = TestUpstream::start("a").await;
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "targets": [{"url": upstream.url()}]})).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let vectors: Vec<(&str, String)> = vec![
        (
            "Transfer-Encoding: chunked twice",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        ("bare LF line ends", format!("GET /x HTTP/1.1\nHost: a\n\n{smuggled}")),
        ("a bare LF inside a CRLF head", format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Note: a\nContent-Length: 37\r\n\r\n{smuggled}")),
        ("two Host headers", format!("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{smuggled}")),
        ("HTTP/1.1 without Host", format!("GET /x HTTP/1.1\r\n\r\n{smuggled}")),
        ("a Host that is not host[:port]", format!("GET /x HTTP/1.1\r\nHost: a b@evil/x\r\n\r\n{smuggled}")),
        (
            "Content-Length and Transfer-Encoding",
            format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        ("two Content-Length headers", format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n{smuggled}")),
        ("Transfer-Encoding on HTTP/1.0", format!("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("an obs-folded header", format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}")),
    ];
    for (name, bytes) in &vectors {
        let (reply, closed) = exchange(proxy_addr(&dp), bytes.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{name}: {reply}");
        // hyper's parser refuses these two itself, with a bare 400.
        let by_hyper = ["Transfer-Encoding on HTTP/1.0", "an obs-folded header"].contains(name);
        assert!(by_hyper || reply.contains("\"bad_request\""), "{name}: {reply}");
        assert!(closed, "{name}: the connection stays open: {reply}");
        assert_eq!(responses(&reply), 1, "{name}: a second response: {reply}");
    }
    assert_eq!(upstream.requests(), 0, "nothing reached the upstream");
    assert_eq!(get(&dp, "/after").await.status(), StatusCode::OK, "clean requests still pass");
}

#[tokio::test]
async fn a_refused_upgrade_closes_the_connection_so_bytes_after_it_are_never_a_request() {
    let upstream = TestUpstream::start("a").await;
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "targets": [{"url": upstream.url()}]})).await;
    let request = "GET /first HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let (reply, closed) = exchange(proxy_addr(&dp), request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    assert!(closed);
    assert_eq!(responses(&reply), 1, "{reply}");
    assert_eq!(upstream.requests(), 1, "only /first went upstream");
}

#[tokio::test]
async fn look_alike_framing_headers_are_refused_and_look_alike_forwarding_headers_dropped() {
    let upstream = TestUpstream::start("a").await;
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "targets": [{"url": upstream.url()}]})).await;
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/echo", dp.proxy_url))
        .header("X_Forwarded_For", "6.6.6.6")
        .header("X_Request__Id", "forged")
        .header("api_key", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed: Value = response.json().await.unwrap();
    let headers = echoed["headers"].as_object().unwrap();
    for dropped in ["x_forwarded_for", "x_request__id"] {
        assert!(!headers.contains_key(dropped), "{dropped} reached the upstream: {headers:?}");
    }
    assert_eq!(headers["api_key"], "kept", "other names with _ pass");
    assert!(!headers["x-forwarded-for"].as_str().unwrap().contains("6.6.6.6"));
    for framing in ["Transfer_Encoding: chunked", "Content_Length: 5", "content.length: 5", "Transfer--Encoding: chunked"] {
        let (reply, closed) = exchange(proxy_addr(&dp), format!("POST /x HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\nhello").as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400 ") && closed, "{framing}: {reply}");
    }
    assert_eq!(upstream.requests(), 1, "only the first request went upstream");
}

/// A chunked POST whose body breaks the chunked syntax.
fn bad_chunked(body: &str) -> String {
    format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_and_never_counts_against_the_target() {
    let upstream = TestUpstream::start("a").await;
    let health = json!({"passive": {"consecutive_failures": 2, "base_ejection_ms": 60000}});
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "health_check": health, "targets": [{"url": upstream.url()}]})).await;
    for body in ["5\r\nhello\r\nfffffffffffffffffff\r\n", "5\r\nhelloXX0\r\n\r\n", "3;\x01ext\r\nabc\r\n0\r\n\r\n", "5;a b\r\nhello\r\n"] {
        let (reply, closed) = exchange(proxy_addr(&dp), bad_chunked(body).as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400 ") && closed, "{body:?}: {reply}");
    }
    // A body cut short: the client goes away mid-upload (it sees no answer).
    let mut stream = TcpStream::connect(proxy_addr(&dp)).await.unwrap();
    stream.write_all(bad_chunked("5\r\nhel").as_bytes()).await.unwrap();
    drop(stream);
    assert_eq!(get(&dp, "/after").await.status(), StatusCode::OK, "the target was not ejected for the clients' bodies");
}

#[tokio::test]
async fn a_stalled_upload_is_a_408_and_never_opens_the_circuit() {
    let upstream = TestUpstream::start("a").await;
    let breaker = json!({"failure_rate_percent": 50, "min_requests": 2, "window_ms": 60000, "open_ms": 60000, "half_open_probes": 1});
    let service = json!({"name": "app", "circuit_breaker": breaker, "timeouts": {"request_ms": 500}, "targets": [{"url": upstream.url()}]});
    let (_db, _cp, dp) = serve_service(service).await;
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy_addr(&dp)).await.unwrap();
        stream.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b").await.unwrap();
        let mut reply = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply)).await.unwrap().unwrap();
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
        assert!(reply.contains("\"request_timeout\""), "{reply}");
    }
    let after = get(&dp, "/after").await;
    assert_eq!(after.status(), StatusCode::OK, "the circuit stayed closed: {}", after.text().await.unwrap());
}

/// A raw upstream that answers each request with the bytes its path names
/// in `answers` (`/good` otherwise), and records each connection's paths.
struct MaliciousUpstream {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Vec<String>>>>,
}

const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn malformed_answers() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70 * 1024));
    huge.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
    vec![
        ("/cl-te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("/dup-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok".to_vec()),
        ("/204-body", b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec()),
        ("/304-body", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec()),
        ("/head-body", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec()),
        ("/after-body", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec()),
        ("/bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok".to_vec()),
        ("/bad-chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsmuggled\r\n0\r\n\r\n".to_vec()),
        ("/huge-head", huge),
    ]
}

impl MaliciousUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let mut answers = malformed_answers();
        // A server that greets at once: the new protocol's first bytes come with the 101.
        answers.push((
            "/greeting-upgrade",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nhello over the tunnel".to_vec(),
        ));
        let answers: Arc<Vec<(&str, Vec<u8>)>> = Arc::new(answers);
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (seen, answers) = (seen.clone(), answers.clone());
                let index = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(Vec::new());
                    seen.len() - 1
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        seen.lock().unwrap()[index].push(path.clone());
                        if path == "/close-after-reading" {
                            return; // closed without an answer, as a server going away does
                        }
                        let answer = answers.iter().find(|(p, _)| *p == path).map_or(GOOD, |(_, bytes)| bytes.as_slice());
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, connections }
    }
}

#[tokio::test]
async fn malformed_upstream_responses_are_502_and_their_connections_are_never_reused() {
    let upstream = MaliciousUpstream::start().await;
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "targets": [{"url": format!("http://{}", upstream.addr)}]})).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (path, _) in malformed_answers() {
        assert_eq!(get(&dp, "/good").await.status(), StatusCode::OK, "before {path}");
        let method = if path == "/head-body" { reqwest::Method::HEAD } else { reqwest::Method::GET };
        let response = client.request(method, format!("{}{path}", dp.proxy_url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{path}");
        if path != "/head-body" {
            assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "upstream_malformed", "{path}");
        }
        assert_eq!(get(&dp, "/good").await.status(), StatusCode::OK, "after {path}");
    }
    let connections = upstream.connections.lock().unwrap().clone();
    for paths in &connections {
        for (at, path) in paths.iter().enumerate() {
            assert!(path == "/good" || at == paths.len() - 1, "a connection was reused after {path}: {paths:?}");
        }
    }
    assert!(connections.len() > malformed_answers().len(), "{connections:?}");
}

#[tokio::test]
async fn bytes_the_upstream_sends_with_its_101_reach_the_client_through_the_tunnel() {
    let upstream = MaliciousUpstream::start().await;
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "targets": [{"url": format!("http://{}", upstream.addr)}]})).await;
    let mut stream = TcpStream::connect(proxy_addr(&dp)).await.unwrap();
    stream.write_all(b"GET /greeting-upgrade HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("hello over the tunnel") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.expect("the greeting in time").unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&received));
}

#[tokio::test]
async fn a_streamed_upload_sent_whole_on_a_connection_that_then_closes_is_never_sent_again() {
    let upstream = MaliciousUpstream::start().await;
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "targets": [{"url": format!("http://{}", upstream.addr)}]})).await;
    assert_eq!(get(&dp, "/good").await.status(), StatusCode::OK, "a connection for the pool");
    let mut stream = TcpStream::connect(proxy_addr(&dp)).await.unwrap();
    // PUT is idempotent, but its streamed body is gone once sent: a retry would send it empty.
    stream.write_all(b"PUT /close-after-reading HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 502 "), "{response}");
    let seen: Vec<String> = upstream.connections.lock().unwrap().iter().flatten().cloned().collect();
    assert_eq!(seen.iter().filter(|path| *path == "/close-after-reading").count(), 1, "sent once: {seen:?}");
}

#[tokio::test]
async fn an_http_1_0_upstream_answers_http_1_1_clients_in_http_1_1_on_a_kept_alive_connection() {
    use portico_test_support::http10::{Framing, Http10Upstream};
    for framing in [Framing::Length, Framing::Close] {
        let upstream = Http10Upstream::start(framing).await;
        let (_db, _cp, dp) = serve_service(json!({"name": "app", "targets": [{"url": upstream.url()}]})).await;
        let mut stream = TcpStream::connect(proxy_addr(&dp)).await.unwrap();
        for path in ["/one", "/two"] {
            stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await.unwrap();
            let response = read_response(&mut stream).await;
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{framing:?} {path}: {response}");
            assert!(!response.to_ascii_lowercase().contains("connection: close"), "{framing:?} {path}: {response}");
            assert!(response.contains(&format!("hello from HTTP/1.0 {path}")), "{framing:?} {path}: {response}");
        }
        assert_eq!(upstream.requests(), 2, "{framing:?}: both requests went upstream, on one client connection");

        let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
        let response = h2.get(format!("{}/three", dp.proxy_url)).send().await.unwrap();
        assert_eq!((response.version(), response.status()), (reqwest::Version::HTTP_2, StatusCode::OK), "{framing:?}");
        assert_eq!(response.text().await.unwrap(), "hello from HTTP/1.0 /three", "{framing:?}");
    }
}
