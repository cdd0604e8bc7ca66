//! Secrets kept out of `ps`, and logs fit for files: the real binaries
//! started with token files, a data plane presenting a wrong cluster token
//! (logged by the control plane at most once per address per minute, never
//! with the token), and no colour codes in logs that are not a terminal.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::process::{Command, Stdio};
use std::time::Duration;

use portico_test_support::process::binary;
use portico_test_support::{ControlPlane, DataPlane, TestDb, eventually};
use reqwest::{Method, StatusCode};

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const CLUSTER_TOKEN: &str = "test-cluster-token-0123456789";

/// The command line of a running process, as `ps` and other users see it.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " ")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_from_files_stay_out_of_the_command_line_and_logs_to_a_file_have_no_colours() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let (admin_file, cluster_file) = (dir.path().join("admin-token"), dir.path().join("cluster-token"));
    // As `echo` and Kubernetes Secrets write them: with a trailing newline.
    std::fs::write(&admin_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(&cluster_file, format!("{CLUSTER_TOKEN}\n")).unwrap();
    let (admin_file, cluster_file) = (admin_file.to_str().unwrap(), cluster_file.to_str().unwrap());
    let cp = ControlPlane::start_with_flags(&db.url, &["--admin-token-file", admin_file, "--cluster-token-file", cluster_file]).await;
    let reply = cp.admin(Method::GET, "/api/v1/gateways").send().await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK, "the admin token from the file authenticates");

    let dp = DataPlane::start_with_flags(&cp.grpc_url, CLUSTER_TOKEN, "from-file", &["--cluster-token-file", cluster_file]).await;
    dp.wait_for_version(1).await;
    for (process, pid) in [("portico-cp", cp.pid()), ("portico-dp", dp.pid())] {
        let seen = cmdline(pid);
        assert!(seen.contains("-token-file"), "{process}: {seen}");
        assert!(!seen.contains(ADMIN_TOKEN) && !seen.contains(CLUSTER_TOKEN), "{process} shows a secret in ps: {seen}");
    }
    for (process, logs) in [("portico-cp", cp.logs()), ("portico-dp", dp.logs())] {
        assert!(logs.contains("started"), "{process}: {logs}");
        assert!(!logs.contains("\x1b["), "{process} wrote colour codes to a file: {logs}");
    }
}

#[tokio::test]
async fn token_files_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let db = TestDb::sqlite();
    let cases: [(&str, Vec<String>, &str); 4] = [
        (
            "portico-cp",
            vec![
                "--database-url".into(),
                db.url.clone(),
                "--admin-token".into(),
                ADMIN_TOKEN.into(),
                "--cluster-token-file".into(),
                missing.display().to_string(),
            ],
            "--cluster-token-file",
        ),
        (
            "portico-cp",
            vec![
                "--database-url".into(),
                db.url.clone(),
                "--admin-token-file".into(),
                empty.display().to_string(),
                "--cluster-token".into(),
                CLUSTER_TOKEN.into(),
            ],
            "the file is empty",
        ),
        ("portico-dp", vec!["--cluster-token-file".into(), missing.display().to_string()], "No such file"),
        (
            "portico-dp",
            vec!["--cluster-token".into(), CLUSTER_TOKEN.into(), "--cluster-token-file".into(), empty.display().to_string()],
            "cannot be used with",
        ),
    ];
    for (program, args, expected) in cases {
        let output = Command::new(binary(program)).args(&args).stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{program} {args:?}");
        assert!(stderr.contains(expected), "{program} {args:?}: {stderr}");
        if !expected.contains("cannot be used") {
            assert_eq!(stderr.trim().lines().count(), 1, "{program} {args:?}: {stderr}");
            assert!(stderr.starts_with(&format!("{program}: error: ")), "{stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_cluster_token_is_logged_once_per_window_without_the_token() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let wrong = "not-the-cluster-token-0123456789";
    let dp = DataPlane::start_with_flags(&cp.grpc_url, wrong, "intruder", &[]).await;
    // The node retries with backoff (from 250 ms): wait for a few refusals.
    eventually("the data plane to be refused three times", Duration::from_secs(30), || async {
        (dp.logs().matches("config stream failed").count() >= 3).then_some(())
    })
    .await;
    let logs = cp.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("wrong or missing cluster token")).collect();
    assert_eq!(lines.len(), 1, "one line per address per minute:\n{logs}");
    let line = lines[0];
    for expected in ["peer=127.0.0.1:", "gateway=default", "node=intruder", "attempts=1"] {
        assert!(line.contains(expected), "{expected} in {line}");
    }
    assert!(!logs.contains(wrong), "the presented token is never logged:\n{logs}");
    assert_eq!(dp.version().await, None, "a node with a wrong token gets no config");
}
