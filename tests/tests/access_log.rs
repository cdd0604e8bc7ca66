//! Access logs end to end: a real data plane with `--access-log`, lines
//! read back from its file and checked field by field; the `access-log`
//! policy's modes, sampling and fields; `SIGHUP` after a rename; and a
//! writer that cannot keep up dropping lines, counted, without holding up
//! requests.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use portico_test_support::origin::Origin;
use portico_test_support::{eventually, refusing_url, serve_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends GET `path` with request id `id` (and `headers`); the status.
async fn get(proxy: &str, path: &str, id: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = client().get(format!("{proxy}{path}")).header("x-request-id", id);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    response.bytes().await.unwrap();
    status
}

/// The lines of the log at `path`, by request id.
fn lines(path: &Path) -> HashMap<String, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .map(|line| (line["request_id"].as_str().unwrap_or_default().to_owned(), line))
        .collect()
}

/// Waits until the log at `path` has a line for each of `ids`.
async fn lines_for(path: &Path, ids: &[&str]) -> HashMap<String, Value> {
    eventually(&format!("lines for {ids:?} in {}", path.display()), Duration::from_secs(10), || async {
        let lines = lines(path);
        ids.iter().all(|id| lines.contains_key(*id)).then_some(lines)
    })
    .await
}

fn config(origin: &Origin, dead: &str) -> Value {
    json!({
        "services": [
            {"name": "origin", "targets": [{"url": origin.url()}]},
            {"name": "dead", "targets": [{"url": dead}], "retries": {"attempts": 2, "on": ["connect-failure"]}},
        ],
        "routes": [
            {"name": "plain", "service": "origin", "paths": ["/plain"], "strip_path": false},
            {"name": "keyed", "service": "origin", "paths": ["/keyed"], "strip_path": false, "policies": [{"type": "key-auth"}]},
            {"name": "limited", "service": "origin", "paths": ["/limited"], "strip_path": false,
             "policies": [{"type": "rate-limit", "algorithm": "fixed_window", "limit": 1, "window_s": 60}]},
            {"name": "down", "service": "dead", "paths": ["/down"]},
            {"name": "cached", "service": "origin", "paths": ["/cached"], "strip_path": false, "policies": [{"type": "cache"}]},
        ],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"}],
    })
}

#[tokio::test]
async fn lines_for_a_200_a_401_a_429_a_502_and_a_cache_hit_have_every_field() {
    let origin = Origin::start().await;
    let dead = refusing_url();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_db, _cp, dp) = serve_config(&config(&origin, &dead), &["--access-log", log.to_str().unwrap()]).await;
    let proxy = &dp.proxy_url;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(get(proxy, "/plain/a?secret=1", "ok-1", &[("traceparent", traceparent)]).await, StatusCode::OK);
    assert_eq!(get(proxy, "/keyed", "keyed-1", &[("x-api-key", "alice-key-0123456789")]).await, StatusCode::OK);
    assert_eq!(get(proxy, "/keyed", "unauth-1", &[]).await, StatusCode::UNAUTHORIZED);
    assert_eq!(get(proxy, "/limited", "limit-1", &[]).await, StatusCode::OK);
    assert_eq!(get(proxy, "/limited", "limit-2", &[]).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(proxy, "/down", "down-1", &[]).await, StatusCode::BAD_GATEWAY);
    assert_eq!(get(proxy, "/cached?cc=max-age%3D60", "miss-1", &[]).await, StatusCode::OK);
    assert_eq!(get(proxy, "/cached?cc=max-age%3D60", "hit-1", &[]).await, StatusCode::OK);
    let posted = client().post(format!("{proxy}/plain")).header("x-request-id", "post-1").body("hello world").send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let ids = ["ok-1", "post-1", "keyed-1", "unauth-1", "limit-1", "limit-2", "down-1", "miss-1", "hit-1"];
    let lines = lines_for(&log, &ids).await;

    let ok = &lines["ok-1"];
    let every = [
        "time",
        "request_id",
        "trace_id",
        "gateway",
        "route",
        "service",
        "target",
        "consumer",
        "method",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "retries",
        "cache",
        "rate_limit",
        "client",
        "tls_version",
        "sni",
        "completed",
    ];
    assert_eq!(ok.as_object().unwrap().len(), every.len(), "every field: {ok}");
    let text = std::fs::read_to_string(&log).unwrap();
    let raw = text.lines().find(|line| line.contains(r#""request_id":"ok-1""#)).unwrap();
    let places: Vec<usize> = every.iter().map(|key| raw.find(&format!(r#""{key}":"#)).unwrap()).collect();
    assert!(places.is_sorted(), "every field, in order: {raw}");
    let time = ok["time"].as_str().unwrap();
    assert!(
        time.len() == "2026-12-07T12:00:00.000000Z".len() && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "RFC 3339, UTC: {time}"
    );
    assert_eq!(ok["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok["gateway"], "default");
    assert_eq!(ok["route"], "plain");
    assert_eq!(ok["service"], "origin");
    assert_eq!(ok["target"], origin.url());
    assert_eq!(ok["consumer"], Value::Null);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/plain/a", "the path without its query (which may hold secrets)");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["bytes_in"], 0, "a GET without a body");
    assert!(ok["bytes_out"].as_u64().unwrap() > 10, "{ok}");
    let (total, upstream) = (ok["duration_ms"].as_f64().unwrap(), ok["upstream_ms"].as_f64().unwrap());
    assert!(total > 0.0 && upstream > 0.0 && upstream <= total, "{ok}");
    assert_eq!(ok["retries"], 0);
    assert_eq!(ok["cache"], Value::Null);
    assert_eq!(ok["rate_limit"], Value::Null);
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["tls_version"], Value::Null);
    assert_eq!(ok["sni"], Value::Null);
    assert_eq!(ok["completed"], true);

    assert_eq!(lines["keyed-1"]["consumer"], "alice");
    assert_eq!(lines["post-1"]["bytes_in"], 11);
    assert_eq!(lines["post-1"]["method"], "POST");
    let unauth = &lines["unauth-1"];
    assert_eq!((unauth["status"].as_u64(), unauth["route"].as_str()), (Some(401), Some("keyed")));
    assert_eq!((unauth["target"].clone(), unauth["upstream_ms"].clone()), (Value::Null, Value::Null), "never sent upstream");
    assert!(unauth["bytes_out"].as_u64().unwrap() > 0, "the JSON error body: {unauth}");

    assert_eq!(lines["limit-1"]["rate_limit"], "allowed");
    let refused = &lines["limit-2"];
    assert_eq!((refused["status"].as_u64(), refused["rate_limit"].as_str()), (Some(429), Some("refused")));

    let down = &lines["down-1"];
    assert_eq!(down["status"], 502);
    assert_eq!(down["target"], dead, "the target the last try went to");
    assert_eq!(down["retries"], 1, "two tries: one retry");
    assert_eq!(down["upstream_ms"], Value::Null, "no target answered");

    assert!(lines["miss-1"]["cache"].as_str().unwrap().contains("fwd=uri-miss"), "{}", lines["miss-1"]);
    let hit = &lines["hit-1"];
    assert!(hit["cache"].as_str().unwrap().starts_with("Portico; hit"), "{hit}");
    assert_eq!((hit["target"].clone(), hit["upstream_ms"].clone()), (Value::Null, Value::Null), "answered from the cache");
    assert_eq!(origin.requests(), 5, "the hit never reached the origin");
}

#[tokio::test]
async fn head_http2_and_a_client_that_leaves_early_get_their_lines() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = json!({"services": [{"name": "origin", "targets": [{"url": origin.url()}]}],
        "routes": [{"name": "r", "service": "origin", "paths": ["/"]}]});
    let (_db, _cp, dp) = serve_config(&config, &["--access-log", log.to_str().unwrap()]).await;
    let head = client().head(format!("{}/a", dp.proxy_url)).header("x-request-id", "head-1").send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let answer = h2.get(format!("{}/a", dp.proxy_url)).header("x-request-id", "h2-1").send().await.unwrap();
    assert_eq!((answer.status(), answer.version()), (StatusCode::OK, reqwest::Version::HTTP_2));
    answer.bytes().await.unwrap();
    let impatient = client()
        .get(format!("{}/slow?delay=1500", dp.proxy_url))
        .header("x-request-id", "gone-1")
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(impatient.is_err(), "the client gave up first");
    let lines = lines_for(&log, &["head-1", "h2-1", "gone-1"]).await;
    assert_eq!(
        (lines["head-1"]["method"].as_str(), lines["head-1"]["completed"].as_bool()),
        (Some("HEAD"), Some(true)),
        "a HEAD answer has no body to send"
    );
    assert_eq!(lines["h2-1"]["protocol"], "HTTP/2");
    let gone = &lines["gone-1"];
    assert_eq!((gone["status"].as_u64(), gone["completed"].as_bool()), (Some(499), Some(false)), "{gone}");
    assert!(gone["duration_ms"].as_f64().unwrap() >= 250.0, "{gone}");
}

#[tokio::test]
async fn the_policy_picks_requests_and_fields_per_gateway_and_route() {
    let origin = Origin::start().await;
    let config = json!({
        "services": [{"name": "origin", "targets": [{"url": origin.url()}]}],
        "routes": [
            {"name": "quiet", "service": "origin", "paths": ["/quiet"], "strip_path": false},
            {"name": "chosen", "service": "origin", "paths": ["/chosen"], "strip_path": false,
             "policies": [{"type": "access-log", "fields": ["request_id", "status", "route"]}]},
            {"name": "never", "service": "origin", "paths": ["/never"], "strip_path": false,
             "policies": [{"type": "access-log", "mode": "off"}]},
            {"name": "sampled", "service": "origin", "paths": ["/sampled"], "strip_path": false,
             "policies": [{"type": "access-log", "sample": 0}]},
        ],
        // The gateway's policy: errors only, for routes without their own.
        "policies": [{"type": "access-log", "mode": "errors"}],
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_db, _cp, dp) = serve_config(&config, &["--access-log", log.to_str().unwrap()]).await;
    let proxy = &dp.proxy_url;
    assert_eq!(get(proxy, "/quiet", "quiet-200", &[]).await, StatusCode::OK);
    assert_eq!(get(proxy, "/quiet?status=503", "quiet-503", &[]).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(proxy, "/nowhere", "unmatched-404", &[]).await, StatusCode::NOT_FOUND);
    assert_eq!(get(proxy, "/chosen", "chosen-200", &[]).await, StatusCode::OK);
    assert_eq!(get(proxy, "/never?status=500", "never-500", &[]).await, StatusCode::INTERNAL_SERVER_ERROR);
    for i in 0..20 {
        assert_eq!(get(proxy, "/sampled", &format!("sampled-{i}"), &[]).await, StatusCode::OK);
    }
    assert_eq!(get(proxy, "/sampled?status=404", "sampled-404", &[]).await, StatusCode::NOT_FOUND);
    // The last request's line is there: the writer keeps order, so every earlier one is too.
    let lines = lines_for(&log, &["sampled-404"]).await;
    let mut logged: Vec<&str> = lines.keys().map(String::as_str).collect();
    logged.sort_unstable();
    assert_eq!(logged, ["chosen-200", "quiet-503", "sampled-404", "unmatched-404"], "{lines:?}");
    assert_eq!(lines["chosen-200"], json!({"request_id": "chosen-200", "status": 200, "route": "chosen"}));
    assert_eq!(lines["unmatched-404"]["route"], Value::Null, "no route: the gateway's policy decides");
}

#[tokio::test]
async fn sighup_reopens_the_file_after_log_rotation_renamed_it() {
    let origin = Origin::start().await;
    let config = json!({"services": [{"name": "origin", "targets": [{"url": origin.url()}]}],
        "routes": [{"name": "r", "service": "origin", "paths": ["/"]}]});
    let dir = tempfile::tempdir().unwrap();
    let (log, rotated) = (dir.path().join("access.log"), dir.path().join("access.log.1"));
    let (_db, _cp, dp) = serve_config(&config, &["--access-log", log.to_str().unwrap()]).await;
    assert_eq!(get(&dp.proxy_url, "/", "before", &[]).await, StatusCode::OK);
    lines_for(&log, &["before"]).await;
    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(get(&dp.proxy_url, "/", "renamed", &[]).await, StatusCode::OK);
    lines_for(&rotated, &["renamed"]).await; // still the open file: written under its new name
    assert!(!log.exists(), "nothing reopened before the signal");
    let hangup = std::process::Command::new("kill").args(["-HUP", &dp.pid().to_string()]).status().unwrap();
    assert!(hangup.success());
    // The signal is taken in a moment: until then a line may still go to the old file.
    let mut reopened = false;
    for n in 0..50 {
        let id = format!("after-{n}");
        assert_eq!(get(&dp.proxy_url, "/", &id, &[]).await, StatusCode::OK);
        reopened = eventually(&format!("the line of {id} in either file"), Duration::from_secs(10), || async {
            if lines(&log).contains_key(&id) { Some(true) } else { lines(&rotated).contains_key(&id).then_some(false) }
        })
        .await;
        if reopened {
            break;
        }
    }
    assert!(reopened, "50 requests after SIGHUP all went to the renamed file");
    let old = lines(&rotated);
    assert!(old.contains_key("before") && old.contains_key("renamed"), "the rotated file keeps its lines");
    assert!(dp.logs().contains("reopening the access log"), "{}", dp.logs());
    assert!(
        std::process::Command::new("kill").args(["-0", &dp.pid().to_string()]).status().unwrap().success(),
        "SIGHUP did not stop the node"
    );
}

/// A FIFO at `path` and its reader, who never reads: once the pipe's
/// buffer is full, every write to it blocks. The reader is opened once the
/// node opens the FIFO for writing (each open waits for the other).
fn stuck_pipe(path: &Path) -> std::thread::JoinHandle<std::fs::File> {
    let made = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo");
    let path = path.to_owned();
    std::thread::spawn(move || std::fs::File::open(path).unwrap())
}

#[tokio::test]
async fn a_writer_that_cannot_keep_up_drops_lines_counted_and_requests_go_on() {
    let origin = Origin::start().await;
    let config = json!({"services": [{"name": "origin", "targets": [{"url": origin.url()}]}],
        "routes": [{"name": "r", "service": "origin", "paths": ["/"]}]});
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let reader = stuck_pipe(&fifo);
    let (_db, _cp, mut dp) = serve_config(&config, &["--access-log", fifo.to_str().unwrap(), "--access-log-buffer", "16"]).await;
    let _reader = reader.join().unwrap();
    // Lines of some 600 bytes: the pipe's 64 KiB hold about a hundred.
    let requests = 600;
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        for i in 0..requests {
            assert_eq!(get(&dp.proxy_url, "/", &format!("r-{i}"), &[]).await, StatusCode::OK);
        }
    })
    .await;
    assert!(answered.is_ok(), "requests were held up by a writer that cannot write");
    let dropped = eventually("dropped lines counted", Duration::from_secs(10), || async {
        dp.metric(r#"portico_access_log_dropped_total{reason="queue_full"}"#).await.filter(|n| *n > 0.0)
    })
    .await;
    assert!(dropped < f64::from(requests), "the lines that fit the pipe and the queue were not dropped: {dropped}");
    // Shutdown waits a bounded time for the stuck writer, then exits.
    dp.signal_term();
    let exited = tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(move || dp.wait())).await;
    assert!(exited.is_ok_and(|status| status.unwrap().success()), "the node did not exit within 30 s of SIGTERM");
}
