//! Cache purges from the admin API (and `portico cache purge`) to every
//! data plane: the real `portico-cp` with real `portico-dp` (three, one of
//! them stopped; one cut off from its control plane by a TCP proxy before
//! it applied any purge, and reconnected; one restarted while its control
//! plane was away), and stand-in nodes for what a real one cannot be made
//! to do on demand (stay silent, say a given purge cursor or none, restart
//! while a purge waits for it, talk to another replica). The data planes
//! cache a route in front of a counting origin: each purge must empty
//! exactly what it names, every `Vary` variant of a URL included, on every
//! connected node, and each node must answer it by its id.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::process::Stdio;
use std::time::Duration;

use portico_proto::v1::PurgeCursor;
use portico_proto::v1::control_message::Message;
use portico_proto::v1::purge::Target;
use portico_test_support::origin::Origin;
use portico_test_support::process::binary;
use portico_test_support::{ControlPlane, DataPlane, TcpProxy, TestDb, TestNode, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(15);

/// `POST …/cache/purge` with `body`; the status and the answer.
async fn purge(admin_url: &str, token: &str, body: &Value, timeout_ms: u64) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{admin_url}/api/v1/gateways/default/cache/purge?timeout_ms={timeout_ms}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Waits until the fleet view shows exactly `expected` as (node id, status), by node id.
async fn fleet_is(cp: &ControlPlane, expected: &[(&str, &str)]) {
    eventually(&format!("the fleet to be {expected:?}"), DEADLINE, || async {
        let fleet: Value = cp.admin(Method::GET, "/api/v1/gateways/default/data-planes").send().await.ok()?.json().await.ok()?;
        let nodes: Vec<(String, String)> = fleet["data"]
            .as_array()?
            .iter()
            .map(|n| (n["node_id"].as_str().unwrap_or_default().to_owned(), n["status"].as_str().unwrap_or_default().to_owned()))
            .collect();
        (nodes.iter().map(|(id, status)| (id.as_str(), status.as_str())).collect::<Vec<_>>() == expected).then_some(())
    })
    .await;
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn portico(cp: &ControlPlane, args: &[&str]) -> Run {
    let output = Command::new(binary("portico"))
        .args(args)
        .env("PORTICO_ADMIN_URL", &cp.admin_url)
        .env("PORTICO_ADMIN_TOKEN", &cp.admin_token)
        .env_remove("PORTICO_GATEWAY")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Run { code: output.status.code(), stdout: String::from_utf8(output.stdout).unwrap(), stderr: String::from_utf8(output.stderr).unwrap() }
}

/// Publishes one route caching everything from `origin` for ten minutes (version 2).
async fn cache_everything(cp: &ControlPlane, origin: &Origin) {
    let config = json!({
        "services": [{"name": "origin", "targets": [{"url": origin.url()}]}],
        "routes": [{"name": "all", "service": "origin", "paths": ["/"], "policies": [{"type": "cache", "ttl_s": 600}]}],
    });
    let published = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
    assert_eq!(published.status(), StatusCode::OK);
}

const STORED: &str = "Portico; fwd=uri-miss; fwd-status=200; ttl=600; stored";

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_reaches_every_connected_data_plane_and_names_the_stopped_one() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let origin = Origin::start().await;
    cache_everything(&cp, &origin).await;
    let mut planes = Vec::new();
    for node in ["dp-a", "dp-b", "dp-c"] {
        let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", node, None).await;
        dp.wait_for_version(2).await;
        planes.push(dp);
    }
    fleet_is(&cp, &[("dp-a", "in_sync"), ("dp-b", "in_sync"), ("dp-c", "in_sync")]).await;
    assert!(planes[2].terminate().success());
    fleet_is(&cp, &[("dp-a", "in_sync"), ("dp-b", "in_sync"), ("dp-c", "disconnected")]).await;

    // On each live node: two Vary variants of one URL, two URLs under /users, one beside it, two tagged items.
    let requests: [(&str, &str); 7] = [
        ("/users/7?page=2&vary=accept-language", "de"),
        ("/users/7?page=2&vary=accept-language", "fr"),
        ("/users/8?x=1", "de"),
        ("/users/8/orders", "de"),
        ("/usersx", "de"),
        ("/items/1?tag=user-7%20list", "de"),
        ("/items/2?tag=other", "de"),
    ];
    for dp in &planes[..2] {
        for (path, language) in requests {
            assert_eq!(
                cache_status(dp, path, language).await,
                STORED.replace("uri-miss", if language == "fr" { "vary-miss" } else { "uri-miss" })
            );
        }
    }
    let mut last = 0;
    // Each purge, how many it removes on each node, and the requests that then miss (and store again).
    let purges = [
        (json!({"url": "/users/7?page=2&vary=accept-language"}), 2, &requests[..2]),
        (json!({"prefix": "/users"}), 4, &requests[..4]),
        (json!({"tag": "user-7"}), 1, &requests[5..6]),
    ];
    for (body, removed, emptied) in purges {
        let (status, answer) = purge(&cp.admin_url, &cp.admin_token, &body, 10_000).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        let id = answer["id"].as_u64().unwrap();
        assert!(id > last, "purge ids grow: {id} after {last}");
        last = id;
        // Each applied_by entry is a PurgeAck that data plane sent with this purge's id.
        assert_eq!(
            answer,
            json!({
                "id": id, "purge": body, "nodes": 3, "applied": 2, "removed": 2 * removed,
                "applied_by": [{"node_id": "dp-a", "removed": removed}, {"node_id": "dp-b", "removed": removed}],
                "not_applied": [{"node_id": "dp-c", "reason": "disconnected"}], "connected_after": [],
                "timeout_ms": 10_000
            })
        );
        for dp in &planes[..2] {
            for (path, language) in emptied {
                let status = cache_status(dp, path, language).await;
                assert!(status.contains("-miss; fwd-status=200"), "{body} emptied {path} ({language}) on {}: {status}", dp.node_id);
            }
        }
    }
    for dp in &planes[..2] {
        for (path, language) in [requests[4], requests[6]] {
            assert!(cache_status(dp, path, language).await.contains("hit"), "{path} was not purged on {}", dp.node_id);
        }
    }
    for dp in &planes[..2] {
        assert_eq!(applied_purges(dp).len(), 3, "{} logs each purge it applied:\n{}", dp.node_id, dp.logs());
    }

    let text = portico(&cp, &["cache", "purge", "--url", "/users/7"]).await;
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(
        lines[0].starts_with("purge ") && lines[0].ends_with("(url /users/7): applied by 2 of 3 data planes, 0 stored responses removed")
    );
    assert!(lines[1].starts_with("  dp-c: disconnected"), "{}", text.stdout);
    let json = portico(&cp, &["cache", "purge", "--tag", "user-7", "--json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let answer: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!((answer["purge"].clone(), answer["applied"].as_u64()), (json!({"tag": "user-7"}), Some(2)), "{answer}");
    let both = portico(&cp, &["cache", "purge", "--url", "/a", "--prefix", "/b"]).await;
    assert_eq!(both.code, Some(1), "one target per purge: {}", both.stderr);
    let refused = portico(&cp, &["cache", "purge", "--url", "users/7"]).await;
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("400 Bad Request: url: "), "{}", refused.stderr);

    // A connected node that does not answer fails the command (exit 3), named with why.
    let _silent = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "silent", "default", 0, "").await.unwrap();
    fleet_is(&cp, &[("dp-a", "in_sync"), ("dp-b", "in_sync"), ("dp-c", "disconnected"), ("silent", "behind")]).await;
    let late = portico(&cp, &["cache", "purge", "--prefix", "/users", "--timeout-ms", "300"]).await;
    assert_eq!(late.code, Some(3), "{}\n{}", late.stdout, late.stderr);
    assert!(
        late.stdout.contains("applied by 2 of 4 data planes") && late.stdout.contains("  silent: no answer within 300 ms"),
        "{}",
        late.stdout
    );
    assert!(late.stderr.contains("but 1 connected data plane did not confirm it within 300 ms"), "{}", late.stderr);
}

/// The `Cache-Status` of a GET of `path` through `dp` with `Accept-Language: language`.
async fn cache_status(dp: &DataPlane, path: &str, language: &str) -> String {
    let response = reqwest::Client::new().get(format!("{}{path}", dp.proxy_url)).header("accept-language", language).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["cache-status"].to_str().unwrap().to_owned()
}

/// The ids of the purges `dp` logged as applied, in order.
fn applied_purges(dp: &DataPlane) -> Vec<u64> {
    dp.logs()
        .lines()
        .filter(|line| line.contains("cache purge applied"))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok()?["fields"]["purge"].as_u64())
        .collect()
}

/// A control plane on SQLite caching everything in front of an origin, and
/// a TCP proxy to its config stream that a test can cut and restore.
async fn behind_a_cuttable_proxy() -> (TestDb, ControlPlane, Origin, TcpProxy) {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let origin = Origin::start().await;
    cache_everything(&cp, &origin).await;
    let grpc = cp.grpc_url.trim_start_matches("http://").parse().unwrap();
    let proxy = TcpProxy::start(grpc).await;
    (db, cp, origin, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_plane_that_kept_running_applies_the_purge_it_missed_when_it_reconnects() {
    let (_db, cp, _origin, proxy) = behind_a_cuttable_proxy().await;
    let dp = DataPlane::start(&format!("http://{}", proxy.addr), &cp.cluster_token, "default", "dp", None).await;
    dp.wait_for_version(2).await;
    // The node has applied no purge when it is cut off.
    for path in ["/users/7", "/usersx"] {
        assert_eq!(cache_status(&dp, path, "de").await, STORED);
        assert!(cache_status(&dp, path, "de").await.contains("hit"), "{path} is stored");
    }

    proxy.cut();
    fleet_is(&cp, &[("dp", "disconnected")]).await;
    let (_, missed) = purge(&cp.admin_url, &cp.admin_token, &json!({"prefix": "/users"}), 10_000).await;
    assert_eq!(missed["not_applied"], json!([{"node_id": "dp", "reason": "disconnected"}]), "{missed}");
    assert!(cache_status(&dp, "/users/7", "de").await.contains("hit"), "cut off, the node still serves what it stored");
    proxy.restore();
    let expected = vec![missed["id"].as_u64().unwrap()];
    eventually("the data plane to apply the purge it missed", DEADLINE, || async { (applied_purges(&dp) == expected).then_some(()) }).await;
    fleet_is(&cp, &[("dp", "in_sync")]).await;
    assert_eq!(cache_status(&dp, "/users/7", "de").await, STORED, "the missed purge emptied it");
    assert!(cache_status(&dp, "/usersx", "de").await.contains("hit"), "reconnecting keeps what no purge named");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_plane_started_while_its_control_plane_was_away_drops_what_it_stored_before_connecting() {
    let (_db, cp, _origin, proxy) = behind_a_cuttable_proxy().await;
    let control_plane = format!("http://{}", proxy.addr);
    let config_cache = tempfile::tempdir().unwrap();
    let mut first = DataPlane::start(&control_plane, &cp.cluster_token, "default", "dp", Some(config_cache.path())).await;
    first.wait_for_version(2).await;
    assert!(first.terminate().success());

    // Restarted while the control plane is unreachable, the node serves its cached config and caches.
    proxy.cut();
    let dp = DataPlane::start(&control_plane, &cp.cluster_token, "default", "dp", Some(config_cache.path())).await;
    dp.wait_for_version(2).await;
    assert_eq!(cache_status(&dp, "/users/7", "de").await, STORED);
    let (_, purged) = purge(&cp.admin_url, &cp.admin_token, &json!({"url": "/users/7"}), 0).await;
    assert_eq!(purged["not_applied"], json!([{"node_id": "dp", "reason": "disconnected"}]), "{purged}");

    // Connecting with a new cache, it is started past that purge and never sent it, so it drops what it stored before.
    proxy.restore();
    eventually("what the data plane stored before connecting to be gone", DEADLINE, || async {
        (cache_status(&dp, "/users/7", "de").await == STORED).then_some(())
    })
    .await;
    assert!(applied_purges(&dp).is_empty(), "the purge was not sent:\n{}", dp.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_connects_after_a_purge_is_reported_apart_and_not_waited_for() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let mut rolling = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "rolling", "default", 0, "").await.unwrap();
    fleet_is(&cp, &[("rolling", "behind")]).await;

    // The node restarts (a rolling restart) while a purge waits for it: it never answers the purge.
    let cli = portico(&cp, &["cache", "purge", "--url", "/users/7", "--timeout-ms", "20000"]);
    let restart = async {
        let purge = rolling.next_purge(DEADLINE).await.expect("the purge reaches the node");
        drop(std::mem::replace(
            &mut rolling,
            TestNode::connect(&cp.grpc_url, &cp.cluster_token, "rolling", "default", 0, "").await.unwrap(),
        ));
        let first = rolling.next_message(DEADLINE).await;
        assert_eq!(first, Some(Message::PurgeCursor(PurgeCursor { id: purge.id })), "a new cache starts past the purge");
        std::time::Instant::now()
    };
    let (run, restarted) = tokio::join!(cli, restart);
    assert!(restarted.elapsed() < Duration::from_secs(10), "the answer did not wait for the timeout");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].ends_with("(url /users/7): applied by 0 of 1 data plane, 0 stored responses removed"), "{}", run.stdout);
    assert_eq!(lines[1], "  rolling: connected after the purge (its cache holds nothing older; nothing to apply)");
    assert!(rolling.next_purge(Duration::from_millis(300)).await.is_none(), "it is never sent the purge");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_resumes_after_its_purge_cursor_and_a_new_cache_is_given_one_first_on_any_replica() {
    let db = TestDb::postgres().await;
    let a = ControlPlane::start(&db.url).await;
    let b = ControlPlane::start_with(&db.url, &a.admin_token, &a.cluster_token).await;
    let (_, first) = purge(&a.admin_url, &a.admin_token, &json!({"url": "/one"}), 0).await;
    let (_, second) = purge(&a.admin_url, &a.admin_token, &json!({"prefix": "/two"}), 0).await;
    let (first, second) = (first["id"].as_u64().unwrap(), second["id"].as_u64().unwrap());

    // Replica B holds the streams; replica A takes the purges.
    let connect = |node: &'static str, purge_id: Option<u64>| {
        TestNode::connect_after_purge(&b.grpc_url, &b.cluster_token, node, "default", 0, "", purge_id)
    };
    let mut resumed = connect("resumed", Some(first)).await.unwrap();
    let missed = resumed.next_purge(DEADLINE).await.expect("the purge it missed while disconnected");
    assert_eq!((missed.id, missed.target), (second, Some(Target::Prefix("/two".into()))));
    // A cursor of 0 is a cursor: every purge after it.
    let mut zero = connect("zero", Some(0)).await.unwrap();
    for (id, target) in [(first, Target::Url("/one".into())), (second, Target::Prefix("/two".into()))] {
        let next = zero.next_purge(DEADLINE).await.expect("every purge after 0");
        assert_eq!((next.id, next.target), (id, Some(target)));
    }
    // A new cache (no cursor), or a purge id this store never issued (the
    // database was replaced), is given a cursor before anything else.
    let mut fresh = connect("fresh", None).await.unwrap();
    let mut foreign = connect("foreign", Some(second + 1_000_000)).await.unwrap();
    for node in [&mut fresh, &mut foreign] {
        let message = node.next_message(DEADLINE).await;
        assert_eq!(message, Some(Message::PurgeCursor(PurgeCursor { id: second })), "{} starts past the purges so far", node.node_id);
    }
    fleet_is(&a, &[("foreign", "behind"), ("fresh", "behind"), ("resumed", "behind"), ("zero", "behind")]).await;

    let (admin_url, token) = (a.admin_url.clone(), a.admin_token.clone());
    let answer = tokio::spawn(async move { purge(&admin_url, &token, &json!({"tag": "t"}), 10_000).await });
    for (node, removed) in [(&mut resumed, 1), (&mut zero, 2), (&mut fresh, 3), (&mut foreign, 4)] {
        let next = node.next_purge(DEADLINE).await.unwrap_or_else(|| panic!("{} gets the new purge", node.node_id));
        assert!(next.id > second, "{} is sent nothing older: {next:?}", node.node_id);
        assert_eq!(next.target, Some(Target::Tag("t".into())));
        node.ack_purge(&next, removed).await;
    }
    let (status, answer) = answer.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["applied"].as_u64(), answer["removed"].as_u64()), (Some(4), Some(10)), "{answer}");
    assert_eq!((&answer["not_applied"], &answer["connected_after"]), (&json!([]), &json!([])), "{answer}");
    assert!(resumed.next_purge(Duration::from_millis(300)).await.is_none(), "each purge is sent once");
}
