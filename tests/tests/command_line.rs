//! Every binary's command line as a user meets it: `--help` of each command
//! gives every flag and argument its own help text, a bad flag is one line,
//! and `portico-cp` takes its flags after `serve` as before it.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use portico_test_support::process::binary;
use portico_test_support::{eventually, free_port};

const BINARIES: [&str; 3] = ["portico-cp", "portico-dp", "portico"];

/// `binary words… --help`, which must succeed.
fn help(binary_name: &str, words: &[&str]) -> String {
    let output = Command::new(binary(binary_name)).args(words).arg("--help").env_clear().output().unwrap();
    assert!(output.status.success(), "{binary_name} {words:?} --help: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A help page's sections (`Options:`, `Commands:`, …), each as its entries:
/// the entry's first column (`-g, --gateway <GATEWAY>`) and its help text,
/// whether on the same line or the lines below it, without the `[env: …]`
/// and `[default: …]` clap adds.
fn sections(page: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = None;
    for line in page.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_owned());
            continue;
        }
        let (Some(section), false) = (&current, line.trim().is_empty()) else { continue };
        let entries = sections.entry(section.clone()).or_default();
        let text = line.trim_start();
        if line.len() - text.len() <= 6 {
            let (name, help) = text.split_once("  ").unwrap_or((text, ""));
            entries.push((name.trim().to_owned(), help.trim().to_owned()));
        } else if let Some((_, help)) = entries.last_mut() {
            if !help.is_empty() {
                help.push(' ');
            }
            help.push_str(text);
        }
    }
    for (_, help) in sections.values_mut().flatten() {
        let end = ["[env:", "[default:", "[possible values:"].iter().filter_map(|suffix| help.find(suffix)).min().unwrap_or(help.len());
        *help = help[..end].trim().to_owned();
    }
    sections
}

/// Every command of `binary_name`, as the words that name it (`[]` is the binary itself).
fn commands(binary_name: &str, words: Vec<String>) -> Vec<Vec<String>> {
    let page = help(binary_name, &words.iter().map(String::as_str).collect::<Vec<_>>());
    let mut all = vec![words.clone()];
    for (name, _) in sections(&page).remove("Commands").unwrap_or_default() {
        if name != "help" {
            let mut sub = words.clone();
            sub.push(name);
            all.extend(commands(binary_name, sub));
        }
    }
    all
}

#[test]
fn every_flag_and_argument_of_every_command_has_its_own_help_text() {
    for binary_name in BINARIES {
        for words in commands(binary_name, vec![]) {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let page = help(binary_name, &words);
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for (section, entries) in sections(&page) {
                for (name, text) in entries {
                    let command = format!("{binary_name} {}", words.join(" "));
                    assert!(!text.is_empty(), "`{command} --help`: {section} {name} has no help text:\n{page}");
                    if section == "Commands" {
                        continue;
                    }
                    if let Some(other) = seen.insert(text.clone(), name.clone()) {
                        panic!("`{command} --help`: {other} and {name} share the help text '{text}':\n{page}");
                    }
                }
            }
        }
    }
}

#[test]
fn portico_dev_help_lists_only_what_dev_uses() {
    let page = help("portico", &["dev"]);
    for admin_flag in ["--admin-url", "--admin-token", "--gateway", "--json"] {
        assert!(!page.contains(admin_flag), "`portico dev --help` shows {admin_flag}:\n{page}");
        assert!(help("portico", &["versions"]).contains(admin_flag), "admin commands keep {admin_flag}");
    }
    assert!(page.contains("--rotate-admin-token"), "{page}");
}

#[test]
fn a_bad_flag_is_one_line_naming_it_and_exits_1() {
    for (binary_name, words) in [
        ("portico-cp", vec!["--no-such-flag"]),
        ("portico-cp", vec!["serve", "--no-such-flag"]),
        ("portico-dp", vec!["--no-such-flag"]),
        ("portico", vec!["versions", "--no-such-flag"]),
    ] {
        let output = Command::new(binary(binary_name)).args(&words).env_clear().output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{binary_name} {words:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{binary_name} {words:?}: {stderr}");
        assert!(stderr.starts_with(&format!("{binary_name}: error: unexpected argument '--no-such-flag' found")), "{stderr}");
        assert!(stderr.trim_end().ends_with("(see --help)"), "{stderr}");
    }
    let output = Command::new(binary("portico-dp")).args(["--listen", "nowhere"]).env_clear().output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("portico-dp: error: invalid value 'nowhere' for '--listen <LISTEN>'"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn portico_cp_takes_its_flags_after_serve_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("cp.db").display());
    let migrated = Command::new(binary("portico-cp")).args(["migrate", "--database-url", &database]).env_clear().output().unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(dir.path().join("cp.db").exists(), "migrate used the --database-url given after it");

    let admin = free_port();
    let mut serve = Command::new(binary("portico-cp"))
        .args(["serve", "--database-url", &database, "--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-token", "serve-admin-token-0123456789", "--cluster-token", "serve-cluster-token-0123456789"])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let versions = format!("http://127.0.0.1:{admin}/api/v1/gateways/default/versions");
    let status = eventually("portico-cp serve to answer on --admin-listen", Duration::from_secs(30), || async {
        Some(client.get(&versions).bearer_auth("serve-admin-token-0123456789").send().await.ok()?.status())
    })
    .await;
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(status, 200, "the --admin-token given after serve is the bootstrap token");
}
