//! The `portico` command line against a real `portico-cp`: apply, export,
//! diff, versions, rollback and data-planes, as an operator types them, and
//! as CI runs them (exit codes, `--yes`, `--select-tag`, `--wait`,
//! `--env-subst`). Prompts are answered on a real terminal, `script(1)`'s.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use portico_test_support::process::binary;
use portico_test_support::{ControlPlane, TestDb, TestNode};

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn command(cp: &ControlPlane, args: &[&str]) -> Command {
    let mut command = Command::new(binary("portico"));
    command
        .args(args)
        .env("PORTICO_ADMIN_URL", &cp.admin_url)
        .env("PORTICO_ADMIN_TOKEN", &cp.admin_token)
        .env_remove("PORTICO_GATEWAY")
        .stdin(Stdio::null());
    command
}

fn ran(output: std::process::Output) -> Run {
    Run {
        ok: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `portico ARGS` as CI runs it: stdin is not a terminal.
fn portico(cp: &ControlPlane, args: &[&str]) -> Run {
    ran(command(cp, args).output().unwrap())
}

/// `portico ARGS` on a terminal (`script -qec`), started; what it prints,
/// prompt included, arrives on its stdout.
fn on_terminal(cp: &ControlPlane, args: &[&str]) -> std::process::Child {
    let line = std::iter::once(binary("portico").display().to_string())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("PORTICO_ADMIN_URL", &cp.admin_url)
        .env("PORTICO_ADMIN_TOKEN", &cp.admin_token)
        .env_remove("PORTICO_GATEWAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs portico on a terminal")
}

/// Reads `child`'s output until `marker` shows (the prompt), returning it so far.
fn read_until(child: &mut std::process::Child, marker: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = stdout.read(&mut buffer).unwrap();
        assert!(n > 0, "the output ended before {marker:?}: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Types `answer` and waits for the end: (exit code, the rest of the output).
fn answer(mut child: std::process::Child, answer: &str) -> (Option<i32>, String) {
    child.stdin.as_mut().unwrap().write_all(answer.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn current_version(cp: &ControlPlane) -> u64 {
    let versions = portico(cp, &["versions", "--json", "--limit", "1"]);
    let list: serde_json::Value = serde_json::from_str(&versions.stdout).unwrap();
    list["data"][0]["version"].as_u64().unwrap()
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
    assert!(diff.stdout.contains("5 to create, 0 to update, 0 to delete, 0 unchanged"), "{}", diff.stdout);

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
    assert!(
        rollback.stdout.starts_with(
            "~ service demo\n    /targets/0/url: \"http://127.0.0.1:9181\" → \"http://127.0.0.1:9180\"\n\
             0 to create, 1 to update, 0 to delete, 4 unchanged\n\
             version 4 now serves the content of version 2 ("
        ),
        "rollback prints the change it published: {}",
        rollback.stdout
    );
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

/// A file that keeps only the example's service (so applying it deletes
/// the three routes and the consumer).
const ONLY_SERVICE: &str = "services:\n  - name: demo\n    targets: [{url: 'http://127.0.0.1:9180'}]\n    timeouts: {connect_ms: 1000, request_ms: 10000}\n    tags: [example]\n";

#[tokio::test(flavor = "multi_thread")]
async fn diff_exit_code_tells_ci_whether_anything_would_change() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    assert!(portico(&cp, &["apply", "-f", &example()]).ok);

    let same = portico(&cp, &["diff", "-f", &example(), "--exit-code"]);
    assert_eq!(same.code, Some(0), "no changes: {}{}", same.stdout, same.stderr);
    let changed = write(&dir, "changed.yaml", &std::fs::read_to_string(example()).unwrap().replace("/health", "/healthz"));
    let run = portico(&cp, &["diff", "-f", &changed, "--exit-code"]);
    assert_eq!(run.code, Some(2), "changes: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("~ route demo-health\n    /paths/0: \"/health\" → \"/healthz\""), "{}", run.stdout);
    assert_eq!(portico(&cp, &["diff", "-f", &changed]).code, Some(0), "without the flag a diff is not a failure");

    // An error is 1, never 2, and a document's every mistake is listed at once.
    let bad = write(&dir, "bad.yaml", "services:\n  - name: s\n    targets: [{url: 'ftp://x'}]\nconsumers:\n  - username: not valid\n");
    let run = portico(&cp, &["diff", "-f", &bad, "--exit-code"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr.trim().lines().collect::<Vec<_>>(),
        [
            "portico: error: 400 Bad Request: 2 errors:",
            "services[0].targets[0].url: scheme 'ftp' does not match the service's protocol 'http'",
            "consumers[0].username: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', '@', '+', '-'",
        ]
    );
    assert_eq!(portico(&cp, &["diff", "-f", "/nonexistent.yaml", "--exit-code"]).code, Some(1));
    assert_eq!(portico(&cp, &["diff", "-f", &example(), "--exit-code", "--no-such-flag"]).code, Some(1), "a usage error is not 'changes'");
    assert_eq!(portico(&cp, &["diff", "--help"]).code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_asks_before_deleting_on_a_terminal_and_not_in_ci() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let only_service = write(&dir, "only-service.yaml", ONLY_SERVICE);
    assert!(portico(&cp, &["apply", "-f", &example()]).stdout.contains("published version 2"));

    // Declined: listed, asked, nothing applied, exit 1.
    let mut child = on_terminal(&cp, &["apply", "-f", &only_service]);
    let prompt = read_until(&mut child, "[y/N]");
    assert!(
        prompt.contains(
            "This apply deletes 4 entities:\r\n  - route demo-api\r\n  - route demo-dashboard\r\n  - route demo-health\r\n  - consumer alice\r\nDelete them? [y/N]"
        ),
        "{prompt}"
    );
    let (code, rest) = answer(child, "n\n");
    assert_eq!(code, Some(1), "{rest}");
    assert!(rest.contains("portico: error: nothing applied: the deletions were not confirmed"), "{rest}");
    assert_eq!(current_version(&cp), 2, "a declined apply publishes nothing");

    // Confirmed: applied.
    let mut child = on_terminal(&cp, &["apply", "-f", &only_service]);
    read_until(&mut child, "[y/N]");
    let (code, rest) = answer(child, "y\n");
    assert_eq!(code, Some(0), "{rest}");
    assert!(rest.contains("published version 3"), "{rest}");

    // What was confirmed is what is applied: a change made while the
    // question was open makes the apply a 409, not a silent overwrite.
    assert!(portico(&cp, &["apply", "-f", &example()]).stdout.contains("published version 4"));
    let mut child = on_terminal(&cp, &["apply", "-f", &only_service]);
    read_until(&mut child, "[y/N]");
    let meanwhile = portico(&cp, &["consumers", "create", "carol"]);
    assert!(meanwhile.stdout.contains("created consumer carol (version 5)"), "{}{}", meanwhile.stdout, meanwhile.stderr);
    let (code, rest) = answer(child, "y\n");
    assert_eq!(code, Some(1), "{rest}");
    assert!(rest.contains("409 Conflict"), "{rest}");
    assert_eq!(current_version(&cp), 5);

    // --yes on a terminal, and any run without a terminal, do not ask.
    let child = on_terminal(&cp, &["apply", "-f", &only_service, "--yes"]);
    let (code, rest) = answer(child, "");
    assert_eq!(code, Some(0), "{rest}");
    assert!(!rest.contains("[y/N]") && rest.contains("published version 6"), "{rest}");
    assert!(portico(&cp, &["apply", "-f", &example()]).ok);
    let ci = portico(&cp, &["apply", "-f", &only_service]);
    assert!(ci.ok, "{}", ci.stderr);
    assert!(ci.stdout.contains("- consumer alice") && ci.stdout.contains("published version 8"), "{}", ci.stdout);
}

const TEAMS: &str = "
services:
  - {name: a, targets: [{url: 'http://a:1'}], tags: [team-a]}
  - {name: b, targets: [{url: 'http://b:1'}], tags: [team-b]}
routes:
  - {name: ra, service: a, paths: [/a], tags: [team-a]}
  - {name: rb, service: b, paths: [/b], tags: [team-b]}
";

#[tokio::test(flavor = "multi_thread")]
async fn select_tag_limits_apply_diff_and_export_to_one_teams_entities() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    assert!(portico(&cp, &["apply", "-f", &write(&dir, "teams.yaml", TEAMS)]).ok);

    // Team A's file: its entities need not repeat the tag; team B's are not in it.
    let team_a = write(
        &dir,
        "team-a.yaml",
        "services:\n  - {name: a, targets: [{url: 'http://a:2'}]}\n  - {name: c, targets: [{url: 'http://c:1'}]}\nroutes:\n  - {name: ra, service: a, paths: [/a]}\n",
    );
    let diff = portico(&cp, &["diff", "--select-tag", "team-a", "-f", &team_a]);
    assert!(diff.ok, "{}", diff.stderr);
    assert_eq!(
        diff.stdout,
        "~ service a\n    /targets/0/url: \"http://a:1\" → \"http://a:2\"\n+ service c\n1 to create, 1 to update, 0 to delete, 1 unchanged\n"
    );
    let applied = portico(&cp, &["apply", "--select-tag", "team-a", "-f", &team_a]);
    assert!(applied.ok, "{}", applied.stderr);
    let all = portico(&cp, &["export"]).stdout;
    assert!(all.contains("name: b\n") && all.contains("name: rb\n"), "team B's entities are untouched: {all}");
    let selected = portico(&cp, &["export", "--select-tag", "team-a"]).stdout;
    assert!(selected.contains("name: a\n") && selected.contains("name: c\n") && selected.contains("name: ra\n"), "{selected}");
    assert!(!selected.contains("name: b\n") && !selected.contains("name: rb\n"), "{selected}");
    assert!(selected.contains("tags:\n  - team-a\n"), "the file's new service got the tag: {selected}");

    // The export is the team's file: applied back it changes nothing.
    let exported = write(&dir, "exported.yaml", &selected);
    assert_eq!(portico(&cp, &["diff", "--select-tag", "team-a", "-f", &exported, "--exit-code"]).code, Some(0));

    // Removing an entity from the file deletes it, and only it.
    let smaller = write(&dir, "smaller.yaml", &selected.replace("- name: c\n", "- name: c-gone\n"));
    let run = portico(&cp, &["apply", "--select-tag", "team-a", "-f", &smaller, "--yes"]);
    assert!(run.stdout.contains("- service c\n") && !run.stdout.contains("- service b"), "{}{}", run.stdout, run.stderr);

    // An entity of the file that exists outside the selection is refused, as are gateway-wide settings.
    let grab = write(&dir, "grab.yaml", "services:\n  - {name: b, targets: [{url: 'http://b:9'}]}\ntrusted_proxies: [10.0.0.0/8]\n");
    let run = portico(&cp, &["apply", "--select-tag", "team-a", "-f", &grab]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr.trim(),
        format!(
            "portico: error: {grab}: 2 errors:\n\
             trusted_proxies: gateway-wide settings carry no tags; apply them without --select-tag\n\
             services[0]: service 'b' exists on the gateway without the tag(s) team-a; it is outside the selection"
        )
    );

    // The merge is published only onto the config it was made from.
    let version = current_version(&cp);
    let mut child = on_terminal(&cp, &["apply", "--select-tag", "team-a", "-f", &write(&dir, "none.yaml", "services: []\n")]);
    read_until(&mut child, "[y/N]");
    assert!(portico(&cp, &["consumers", "create", "dave"]).ok);
    let (code, rest) = answer(child, "y\n");
    assert_eq!(code, Some(1), "{rest}");
    assert!(rest.contains("409 Conflict"), "{rest}");
    assert_eq!(current_version(&cp), version + 1, "only the consumer was published");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_wait_follows_the_fleet_and_reports_nacks_and_laggards() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let run = portico(&cp, &["apply", "-f", &example(), "--wait"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.ends_with("no data plane is connected; version 2 goes to nodes as they connect\n"), "{}", run.stdout);

    let mut node = TestNode::connect(&cp.grpc_url, &cp.cluster_token, "edge-1", "default", 0, "").await.unwrap();
    let first = node.next_snapshot(Duration::from_secs(10)).await.unwrap();
    node.ack(&first).await;
    let apply_in_background = |file: String, wait: &str| {
        let mut command = command(&cp, &["apply", "-f", &file, wait]);
        tokio::task::spawn_blocking(move || ran(command.output().unwrap()))
    };
    let text = std::fs::read_to_string(example()).unwrap();
    let version_file = |n: u16| write(&dir, &format!("v{n}.yaml"), &text.replace("connect_ms: 1000", &format!("connect_ms: {n}")));

    // Acknowledged: exit 0 once the node serves the new version.
    let run = apply_in_background(version_file(1001), "--wait=20s");
    let snapshot = node.next_snapshot(Duration::from_secs(10)).await.unwrap();
    assert_eq!(snapshot.version, 3);
    node.ack(&snapshot).await;
    let run = run.await.unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("published version 3 (") && run.stdout.ends_with("\n1 data plane serves version 3\n"), "{}", run.stdout);

    // Rejected: exit 3 with the node's reason.
    let run = apply_in_background(version_file(1002), "--wait=20s");
    let snapshot = node.next_snapshot(Duration::from_secs(10)).await.unwrap();
    node.nack(&snapshot, "certificate 'edge' does not parse").await;
    let run = run.await.unwrap();
    assert_eq!(run.code, Some(3), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("published version 4"), "{}", run.stdout);
    assert_eq!(
        run.stderr.trim(),
        "portico: error: version 4 was published, but the fleet does not serve it:\n  edge-1: rejected it: certificate 'edge' does not parse"
    );

    // Silent: exit 3 at the deadline, naming the node and what it serves.
    let run = apply_in_background(version_file(1003), "--wait=1s");
    assert!(node.next_snapshot(Duration::from_secs(10)).await.is_some());
    let run = run.await.unwrap();
    assert_eq!(run.code, Some(3), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "portico: error: version 5 was published, but the fleet does not serve it:\n  edge-1: still serves version 3 after 1s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_and_keys_from_the_command_line_show_a_key_once() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let run = portico(&cp, &["consumers", "create", "bob", "--custom-id", "7", "--tag", "beta"]);
    assert_eq!(run.stdout, "created consumer bob (version 2)\n", "{}", run.stderr);
    let list = portico(&cp, &["consumers", "list"]).stdout;
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("USERNAME  CUSTOM ID  TAGS  ID"), "{list}");
    assert!(lines[1].starts_with("bob       7          beta  "), "{list}");
    assert!(portico(&cp, &["consumers", "get", "bob"]).stdout.starts_with("id: "));
    assert!(portico(&cp, &["consumers", "get", "bob"]).stdout.contains("username: bob\ncustom_id: '7'\n"));

    let generated = portico(&cp, &["keys", "create", "--consumer", "bob"]);
    assert!(generated.ok, "{}", generated.stderr);
    let key = generated.stdout.trim().to_owned();
    assert!(key.starts_with("pk_") && !key.contains('\n'), "the key alone on stdout: {key}");
    assert!(generated.stderr.contains("for consumer bob (version 3); the key is shown only now"), "{}", generated.stderr);
    let given = portico(&cp, &["keys", "create", "--consumer", "bob", "--key", "my-own-key-0123456789", "--name", "mine"]);
    assert_eq!(given.stdout, "my-own-key-0123456789\n", "{}", given.stderr);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "a-key-from-a-file-0123456789\n").unwrap();
    let from_file = portico(&cp, &["keys", "create", "--consumer", "bob", "--key-file", key_file.to_str().unwrap(), "--name", "filed"]);
    assert_eq!(from_file.stdout, "a-key-from-a-file-0123456789\n", "the file's key, kept out of ps: {}", from_file.stderr);

    let keys = portico(&cp, &["keys", "list", "--consumer", "bob"]).stdout;
    assert_eq!(keys.lines().count(), 4, "{keys}");
    assert!(keys.lines().any(|l| l.starts_with("mine ")), "{keys}");
    let as_json = portico(&cp, &["keys", "list", "--consumer", "bob", "--json"]).stdout;
    for shown in [&keys, &as_json] {
        assert!(!shown.contains(&key) && !shown.contains("my-own-key-0123456789"), "a list never shows a key: {shown}");
        assert!(!shown.contains("key_hash"), "nor a key's hash: {shown}");
    }

    assert_eq!(portico(&cp, &["keys", "delete", "mine", "--consumer", "bob"]).stdout, "deleted API key mine of consumer bob (version 6)\n");
    assert!(!portico(&cp, &["keys", "list", "--consumer", "bob"]).stdout.contains("mine"));
    let missing = portico(&cp, &["keys", "list", "--consumer", "nobody"]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.starts_with("portico: error: 404 Not Found: "), "{}", missing.stderr);
    let in_use = portico(&cp, &["consumers", "delete", "bob"]);
    assert!(in_use.stderr.starts_with("portico: error: 409 Conflict: consumer 'bob' is used by credential '"), "{}", in_use.stderr);
    assert!(in_use.stderr.contains("credential 'key-"), "{}", in_use.stderr);
    let generated_name = keys.lines().filter_map(|l| l.split_whitespace().next()).find(|n| n.starts_with("key-")).unwrap();
    assert!(portico(&cp, &["keys", "delete", generated_name, "--consumer", "bob"]).ok);
    assert!(portico(&cp, &["keys", "delete", "filed", "--consumer", "bob"]).ok);
    assert_eq!(portico(&cp, &["consumers", "delete", "bob"]).stdout, "deleted consumer bob (version 9)\n");
    assert_eq!(portico(&cp, &["consumers", "list"]).stdout.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn env_subst_fills_variables_only_when_asked() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "consumers.yaml",
        "consumers:\n  - username: alice\n    custom_id: \"${ALICE_ID}\"\n  - username: bob\n    custom_id: \"price-$$5\"\n",
    );

    // Without the flag the file is taken as written.
    let literal = ran(command(&cp, &["apply", "-f", &file]).env("ALICE_ID", "12345").output().unwrap());
    assert!(literal.ok, "{}", literal.stderr);
    let exported = portico(&cp, &["export"]).stdout;
    assert!(exported.contains("custom_id: ${ALICE_ID}") && exported.contains("custom_id: price-$$5"), "{exported}");

    // With it, a variable left unset is an error naming it and its line, and nothing is applied.
    let unset = ran(command(&cp, &["apply", "--env-subst", "-f", &file]).env_remove("ALICE_ID").output().unwrap());
    assert_eq!(unset.code, Some(1));
    assert_eq!(unset.stderr.trim(), format!("portico: error: {file}: line 3: environment variable ALICE_ID is not set"));
    assert_eq!(current_version(&cp), 2);

    let substituted = ran(command(&cp, &["apply", "--env-subst", "-f", &file]).env("ALICE_ID", "12345").output().unwrap());
    assert!(substituted.ok, "{}", substituted.stderr);
    assert!(substituted.stdout.contains("/custom_id: \"${ALICE_ID}\" → \"12345\""), "{}", substituted.stdout);
    assert!(substituted.stdout.contains("/custom_id: \"price-$$5\" → \"price-$5\""), "{}", substituted.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_line_up_and_show_and_diff_one_another() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    // A long author name: the columns must still line up.
    let created: serde_json::Value = cp
        .admin(reqwest::Method::POST, "/api/v1/tokens")
        .json(&serde_json::json!({"name": "ci-deploy-pipeline-production", "role": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(portico(&cp, &["apply", "-f", &example(), "-m", "first example"]).ok);
    let changed = write(&dir, "changed.yaml", &std::fs::read_to_string(example()).unwrap().replace("/health", "/healthz"));
    let run = ran(command(&cp, &["apply", "-f", &changed, "-m", "rename health"]).env("PORTICO_ADMIN_TOKEN", secret).output().unwrap());
    assert!(run.ok, "{}", run.stderr);

    let versions = portico(&cp, &["versions"]).stdout;
    let lines: Vec<&str> = versions.lines().collect();
    let column = lines[0].find("MESSAGE").unwrap();
    assert_eq!(&lines[1][column..], "rename health", "{versions}");
    assert_eq!(&lines[2][column..], "first example", "{versions}");
    assert_eq!(lines[1].find("ci-deploy-pipeline-production"), lines[0].find("AUTHOR"), "{versions}");

    let shown = portico(&cp, &["versions", "show", "2"]).stdout;
    assert!(shown.starts_with("# version 2 (") && shown.contains("by bootstrap\n# message: first example\n"), "{shown}");
    assert!(shown.contains("- name: demo-health\n") && shown.contains("  - /health\n"), "{shown}");
    // The shown version is a file apply takes: applied, it restores version 2.
    let restored = write(&dir, "v2.yaml", &shown);
    let run = portico(&cp, &["diff", "-f", &restored]);
    assert!(run.stdout.contains("/paths/0: \"/healthz\" → \"/health\""), "{}{}", run.stdout, run.stderr);
    let json: serde_json::Value = serde_json::from_str(&portico(&cp, &["versions", "show", "2", "--json"]).stdout).unwrap();
    assert_eq!(json["config"]["routes"].as_array().unwrap().len(), 3);

    let diff = portico(&cp, &["versions", "diff", "2", "3"]);
    assert_eq!(
        diff.stdout, "~ route demo-health\n    /paths/0: \"/health\" → \"/healthz\"\n0 to create, 1 to update, 0 to delete, 4 unchanged\n",
        "{}",
        diff.stderr
    );
    let missing = portico(&cp, &["versions", "diff", "2", "99"]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("404 Not Found"), "{}", missing.stderr);
}

#[tokio::test]
async fn audit_shows_who_changed_what_for_one_gateway_or_all() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    assert!(portico(&cp, &["consumers", "create", "alice"]).ok);

    let audit = portico(&cp, &["audit"]);
    assert!(audit.ok, "{}", audit.stderr);
    let lines: Vec<&str> = audit.stdout.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines[0].contains("SOURCE") && lines[0].contains("ACTION"), "{}", audit.stdout);
    assert!(lines[1].contains("bootstrap") && lines[1].contains("127.0.0.1:") && lines[1].contains("consumer.create"), "{}", audit.stdout);
    assert!(lines[1].contains(" alice "), "the target: {}", audit.stdout);

    let all = portico(&cp, &["audit", "--all-gateways", "--action", "gateway", "--json"]);
    let log: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!((log["total"].as_u64(), log["data"][0]["author"].as_str()), (Some(1), Some("portico")), "{log}");

    let bad = portico(&cp, &["audit", "--action", "no_such"]);
    assert!(!bad.ok && bad.stderr.contains("action:"), "{}", bad.stderr);
}
