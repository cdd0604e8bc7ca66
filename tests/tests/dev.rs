//! `portico dev`, the README's first command, as a newcomer runs it.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portico_test_support::process::binary;
use portico_test_support::{eventually, free_port};
use serde_json::Value;

/// Kills the process if the test ends before it exited.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn portico_dev_serves_the_example_config_through_a_real_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut dev = Running(
        Command::new(binary("portico"))
            .arg("dev")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--proxy-port", &ports[0].to_string(), "--admin-port", &ports[1].to_string(), "--grpc-port", &ports[2].to_string()])
            .args(["--status-port", &ports[3].to_string(), "--demo-port", &ports[4].to_string()])
            .stdout(out.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let proxy = format!("http://127.0.0.1:{}", ports[0]);
    let echo: Value = eventually("portico dev to serve /api/hello", Duration::from_secs(30), || async {
        let response = client.get(format!("{proxy}/api/hello?from=test")).send().await.ok()?;
        (response.status() == 200).then_some(response.json().await.ok()?)
    })
    .await;
    assert_eq!(echo["upstream"], "portico dev demo");
    assert_eq!(echo["path"], "/hello", "the example route strips /api");
    let printed = eventually("the banner", Duration::from_secs(10), || async {
        let printed = std::fs::read_to_string(out.path()).unwrap();
        printed.contains("portico data-planes").then_some(printed)
    })
    .await;
    assert!(printed.contains(&format!("gateway (proxy)   {proxy}")), "{printed}");
    assert!(printed.contains("PORTICO_ADMIN_TOKEN=pt_"), "{printed}");
    assert!(printed.contains(&format!("curl -i {proxy}/api/hello")), "{printed}");

    let _ = Command::new("kill").args(["-TERM", &dev.0.id().to_string()]).status();
    let status = tokio::task::spawn_blocking(move || dev.0.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status}");
}
