//! Both planes' `/metrics` end to end: a real control plane (Postgres), a
//! real data plane and a test upstream, answered and unmatched requests, a
//! node that refuses a version. Each output must pass Prometheus's own
//! linter, `promtool check metrics` (Debian's `prometheus` package;
//! `scripts/test` installs it, `PORTICO_PROMTOOL` overrides where it is),
//! and show the labelled series `deploy/grafana` and `deploy/prometheus` read.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use portico_test_support::{ControlPlane, DataPlane, TestDb, TestNode, TestUpstream, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `promtool check metrics` on `text`; fails the test with its findings.
fn promtool_check(plane: &str, text: &str) {
    let promtool = std::env::var("PORTICO_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {promtool} ({e}): install Debian's prometheus package (scripts/test does as root) or set PORTICO_PROMTOOL")
        });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics finds fault with the {plane}'s /metrics:\n{}{}\n--- the output:\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value of `series` (name and labels as rendered) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape_control_plane(cp: &ControlPlane) -> String {
    let response = cp.admin(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn both_planes_metrics_pass_promtool_and_carry_their_labelled_series() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let upstream = TestUpstream::start("a").await;
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "dp-1", None).await;
    let config = json!({
        "services": [{"name": "users", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "users-api", "service": "users", "paths": ["/users"]}]
    });
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let version = response.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
    dp.wait_for_version(version).await;

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..3 {
        assert_eq!(client.get(format!("{}/users/7", dp.proxy_url)).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(client.get(format!("{}/nowhere", dp.proxy_url)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let mut refuser = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "refuser", "default", 0, "").await.unwrap();
    let snapshot = refuser.next_snapshot(DEADLINE).await.unwrap();
    refuser.nack(&snapshot, "refused by the test").await;

    let anonymous = client.get(format!("{}/metrics", cp.admin_url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "the control plane's metrics need a token");
    let fleet = |status: &str| format!(r#"portico_cp_data_planes{{gateway="default",status="{status}"}}"#);
    let cp_metrics = eventually("the refusal counted and the fleet seen in the control plane's metrics", DEADLINE, || async {
        let text = scrape_control_plane(&cp).await;
        (value(&text, &fleet("rejected")) == Some(1.0)).then_some(text)
    })
    .await;
    for (series, expected) in [
        (fleet("in_sync"), 1.0),
        (fleet("behind"), 0.0),
        (fleet("disconnected"), 0.0),
        (r#"portico_cp_config_version{gateway="default"}"#.to_owned(), version as f64),
        (r#"portico_cp_config_publishes_total{gateway="default"}"#.to_owned(), 1.0),
        (r#"portico_cp_config_streams{gateway="default"}"#.to_owned(), 2.0),
        (r#"portico_cp_config_nacks_total{gateway="default"}"#.to_owned(), 1.0),
        (r#"portico_cp_admin_requests_total{method="PUT",path="/api/v1/gateways/{gw}/config",status="200"}"#.to_owned(), 1.0),
        (r#"portico_cp_admin_requests_total{method="GET",path="/metrics",status="401"}"#.to_owned(), 1.0),
    ] {
        assert_eq!(value(&cp_metrics, &series), Some(expected), "{series} in:\n{cp_metrics}");
    }
    assert!(value(&cp_metrics, r#"portico_cp_config_acks_total{gateway="default"}"#).is_some_and(|acks| acks >= 1.0), "{cp_metrics}");
    assert!(
        value(&cp_metrics, r#"portico_cp_store_duration_seconds_count{operation="publish"}"#).is_some_and(|n| n >= 1.0),
        "{cp_metrics}"
    );

    let dp_metrics = client.get(format!("{}/metrics", dp.status_url)).send().await.unwrap().text().await.unwrap();
    for (series, expected) in [
        (r#"portico_requests_total{route="users-api",status="200"}"#, 3.0),
        (r#"portico_requests_total{route="",status="404"}"#, 1.0),
        (r#"portico_request_duration_seconds_count{route="users-api"}"#, 3.0),
        ("portico_config_version", version as f64),
    ] {
        assert_eq!(value(&dp_metrics, series), Some(expected), "{series} in:\n{dp_metrics}");
    }

    promtool_check("control plane", &cp_metrics);
    promtool_check("data plane", &dp_metrics);
}

#[tokio::test]
async fn requests_are_counted_by_consumer_only_when_asked() {
    let upstream = TestUpstream::start("app").await;
    let config = json!({"services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "keyed", "service": "app", "paths": ["/"], "policies": [{"type": "key-auth"}]}],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"}]});
    let series = r#"portico_consumer_requests_total{route="keyed",consumer="alice",status="200"}"#;
    for (flags, counted) in [(&["--metrics-consumers"][..], Some(1.0)), (&[][..], None)] {
        let (_db, _cp, dp) = portico_test_support::serve_config(&config, flags).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let answer = client.get(format!("{}/x", dp.proxy_url)).header("x-api-key", "alice-key-0123456789").send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(dp.metric(series).await, counted, "flags {flags:?}");
    }
}
