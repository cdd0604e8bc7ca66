//! Aggregation end to end against the real binaries: one client call fanned
//! out to several upstreams and merged into one JSON answer.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use portico_test_support::origin::Origin;
use portico_test_support::serve_config;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn calls_run_and_merge_in_call_order() {
    let (users, orders) = (Origin::start().await, Origin::start().await);
    let config = json!({
        "services": [{"name": "users", "targets": [{"url": users.url()}]}, {"name": "orders", "targets": [{"url": orders.url()}]}],
        "routes": [{"name": "dashboard", "paths": ["/me/{id}"], "aggregate": {"timeout_ms": 2000, "calls": [
            {"name": "profile", "service": "users", "path": "/users/{path.id}?delay=50"},
            {"name": "orders", "service": "orders", "path": "/orders?user={path.id}"},
            {"name": "again", "service": "orders", "path": "/again/{profile.path}", "required": false}
        ]}}]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = client().get(format!("{}/me/7", dp.proxy_url)).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["portico-aggregate"], "complete");
    let value: Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = body.match_indices("\":{").map(|(at, _)| &body[body[..at].rfind('"').unwrap() + 1..at]).collect();
    eprintln!("{body}\n{keys:?}");
    assert_eq!(value["profile"]["path"], "/users/7");
    assert_eq!(value["orders"]["query"], "user=7");
    assert_eq!(value["again"]["path"], "/again/%2Fusers%2F7");
}
