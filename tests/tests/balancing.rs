//! Load balancing end to end: a real control plane and data plane in front
//! of two test upstreams that say who answered.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::collections::{HashMap, HashSet};

use portico_test_support::{DataPlane, TestUpstream, serve_service};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Which upstream answered a GET with `headers`.
async fn served_by(dp: &DataPlane, headers: &[(&str, &str)]) -> String {
    let mut request = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}/who", dp.proxy_url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["x-upstream"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn consistent_hashing_keeps_each_client_on_one_target() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let service = json!({"name": "app", "load_balancing": "consistent_hash", "hash_on": "header:x-user",
        "targets": [{"url": a.url()}, {"url": b.url()}]});
    let (_db, _cp, dp) = serve_service(service).await;
    let mut owner = HashMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let user = format!("user-{user}");
            let target = served_by(&dp, &[("x-user", &user)]).await;
            assert_eq!(owner.entry(user.clone()).or_insert_with(|| target.clone()), &target, "{user} moved in round {round}");
        }
    }
    let used: HashSet<&String> = owner.values().collect();
    assert_eq!(used.len(), 2, "users spread over both targets: {owner:?}");
}

#[tokio::test]
async fn least_requests_and_round_robin_spread_by_weight() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    for balancing in ["round_robin", "least_requests"] {
        let service = json!({"name": "app", "load_balancing": balancing,
            "targets": [{"url": a.url(), "weight": 300}, {"url": b.url(), "weight": 100}]});
        let (_db, _cp, dp) = serve_service(service).await;
        let mut counts = HashMap::new();
        for _ in 0..200 {
            *counts.entry(served_by(&dp, &[]).await).or_insert(0) += 1;
        }
        // Sequential requests: never more than one in flight, so least_requests follows the weights too.
        let share_a = f64::from(counts["a"]) / 200.0;
        assert!((0.6..=0.9).contains(&share_a), "{balancing}: {counts:?}");
    }
}

/// The status, and who answered (`x-upstream`), of a GET.
async fn outcome(dp: &DataPlane) -> (StatusCode, Option<String>) {
    let response = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}/who", dp.proxy_url)).send().await.unwrap();
    (response.status(), response.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_owned()))
}

#[tokio::test]
async fn active_checks_eject_a_killed_target_and_readmit_it_when_it_recovers() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let b_port = b.addr.port();
    let health =
        json!({"active": {"path": "/health", "interval_ms": 200, "timeout_ms": 150, "healthy_threshold": 2, "unhealthy_threshold": 2}});
    let service = json!({"name": "app", "health_check": health, "targets": [{"url": a.url()}, {"url": b.url()}]});
    let (_db, _cp, dp) = serve_service(service).await;
    assert_eq!(outcome(&dp).await.0, StatusCode::OK);

    b.stop();
    let gauge = format!("portico_upstream_target_healthy{{service=\"app\",target=\"http://127.0.0.1:{b_port}\"}}");
    portico_test_support::eventually("the active checks take the killed target out", std::time::Duration::from_secs(10), || async {
        (dp.metric(&gauge).await == Some(0.0)).then_some(())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(outcome(&dp).await, (StatusCode::OK, Some("a".to_owned())));
    }

    let _b_again = TestUpstream::start_on("b", b_port).await;
    portico_test_support::eventually("the recovered target takes traffic again", std::time::Duration::from_secs(10), || async {
        let mut seen_b = false;
        for _ in 0..10 {
            seen_b |= outcome(&dp).await.1.as_deref() == Some("b");
        }
        seen_b.then_some(())
    })
    .await;
}

#[tokio::test]
async fn passive_checks_eject_failing_targets_and_all_down_answers_503_at_once() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let health = json!({"passive": {"consecutive_failures": 3, "base_ejection_ms": 60000}});
    // Retries off, so that each failure shows.
    let service =
        json!({"name": "app", "health_check": health, "retries": {"attempts": 0}, "targets": [{"url": a.url()}, {"url": b.url()}]});
    let (_db, _cp, dp) = serve_service(service).await;

    b.stop();
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(outcome(&dp).await);
    }
    let failures = seen.iter().filter(|(status, _)| *status == StatusCode::BAD_GATEWAY).count();
    assert_eq!(failures, 3, "three failures in a row eject the dead target: {seen:?}");
    for _ in 0..10 {
        assert_eq!(outcome(&dp).await, (StatusCode::OK, Some("a".to_owned())));
    }

    a.stop();
    for _ in 0..3 {
        assert_eq!(outcome(&dp).await.0, StatusCode::BAD_GATEWAY);
    }
    let started = std::time::Instant::now();
    let response = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}/who", dp.proxy_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "answered without trying a target");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "no_healthy_upstream");
}

#[tokio::test]
async fn a_failing_target_opens_its_circuit_and_the_gateway_fails_fast_until_a_probe_succeeds() {
    let upstream = TestUpstream::start("a").await;
    let breaker = json!({"failure_rate_percent": 50, "min_requests": 4, "window_ms": 10000, "open_ms": 1000, "half_open_probes": 1});
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "circuit_breaker": breaker, "targets": [{"url": upstream.url()}]})).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &'static str| {
        let (client, url) = (client.clone(), format!("{}{path}", dp.proxy_url));
        async move { client.get(url).send().await.unwrap() }
    };
    for _ in 0..4 {
        assert_eq!(get("/status/500").await.status(), StatusCode::INTERNAL_SERVER_ERROR, "the upstream's own answer passes");
    }
    let reached = upstream.requests();
    let open = get("/fine").await;
    assert_eq!(open.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(open.headers().get("retry-after").is_some());
    assert_eq!(open.json::<Value>().await.unwrap()["error"]["code"], "circuit_open");
    assert_eq!(upstream.requests(), reached, "an open circuit sends nothing upstream");

    // Open for open_ms (1 s), then half-open: the probe goes through.
    portico_test_support::eventually("the half-open probe goes through", std::time::Duration::from_secs(10), || async {
        (get("/fine").await.status() == StatusCode::OK).then_some(())
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get("/fine").await.status(), StatusCode::OK, "closed again");
    }
}

#[tokio::test]
async fn by_default_gets_are_retried_on_a_connect_failure_and_posts_never_repeated() {
    let alive = TestUpstream::start("a").await;
    let dead = portico_test_support::refusing_url();
    // No `retries`: the defaults (two tries on a connect failure). One
    // service for GETs, one for POSTs, so each meets the dead target fresh.
    let targets = json!([{"url": alive.url()}, {"url": dead}]);
    let config = json!({
        "services": [{"name": "gets", "targets": targets}, {"name": "posts", "targets": targets}, {"name": "puts", "targets": targets}],
        "routes": [
            {"name": "g", "service": "gets", "paths": ["/g"]},
            {"name": "p", "service": "posts", "paths": ["/p"]},
            {"name": "u", "service": "puts", "paths": ["/u"]},
        ],
    });
    let (_db, _cp, dp) = portico_test_support::serve_config(&config, &[]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..10 {
        let response = client.get(format!("{}/g/{i}", dp.proxy_url)).header("x-probe", i.to_string()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {i}: the dead target's connect failure is retried on the other");
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["headers"]["x-probe"], i.to_string(), "GET {i} went out whole: {echo}");
        assert!(echo["headers"]["x-forwarded-for"].is_string(), "GET {i}: {echo}");
    }
    let refused = dp.metric(&format!("portico_upstream_connect_failures_total{{service=\"gets\",target=\"{dead}\"}}")).await;
    assert!(refused.is_some_and(|n| n >= 1.0), "a GET met the dead target and was answered all the same");
    let before = alive.requests();
    let mut seen = Vec::new();
    for i in 0..10 {
        let response = client.post(format!("{}/p/{i}", dp.proxy_url)).body("order").send().await.unwrap();
        seen.push(response.status());
    }
    let ok = seen.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(seen.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_GATEWAY), "{seen:?}");
    assert!(ok < 10, "a POST the dead target refused is not retried: {seen:?}");
    assert_eq!(alive.requests() - before, ok, "every POST reached an upstream at most once");
    // A body too large to keep still streams, and a connect failure hands
    // it back whole for the retry.
    let upload = "u".repeat(200 * 1024);
    for i in 0..4 {
        let response = client.put(format!("{}/u/{i}", dp.proxy_url)).body(upload.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "PUT {i}");
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["body_bytes"].as_u64(), Some(upload.len() as u64), "PUT {i} arrived with its whole body");
    }
    let refused = dp.metric(&format!("portico_upstream_connect_failures_total{{service=\"puts\",target=\"{dead}\"}}")).await;
    assert!(refused.is_some_and(|n| n >= 1.0), "a PUT met the dead target and was answered all the same");
}

#[tokio::test]
async fn zero_attempts_turns_retries_off() {
    let alive = TestUpstream::start("a").await;
    let dead = portico_test_support::refusing_url();
    let service = json!({"name": "app", "retries": {"attempts": 0}, "targets": [{"url": alive.url()}, {"url": dead}]});
    let (_db, _cp, dp) = serve_service(service).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(outcome(&dp).await.0);
    }
    assert!(seen.contains(&StatusCode::BAD_GATEWAY), "round robin hands the dead target a GET, and it is not retried: {seen:?}");
}

#[tokio::test]
async fn a_dead_target_of_two_costs_no_request_and_round_robin_stops_trying_it_first() {
    let alive = TestUpstream::start("a").await;
    let dead = portico_test_support::refusing_url();
    // The scenario: a quiet route, one dead target of two.
    let retries = json!({"attempts": 3, "on": ["connect-failure"]});
    let (_db, _cp, dp) = serve_service(json!({"name": "app", "retries": retries, "targets": [{"url": alive.url()}, {"url": dead}]})).await;
    for i in 0..20 {
        assert_eq!(outcome(&dp).await, (StatusCode::OK, Some("a".to_owned())), "GET {i}");
    }
    assert_eq!(dp.metric("portico_retry_budget_exhausted_total").await.unwrap_or(0.0), 0.0, "no retry was refused");
    for _ in 0..20 {
        assert_eq!(outcome(&dp).await.0, StatusCode::OK);
    }
    let refused = dp.metric(&format!("portico_upstream_connect_failures_total{{service=\"app\",target=\"{dead}\"}}")).await.unwrap();
    assert!((1.0..=4.0).contains(&refused), "the dead target was tried first {refused} times in 40 requests, not every other one");
}
