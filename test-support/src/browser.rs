//! A real browser for end-to-end tests: Debian's `chromium`, driven by
//! `playwright-core` from npm through a node script in `tests/browser/`,
//! and a tiny web server whose page gives the browser an origin to call
//! from. `scripts/test` installs chromium and the npm package; when either
//! is missing the test fails saying how to get it, never skips.
//!
//! It does not interpret what the browser saw: the script prints JSON and
//! the test asserts on it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Response, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Longest a browser script may run before the test gives up on it.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(90);

/// A web server answering every path with one HTML page, on its own port:
/// a distinct origin (`http://127.0.0.1:<port>`) for a browser to call from.
pub struct StaticPage {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl StaticPage {
    pub async fn start(html: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the page server");
        let addr = listener.local_addr().expect("page server address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(move |_request| async move {
                        let mut response = Response::new(Full::new(Bytes::from_static(html.as_bytes())));
                        response.headers_mut().insert(header::CONTENT_TYPE, "text/html; charset=utf-8".parse().expect("static"));
                        Ok::<_, Infallible>(response)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, task }
    }

    /// The page's origin, `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("{}/", self.origin())
    }
}

impl Drop for StaticPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The chromium executable: `PORTICO_CHROMIUM`, or Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PORTICO_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (`apt-get install chromium`; ./scripts/test does) or set PORTICO_CHROMIUM",
        path.display()
    );
    path
}

/// Runs `node <script> <input as JSON>` and returns the JSON it printed.
/// The script's folder must hold `node_modules/playwright-core`.
pub async fn run_script(script: &Path, input: &serde_json::Value) -> serde_json::Value {
    let folder = script.parent().expect("the script lives in a folder");
    assert!(
        folder.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {}: run `npm ci --prefix {}` (./scripts/test does)",
        folder.display(),
        folder.display()
    );
    let mut node = tokio::process::Command::new("node");
    node.arg(script).arg(input.to_string()).current_dir(folder).kill_on_drop(true);
    let output = match tokio::time::timeout(SCRIPT_DEADLINE, node.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("node could not run {}: {e} (install Node.js; ./scripts/test says how)", script.display()),
        Err(_) => panic!("{} did not finish within {SCRIPT_DEADLINE:?}", script.display()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let printed: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{} printed no JSON ({e}); stdout:\n{stdout}\nstderr:\n{stderr}", script.display()));
    assert!(output.status.success() && printed.get("harness_error").is_none(), "the browser harness failed: {printed}\nstderr:\n{stderr}");
    printed
}
