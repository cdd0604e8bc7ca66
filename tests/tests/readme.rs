//! The README's admin API examples, run as written: every ```` ```sh ````
//! block that calls `/api/v1` (or `$A/`, the README's name for it) is run, in README order, by `bash` in one
//! session (variables and files carry over, as for a reader typing them)
//! against a real `portico-cp`, with a real `portico-dp` and an upstream
//! behind it. The only edits are addresses: the README's admin and proxy
//! addresses become this test's ephemeral ones, and the example upstreams
//! (`10.0.0.5:8000`, `10.0.0.6:8000`) the test upstream, the example
//! gRPC server (`10.0.0.7:50051`) the test suite's (`tests/grpc/server.py`),
//! and the example broker (`10.0.0.8:5672`, user `portico`) the shared test
//! broker (`PORTICO_TEST_AMQP_URL`), where the test first binds a queue of
//! its own to `amq.topic` for the example's order events. `curl` fails on
//! any HTTP error status, so an example answering `404` or `405` fails the
//! test with its output. A request through the proxy is tried again for a
//! few seconds: a data plane applies a new version within milliseconds,
//! but not within the same millisecond as the write that published it.
//!
//! The quick start's "pieces separately" block runs too, each long-running
//! command in the background once the one before it answers, on this
//! test's ports (given through the binaries' environment variables).
//!
//! Every declarative YAML example (a block whose first key is `services:`,
//! `routes:` or `policies:`) is checked too, by `POST …/config/diff`: the
//! examples must be configs Portico accepts. A block that elides a value
//! with `…` (a PEM text, say) is a sketch of the fields, not an example.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::path::Path;
use std::process::Command;

use portico_test_support::amqp::{QueueOptions, amqp_url};
use portico_test_support::process::binary;
use portico_test_support::{Consumer, ControlPlane, DataPlane, GrpcPeer, TestDb, TestUpstream, free_port};

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

/// Runs `script` with bash in `dir`, in a process group of its own that is
/// ended afterwards (with any server the script left running); panics with
/// its trace on failure.
fn bash(dir: &Path, script: &str, env: &[(&str, &str)]) {
    use std::os::unix::process::CommandExt;
    let child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().copied())
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let group = format!("-{}", child.id());
    let output = child.wait_with_output().unwrap();
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
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
    let grpc_server = GrpcPeer::start().await;
    let grpc_target = grpc_server.addr().to_string();
    // The AMQP example's broker and login are the test broker's; its order events need a queue.
    let amqp = amqp_url();
    let (login, broker) = amqp.strip_prefix("amqp://").and_then(|rest| rest.split_once('@')).unwrap();
    let broker = broker.split('/').next().unwrap();
    let (username, password) = login.split_once(':').unwrap();
    let peer = Consumer::start(&amqp).await;
    let orders = peer.declare_queue("", QueueOptions::default()).await;
    peer.bind(&orders, "amq.topic", "order.created").await;
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
            .replace("10.0.0.6:8000", &target)
            .replace("10.0.0.7:50051", &grpc_target)
            .replace("10.0.0.8:5672", broker)
            .replace(r#""username":"portico","password":"change-me""#, &format!(r#""username":"{username}","password":"{password}""#));
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
    peer.consume(&orders).await;
    let event = peer.next_message().await;
    assert_eq!(event.body_text(), r#"{"order":42,"total_cents":1250}"#, "the AMQP example's event reached the broker");
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

#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_with_separate_pieces_serves_the_example() {
    let readme = readme();
    let (_, block) = blocks(&readme, "sh")
        .into_iter()
        .find(|(_, text)| text.contains("portico-cp ") && text.contains("portico apply"))
        .expect("the quick start's separate-pieces block");
    // The block as written, on this test's ports: each binary reads its
    // addresses from its environment variables, the example config and the
    // final curl name the demo upstream's and the proxy's.
    let [admin, grpc, proxy, status, demo] = [(); 5].map(|()| free_port());
    let env = [
        ("PORTICO_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
        ("PORTICO_GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
        ("PORTICO_CONTROL_PLANE", format!("http://127.0.0.1:{grpc}")),
        ("PORTICO_LISTEN", format!("127.0.0.1:{proxy}")),
        ("PORTICO_STATUS_LISTEN", format!("127.0.0.1:{status}")),
        ("PORTICO_DEMO_LISTEN", format!("127.0.0.1:{demo}")),
        ("PORTICO_ADMIN_URL", format!("http://127.0.0.1:{admin}")),
    ];
    // What each long-running command answers on once it is up.
    let starts = [
        ("portico-cp ", format!("http://127.0.0.1:{admin}/healthz")),
        ("portico-dp ", format!("http://127.0.0.1:{status}/healthz")),
        ("portico demo-upstream", format!("http://127.0.0.1:{demo}/")),
    ];
    let mut script = String::from(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null || true; cat servers.log >&2' EXIT\n\
         up() { for _ in $(seq 200); do command curl -fsS -o /dev/null \"$1\" 2>/dev/null && return 0; sleep 0.1; done; echo \"$1 never answered\" >&2; return 1; }\n\
         curl() { for _ in $(seq 50); do command curl --fail-with-body \"$@\" && return 0; sleep 0.1; done; return 1; }\n\
         set -x\n",
    );
    for command in block.replace("127.0.0.1:8080", &format!("127.0.0.1:{proxy}")).lines() {
        match starts.iter().find(|(start, _)| command.starts_with(start)) {
            // Braces, so that a trailing comment does not swallow the `&`; a
            // log file, so that a server left running holds no pipe of ours.
            Some((_, ready)) => script.push_str(&format!("{{ {command}\n}} >>servers.log 2>&1 &\nup {ready}\n")),
            None => script.push_str(&format!("{command}\n")),
        }
    }
    let script = script + &format!("curl -sS http://127.0.0.1:{proxy}/api/hello | grep -q '\"path\":\"/hello\"'\n");
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("deploy/examples");
    std::fs::create_dir_all(&examples).unwrap();
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/default.yaml")).unwrap();
    assert!(example.contains("127.0.0.1:9180"), "the example config sends /api to the demo upstream's default address");
    std::fs::write(examples.join("default.yaml"), example.replace("127.0.0.1:9180", &format!("127.0.0.1:{demo}"))).unwrap();
    let path = format!("{}:{}", binary("portico").parent().unwrap().display(), std::env::var("PATH").unwrap());
    let mut env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    env.push(("PATH", &path));
    bash(dir.path(), &script, &env);
}
