//! `portico dev`, the README's first command, as a newcomer runs it: the
//! example served through a real gateway, restarts that keep routes, API
//! keys and the admin token, a part that cannot start named with its own
//! error, and the printed line that joins a second data plane.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use portico_test_support::process::binary;
use portico_test_support::{eventually, eventually_explained, free_port};
use serde_json::{Value, json};

/// The ports of one `portico dev`.
#[derive(Clone, Copy)]
struct Ports {
    proxy: u16,
    admin: u16,
    grpc: u16,
    status: u16,
    demo: u16,
}

impl Ports {
    fn fresh() -> Self {
        Self { proxy: free_port(), admin: free_port(), grpc: free_port(), status: free_port(), demo: free_port() }
    }

    fn args(&self) -> Vec<String> {
        [
            ("--proxy-port", self.proxy),
            ("--admin-port", self.admin),
            ("--grpc-port", self.grpc),
            ("--status-port", self.status),
            ("--demo-port", self.demo),
        ]
        .iter()
        .flat_map(|(flag, port)| [flag.to_string(), port.to_string()])
        .collect()
    }

    fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy)
    }

    fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }
}

/// A process, killed if the test ends before it exited.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `portico dev`.
struct Dev {
    child: Running,
    stdout: tempfile::NamedTempFile,
    stderr: tempfile::NamedTempFile,
}

impl Dev {
    fn spawn(dir: &Path, ports: Ports, extra: &[&str]) -> Self {
        let (stdout, stderr) = (tempfile::NamedTempFile::new().unwrap(), tempfile::NamedTempFile::new().unwrap());
        let child = Command::new(binary("portico"))
            .arg("dev")
            .arg("--data-dir")
            .arg(dir)
            .args(ports.args())
            .args(extra)
            .stdout(stdout.reopen().unwrap())
            .stderr(stderr.reopen().unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self { child: Running(child), stdout, stderr }
    }

    /// What it printed once it was up (the banner ends with the join line).
    async fn banner(&mut self) -> String {
        let check = || {
            let exited = self.child.0.try_wait().unwrap();
            let printed = std::fs::read_to_string(self.stdout.path()).unwrap();
            let stderr = self.stderr();
            async move {
                assert!(exited.is_none(), "portico dev exited ({exited:?}): {printed}\n{stderr}");
                printed.contains("Join a second data plane:").then_some(printed)
            }
        };
        eventually("portico dev's banner", Duration::from_secs(60), check).await
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.0.id().to_string()]).status();
        tokio::task::block_in_place(|| self.child.0.wait().unwrap())
    }

    /// Waits for it to exit by itself, at most `within`.
    async fn exit_within(mut self, within: Duration) -> (ExitStatus, String) {
        let check = || std::future::ready(self.child.0.try_wait().unwrap());
        let status = eventually("portico dev to exit", within, check).await;
        (status, self.stderr())
    }
}

/// The word after `label` in the banner.
fn printed_after<'a>(banner: &'a str, label: &str) -> &'a str {
    let rest = &banner[banner.find(label).unwrap_or_else(|| panic!("no {label} in {banner}")) + label.len()..];
    rest.split_whitespace().next().unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn admin(method: reqwest::Method, ports: Ports, token: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = http().request(method, format!("{}/api/v1/gateways/default{path}", ports.admin_url())).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Waits until a GET through the gateway answers `expected` (routes and keys arrive with new versions).
async fn through_gateway(ports: Ports, path: &str, key: Option<&str>, expected: u16) {
    eventually(&format!("GET {path} through the gateway to answer {expected}"), Duration::from_secs(30), || async {
        let mut request = http().get(format!("{}{path}", ports.proxy_url()));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        (request.send().await.ok()?.status() == expected).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn portico_dev_serves_the_example_config_through_a_real_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::fresh();
    let mut dev = Dev::spawn(dir.path(), ports, &[]);
    let printed = dev.banner().await;
    let proxy = ports.proxy_url();
    let echo: Value = eventually("portico dev to serve /api/hello", Duration::from_secs(30), || async {
        let response = http().get(format!("{proxy}/api/hello?from=test")).send().await.ok()?;
        (response.status() == 200).then_some(response.json().await.ok()?)
    })
    .await;
    assert_eq!(echo["upstream"], "portico dev demo");
    assert_eq!(echo["path"], "/hello", "the example route strips /api");
    let dashboard = http().get(format!("{proxy}/dashboard")).send().await.unwrap();
    assert_eq!(dashboard.headers()["portico-aggregate"], "complete");
    let dashboard: Value = dashboard.json().await.unwrap();
    assert_eq!((&dashboard["hello"]["path"], &dashboard["echo"]["query"]), (&json!("/hello"), &json!("after=%2Fhello")), "{dashboard}");
    assert!(printed.contains("A new store: applied the example config"), "{printed}");
    assert!(printed.contains(&format!("gateway (proxy)   {proxy}")), "{printed}");
    assert!(printed.contains("PORTICO_ADMIN_TOKEN=pt_"), "{printed}");
    assert!(printed.contains(&format!("curl -i {proxy}/api/hello")), "{printed}");
    assert!(printed.contains(&format!("config stream     http://127.0.0.1:{}", ports.grpc)), "{printed}");
    let status = dev.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_routes_api_keys_and_the_admin_token_until_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::fresh();
    let mut dev = Dev::spawn(dir.path(), ports, &[]);
    let first = dev.banner().await;
    let token = printed_after(&first, "PORTICO_ADMIN_TOKEN=").to_owned();
    let route = json!({"name": "keyed", "service": "demo", "paths": ["/keyed"], "policies": [{"type": "key-auth"}]});
    assert_eq!(admin(reqwest::Method::POST, ports, &token, "/routes", Some(route)).await.status(), 201);
    let key = json!({"type": "key-auth", "key": "dev-restart-key-0123456789"});
    assert_eq!(admin(reqwest::Method::POST, ports, &token, "/consumers/alice/credentials", Some(key)).await.status(), 201);
    through_gateway(ports, "/keyed/x", Some("dev-restart-key-0123456789"), 200).await;
    assert!(dev.stop().success());

    let mut dev = Dev::spawn(dir.path(), ports, &[]);
    let second = dev.banner().await;
    assert!(second.contains("Kept the stored config at version 4"), "the example is not applied again: {second}");
    assert_eq!(printed_after(&second, "PORTICO_ADMIN_TOKEN="), token, "the admin token is reused: {second}");
    assert_eq!(admin(reqwest::Method::GET, ports, &token, "/routes/keyed", None).await.status(), 200);
    through_gateway(ports, "/keyed/x", Some("another-key-0123456789"), 401).await;
    through_gateway(ports, "/keyed/x", Some("dev-restart-key-0123456789"), 200).await; // the API key still works
    assert!(dev.stop().success());

    let mut dev = Dev::spawn(dir.path(), ports, &["--rotate-admin-token"]);
    let third = dev.banner().await;
    let rotated = printed_after(&third, "PORTICO_ADMIN_TOKEN=");
    assert_ne!(rotated, token, "{third}");
    assert!(third.contains("the previous one no longer works"), "{third}");
    assert_eq!(admin(reqwest::Method::GET, ports, &token, "/routes/keyed", None).await.status(), 401, "the old admin token");
    assert_eq!(admin(reqwest::Method::GET, ports, rotated, "/routes/keyed", None).await.status(), 200);
    through_gateway(ports, "/keyed/x", Some("dev-restart-key-0123456789"), 200).await;
    assert!(dev.stop().success());

    #[cfg(unix)]
    for file in ["admin-token", "cluster-token"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is readable by its owner only");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_held_by_another_listener_ends_dev_with_that_parts_error() {
    let dir = tempfile::tempdir().unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = Ports { proxy: held.local_addr().unwrap().port(), ..Ports::fresh() };
    let dev = Dev::spawn(dir.path(), ports, &[]);
    let (status, stderr) = dev.exit_within(Duration::from_secs(60)).await;
    assert!(!status.success(), "{status}");
    let expected = format!("portico: error: data plane: cannot listen on 127.0.0.1:{}: Address already in use", ports.proxy);
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_held_by_a_silent_listener_ends_dev_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts every connection and never answers: a probe of it waits as long as it is allowed to.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = Ports { status: silent.local_addr().unwrap().port(), ..Ports::fresh() };
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let dev = Dev::spawn(dir.path(), ports, &[]);
    let (status, stderr) = dev.exit_within(Duration::from_secs(90)).await;
    assert!(!status.success(), "{status}");
    assert!(stderr.contains(&format!("portico: error: data plane: cannot listen on 127.0.0.1:{}", ports.status)), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_plane_that_never_gets_ready_ends_dev_with_its_last_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::fresh();
    let mut dev = Dev::spawn(dir.path(), ports, &[]);
    let token = printed_after(&dev.banner().await, "PORTICO_ADMIN_TOKEN=").to_owned();
    // A Redis-backed limit: the dev data plane has no --redis-url, so it refuses this config.
    let limit = json!({"type": "rate-limit", "algorithm": "fixed_window", "limit": 5, "window_s": 1, "backend": "redis"});
    let route = json!({"name": "limited", "service": "demo", "paths": ["/limited"], "policies": [limit]});
    assert_eq!(admin(reqwest::Method::POST, ports, &token, "/routes", Some(route)).await.status(), 201);
    assert!(dev.stop().success());
    // Without the cached last good config, the restarted data plane has nothing it can serve.
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();

    let started = std::time::Instant::now();
    let dev = Dev::spawn(dir.path(), ports, &[]);
    let (status, stderr) = dev.exit_within(Duration::from_secs(90)).await;
    assert!(!status.success(), "{status}");
    let expected = format!(
        "portico: error: data plane: not ready after 30 s: http://127.0.0.1:{}/readyz answers 503 Service Unavailable",
        ports.status
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("rejected config"), "the data plane's own reason is in the log above: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_join_line_starts_a_second_data_plane_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::fresh();
    let mut dev = Dev::spawn(dir.path(), ports, &[]);
    let printed = dev.banner().await;
    let token = printed_after(&printed, "PORTICO_ADMIN_TOKEN=").to_owned();
    let line = printed.lines().skip_while(|l| !l.starts_with("Join a second data plane:")).nth(1).unwrap().trim();
    assert!(line.starts_with("portico-dp --control-plane "), "{line}");
    // The line as printed, with this build's binary and ports free on this machine.
    let (proxy, status) = (free_port(), free_port());
    let line = line
        .replacen("portico-dp", &binary("portico-dp").display().to_string(), 1)
        .replace(&format!("127.0.0.1:{}", ports.proxy + 1), &format!("127.0.0.1:{proxy}"))
        .replace(&format!("127.0.0.1:{}", ports.status + 1), &format!("127.0.0.1:{status}"));
    let log = tempfile::NamedTempFile::new().unwrap();
    let second = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {line}"))
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let _second = Running(second);
    // As the banner says: `portico data-planes` with the printed admin URL and token.
    let explain = || format!("dev-2 in_sync in `portico data-planes`; its log:\n{}", std::fs::read_to_string(log.path()).unwrap());
    let check = || {
        let output = Command::new(binary("portico"))
            .arg("data-planes")
            .env("PORTICO_ADMIN_URL", ports.admin_url())
            .env("PORTICO_ADMIN_TOKEN", &token)
            .output()
            .unwrap();
        let fleet = String::from_utf8(output.stdout).unwrap();
        std::future::ready(fleet.lines().any(|node| node.starts_with("dev-2 ") && node.contains("in_sync")).then_some(()))
    };
    eventually_explained(Duration::from_secs(30), check, explain).await;
    let answered = http().get(format!("http://127.0.0.1:{proxy}/api/hello")).send().await.unwrap();
    assert_eq!(answered.status(), 200, "the second node serves the dev gateway's config");
    assert!(dev.stop().success());
}
