//! The `portico` command line against a real `portico-cp`: apply, export,
//! diff, versions, rollback and data-planes, as an operator types them.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portico_test_support::process::binary;
use portico_test_support::{ControlPlane, TestDb, TestNode};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn portico(cp: &ControlPlane, args: &[&str]) -> Run {
    let output = Command::new(binary("portico"))
        .args(args)
        .env("PORTICO_ADMIN_URL", &cp.admin_url)
        .env("PORTICO_ADMIN_TOKEN", &cp.admin_token)
        .env_remove("PORTICO_GATEWAY")
        .output()
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/default.yaml").display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_workflow_from_apply_to_rollback() {
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let file = example();

    let diff = portico(&cp, &["diff", "-f", &file]);
    assert!(diff.ok, "{}", diff.stderr);
    assert!(diff.stdout.contains("+ service demo"), "{}", diff.stdout);
    assert!(diff.stdout.contains("4 to create, 0 to update, 0 to delete, 0 unchanged"), "{}", diff.stdout);

    let applied = portico(&cp, &["apply", "-f", &file, "-m", "first example"]);
    assert!(applied.ok, "{}", applied.stderr);
    assert!(applied.stdout.contains("published version 2"), "{}", applied.stdout);
    let again = portico(&cp, &["apply", "-f", &file]);
    assert!(again.stdout.contains("no changes; version 2 stays current"), "{}", again.stdout);

    let exported = portico(&cp, &["export"]);
    assert!(exported.stdout.contains("name: demo-api"), "{}", exported.stdout);
    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("edited.yaml");
    std::fs::write(&edited, exported.stdout.replace("http://127.0.0.1:9180", "http://127.0.0.1:9181")).unwrap();
    let change = portico(&cp, &["diff", "-f", edited.to_str().unwrap()]);
    assert!(
        change.stdout.contains("~ service demo\n    /targets/0/url: \"http://127.0.0.1:9180\" → \"http://127.0.0.1:9181\""),
        "{}",
        change.stdout
    );
    assert!(portico(&cp, &["apply", "-f", edited.to_str().unwrap()]).stdout.contains("published version 3"));

    let versions = portico(&cp, &["versions"]);
    let lines: Vec<&str> = versions.stdout.lines().collect();
    assert!(lines[0].starts_with("VERSION"), "{}", versions.stdout);
    assert!(lines[1].starts_with("3 "), "{}", versions.stdout);
    assert!(lines[2].contains("first example"), "{}", versions.stdout);

    let rollback = portico(&cp, &["rollback", "2"]);
    assert!(rollback.ok, "{}", rollback.stderr);
    assert!(rollback.stdout.starts_with("version 4 now serves the content of version 2"), "{}", rollback.stdout);
    assert!(portico(&cp, &["export", "--format", "json"]).stdout.contains("http://127.0.0.1:9180"));

    let mut node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "edge-1", "default", 0, "").await.unwrap();
    let snapshot = node.next_snapshot(Duration::from_secs(10)).await.unwrap();
    node.ack(&snapshot).await;
    portico_test_support::eventually("the CLI to show the node in sync", Duration::from_secs(10), || async {
        let fleet = portico(&cp, &["data-planes"]);
        fleet.stdout.lines().any(|l| l.starts_with("edge-1") && l.contains("in_sync") && l.contains("test=true")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_one_line_each_naming_the_field() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "services:\n  - name: s\n    targets:\n      - url: ftp://x\n").unwrap();
    let run = portico(&cp, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(!run.ok);
    assert_eq!(
        run.stderr.trim(),
        "portico: error: 400 Bad Request: services[0].targets[0].url: scheme 'ftp' does not match the service's protocol 'http'"
    );
    let two = dir.path().join("two.yaml");
    std::fs::write(&two, "services:\n  - name: s\n    targets:\n      - url: ftp://x\nconsumers:\n  - username: not valid\n").unwrap();
    let run = portico(&cp, &["apply", "-f", two.to_str().unwrap()]);
    assert_eq!(
        run.stderr.trim().lines().collect::<Vec<_>>(),
        [
            "portico: error: 400 Bad Request: 2 errors:",
            "services[0].targets[0].url: scheme 'ftp' does not match the service's protocol 'http'",
            "consumers[0].username: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', '@', '+', '-'",
        ]
    );

    let missing = portico(&cp, &["rollback", "99"]);
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);

    let output = Command::new(binary("portico"))
        .args(["versions"])
        .env("PORTICO_ADMIN_URL", "http://127.0.0.1:1")
        .env("PORTICO_ADMIN_TOKEN", "x")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("portico: error: cannot reach the admin API at http://127.0.0.1:1"));
    let output = Command::new(binary("portico")).args(["versions"]).env_remove("PORTICO_ADMIN_TOKEN").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("PORTICO_ADMIN_TOKEN"));
}
