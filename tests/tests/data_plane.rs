//! `portico-dp` end to end: real control plane (Postgres), real data planes
//! and test upstreams on loopback, real HTTP.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portico_test_support::raw::read_response;
use portico_test_support::{ControlPlane, DataPlane, TamperingRelay, TestDb, TestUpstream, eventually, free_port};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);

/// Replaces the default gateway's config; returns the version now current.
async fn put_config(cp: &ControlPlane, config: Value) -> u64 {
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    response.json::<Value>().await.unwrap()["version"].as_u64().unwrap()
}

fn one_route(upstream: &str, extra_route: Value, extra_service: Value) -> Value {
    let mut service = json!({"name": "users", "targets": [{"url": upstream}]});
    let mut route = json!({"name": "users-api", "service": "users", "paths": ["/users"]});
    merge(&mut service, extra_service);
    merge(&mut route, extra_route);
    json!({"services": [service], "routes": [route]})
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(dp: &DataPlane, path: &str) -> reqwest::Response {
    client().get(format!("{}{path}", dp.proxy_url)).send().await.unwrap()
}

async fn echo(dp: &DataPlane, path: &str) -> Value {
    let response = get(dp, path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

struct Setup {
    _db: TestDb,
    cp: ControlPlane,
    upstream: TestUpstream,
}

async fn setup() -> Setup {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    Setup { _db: db, cp, upstream: TestUpstream::start("a").await }
}

async fn data_plane(cp: &ControlPlane, node: &str) -> DataPlane {
    DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", node, None).await
}

#[tokio::test]
async fn every_data_plane_serves_a_new_route_with_clean_forwarded_headers() {
    let s = setup().await;
    let (dp1, dp2) = (data_plane(&s.cp, "dp-1").await, data_plane(&s.cp, "dp-2").await);
    let version = put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await;
    for dp in [&dp1, &dp2] {
        dp.wait_for_version(version).await;
        let response = client()
            .get(format!("{}/users/7?full=1", dp.proxy_url))
            .header("X-Consumer-Id", "admin")
            .header("X_User_Id", "0")
            .header("x.scopes", "root")
            .header("X-Request-Id", "req-42")
            .header("Connection", "x-secret")
            .header("X-Secret", "hop")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-request-id"], "req-42");
        assert_eq!(response.headers()["x-upstream"], "a");
        assert!(response.headers().get("x-hop").is_none(), "headers the upstream's Connection names are dropped");
        let seen: Value = response.json().await.unwrap();
        assert_eq!((seen["path"].as_str(), seen["query"].as_str()), (Some("/7"), Some("full=1")), "strip_path keeps the rest");
        let headers = &seen["headers"];
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], dp.proxy_url.trim_start_matches("http://"));
        assert_eq!(headers["x-request-id"], "req-42");
        assert_eq!(headers["host"], s.upstream.addr.to_string());
        for spoofed in ["x-consumer-id", "x_user_id", "x.scopes", "x-secret"] {
            assert!(headers.get(spoofed).is_none(), "{spoofed} reached the upstream: {headers}");
        }
    }
    let fleet: Value = s.cp.admin(Method::GET, "/api/v1/gateways/default/data-planes").send().await.unwrap().json().await.unwrap();
    assert_eq!(fleet["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn gateway_answers_its_own_errors_as_json() {
    let s = setup().await;
    let dp = data_plane(&s.cp, "dp").await;
    let closed = portico_test_support::refusing_url();
    let config = json!({
        "services": [
            {"name": "up", "targets": [{"url": s.upstream.url()}], "timeouts": {"request_ms": 300},
             "policies": [{"type": "request-size-limit", "max_bytes": 1000}]},
            {"name": "down", "targets": [{"url": closed}]}
        ],
        "routes": [
            {"name": "up", "service": "up", "paths": ["/up"]},
            {"name": "down", "service": "down", "paths": ["/down"]}
        ]
    });
    dp.wait_for_version(put_config(&s.cp, config).await).await;

    let no_route = get(&dp, "/nowhere").await;
    assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
    assert!(no_route.headers().contains_key("x-request-id"));
    assert_eq!(no_route.json::<Value>().await.unwrap()["error"]["code"], "no_route");

    let refused = get(&dp, "/down").await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "upstream_unavailable");

    let slow = get(&dp, "/up/slow/3000").await;
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.json::<Value>().await.unwrap()["error"]["code"], "upstream_timeout");

    let big = client().post(format!("{}/up", dp.proxy_url)).body(vec![b'x'; 5000]).send().await.unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 500])));
    let streamed = client().post(format!("{}/up", dp.proxy_url)).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE, "a chunked body over the limit is refused too");
    let small = client().post(format!("{}/up", dp.proxy_url)).body(vec![b'x'; 900]).send().await.unwrap();
    assert_eq!(small.json::<Value>().await.unwrap()["body_bytes"], 900);

    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    for http in [client(), h2.clone()] {
        let huge_header = http.get(format!("{}/up", dp.proxy_url)).header("x-big", "h".repeat(70_000)).send().await.unwrap();
        assert_eq!(huge_header.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(huge_header.headers().contains_key("x-request-id"));
        assert_eq!(huge_header.json::<Value>().await.unwrap()["error"]["code"], "headers_too_large");
        let mut many = http.get(format!("{}/up", dp.proxy_url));
        for i in 0..150 {
            many = many.header(format!("x-h{i}"), "v");
        }
        let many = many.send().await.unwrap();
        assert_eq!(many.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        if many.version() == reqwest::Version::HTTP_2 {
            // Over HTTP/1 the codec refuses past 100 fields itself, with a bare 431.
            assert_eq!(many.json::<Value>().await.unwrap()["error"]["code"], "headers_too_large");
        }
    }

    let response = h2.get(format!("{}/up/over-h2", dp.proxy_url)).send().await.unwrap();
    assert_eq!((response.version(), response.status()), (reqwest::Version::HTTP_2, StatusCode::OK));
    assert_eq!(response.json::<Value>().await.unwrap()["path"], "/over-h2");
}

#[tokio::test]
async fn rollback_changes_what_data_planes_serve() {
    let s = setup().await;
    let b = TestUpstream::start("b").await;
    let dp = data_plane(&s.cp, "dp").await;
    let first = put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await;
    dp.wait_for_version(first).await;
    assert_eq!(echo(&dp, "/users").await["upstream"], "a");
    dp.wait_for_version(put_config(&s.cp, one_route(&b.url(), json!({}), json!({}))).await).await;
    assert_eq!(echo(&dp, "/users").await["upstream"], "b");
    let rolled = s.cp.admin(Method::POST, &format!("/api/v1/gateways/default/versions/{first}/rollback")).send().await.unwrap();
    let version: u64 = rolled.headers()["portico-config-version"].to_str().unwrap().parse().unwrap();
    dp.wait_for_version(version).await;
    assert_eq!(echo(&dp, "/users").await["upstream"], "a");
}

#[tokio::test]
async fn a_node_restarted_while_the_control_plane_is_down_serves_from_its_cache() {
    let mut s = setup().await;
    let cache = tempfile::tempdir().unwrap();
    let mut dp = DataPlane::start(&s.cp.grpc_url, &s.cp.cluster_token, "default", "dp", Some(cache.path())).await;
    let version = put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await;
    dp.wait_for_version(version).await;
    assert!(s.cp.terminate().success());
    assert!(dp.terminate().success());

    let port = free_port();
    let restarted = DataPlane::start_on(&s.cp.grpc_url, &s.cp.cluster_token, "default", "dp", Some(cache.path()), port).await;
    assert_eq!(restarted.version().await, Some(version), "serves the cached version with the control plane down");
    let ready = client().get(format!("{}/readyz", restarted.status_url)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(echo(&restarted, "/users").await["upstream"], "a");
    drop(restarted);

    let file = cache.path().join("default.snapshot");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let from_corrupt = DataPlane::start(&s.cp.grpc_url, &s.cp.cluster_token, "default", "dp", Some(cache.path())).await;
    eventually("the corrupt cache to be reported", DEADLINE, || async { from_corrupt.logs().contains("corrupt").then_some(()) }).await;
    assert_eq!(from_corrupt.version().await, None, "a corrupt cache is not served");
    let not_ready = client().get(format!("{}/readyz", from_corrupt.status_url)).send().await.unwrap();
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&from_corrupt, "/users").await.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// Sends requests until `stop` is set; returns (sent, failed) and the first failure.
async fn hammer(url: String, stop: Arc<std::sync::atomic::AtomicBool>) -> (usize, usize, Option<String>) {
    let client = client();
    let (mut sent, mut failed, mut first) = (0, 0, None);
    let started = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
        sent += 1;
        match client.get(&url).send().await {
            Ok(r) if r.status() == StatusCode::OK => {}
            Ok(r) => {
                failed += 1;
                first.get_or_insert(format!("status {}: {}", r.status(), r.text().await.unwrap_or_default()));
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    (sent, failed, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_while_a_hundred_versions_are_published() {
    let s = setup().await;
    let (dp1, dp2) = (data_plane(&s.cp, "dp-1").await, data_plane(&s.cp, "dp-2").await);
    let base = put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await;
    dp1.wait_for_version(base).await;
    dp2.wait_for_version(base).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> =
        [&dp1, &dp2, &dp1, &dp2].iter().map(|dp| tokio::spawn(hammer(format!("{}/users/x", dp.proxy_url), stop.clone()))).collect();
    let mut last = base;
    for i in 0..120 {
        let extra = json!({"tags": [format!("v{i}")]});
        let route = if i % 2 == 0 { json!({"paths": ["/users", format!("/extra-{i}")]}) } else { json!({}) };
        last = put_config(&s.cp, one_route(&s.upstream.url(), route, extra)).await;
    }
    dp1.wait_for_version(last).await;
    dp2.wait_for_version(last).await;
    stop.store(true, Ordering::SeqCst);
    let (mut sent, mut failed) = (0, 0);
    for client in clients {
        let (s, f, first) = client.await.unwrap();
        assert_eq!(f, 0, "first failure: {first:?}");
        sent += s;
        failed += f;
    }
    assert!(sent > 100, "the clients sent {sent} requests");
    println!("{sent} requests, {failed} failed, while {} versions were published", last - base);
}

#[tokio::test]
async fn control_plane_restart_does_not_disturb_traffic() {
    let mut s = setup().await;
    let dp = data_plane(&s.cp, "dp").await;
    dp.wait_for_version(put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn(hammer(format!("{}/users", dp.proxy_url), stop.clone()));

    let (admin, grpc) = s.cp.ports();
    assert!(s.cp.terminate().success());
    let cp = ControlPlane::start_on(&s.cp.database_url, &s.cp.admin_token, &s.cp.cluster_token, admin, grpc).await;
    let b = TestUpstream::start("b").await;
    let version = put_config(&cp, one_route(&b.url(), json!({}), json!({}))).await;
    dp.wait_for_version(version).await;
    stop.store(true, Ordering::SeqCst);
    let (sent, failed, first) = traffic.await.unwrap();
    assert_eq!(failed, 0, "{failed} of {sent} failed; first: {first:?}");
    assert_eq!(echo(&dp, "/users").await["upstream"], "b", "the node reconnected and applied the new version");
}

#[tokio::test]
async fn a_rejected_snapshot_keeps_the_old_config_serving_and_shows_rejected() {
    let s = setup().await;
    let relay = TamperingRelay::start(&s.cp.grpc_url).await;
    let dp = DataPlane::start(&relay.url, &s.cp.cluster_token, "default", "dp-relayed", None).await;
    let good = put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await;
    dp.wait_for_version(good).await;

    relay.corrupt_version(good + 1);
    let b = TestUpstream::start("b").await;
    let bad = put_config(&s.cp, one_route(&b.url(), json!({}), json!({}))).await;
    let entry = eventually("the node to be shown rejected", DEADLINE, || async {
        let fleet: Value = s.cp.admin(Method::GET, "/api/v1/gateways/default/data-planes").send().await.ok()?.json().await.ok()?;
        fleet["data"].as_array()?.iter().find(|n| n["status"] == "rejected").cloned()
    })
    .await;
    assert_eq!(entry["last_rejection"]["version"].as_u64(), Some(bad));
    assert!(entry["last_rejection"]["reason"].as_str().unwrap().contains("hash mismatch"), "{entry}");
    assert_eq!(entry["version"].as_u64(), Some(good));
    assert_eq!(dp.version().await, Some(good));
    assert_eq!(echo(&dp, "/users").await["upstream"], "a", "the old config keeps serving");
    let metrics = client().get(format!("{}/metrics", dp.status_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("portico_config_nacks_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_slow_request_finish() {
    let s = setup().await;
    let mut dp = data_plane(&s.cp, "dp").await;
    dp.wait_for_version(put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await).await;
    let url = format!("{}/users/slow/1500", dp.proxy_url);
    let slow = tokio::spawn(async move { client().get(url).send().await });
    eventually("the slow request to reach the upstream", DEADLINE, || async { (s.upstream.requests() == 1).then_some(()) }).await;
    dp.signal_term();
    let address = dp.proxy_url.trim_start_matches("http://").to_owned();
    eventually("new connections to be refused while draining", DEADLINE, || async {
        TcpStream::connect(&address).await.is_err().then_some(())
    })
    .await;
    let response = slow.await.unwrap().expect("the in-flight request completes");
    assert_eq!(response.status(), StatusCode::OK);
    let status = tokio::task::spawn_blocking(move || dp.wait()).await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn keep_alive_and_upgraded_connections_survive_config_swaps() {
    let s = setup().await;
    let dp = data_plane(&s.cp, "dp").await;
    let with_upgrade = |tag: &str| {
        let mut config = one_route(&s.upstream.url(), json!({}), json!({"tags": [tag]}));
        config["routes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "up", "service": "users", "paths": ["/upgrade"], "strip_path": false}));
        config
    };
    dp.wait_for_version(put_config(&s.cp, with_upgrade("one")).await).await;
    let address = dp.proxy_url.trim_start_matches("http://").to_owned();

    let mut keep_alive = TcpStream::connect(&address).await.unwrap();
    keep_alive.write_all(b"GET /users/1 HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    assert!(read_response(&mut keep_alive).await.starts_with("HTTP/1.1 200"));

    let mut tunnel = TcpStream::connect(&address).await.unwrap();
    tunnel.write_all(b"GET /upgrade HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let switched = read_response(&mut tunnel).await;
    assert!(switched.starts_with("HTTP/1.1 101"), "{switched}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    dp.wait_for_version(put_config(&s.cp, with_upgrade("two")).await).await;

    keep_alive.write_all(b"GET /users/2 HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    assert!(read_response(&mut keep_alive).await.starts_with("HTTP/1.1 200"), "the kept-alive connection still serves");
    tunnel.write_all(b"pong").await.unwrap();
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"pong", "the upgraded connection still tunnels");
}

#[tokio::test]
async fn status_listener_reports_readiness_version_and_metrics() {
    let s = setup().await;
    let lonely = DataPlane::start(&portico_test_support::refusing_url(), &s.cp.cluster_token, "default", "lonely", None).await;
    let status: Value = client().get(format!("{}/status", lonely.status_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status, json!({"gateway": "default", "version": null, "hash": null, "node_id": "lonely"}));
    assert_eq!(client().get(format!("{}/readyz", lonely.status_url)).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&lonely, "/users").await.status(), StatusCode::SERVICE_UNAVAILABLE);

    let dp = data_plane(&s.cp, "dp").await;
    let version = put_config(&s.cp, one_route(&s.upstream.url(), json!({}), json!({}))).await;
    dp.wait_for_version(version).await;
    assert_eq!(client().get(format!("{}/readyz", dp.status_url)).send().await.unwrap().status(), StatusCode::OK);
    let status: Value = client().get(format!("{}/status", dp.status_url)).send().await.unwrap().json().await.unwrap();
    let current: Value = s.cp.admin(Method::GET, "/api/v1/gateways/default").send().await.unwrap().json().await.unwrap();
    assert_eq!((status["version"].as_u64(), status["node_id"].as_str()), (current["version"].as_u64(), Some("dp")));
    echo(&dp, "/users").await;
    let metrics = client().get(format!("{}/metrics", dp.status_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("portico_config_version {version}")), "{metrics}");
    assert!(metrics.contains(r#"portico_requests_total{route="users-api",status="200"} 1"#), "{metrics}");
    assert!(metrics.contains("portico_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("portico_config_routes 1"), "{metrics}");
}

#[tokio::test]
async fn requests_spread_over_weighted_targets() {
    let s = setup().await;
    let b = TestUpstream::start("b").await;
    let dp = data_plane(&s.cp, "dp").await;
    let service = json!({"targets": [{"url": s.upstream.url(), "weight": 300}, {"url": b.url(), "weight": 100}]});
    dp.wait_for_version(put_config(&s.cp, one_route(&s.upstream.url(), json!({}), service)).await).await;
    let counter = AtomicUsize::new(0);
    for _ in 0..40 {
        if echo(&dp, "/users").await["upstream"] == "a" {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
    assert_eq!(counter.load(Ordering::SeqCst), 30, "a weight of 300 to 100 sends three in four to a");
}

#[tokio::test]
async fn unchanged_upstreams_keep_their_connections_across_swaps() {
    let s = setup().await;
    let other = TestUpstream::start("other").await;
    let dp = data_plane(&s.cp, "dp").await;
    let config = |tag: &str| {
        let mut config = one_route(&s.upstream.url(), json!({}), json!({"tags": [tag]}));
        config["services"].as_array_mut().unwrap().push(json!({"name": "other", "targets": [{"url": other.url()}]}));
        config
    };
    dp.wait_for_version(put_config(&s.cp, config("one")).await).await;
    let http = client();
    for _ in 0..3 {
        assert_eq!(http.get(format!("{}/users", dp.proxy_url)).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(s.upstream.connections(), 1, "requests share one pooled upstream connection");
    dp.wait_for_version(put_config(&s.cp, config("two")).await).await;
    assert_eq!(http.get(format!("{}/users", dp.proxy_url)).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.upstream.connections(), 1, "a tag edit keeps the service's connection pool");
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_and_closed_ones_replaced() {
    let s = setup().await;
    let dp = data_plane(&s.cp, "dp").await;
    let config = one_route(&s.upstream.url(), json!({}), json!({"timeouts": {"connect_ms": 2000, "request_ms": 5000, "idle_ms": 300}}));
    dp.wait_for_version(put_config(&s.cp, config).await).await;
    let http = client();
    let get = || async { http.get(format!("{}/users", dp.proxy_url)).send().await.unwrap().status() };
    assert_eq!(get().await, StatusCode::OK);
    assert_eq!(get().await, StatusCode::OK);
    assert_eq!(s.upstream.connections(), 1, "back-to-back requests share a connection");
    // What is tested is time passing with no request (any request would
    // keep the connection busy), so this waits rather than polls.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get().await, StatusCode::OK);
    assert_eq!(s.upstream.connections(), 2, "a connection idle past idle_ms was closed, so a new one was made");

    // The upstream restarts: the pooled connection it closed is not used.
    let port = s.upstream.addr.port();
    s.upstream.stop();
    eventually("the stopped upstream lets go of its port", Duration::from_secs(5), || async {
        tokio::net::TcpListener::bind(("127.0.0.1", port)).await.ok().map(drop)
    })
    .await;
    let restarted = TestUpstream::start_on("restarted", port).await;
    for _ in 0..3 {
        assert_eq!(get().await, StatusCode::OK);
    }
    assert_eq!(restarted.connections(), 1);
}

#[tokio::test]
async fn tricky_paths_hosts_and_upgrades_cannot_slip_past_routing() {
    let s = setup().await;
    let admin = TestUpstream::start("admin").await;
    let dp = data_plane(&s.cp, "dp").await;
    let config = json!({
        "services": [{"name": "public", "targets": [{"url": s.upstream.url()}]}, {"name": "admin", "targets": [{"url": admin.url()}]}],
        "routes": [
            {"name": "public", "service": "public", "paths": ["/public"], "strip_path": false},
            {"name": "admin", "service": "admin", "paths": ["/admin"], "strip_path": false},
            {"name": "api-host", "service": "admin", "paths": ["/"], "hosts": ["api.example.com"], "strip_path": false}
        ]
    });
    dp.wait_for_version(put_config(&s.cp, config).await).await;
    let address = dp.proxy_url.trim_start_matches("http://").to_owned();
    let raw = |request: String| {
        let address = address.clone();
        async move {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            read_response(&mut stream).await
        }
    };
    let upstream_of = |response: &str| response.lines().find_map(|l| l.strip_prefix("x-upstream: ").map(str::to_owned));

    let encoded = raw("GET /public/%2e%2e/admin/x HTTP/1.1\r\nHost: gw\r\n\r\n".into()).await;
    assert_eq!(upstream_of(&encoded).as_deref(), Some("admin"), "%2e%2e is '..': the request is routed as /admin/x\n{encoded}");
    assert!(encoded.contains("\"path\":\"/admin/x\""), "the upstream sees the normalized path\n{encoded}");
    let letters = raw("GET /%61dmin HTTP/1.1\r\nHost: gw\r\n\r\n".into()).await;
    assert_eq!(upstream_of(&letters).as_deref(), Some("admin"), "{letters}");
    for bad in ["/public/..%2fadmin", "/public/%2e%2e%5cadmin", "/public/..;/admin", "/public/%00"] {
        let response = raw(format!("GET {bad} HTTP/1.1\r\nHost: gw\r\n\r\n")).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{bad}: {response}");
    }

    let dotted = raw("GET /x HTTP/1.1\r\nHost: API.example.com.\r\n\r\n".into()).await;
    assert_eq!(upstream_of(&dotted).as_deref(), Some("admin"), "a trailing dot and case do not change the host\n{dotted}");
    let absolute = raw("GET http://api.example.com/x HTTP/1.1\r\nHost: other.example.org\r\n\r\n".into()).await;
    assert_eq!(upstream_of(&absolute).as_deref(), Some("admin"), "the absolute-form authority wins over Host\n{absolute}");

    let h2c = raw("GET /public HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".into()).await;
    assert!(h2c.starts_with("HTTP/1.1 200"), "{h2c}");
    assert!(!h2c.contains("\"upgrade\""), "only WebSocket upgrades are passed upstream\n{h2c}");

    let spoofed = raw("GET /public HTTP/1.1\r\nHost: gw\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n".into()).await;
    assert!(!spoofed.contains("6.6.6.6"), "client-sent Forwarded and X-Real-IP do not reach the upstream\n{spoofed}");
}

#[tokio::test]
async fn silent_connections_are_closed() {
    let s = setup().await;
    let dp = data_plane(&s.cp, "dp").await;
    let mut silent = TcpStream::connect(dp.proxy_url.trim_start_matches("http://")).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buffer)).await.expect("the gateway closes a connection that sends nothing");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_open_websocket_tunnels_finish() {
    let s = setup().await;
    let mut dp = data_plane(&s.cp, "dp").await;
    let mut config = one_route(&s.upstream.url(), json!({}), json!({}));
    config["routes"].as_array_mut().unwrap().push(json!({"name": "up", "service": "users", "paths": ["/upgrade"], "strip_path": false}));
    dp.wait_for_version(put_config(&s.cp, config).await).await;
    let address = dp.proxy_url.trim_start_matches("http://").to_owned();
    let mut tunnel = TcpStream::connect(&address).await.unwrap();
    tunnel.write_all(b"GET /upgrade HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    assert!(read_response(&mut tunnel).await.starts_with("HTTP/1.1 101"));

    dp.signal_term();
    eventually("new connections to be refused while draining", DEADLINE, || async {
        TcpStream::connect(&address).await.is_err().then_some(())
    })
    .await;
    let mut echoed = [0u8; 5];
    tunnel.write_all(b"still").await.unwrap();
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"still", "an open tunnel keeps working during the drain");
    drop(tunnel);
    let status = tokio::task::spawn_blocking(move || dp.wait()).await.unwrap();
    assert!(status.success(), "{status}");
}
