//! Load balancing end to end: a real control plane and data plane in front
//! of two test upstreams that say who answered.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::collections::{HashMap, HashSet};

use portico_test_support::{ControlPlane, DataPlane, TestDb, TestUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn serve(service: Value) -> (TestDb, ControlPlane, DataPlane) {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let config = json!({"services": [service], "routes": [{"name": "r", "service": "app", "paths": ["/"]}]});
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    let version = response.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "dp", None).await;
    dp.wait_for_version(version).await;
    (db, cp, dp)
}

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
    let (_db, _cp, dp) = serve(service).await;
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
        let (_db, _cp, dp) = serve(service).await;
        let mut counts = HashMap::new();
        for _ in 0..200 {
            *counts.entry(served_by(&dp, &[]).await).or_insert(0) += 1;
        }
        // Sequential requests: never more than one in flight, so least_requests follows the weights too.
        let share_a = f64::from(counts["a"]) / 200.0;
        assert!((0.6..=0.9).contains(&share_a), "{balancing}: {counts:?}");
    }
}
