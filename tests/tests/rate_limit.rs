//! Rate limiting end to end: a real control plane, three real data planes
//! sharing the real Redis (through a cuttable TCP proxy, to take it away
//! mid-test), and concurrent bursts spread over the nodes.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::{Duration, Instant};

use futures::future::join_all;
use portico_test_support::redis::redis_addr;
use portico_test_support::{ControlPlane, DataPlane, TcpProxy, TestDb, TestUpstream, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

struct Fleet {
    _db: TestDb,
    cp: ControlPlane,
    upstream: TestUpstream,
    redis: TcpProxy,
    nodes: Vec<DataPlane>,
}

/// A control plane and `nodes` data planes sharing Redis (through a proxy,
/// with a timeout long enough that a loaded test machine never falls back).
/// None is told how many nodes there are (`--expected-nodes` stays 1): they
/// count each other in Redis.
async fn fleet(nodes: usize) -> Fleet {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let redis = TcpProxy::start(redis_addr().await).await;
    let url = format!("redis://{}", redis.addr);
    let mut started = Vec::new();
    for i in 0..nodes {
        let flags = ["--redis-url", url.as_str(), "--redis-timeout-ms", "2000"];
        started.push(DataPlane::start_with_flags(&cp.grpc_url, &cp.cluster_token, &format!("dp-{i}"), &flags).await);
    }
    Fleet { _db: db, cp, upstream: TestUpstream::start("a").await, redis, nodes: started }
}

impl Fleet {
    /// Publishes one service and `routes` (name, path, policies); waits until every node serves it.
    async fn configure(&self, routes: &[(&str, Value)], extra: Value) {
        let routes: Vec<Value> = routes
            .iter()
            .map(|(name, policies)| json!({"name": name, "service": "app", "paths": [format!("/{name}")], "policies": policies}))
            .collect();
        let mut config = json!({"services": [{"name": "app", "targets": [{"url": self.upstream.url()}]}], "routes": routes});
        config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let response = self.cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
        let version = response.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
        for node in &self.nodes {
            node.wait_for_version(version).await;
        }
    }

    /// Waits until every node has counted `n` nodes sharing its Redis-backed limits.
    async fn wait_counted(&self, n: u64, deadline: Duration) {
        for node in &self.nodes {
            eventually(&format!("{} counts {n} nodes in Redis", node.status_url), deadline, || async {
                (node.metric("portico_rate_limit_fleet_nodes").await == Some(n as f64)).then_some(())
            })
            .await;
        }
    }

    /// `n` concurrent GETs of `path`, spread round robin over the nodes.
    async fn burst(&self, path: &str, n: usize, headers: &[(&str, &str)]) -> Vec<reqwest::Response> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        join_all((0..n).map(|i| {
            let mut request = client.get(format!("{}{path}", self.nodes[i % self.nodes.len()].proxy_url));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            async move { request.send().await.unwrap() }
        }))
        .await
    }
}

fn limit(algorithm: &str, limit: u64, window_s: u64, extra: Value) -> Value {
    let mut policy = json!({"type": "rate-limit", "algorithm": algorithm, "limit": limit, "window_s": window_s, "backend": "redis"});
    policy.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    policy
}

fn count(responses: &[reqwest::Response], status: StatusCode) -> usize {
    responses.iter().filter(|r| r.status() == status).count()
}

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name).and_then(|v| v.to_str().ok()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_algorithm_admits_exactly_its_limit_across_three_data_planes() {
    clear_of_window_end(600, Duration::from_secs(30)).await;
    let fleet = fleet(3).await;
    fleet
        .configure(
            &[
                ("token-bucket", json!([limit("token_bucket", 6, 600, json!({}))])),
                // One at once and five waiting (released every second).
                ("leaky-bucket", json!([limit("leaky_bucket", 6, 6, json!({"burst": 5}))])),
                ("fixed-window", json!([limit("fixed_window", 6, 600, json!({}))])),
                ("sliding-log", json!([limit("sliding_window_log", 6, 600, json!({}))])),
                ("sliding-counter", json!([limit("sliding_window_counter", 6, 600, json!({}))])),
            ],
            json!({}),
        )
        .await;
    for path in ["/token-bucket", "/leaky-bucket", "/fixed-window", "/sliding-log", "/sliding-counter"] {
        let responses = fleet.burst(path, 18, &[]).await;
        assert_eq!(count(&responses, StatusCode::OK), 6, "{path}: the fleet admits the limit, not the limit per node");
        assert_eq!(count(&responses, StatusCode::TOO_MANY_REQUESTS), 12, "{path}");
        for response in &responses {
            assert_eq!(header(response, "ratelimit-limit"), Some(6), "{path}");
            assert!(header(response, "ratelimit-remaining").is_some_and(|r| r < 6), "{path}");
            assert!(header(response, "ratelimit-reset").is_some(), "{path}");
        }
        let refused = responses.into_iter().find(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).unwrap();
        assert!(header(&refused, "retry-after").is_some_and(|s| s >= 1), "{path}");
        assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{path}");
    }
    for node in &fleet.nodes {
        assert_eq!(backend_failures(node).await, 0, "every decision came from Redis, none from the local fallback");
    }
}

/// Waits, if need be, until the fixed window of `window_s` seconds in
/// progress has at least `needed` left: fixed windows start at multiples of
/// their length since the epoch, and a test whose requests span a window's
/// end would see its count start again.
async fn clear_of_window_end(window_s: u64, needed: Duration) {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let left = Duration::from_secs(window_s) - Duration::from_secs(since_epoch.as_secs() % window_s);
    if left < needed {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
}

/// `portico_rate_limit_backend_failures_total` of a node (0 when never counted).
async fn backend_failures(node: &DataPlane) -> u64 {
    node.metric("portico_rate_limit_backend_failures_total").await.map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_is_honoured_and_the_leaky_bucket_spaces_requests() {
    let fleet = fleet(2).await;
    fleet
        .configure(
            &[
                ("once", json!([limit("token_bucket", 1, 2, json!({}))])),
                ("paced", json!([limit("leaky_bucket", 4, 1, json!({"burst": 3}))])),
            ],
            json!({}),
        )
        .await;
    assert_eq!(fleet.burst("/once", 1, &[]).await[0].status(), StatusCode::OK);
    let refused = fleet.burst("/once", 1, &[]).await.remove(0);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = header(&refused, "retry-after").unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(fleet.burst("/once", 1, &[]).await[0].status(), StatusCode::OK, "after Retry-After the request passes");

    let started = Instant::now();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let timed = join_all((0..4).map(|i| {
        let url = format!("{}/paced", fleet.nodes[i % 2].proxy_url);
        let client = client.clone();
        async move {
            let status = client.get(url).send().await.unwrap().status();
            (status, started.elapsed())
        }
    }))
    .await;
    assert!(timed.iter().all(|(status, _)| *status == StatusCode::OK), "one at once, three in the queue: {timed:?}");
    let mut finished: Vec<Duration> = timed.iter().map(|(_, at)| *at).collect();
    finished.sort();
    assert!(finished[3] - finished[0] >= Duration::from_millis(600), "released at 4/s, not at once: {finished:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_follows_each_on_backend_failure_mode_and_recovers() {
    clear_of_window_end(600, Duration::from_secs(40)).await;
    let fleet = fleet(2).await;
    let mode = |on_failure: &str| json!([limit("fixed_window", 4, 600, json!({"on_backend_failure": on_failure}))]);
    fleet.configure(&[("allow", mode("allow")), ("deny", mode("deny")), ("local", mode("local"))], json!({})).await;
    assert_eq!(count(&fleet.burst("/deny", 2, &[]).await, StatusCode::OK), 2, "Redis counts while it is there");
    fleet.wait_counted(2, DEADLINE).await;

    fleet.redis.cut();
    assert_eq!(count(&fleet.burst("/allow", 10, &[]).await, StatusCode::OK), 10, "allow: nothing is limited without Redis");
    let denied = fleet.burst("/deny", 4, &[]).await;
    assert_eq!(count(&denied, StatusCode::TOO_MANY_REQUESTS), 4, "deny: everything is refused without Redis");
    let local = fleet.burst("/local", 12, &[]).await;
    assert_eq!(count(&local, StatusCode::OK), 4, "local: each of the 2 nodes counted in Redis admits 4 / 2");
    assert!(backend_failures(&fleet.nodes[0]).await > 0, "the fallback decisions are counted");

    fleet.redis.restore();
    eventually("Redis-backed counting resumes", DEADLINE, || async {
        (fleet.burst("/deny", 1, &[]).await[0].status() == StatusCode::OK).then_some(())
    })
    .await;
    let after = fleet.burst("/deny", 6, &[]).await;
    assert_eq!(
        count(&after, StatusCode::OK),
        1,
        "the shared counter (2 before, 1 on recovery) is back: {:?}",
        after.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_fallback_follows_the_fleet_as_it_shrinks() {
    clear_of_window_end(600, Duration::from_secs(80)).await;
    let mut fleet = fleet(3).await;
    let local = json!([limit("fixed_window", 6, 600, json!({"on_backend_failure": "local"}))]);
    fleet.configure(&[("local", local)], json!({})).await;
    fleet.wait_counted(3, DEADLINE).await;

    // A node goes (scaled in): it falls out of the count once its mark expires.
    drop(fleet.nodes.pop());
    fleet.wait_counted(2, Duration::from_secs(40)).await;

    fleet.redis.cut();
    let admitted = count(&fleet.burst("/local", 12, &[]).await, StatusCode::OK);
    assert_eq!(admitted, 6, "each of the 2 remaining nodes admits 6 / 2, not 6 / 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spoofed_forwarded_for_does_not_evade_an_ip_limit() {
    let fleet = fleet(1).await;
    let by_ip = json!([{"type": "rate-limit", "algorithm": "fixed_window", "limit": 2, "window_s": 600, "key": "ip"}]);
    fleet.configure(&[("untrusted", by_ip.clone())], json!({"trusted_proxies": ["10.0.0.0/8"]})).await;
    let mut admitted = 0;
    for i in 0..6 {
        let spoof = format!("203.0.113.{i}");
        let response = fleet.burst("/untrusted", 1, &[("x-forwarded-for", &spoof), ("x-real-ip", &spoof)]).await.remove(0);
        admitted += usize::from(response.status() == StatusCode::OK);
    }
    assert_eq!(admitted, 2, "a client's own X-Forwarded-For is not believed");

    // Behind a trusted proxy (here: loopback) the forwarded address is the client.
    fleet.configure(&[("trusted", by_ip)], json!({"trusted_proxies": ["127.0.0.1"]})).await;
    let mut admitted = 0;
    for i in 0..6 {
        let client = format!("198.51.100.{}", i / 3);
        let response = fleet.burst("/trusted", 1, &[("x-forwarded-for", &client)]).await.remove(0);
        if response.status() == StatusCode::OK {
            admitted += 1;
            let echo: Value = response.json().await.unwrap();
            assert_eq!(echo["headers"]["x-real-ip"], client.as_str());
        }
    }
    assert_eq!(admitted, 4, "two clients behind the proxy, two requests each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unrelated_changes_keep_counters_and_a_changed_limit_starts_afresh() {
    let fleet = fleet(1).await;
    let local = |n: u64| json!([{"type": "rate-limit", "algorithm": "fixed_window", "limit": n, "window_s": 600}]);
    fleet.configure(&[("counted", local(2))], json!({})).await;
    assert_eq!(count(&fleet.burst("/counted", 3, &[]).await, StatusCode::OK), 2);
    fleet.configure(&[("counted", local(2)), ("other", json!([]))], json!({})).await;
    assert_eq!(fleet.burst("/counted", 1, &[]).await[0].status(), StatusCode::TOO_MANY_REQUESTS, "adding a route keeps the count");
    fleet.configure(&[("counted", local(3)), ("other", json!([]))], json!({})).await;
    assert_eq!(count(&fleet.burst("/counted", 4, &[]).await, StatusCode::OK), 3, "a new limit counts from zero");
}

#[tokio::test]
async fn a_redis_limit_on_a_node_without_redis_is_rejected_with_the_reason() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let node = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "no-redis", None).await;
    let config = json!({"services": [{"name": "app", "targets": [{"url": "http://127.0.0.1:9"}]}],
        "routes": [{"name": "r", "service": "app", "paths": ["/"],
            "policies": [{"type": "rate-limit", "algorithm": "fixed_window", "limit": 1, "window_s": 1, "backend": "redis"}]}]});
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reason = eventually("the node rejects the version", DEADLINE, || async {
        let fleet: Value = cp.admin(Method::GET, "/api/v1/gateways/default/data-planes").send().await.unwrap().json().await.unwrap();
        let node = fleet["data"].as_array()?.iter().find(|n| n["node_id"] == "no-redis")?.clone();
        (node["status"] == "rejected").then(|| node["last_rejection"].to_string())
    })
    .await;
    assert!(reason.contains("--redis-url"), "{reason}");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_count_against_an_ip_limit_and_consumers_are_counted_apart() {
    let fleet = fleet(1).await;
    let by = |key: &str| json!({"type": "rate-limit", "algorithm": "fixed_window", "limit": 3, "window_s": 600, "key": key});
    let extra = json!({
        "consumers": [{"username": "alice"}, {"username": "bob"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"},
                        {"consumer": "bob", "type": "key-auth", "key": "bob-key-0123456789ab"}],
    });
    fleet
        .configure(
            &[("guarded", json!([{"type": "key-auth"}, by("ip")])), ("per-consumer", json!([{"type": "key-auth"}, by("consumer")]))],
            extra,
        )
        .await;
    let statuses: Vec<StatusCode> =
        fleet.burst("/guarded", 5, &[("x-api-key", "guessing-0123456789")]).await.iter().map(reqwest::Response::status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 2, "key guessing is throttled: {statuses:?}");

    for (key, who) in [("alice-key-0123456789", "alice"), ("bob-key-0123456789ab", "bob")] {
        let responses = fleet.burst("/per-consumer", 4, &[("x-api-key", key)]).await;
        assert_eq!(count(&responses, StatusCode::OK), 3, "{who} has a limit of its own");
    }
}
