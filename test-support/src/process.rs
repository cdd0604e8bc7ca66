//! Spawning the real binaries on ephemeral ports, and stopping them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

/// A free loopback port, from binding port 0.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
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

/// A running `portico-cp`.
pub struct ControlPlane {
    child: Child,
    pub admin_url: String,
    pub grpc_url: String,
    pub admin_token: String,
    pub cluster_token: String,
    log: tempfile::NamedTempFile,
}

impl ControlPlane {
    /// Starts `portico-cp` on `database_url` with fresh ports and tokens and
    /// waits until its admin API answers.
    pub async fn start(database_url: &str) -> Self {
        Self::start_with(database_url, "test-admin-token-0123456789", "test-cluster-token-0123456789").await
    }

    /// Like [`ControlPlane::start`], with given tokens (replicas share them).
    pub async fn start_with(database_url: &str, admin_token: &str, cluster_token: &str) -> Self {
        let (admin, grpc) = (free_port(), free_port());
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(binary("portico-cp"))
            .args(["--database-url", database_url])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-token", admin_token, "--cluster-token", cluster_token])
            .env("RUST_LOG", "info")
            .env("PORTICO_HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn portico-cp");
        let cp = Self {
            child,
            admin_url: format!("http://127.0.0.1:{admin}"),
            grpc_url: format!("http://127.0.0.1:{grpc}"),
            admin_token: admin_token.to_owned(),
            cluster_token: cluster_token.to_owned(),
            log,
        };
        let health = format!("{}/healthz", cp.admin_url);
        let client = reqwest::Client::new();
        eventually(&format!("portico-cp to answer on {health}; log:\n{}", cp.logs()), Duration::from_secs(30), || async {
            client.get(&health).send().await.ok().filter(|r| r.status().is_success())
        })
        .await;
        cp
    }

    /// Everything the process wrote so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A request builder for the admin API with the bootstrap token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.admin_url)).bearer_auth(&self.admin_token)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().expect("wait for portico-cp")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
