//! Spawning the real binaries on ephemeral ports, and stopping them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually_explained;

/// A free loopback port, from binding port 0.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// A loopback URL where no server listens, so connecting is refused: port
/// 1 (tcpmux), which nothing on a test machine serves. A free port that was
/// just released may be taken meanwhile by another test's listener (the
/// kernel hands ephemeral ports out again).
pub fn refusing_url() -> String {
    "http://127.0.0.1:1".to_owned()
}

/// Where the workspace's binaries were built (`PORTICO_BIN_DIR` overrides):
/// the test executable sits in `target/<profile>/deps/`.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("PORTICO_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current test executable");
        exe.parent().and_then(|deps| deps.parent()).expect("test executable lives in target/<profile>/deps").to_path_buf()
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build it first with `cargo build --workspace --bins` (./scripts/test does)", path.display());
    path
}

/// Heartbeat interval of test control planes: short, so liveness shows quickly.
pub const HEARTBEAT_MS: u64 = 300;

/// A process's output, in a temporary file.
pub(crate) struct Log(tempfile::NamedTempFile);

impl Log {
    pub(crate) fn new() -> Self {
        Self(tempfile::NamedTempFile::new().expect("log file"))
    }

    pub(crate) fn stdio(&self) -> Stdio {
        Stdio::from(self.0.reopen().expect("log file"))
    }

    pub(crate) fn read(&self) -> String {
        std::fs::read_to_string(self.0.path()).unwrap_or_default()
    }
}

/// How a started process came up.
enum Started {
    Healthy,
    /// It exited because a port it was given was taken meanwhile: ports
    /// from [`free_port`] are free when chosen, not when the process binds
    /// them, and tests run in parallel.
    PortTaken,
}

/// Waits until `health` answers 200; fails with the process's log when it
/// exits for another reason or does not answer in time.
async fn wait_healthy(process: &str, health: &str, log: &Log, child: &mut Child) -> Started {
    let client = reqwest::Client::new();
    let check = || {
        // Whether it had exited before this probe (read now: the probe's future cannot hold the child).
        let exited = child.try_wait().ok().flatten();
        let probe = client.get(health).send();
        async move {
            if probe.await.is_ok_and(|r| r.status().is_success()) {
                return Some(Started::Healthy);
            }
            let status = exited?;
            let output = log.read();
            assert!(output.contains("Address already in use"), "{process} exited ({status}) before answering on {health}; log:\n{output}");
            Some(Started::PortTaken)
        }
    };
    eventually_explained(Duration::from_secs(30), check, || format!("{process} to answer on {health}; log:\n{}", log.read())).await
}

/// Tries to start a process this many times when a port it was to bind was taken.
const PORT_TRIES: usize = 5;

/// Sends SIGTERM and waits for the exit status.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().expect("wait for the process")
}

/// A running `portico-cp`.
pub struct ControlPlane {
    child: Child,
    pub admin_url: String,
    pub grpc_url: String,
    pub admin_token: String,
    pub cluster_token: String,
    pub database_url: String,
    log: Log,
}

impl ControlPlane {
    /// Starts `portico-cp` on `database_url` with fresh ports and tokens and
    /// waits until its admin API answers.
    pub async fn start(database_url: &str) -> Self {
        Self::start_with(database_url, "test-admin-token-0123456789", "test-cluster-token-0123456789").await
    }

    /// Like [`ControlPlane::start`], with given tokens (replicas share them).
    pub async fn start_with(database_url: &str, admin_token: &str, cluster_token: &str) -> Self {
        Self::spawn(database_url, admin_token, cluster_token, None, &[]).await
    }

    /// Like [`ControlPlane::start_with`], on given ports (to restart one in place).
    pub async fn start_on(database_url: &str, admin_token: &str, cluster_token: &str, admin: u16, grpc: u16) -> Self {
        Self::spawn(database_url, admin_token, cluster_token, Some((admin, grpc)), &[]).await
    }

    /// Like [`ControlPlane::start`], with more flags (its gRPC URL is
    /// `https://localhost:<port>` when they include `--grpc-tls-cert`).
    pub async fn start_with_flags(database_url: &str, flags: &[&str]) -> Self {
        Self::spawn(database_url, "test-admin-token-0123456789", "test-cluster-token-0123456789", None, flags).await
    }

    /// Spawns `portico-cp` on `ports`, or on fresh ones (tried again with
    /// others when one was taken meanwhile), and waits until it answers.
    async fn spawn(database_url: &str, admin_token: &str, cluster_token: &str, ports: Option<(u16, u16)>, flags: &[&str]) -> Self {
        for _ in 0..PORT_TRIES {
            let (admin, grpc) = ports.unwrap_or_else(|| (free_port(), free_port()));
            let log = Log::new();
            let child = Command::new(binary("portico-cp"))
                .args(["--database-url", database_url])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
                // Flags naming token files take the place of the tokens themselves.
                .args(if flags.contains(&"--admin-token-file") { vec![] } else { vec!["--admin-token", admin_token] })
                .args(if flags.contains(&"--cluster-token-file") { vec![] } else { vec!["--cluster-token", cluster_token] })
                .args(flags)
                .env("RUST_LOG", "info")
                // Traces (when a test turns them on) are sent every 200 ms, not every 5 s.
                .env("OTEL_BSP_SCHEDULE_DELAY", "200")
                .env("PORTICO_HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string())
                .stdout(log.stdio())
                .stderr(log.stdio())
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn portico-cp");
            let mut cp = Self {
                child,
                admin_url: format!("http://127.0.0.1:{admin}"),
                grpc_url: if flags.contains(&"--grpc-tls-cert") {
                    format!("https://localhost:{grpc}")
                } else {
                    format!("http://127.0.0.1:{grpc}")
                },
                admin_token: admin_token.to_owned(),
                cluster_token: cluster_token.to_owned(),
                database_url: database_url.to_owned(),
                log,
            };
            let health = format!("{}/healthz", cp.admin_url);
            match wait_healthy("portico-cp", &health, &cp.log, &mut cp.child).await {
                Started::Healthy => return cp,
                // Fresh ports are drawn again; given ones may be free in a moment.
                Started::PortTaken => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        panic!("portico-cp: its ports were taken {PORT_TRIES} times in a row");
    }

    /// Everything the process wrote so far.
    pub fn logs(&self) -> String {
        self.log.read()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin and gRPC ports.
    pub fn ports(&self) -> (u16, u16) {
        let port = |url: &str| url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("url with port");
        (port(&self.admin_url), port(&self.grpc_url))
    }

    /// A request builder for the admin API with the bootstrap token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.admin_url)).bearer_auth(&self.admin_token)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `portico-dp`.
pub struct DataPlane {
    child: Child,
    pub node_id: String,
    pub proxy_url: String,
    pub status_url: String,
    log: Log,
}

impl DataPlane {
    /// Starts `portico-dp` for `gateway` against `cp`, caching in `cache_dir`,
    /// and waits until its status listener answers (not until it has config).
    pub async fn start(grpc_url: &str, cluster_token: &str, gateway: &str, node_id: &str, cache_dir: Option<&std::path::Path>) -> Self {
        Self::spawn(grpc_url, cluster_token, gateway, Some(node_id), cache_dir, None, &[]).await
    }

    /// Starts `portico-dp` for the `default` gateway without `--node-id`,
    /// its proxy on `port`; its `node_id` is the one it chose (`/status`).
    pub async fn start_unnamed_on(grpc_url: &str, cluster_token: &str, port: u16) -> Self {
        Self::spawn(grpc_url, cluster_token, "default", None, None, Some(port), &[]).await
    }

    /// Like [`DataPlane::start`], with the proxy on a given port.
    pub async fn start_on(
        grpc_url: &str,
        cluster_token: &str,
        gateway: &str,
        node_id: &str,
        cache_dir: Option<&std::path::Path>,
        port: u16,
    ) -> Self {
        Self::spawn(grpc_url, cluster_token, gateway, Some(node_id), cache_dir, Some(port), &[]).await
    }

    /// Like [`DataPlane::start`] for the `default` gateway, with more flags.
    pub async fn start_with_flags(grpc_url: &str, cluster_token: &str, node_id: &str, flags: &[&str]) -> Self {
        Self::spawn(grpc_url, cluster_token, "default", Some(node_id), None, None, flags).await
    }

    /// Spawns `portico-dp` with its proxy on `port`, or on a fresh one, and
    /// its status listener on a fresh port (tried again with others when
    /// one was taken meanwhile), and waits until it answers. Without
    /// `node_id` it picks its own; with `--cluster-token-file` among `flags`
    /// it gets no `--cluster-token`.
    async fn spawn(
        grpc_url: &str,
        cluster_token: &str,
        gateway: &str,
        node_id: Option<&str>,
        cache_dir: Option<&std::path::Path>,
        port: Option<u16>,
        flags: &[&str],
    ) -> Self {
        for _ in 0..PORT_TRIES {
            let (proxy, status) = (port.unwrap_or_else(free_port), free_port());
            let log = Log::new();
            let mut command = Command::new(binary("portico-dp"));
            command
                .args(["--control-plane", grpc_url, "--gateway", gateway])
                .args(if flags.contains(&"--cluster-token-file") { vec![] } else { vec!["--cluster-token", cluster_token] })
                .args(node_id.map(|id| ["--node-id", id]).into_iter().flatten())
                .args(["--listen", &format!("127.0.0.1:{proxy}"), "--status-listen", &format!("127.0.0.1:{status}")])
                .args(["--drain-timeout-ms", "10000", "--log-format", "json", "--header-read-timeout-ms", "1000"])
                .args(flags)
                .env("RUST_LOG", "info")
                // Traces (when a test turns them on) are sent every 200 ms, not every 5 s.
                .env("OTEL_BSP_SCHEDULE_DELAY", "200")
                .stdout(log.stdio())
                .stderr(log.stdio())
                .stdin(Stdio::null());
            if let Some(dir) = cache_dir {
                command.arg("--cache-dir").arg(dir);
            }
            let child = command.spawn().expect("spawn portico-dp");
            let mut dp = Self {
                child,
                node_id: node_id.unwrap_or_default().to_owned(),
                proxy_url: format!("http://127.0.0.1:{proxy}"),
                status_url: format!("http://127.0.0.1:{status}"),
                log,
            };
            let health = format!("{}/healthz", dp.status_url);
            // Fresh ports are drawn again; a given one may be free in a moment.
            match wait_healthy("portico-dp", &health, &dp.log, &mut dp.child).await {
                Started::Healthy if node_id.is_none() => {
                    let status: serde_json::Value =
                        reqwest::get(format!("{}/status", dp.status_url)).await.expect("GET /status").json().await.expect("a JSON status");
                    dp.node_id = status["node_id"].as_str().expect("the status names the node").to_owned();
                    return dp;
                }
                Started::Healthy => return dp,
                Started::PortTaken => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        panic!("portico-dp: its ports were taken {PORT_TRIES} times in a row");
    }

    /// Everything the process wrote so far.
    pub fn logs(&self) -> String {
        self.log.read()
    }

    /// The value of one series of the node's `/metrics` (its name and
    /// labels as written there), `None` while it has none.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let metrics = reqwest::get(format!("{}/metrics", self.status_url)).await.ok()?.text().await.ok()?;
        metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The version this node serves (`/status`), `None` before its first config.
    pub async fn version(&self) -> Option<u64> {
        let status: serde_json::Value = reqwest::get(format!("{}/status", self.status_url)).await.ok()?.json().await.ok()?;
        status["version"].as_u64()
    }

    /// Waits until the node serves `version`.
    pub async fn wait_for_version(&self, version: u64) {
        let explain = || format!("{} to serve version {version}; log:\n{}", self.node_id, self.logs());
        eventually_explained(Duration::from_secs(30), || async { (self.version().await == Some(version)).then_some(()) }, explain).await;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn signal_term(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for portico-dp")
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control plane on a throwaway SQLite store serving `config` as the
/// default gateway, and a data plane (with `flags`) that has applied it.
pub async fn serve_config(config: &serde_json::Value, flags: &[&str]) -> (crate::TestDb, ControlPlane, DataPlane) {
    let db = crate::TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let response = cp.admin(reqwest::Method::PUT, "/api/v1/gateways/default/config").json(config).send().await.expect("PUT config");
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, reqwest::StatusCode::OK, "PUT config: {body}");
    let version = body["version"].as_u64().expect("the version published");
    let dp = DataPlane::start_with_flags(&cp.grpc_url, &cp.cluster_token, "dp", flags).await;
    dp.wait_for_version(version).await;
    (db, cp, dp)
}

/// Like [`serve_config`] for one service, named `app`, behind a catch-all route.
pub async fn serve_service(service: serde_json::Value) -> (crate::TestDb, ControlPlane, DataPlane) {
    let config = serde_json::json!({"services": [service], "routes": [{"name": "r", "service": "app", "paths": ["/"]}]});
    serve_config(&config, &[]).await
}
