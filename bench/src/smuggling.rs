//! The request-smuggling corpus (`tests/smuggling/requests/`) through
//! Portico, nginx and HAProxy, each a reverse proxy on loopback in front of
//! the same recording upstream, with the defaults a user would have (nginx
//! `proxy_pass` with `proxy_http_version 1.1`, HAProxy `mode http`). Prints
//! a Markdown section: a table of every vector's verdict per proxy and a
//! summary of where Portico is stricter or looser than each.
//!
//! Usage: `PORTICO_BIN_DIR=target/debug smuggling` (see `bench/smuggling`,
//! which installs nginx and HAProxy and builds the binaries). Portico's
//! control plane runs on SQLite.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portico_test_support::smuggling::corpus::escape;
use portico_test_support::smuggling::{Recorder, Timing, Vector, Verdict, VerdictKind, corpus, load_corpus, probe};
use portico_test_support::{ControlPlane, DataPlane, TestDb, eventually, free_port};
use reqwest::Method;
use serde_json::json;

/// A child process killed on drop.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sbin(name: &str) -> String {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_owned())
}

fn spawn(program: &str, args: &[&str], log: &std::path::Path) -> Proxy {
    let log = std::fs::File::create(log).expect("proxy log file");
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e} (bench/smuggling installs nginx and haproxy)"));
    Proxy(child)
}

async fn wait_answering(name: &str, url: &str) {
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let check = || async { client.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) };
    eventually(&format!("{name} to answer on {url}"), Duration::from_secs(30), check).await;
}

fn nginx(dir: &std::path::Path, port: u16, upstream: &str) -> Proxy {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               server {{ listen 127.0.0.1:{port};\n\
                 location / {{ proxy_pass {upstream}; proxy_http_version 1.1; }} }} }}\n"
        ),
    )
    .expect("write nginx.conf");
    spawn(&sbin("nginx"), &["-c", &conf.display().to_string(), "-p", &d.to_string()], &dir.join("nginx.log"))
}

fn haproxy(dir: &std::path::Path, port: u16, upstream: SocketAddr) -> Proxy {
    let conf = dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend in\n  bind 127.0.0.1:{port}\n  default_backend app\nbackend app\n  server up {upstream}\n"
        ),
    )
    .expect("write haproxy.cfg");
    spawn(&sbin("haproxy"), &["-db", "-f", &conf.display().to_string()], &dir.join("haproxy.log"))
}

fn cell(verdict: &Verdict) -> String {
    let reason = verdict.reason.replace('|', "\\|");
    let reason: String = reason.chars().take(180).collect();
    match verdict.kind {
        VerdictKind::Rejected => format!("rejected ({reason})"),
        VerdictKind::ForwardedCleanly => "forwarded cleanly".to_owned(),
        VerdictKind::Failed => format!("**FAILED**: {reason}"),
    }
}

fn rank(kind: VerdictKind) -> u8 {
    match kind {
        VerdictKind::Rejected => 0,
        VerdictKind::ForwardedCleanly => 1,
        VerdictKind::Failed => 2,
    }
}

async fn run(name: &str, proxy: SocketAddr, vectors: &[Vector], recorder: &Recorder) -> Vec<Verdict> {
    eprintln!("smuggling: {} vectors through {name}", vectors.len());
    let timing = Timing::default();
    let mut out = Vec::with_capacity(vectors.len());
    for vector in vectors {
        out.push(probe(proxy, vector, recorder, &timing).await);
    }
    out
}

#[tokio::main]
async fn main() {
    let vectors = load_corpus(&corpus::default_dir()).expect("load the corpus");
    let recorder = Recorder::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");

    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "smuggling", None).await;
    let config = json!({
        "services": [{"name": "recorder", "targets": [{"url": recorder.url()}]}],
        "routes": [{"name": "all", "service": "recorder", "paths": ["/"], "strip_path": false}]
    });
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.expect("admin API");
    assert!(response.status().is_success(), "{}", response.text().await.unwrap_or_default());
    let version = response.json::<serde_json::Value>().await.expect("config version")["version"].as_u64().expect("version");
    dp.wait_for_version(version).await;

    let (ngx_port, hap_port) = (free_port(), free_port());
    let _nginx = nginx(dir.path(), ngx_port, &recorder.url());
    let _haproxy = haproxy(dir.path(), hap_port, recorder.addr);
    let ngx: SocketAddr = format!("127.0.0.1:{ngx_port}").parse().expect("address");
    let hap: SocketAddr = format!("127.0.0.1:{hap_port}").parse().expect("address");
    wait_answering("nginx", &format!("http://{ngx}/ready")).await;
    wait_answering("haproxy", &format!("http://{hap}/ready")).await;
    let portico: SocketAddr = dp.proxy_url.trim_start_matches("http://").parse().expect("address");
    recorder.take(Duration::from_secs(1)).await;

    let p = run("Portico", portico, &vectors, &recorder).await;
    let n = run("nginx", ngx, &vectors, &recorder).await;
    let h = run("HAProxy", hap, &vectors, &recorder).await;

    let version_of = |program: &str, flag: &str| {
        let out = Command::new(sbin(program)).arg(flag).output().map(|o| [o.stdout, o.stderr].concat()).unwrap_or_default();
        String::from_utf8_lossy(&out).lines().find(|l| !l.trim().is_empty()).unwrap_or("?").trim().to_owned()
    };
    let count = |v: &[Verdict], k: VerdictKind| v.iter().filter(|x| x.kind == k).count();
    println!("## Request smuggling: Portico, nginx, HAProxy\n");
    println!(
        "`bench/smuggling`: the {} vectors of `tests/smuggling/requests/` (format and pass rules in `tests/smuggling/README.md`), \
         each on a fresh connection, through each proxy in front of the same recording upstream on loopback. \
         nginx: `proxy_pass` with `proxy_http_version 1.1`, otherwise defaults ({}). HAProxy: `mode http`, otherwise defaults ({}). \
         Portico: this commit's `portico-dp`, one catch-all route.\n",
        vectors.len(),
        version_of("nginx", "-v"),
        version_of("haproxy", "-v"),
    );
    println!("| proxy | rejected | forwarded cleanly | FAILED |\n|---|---|---|---|");
    for (name, v) in [("Portico", &p), ("nginx", &n), ("HAProxy", &h)] {
        println!(
            "| {name} | {} | {} | {} |",
            count(v, VerdictKind::Rejected),
            count(v, VerdictKind::ForwardedCleanly),
            count(v, VerdictKind::Failed)
        );
    }
    println!();
    for (name, other) in [("nginx", &n), ("HAProxy", &h)] {
        let stricter: Vec<&str> = vectors
            .iter()
            .zip(p.iter().zip(other.iter()))
            .filter(|(_, (a, b))| rank(a.kind) < rank(b.kind))
            .map(|(v, _)| v.name.as_str())
            .collect();
        let looser: Vec<&str> = vectors
            .iter()
            .zip(p.iter().zip(other.iter()))
            .filter(|(_, (a, b))| rank(a.kind) > rank(b.kind))
            .map(|(v, _)| v.name.as_str())
            .collect();
        let fails_only_portico: Vec<&str> = vectors
            .iter()
            .zip(p.iter().zip(other.iter()))
            .filter(|(_, (a, b))| a.kind == VerdictKind::Failed && b.kind != VerdictKind::Failed)
            .map(|(v, _)| v.name.as_str())
            .collect();
        println!(
            "* **Portico against {name}**: stricter (Portico rejects or passes where {name} forwards or fails) on {}; looser on {}, \
             of which Portico fails and {name} does not on {}: {}.",
            stricter.len(),
            looser.len(),
            fails_only_portico.len(),
            if fails_only_portico.is_empty() {
                "none".to_owned()
            } else {
                fails_only_portico.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            }
        );
    }
    let all_fail: Vec<&str> = vectors
        .iter()
        .zip(p.iter().zip(n.iter().zip(h.iter())))
        .filter(|(_, (a, (b, c)))| a.kind == VerdictKind::Failed && b.kind == VerdictKind::Failed && c.kind == VerdictKind::Failed)
        .map(|(v, _)| v.name.as_str())
        .collect();
    println!(
        "* Failed by all three: {}.\n",
        if all_fail.is_empty() { "none".to_owned() } else { all_fail.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ") }
    );
    println!("<details><summary>Every vector</summary>\n");
    println!("| vector | bytes (start) | Portico | nginx | HAProxy |\n|---|---|---|---|---|");
    for (i, v) in vectors.iter().enumerate() {
        let bytes: String = escape(&v.bytes).chars().take(60).collect::<String>().replace('|', "\\|").replace('`', "'");
        println!("| `{}` | `{bytes}` | {} | {} | {} |", v.name, cell(&p[i]), cell(&n[i]), cell(&h[i]));
    }
    println!("\n</details>\n");
}
