//! Cache purges from the admin API (and `portico cache purge`) to every
//! data plane: the real `portico-cp` with real `portico-dp` (three, one of
//! them stopped; one cut off from its control plane by a TCP proxy and
//! reconnected), and stand-in nodes for what a real one cannot be made to
//! do on demand (stay silent, resume after a given purge, talk to another
//! replica). The data planes cache a route in front of a counting origin:
//! each purge must empty exactly what it names, every `Vary` variant of a
//! URL included, on every connected node, and each node must answer it by
//! its id.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::process::{Command, Stdio};
use std::time::Duration;

use portico_proto::v1::purge::Target;
use portico_test_support::origin::Origin;
use portico_test_support::process::binary;
use portico_test_support::{ControlPlane, DataPlane, TcpProxy, TestDb, TestNode, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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

fn portico(cp: &ControlPlane, args: &[&str]) -> Run {
    let output = Command::new(binary("portico"))
        .args(args)
        .env("PORTICO_ADMIN_URL", &cp.admin_url)
        .env("PORTICO_ADMIN_TOKEN", &cp.admin_token)
        .env_remove("PORTICO_GATEWAY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run { code: output.status.code(), stdout: String::from_utf8(output.stdout).unwrap(), stderr: String::from_utf8(output.stderr).unwrap() }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_reaches_every_connected_data_plane_and_names_the_stopped_one() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let origin = Origin::start().await;
    let config = json!({
        "services": [{"name": "origin", "targets": [{"url": origin.url()}]}],
        "routes": [{"name": "all", "service": "origin", "paths": ["/"], "policies": [{"type": "cache", "ttl_s": 600}]}],
    });
    let published = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
    assert_eq!(published.status(), StatusCode::OK);
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
                "Portico; fwd=uri-miss; fwd-status=200; ttl=600; stored"
                    .replace("uri-miss", if language == "fr" { "vary-miss" } else { "uri-miss" })
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
                "not_applied": [{"node_id": "dp-c", "reason": "disconnected"}],
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

    let text = portico(&cp, &["cache", "purge", "--url", "/users/7"]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(
        lines[0].starts_with("purge ") && lines[0].ends_with("(url /users/7): applied by 2 of 3 data planes, 0 stored responses removed")
    );
    assert!(lines[1].starts_with("  dp-c: disconnected"), "{}", text.stdout);
    let json = portico(&cp, &["cache", "purge", "--tag", "user-7", "--json"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let answer: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!((answer["purge"].clone(), answer["applied"].as_u64()), (json!({"tag": "user-7"}), Some(2)), "{answer}");
    let both = portico(&cp, &["cache", "purge", "--url", "/a", "--prefix", "/b"]);
    assert_eq!(both.code, Some(1), "one target per purge: {}", both.stderr);
    let refused = portico(&cp, &["cache", "purge", "--url", "users/7"]);
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("400 Bad Request: url: "), "{}", refused.stderr);

    // A connected node that does not answer fails the command (exit 3), named with why.
    let _silent = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "silent", "default", 0, "").await.unwrap();
    fleet_is(&cp, &[("dp-a", "in_sync"), ("dp-b", "in_sync"), ("dp-c", "disconnected"), ("silent", "behind")]).await;
    let late = portico(&cp, &["cache", "purge", "--prefix", "/users", "--timeout-ms", "300"]);
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

#[tokio::test(flavor = "multi_thread")]
async fn a_data_plane_that_kept_running_applies_the_purge_it_missed_when_it_reconnects() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let grpc = cp.grpc_url.trim_start_matches("http://").parse().unwrap();
    let proxy = TcpProxy::start(grpc).await;
    let dp = DataPlane::start(&format!("http://{}", proxy.addr), &cp.cluster_token, "default", "dp", None).await;
    dp.wait_for_version(1).await;
    let (_, first) = purge(&cp.admin_url, &cp.admin_token, &json!({"url": "/a"}), 10_000).await;
    assert_eq!(first["applied"], 1, "{first}");

    proxy.cut();
    fleet_is(&cp, &[("dp", "disconnected")]).await;
    let (_, missed) = purge(&cp.admin_url, &cp.admin_token, &json!({"prefix": "/b"}), 10_000).await;
    assert_eq!(missed["not_applied"], json!([{"node_id": "dp", "reason": "disconnected"}]), "{missed}");
    proxy.restore();
    let expected = vec![first["id"].as_u64().unwrap(), missed["id"].as_u64().unwrap()];
    eventually("the data plane to apply the purge it missed, and only that one", DEADLINE, || async {
        (applied_purges(&dp) == expected).then_some(())
    })
    .await;
    fleet_is(&cp, &[("dp", "in_sync")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_gets_the_purges_it_missed_while_disconnected_and_a_new_one_only_later_ones_from_any_replica() {
    let db = TestDb::postgres().await;
    let a = ControlPlane::start(&db.url).await;
    let b = ControlPlane::start_with(&db.url, &a.admin_token, &a.cluster_token).await;
    let (_, first) = purge(&a.admin_url, &a.admin_token, &json!({"url": "/one"}), 0).await;
    let (_, second) = purge(&a.admin_url, &a.admin_token, &json!({"prefix": "/two"}), 0).await;
    let (first, second) = (first["id"].as_u64().unwrap(), second["id"].as_u64().unwrap());

    // Replica B holds the streams; replica A takes the purges.
    let connect =
        |node: &'static str, purge_id: u64| TestNode::connect_after_purge(&b.grpc_url, &b.cluster_token, node, "default", 0, "", purge_id);
    let mut resumed = connect("resumed", first).await.unwrap();
    let missed = resumed.next_purge(DEADLINE).await.expect("the purge it missed while disconnected");
    assert_eq!((missed.id, missed.target), (second, Some(Target::Prefix("/two".into()))));
    let mut fresh = connect("fresh", 0).await.unwrap();
    // A purge id this store never issued (the database was replaced): the node starts afresh.
    let mut foreign = connect("foreign", second + 1_000_000).await.unwrap();
    fleet_is(&a, &[("foreign", "behind"), ("fresh", "behind"), ("resumed", "behind")]).await;

    let (admin_url, token) = (a.admin_url.clone(), a.admin_token.clone());
    let answer = tokio::spawn(async move { purge(&admin_url, &token, &json!({"tag": "t"}), 10_000).await });
    for (node, removed) in [(&mut resumed, 1), (&mut fresh, 2), (&mut foreign, 3)] {
        let next = node.next_purge(DEADLINE).await.unwrap_or_else(|| panic!("{} gets the new purge", node.node_id));
        assert!(next.id > second, "{} is sent nothing older: {next:?}", node.node_id);
        assert_eq!(next.target, Some(Target::Tag("t".into())));
        node.ack_purge(&next, removed).await;
    }
    let (status, answer) = answer.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["applied"].as_u64(), answer["removed"].as_u64()), (Some(3), Some(6)), "{answer}");
    assert_eq!(answer["not_applied"], json!([]));
    assert!(resumed.next_purge(Duration::from_millis(300)).await.is_none(), "each purge is sent once");
}
