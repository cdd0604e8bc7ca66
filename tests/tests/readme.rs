//! The README's admin API examples, run as written: every ```` ```sh ````
//! block that calls `/api/v1` (or `$A/`, the README's name for it) is run, in README order, by `bash` in one
//! session (variables and files carry over, as for a reader typing them)
//! against a real `portico-cp`, with a real `portico-dp` and an upstream
//! behind it. The only edits are addresses: the README's admin and proxy
//! addresses become this test's ephemeral ones, and the example upstreams
//! (`10.0.0.5:8000`, `10.0.0.6:8000`) the test upstream. `curl` fails on
//! any HTTP error status, so an example answering `404` or `405` fails the
//! test with its output. A request through the proxy is tried again for a
//! few seconds: a data plane applies a new version within milliseconds,
//! but not within the same millisecond as the write that published it.
//!
//! Every declarative YAML example (a block whose first key is `services:`,
//! `routes:` or `policies:`) is checked too, by `POST …/config/diff`: the
//! examples must be configs Portico accepts. A block that elides a value
//! with `…` (a PEM text, say) is a sketch of the fields, not an example.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::path::Path;
use std::process::Command;

use portico_test_support::{ControlPlane, DataPlane, TestDb, TestUpstream};

/// The README's code blocks of one language, with the line each starts on.
fn blocks(readme: &str, language: &str) -> Vec<(usize, String)> {
    let fence = format!("```{language}");
    let mut found = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (number, line) in readme.lines().enumerate() {
        match &mut open {
            None if line.trim_end() == fence => open = Some((number + 1, String::new())),
            Some(_) if line.starts_with("```") => found.extend(open.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    found
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// Runs `script` with bash in `dir`; panics with its trace on failure.
fn bash(dir: &Path, script: &str, env: &[(&str, &str)]) {
    let output = Command::new("bash").arg("-c").arg(script).current_dir(dir).envs(env.iter().copied()).output().unwrap();
    assert!(
        output.status.success(),
        "a README example failed ({}):\n--- stdout\n{}\n--- stderr (trace)\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_api_example_in_the_readme_runs_as_written() {
    let readme = readme();
    let examples: Vec<(usize, String)> =
        blocks(&readme, "sh").into_iter().filter(|(_, text)| text.contains("/api/v1") || text.contains("$A/")).collect();
    assert!(examples.len() >= 4, "expected the README's admin API examples, found {} blocks", examples.len());

    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "readme", None).await;
    let upstream = TestUpstream::start("users").await;
    let admin = cp.admin_url.trim_start_matches("http://");
    let proxy = dp.proxy_url.trim_start_matches("http://");
    let target = upstream.url().trim_start_matches("http://").to_owned();

    let mut script = String::from(
        "set -euo pipefail\n\
         curl() {\n\
           case \"$*\" in\n\
             *\"$PROXY\"*) for _ in $(seq 50); do command curl --fail-with-body \"$@\" && return 0; sleep 0.1; done; return 1 ;;\n\
             *) command curl --fail-with-body \"$@\" ;;\n\
           esac\n\
         }\n",
    );
    for (line, text) in &examples {
        let text = text
            .replace("127.0.0.1:9080", admin)
            .replace("127.0.0.1:8080", proxy)
            .replace("10.0.0.5:8000", &target)
            .replace("10.0.0.6:8000", &target);
        script.push_str(&format!("echo '### README.md line {line}' >&2\nset -x\n{text}set +x\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    bash(
        dir.path(),
        &script,
        &[
            ("PROXY", proxy),
            ("PORTICO_ADMIN_URL", &cp.admin_url),
            ("PORTICO_ADMIN_TOKEN", &cp.admin_token),
            ("PATH", &std::env::var("PATH").unwrap()),
        ],
    );
    assert!(upstream.requests() > 0, "the examples' proxied requests reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_declarative_example_in_the_readme_is_a_valid_config() {
    let readme = readme();
    let configs: Vec<(usize, String)> = blocks(&readme, "yaml")
        .into_iter()
        .filter(|(_, text)| ["services:", "routes:", "policies:"].iter().any(|key| text.starts_with(key)) && !text.contains('…'))
        .collect();
    assert!(configs.len() >= 3, "expected the README's declarative examples, found {}", configs.len());

    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    for (line, text) in configs {
        let answer = cp
            .admin(reqwest::Method::POST, "/api/v1/gateways/default/config/diff")
            .header("content-type", "application/yaml")
            .body(text.clone())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert!(status.is_success(), "README.md line {line}: the example is refused ({status}): {body}\n{text}");
    }
}
