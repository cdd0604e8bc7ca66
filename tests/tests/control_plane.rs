//! `portico-cp` as a user and as data planes meet it: the real binary on a
//! fresh Postgres database (or SQLite file), driven over HTTP and gRPC.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico_test_support::process::binary;
use portico_test_support::{ControlPlane, DataPlane, TcpProxy, TestDb, TestNode, eventually, free_port};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(15);

async fn create_service(cp: &ControlPlane, name: &str, url: &str) -> reqwest::Response {
    cp.admin(Method::POST, "/api/v1/gateways/default/services")
        .json(&json!({"name": name, "targets": [{"url": url}]}))
        .send()
        .await
        .unwrap()
}

async fn fleet(cp: &ControlPlane) -> Value {
    cp.admin(Method::GET, "/api/v1/gateways/default/data-planes").send().await.unwrap().json().await.unwrap()
}

/// Waits until the fleet view shows `node` with `status`, and returns its entry.
async fn node_status(cp: &ControlPlane, node: &str, status: &str) -> Value {
    eventually(&format!("{node} to be {status}"), DEADLINE, || async {
        let fleet = fleet(cp).await;
        fleet["data"].as_array().unwrap().iter().find(|n| n["node_id"] == node && n["status"] == status).cloned()
    })
    .await
}

#[tokio::test]
async fn admin_api_over_http_on_postgres_and_sqlite() {
    for db in [TestDb::postgres().await, TestDb::sqlite()] {
        let cp = ControlPlane::start(&db.url).await;
        let created = create_service(&cp, "users", "http://127.0.0.1:8000").await;
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(created.headers()["portico-config-version"], "2");
        let route = cp
            .admin(Method::POST, "/api/v1/gateways/default/routes")
            .json(&json!({"name": "users-api", "service": "users", "paths": ["/users"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(route.headers()["portico-config-version"], "3");
        let bad = create_service(&cp, "bad", "ftp://nope").await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let body: Value = bad.json().await.unwrap();
        assert_eq!(body["error"]["field"], "targets[0].url");
        let config: Value = cp.admin(Method::GET, "/api/v1/gateways/default/config").send().await.unwrap().json().await.unwrap();
        assert_eq!(config["routes"][0]["service"], "users");
        let anonymous = reqwest::get(format!("{}/api/v1/gateways", cp.admin_url)).await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn data_plane_stream_hello_snapshot_ack_nack_reconnect() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let mut node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp-1", "default", 0, "").await.unwrap();

    let first = node.next_snapshot(DEADLINE).await.expect("a new node gets the current snapshot");
    assert_eq!((first.gateway.as_str(), first.version), ("default", 1));
    assert_eq!(portico_shared::Snapshot::decode(&first.config, &first.hash).unwrap().hash, first.hash, "the hash covers the bytes");
    node.ack(&first).await;
    let entry = node_status(&cp, "dp-1", "in_sync").await;
    assert_eq!((entry["version"].as_u64(), entry["labels"]["test"].as_str()), (Some(1), Some("true")));

    assert_eq!(create_service(&cp, "users", "http://127.0.0.1:8000").await.status(), StatusCode::CREATED);
    let second = node.next_snapshot(DEADLINE).await.expect("a published version is pushed");
    assert_eq!(second.version, 2);
    node_status(&cp, "dp-1", "behind").await;
    node.nack(&second, "cannot resolve users").await;
    let rejected = node_status(&cp, "dp-1", "rejected").await;
    assert_eq!(rejected["reason"], "cannot resolve users", "{rejected}");
    assert_eq!(
        (rejected["last_rejection"]["version"].as_u64(), rejected["last_rejection"]["reason"].as_str()),
        (Some(2), Some("cannot resolve users"))
    );
    assert_eq!(rejected["version"], 1, "a rejecting node still serves what it had");

    drop(node);
    node_status(&cp, "dp-1", "disconnected").await;

    // Reconnecting at the current version: no snapshot is resent, only heartbeats.
    let mut node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp-1", "default", 2, &second.hash).await.unwrap();
    assert!(node.next_snapshot(Duration::from_secs(1)).await.is_none(), "a node that is current gets no snapshot");
    node_status(&cp, "dp-1", "in_sync").await;

    // Reconnecting behind: it gets the current version.
    let mut behind = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp-2", "default", 1, &first.hash).await.unwrap();
    assert_eq!(behind.next_snapshot(DEADLINE).await.unwrap().version, 2);
}

#[tokio::test]
async fn streams_refuse_wrong_tokens_and_unknown_gateways() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let wrong = TestNode::connect(&cp.grpc_url, "not-the-cluster-token", "dp", "default", 0, "").await.err().unwrap();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let unknown = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp", "nope", 0, "").await.err().unwrap();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let bad_node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "", "default", 0, "").await.err().unwrap();
    assert_eq!(bad_node.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn replicas_on_one_postgres_share_publishes() {
    let db = TestDb::postgres().await;
    let a = ControlPlane::start(&db.url).await;
    let b = ControlPlane::start(&db.url).await;
    let mut node = TestNode::connect(&b.grpc_url, &b.cluster_token, "dp-b", "default", 0, "").await.unwrap();
    let first = node.next_snapshot(DEADLINE).await.unwrap();
    node.ack(&first).await;

    let started = Instant::now();
    let created = create_service(&a, "users", "http://127.0.0.1:8000").await;
    assert_eq!(created.status(), StatusCode::CREATED, "{}", created.text().await.unwrap());
    let pushed = node.next_snapshot(DEADLINE).await.expect("replica B pushes what replica A published");
    println!("publish on replica A reached a node on replica B in {:?}", started.elapsed());
    assert_eq!(pushed.version, 2);
    node.ack(&pushed).await;
    node_status(&a, "dp-b", "in_sync").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_streams_and_shuts_down_cleanly() {
    let db = TestDb::sqlite();
    let mut cp = ControlPlane::start(&db.url).await;
    let mut node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp", "default", 0, "").await.unwrap();
    node.next_snapshot(DEADLINE).await.unwrap();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || (cp.terminate(), cp.logs())).await.unwrap();
    assert!(status.0.success(), "exit status {}; log:\n{}", status.0, status.1);
    assert!(status.1.contains("shutting down"));
    assert!(!status.1.contains("drain timed out"), "open streams were closed, not waited out; log:\n{}", status.1);
    println!("shutdown with an open stream took {:?}", started.elapsed());
    let ended = node.end_status(DEADLINE).await;
    assert_eq!(ended.map(|s| s.code()), Some(tonic::Code::Unavailable), "the node is told to reconnect");
}

fn start_failure(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary("portico-cp")).args(args).stdin(Stdio::null()).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).trim().to_owned())
}

#[tokio::test]
async fn bad_starts_fail_with_one_clear_line() {
    let tokens = ["--admin-token", "admin-token-0123456789", "--cluster-token", "cluster-token-0123456789"];
    let admin = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let listen = ["--admin-listen", &admin, "--grpc-listen", &grpc];

    let (ok, stderr) = start_failure(&[&["--database-url", "postgres://postgres@127.0.0.1:1/none"], &tokens[..], &listen[..]].concat());
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("portico-cp: error: cannot open the database at postgres://postgres@127.0.0.1:1/none"), "{stderr}");

    let db = TestDb::sqlite();
    let (ok, stderr) = start_failure(&["--database-url", &db.url, "--admin-token", "admin-token-0123456789", "--admin-listen", &admin]);
    assert!(!ok);
    assert!(stderr.contains("--cluster-token"), "{stderr}");

    let (ok, stderr) = start_failure(&["--database-url", &db.url, "--cluster-token", "cluster-token-0123456789", "--admin-listen", &admin]);
    assert!(!ok);
    assert!(stderr.contains("no admin credentials"), "{stderr}");

    let (ok, stderr) = start_failure(&["--database-url", &db.url, "--admin-token", "short", "--cluster-token", "cluster-token-0123456789"]);
    assert!(!ok);
    assert!(stderr.contains("at least 16"), "{stderr}");

    let (ok, stderr) = start_failure(&["--admin-listen", "not-an-address"]);
    assert!(!ok);
    assert!(stderr.contains("--admin-listen"), "{stderr}");
}

#[tokio::test]
async fn migrate_subcommand_prepares_an_empty_database() {
    let db = TestDb::postgres().await;
    let (ok, stderr) = start_failure(&["migrate", "--database-url", &db.url]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
}

#[tokio::test]
async fn store_outage_is_a_503_and_recovers_by_itself() {
    let db = TestDb::postgres().await;
    let server = portico_test_support::db::postgres_server_addr();
    let proxy = TcpProxy::start(server).await;
    let url = db.url.replace(&server.to_string(), &proxy.addr.to_string());
    assert_ne!(url, db.url, "the database URL goes through the proxy");
    let cp = ControlPlane::start(&url).await;
    assert_eq!(create_service(&cp, "users", "http://127.0.0.1:8000").await.status(), StatusCode::CREATED);

    proxy.cut();
    let reply: Value = eventually("the admin API to report the outage", DEADLINE, || async {
        let response = cp.admin(Method::GET, "/api/v1/gateways/default/services").send().await.ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response).map(|r| async { r.json::<Value>().await.unwrap() })
    })
    .await
    .await;
    assert_eq!(reply["error"]["code"], "store_unavailable");
    let write = create_service(&cp, "orders", "http://127.0.0.1:8001").await;
    assert_eq!(write.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready = reqwest::get(format!("{}/readyz", cp.admin_url)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.restore();
    eventually("the admin API to recover", DEADLINE, || async {
        let response = cp.admin(Method::GET, "/api/v1/gateways/default/services").send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(create_service(&cp, "orders", "http://127.0.0.1:8001").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_node_with_the_current_number_but_other_content_is_resent_it() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let mut node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp-1", "default", 1, "not-the-real-hash").await.unwrap();
    let snapshot = node.next_snapshot(DEADLINE).await.expect("content differs: resent");
    assert_eq!(snapshot.version, 1);
}

#[tokio::test]
async fn a_late_disconnect_of_an_old_stream_does_not_hide_the_new_one() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let old = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp-1", "default", 0, "").await.unwrap();
    let mut new = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "dp-1", "default", 0, "").await.unwrap();
    let snapshot = new.next_snapshot(DEADLINE).await.unwrap();
    new.ack(&snapshot).await;
    node_status(&cp, "dp-1", "in_sync").await;
    drop(old);
    eventually("the old stream's end to be handled", DEADLINE, || async { cp.logs().contains("data plane disconnected").then_some(()) })
        .await;
    let fleet = fleet(&cp).await;
    assert_eq!(fleet["data"][0]["status"], "in_sync", "{fleet}");
}

#[tokio::test]
async fn deleting_a_gateway_ends_its_streams_and_a_recreated_one_starts_afresh() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let create = || async {
        let response = cp.admin(Method::POST, "/api/v1/gateways").json(&json!({"name": "mobile"})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    };
    create().await;
    let mut node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "m-1", "mobile", 0, "").await.unwrap();
    node.next_snapshot(DEADLINE).await.unwrap();
    let deleted = cp.admin(Method::DELETE, "/api/v1/gateways/mobile").send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(node.end_status(DEADLINE).await.is_none(), "the stream of a deleted gateway ends");

    create().await;
    let mut fresh = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "m-1", "mobile", 0, "").await.unwrap();
    assert_eq!(fresh.next_snapshot(DEADLINE).await.unwrap().version, 1);
    let created = cp
        .admin(Method::POST, "/api/v1/gateways/mobile/services")
        .json(&json!({"name": "apps", "targets": [{"url": "http://127.0.0.1:8000"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(fresh.next_snapshot(DEADLINE).await.unwrap().version, 2, "the recreated gateway's versions reach its nodes");
}

/// A data plane restarted without `--node-id` comes back under the same id
/// (host name and a hash of gateway and listen address), so the fleet keeps
/// one row for it; once it is stopped for good, the row can be removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_plane_restarted_without_a_node_id_keeps_one_row_which_can_be_removed_once_it_stops() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let port = free_port();
    let mut first = DataPlane::start_unnamed_on(&cp.grpc_url, &cp.cluster_token, port).await;
    let id = first.node_id.clone();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(id.starts_with(&format!("{}-", host.trim())), "the default id starts with the host name: {id}");
    node_status(&cp, &id, "in_sync").await;
    assert!(first.terminate().success());

    let mut second = DataPlane::start_unnamed_on(&cp.grpc_url, &cp.cluster_token, port).await;
    assert_eq!(second.node_id, id, "a restarted node keeps its id");
    node_status(&cp, &id, "in_sync").await;
    let rows = fleet(&cp).await;
    assert_eq!(rows["total"], 1, "one row for one node: {rows}");

    let path = format!("/api/v1/gateways/default/data-planes/{id}");
    let live = cp.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::CONFLICT, "a connected node's row stays");
    assert!(second.terminate().success());
    node_status(&cp, &id, "disconnected").await;
    assert_eq!(cp.admin(Method::DELETE, &path).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(fleet(&cp).await["total"], 0);
    assert_eq!(cp.admin(Method::DELETE, &path).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

/// The real binary records each write with the client address it saw, on both backends.
#[tokio::test]
async fn audit_log_records_the_client_address_on_postgres_and_sqlite() {
    for db in [TestDb::postgres().await, TestDb::sqlite()] {
        let cp = ControlPlane::start(&db.url).await;
        let token = cp.admin(Method::POST, "/api/v1/tokens").json(&json!({"name": "ops", "role": "admin"})).send().await.unwrap();
        assert_eq!(token.status(), StatusCode::CREATED);
        assert_eq!(create_service(&cp, "users", "http://127.0.0.1:8000").await.status(), StatusCode::CREATED);
        let log: Value = cp.admin(Method::GET, "/api/v1/audit?limit=2").send().await.unwrap().json().await.unwrap();
        let entries = log["data"].as_array().unwrap_or_else(|| panic!("{log}"));
        let summary: Vec<(&str, &str, Option<u64>)> =
            entries.iter().map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap(), e["version"].as_u64())).collect();
        assert_eq!(summary, [("service.create", "users", Some(2)), ("token.create", "ops", None)], "{log}");
        for entry in entries {
            let source = entry["source"].as_str().unwrap_or_default();
            assert!(source.starts_with("127.0.0.1:") && source.len() > "127.0.0.1:".len(), "the client's address and port: {entry}");
        }
        let filtered = cp.admin(Method::GET, "/api/v1/audit?gateway=default&action=token").send().await.unwrap();
        assert_eq!(filtered.json::<Value>().await.unwrap()["total"], 0);
        let bad = cp.admin(Method::GET, "/api/v1/audit?who=me").send().await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(bad.json::<Value>().await.unwrap()["error"]["field"], "who");
    }
}
