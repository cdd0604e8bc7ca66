//! How fast a config change reaches the fleet, and what a 10,000-route
//! config costs a data plane. Starts the real `portico-cp` (SQLite, or
//! Postgres with `--postgres`) and N real `portico-dp` processes on
//! loopback, and prints a Markdown report.
//!
//! * Propagation: for N data planes, a route is added through the admin
//!   API `--changes` times; for each change the time from sending the
//!   request to each node applying it (the node's own "config applied" log
//!   timestamp, so polling does not disturb the measurement) is recorded,
//!   and the route is then checked to answer through every node.
//! * 10k routes: one `PUT …/config` with 10,000 routes; the admin call's
//!   latency, the time until a node serves it, the node's own verify+compile
//!   time (`portico_config_compile_seconds`) and its resident memory before
//!   and after, with the other nodes stopped first.
//!
//! Usage: `PORTICO_BIN_DIR=target/release propagation [--nodes 1,10,50]
//! [--changes 30] [--routes 10000] [--postgres]` (see `bench/run`).

use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use portico_test_support::{ControlPlane, DataPlane, TestDb, TestUpstream};
use reqwest::Method;
use serde_json::{Value, json};

struct Options {
    nodes: Vec<usize>,
    changes: usize,
    routes: usize,
    postgres: bool,
}

fn options() -> Options {
    let mut options = Options { nodes: vec![1, 10, 50], changes: 30, routes: 10_000, postgres: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--nodes" => options.nodes = value().split(',').map(|n| n.parse().expect("--nodes 1,10,50")).collect(),
            "--changes" => options.changes = value().parse().expect("--changes N"),
            "--routes" => options.routes = value().parse().expect("--routes N"),
            "--postgres" => options.postgres = true,
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

#[tokio::main]
async fn main() {
    let options = options();
    let db = if options.postgres { TestDb::postgres().await } else { TestDb::sqlite() };
    let cp = ControlPlane::start(&db.url).await;
    let upstream = TestUpstream::start("bench").await;
    let service = json!({"name": "bench", "targets": [{"url": upstream.url()}]});
    let created = cp.admin(Method::POST, "/api/v1/gateways/default/services").json(&service).send().await.expect("admin API");
    assert!(created.status().is_success(), "{}", created.text().await.unwrap_or_default());

    println!("## Config propagation\n");
    println!(
        "Store: {}. Each change adds one route through the admin API; time from sending the request to the node's \"config applied\" log line.\n",
        if options.postgres { "Postgres" } else { "SQLite" }
    );
    println!("| data planes | changes | all nodes p50 | all nodes p99 | all nodes max | per node p50 | per node p99 |");
    println!("|---|---|---|---|---|---|---|");
    let mut fleet: Vec<DataPlane> = Vec::new();
    for &n in &options.nodes {
        while fleet.len() < n {
            let id = format!("bench-{}", fleet.len());
            fleet.push(DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", &id, None).await);
        }
        let current = current_version(&cp).await;
        for dp in &fleet {
            dp.wait_for_version(current).await;
        }
        let (mut whole, mut each) = (Vec::new(), Vec::new());
        for i in 0..options.changes {
            let path = format!("/probe-{n}-{i}");
            let route = json!({"name": format!("probe-{n}-{i}"), "service": "bench", "paths": [path]});
            let sent = SystemTime::now();
            let response = cp.admin(Method::POST, "/api/v1/gateways/default/routes").json(&route).send().await.expect("admin API");
            let version: u64 = response.headers()["portico-config-version"].to_str().expect("ascii").parse().expect("number");
            let mut slowest = Duration::ZERO;
            for dp in &fleet[..n] {
                let applied = applied_at(dp, version).await;
                let took = applied.duration_since(sent).unwrap_or_default();
                slowest = slowest.max(took);
                each.push(took);
            }
            whole.push(slowest);
            for dp in &fleet[..n] {
                let served = reqwest::get(format!("{}{path}", dp.proxy_url)).await.expect("proxy");
                assert_eq!(served.status(), 200, "{} does not serve {path}", dp.node_id);
            }
        }
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} |",
            options.changes,
            ms(percentile(&mut whole, 50.0)),
            ms(percentile(&mut whole, 99.0)),
            ms(percentile(&mut whole, 100.0)),
            ms(percentile(&mut each, 50.0)),
            ms(percentile(&mut each, 99.0)),
        );
    }

    // One node alone, so the others' compiles do not compete for the cores.
    fleet.truncate(1);
    let dp = &fleet[0];
    let rss_before = rss_kib(dp.pid());
    let (sum_before, count_before) = compile_histogram(dp).await;
    let routes: Vec<Value> = (0..options.routes)
        .map(|i| json!({"name": format!("r-{i}"), "service": "bench", "paths": [format!("/svc-{}/res-{i}", i % 97)], "methods": ["GET"]}))
        .collect();
    let config = json!({"services": [service], "routes": routes});
    let started = Instant::now();
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.expect("admin API");
    let put_took = started.elapsed();
    let body: Value = response.json().await.expect("json");
    let version = body["version"].as_u64().expect("version");
    dp.wait_for_version(version).await;
    let served_took = started.elapsed();
    let (sum_after, count_after) = compile_histogram(dp).await;
    let compile = (sum_after - sum_before) / (count_after - count_before).max(1.0);
    let rss_after = rss_kib(dp.pid());
    let probe = format!("{}/svc-{}/res-{}", dp.proxy_url, (options.routes - 1) % 97, options.routes - 1);
    assert_eq!(reqwest::get(&probe).await.expect("proxy").status(), 200);

    println!("\n## A {}-route config\n", options.routes);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| `PUT …/config` (validate, compile, store, publish) | {} |", ms(put_took));
    println!("| from the `PUT` to a data plane serving it | {} |", ms(served_took));
    println!("| data plane verify + compile (`portico_config_compile_seconds`) | {:.1} ms |", compile * 1000.0);
    println!("| data plane resident memory before → after | {} MiB → {} MiB |", rss_before / 1024, rss_after / 1024);
    println!("| snapshot size | {} KiB |", snapshot_size(&cp, version).await / 1024);
}

async fn current_version(cp: &ControlPlane) -> u64 {
    let gateway: Value = cp.admin(Method::GET, "/api/v1/gateways/default").send().await.expect("admin").json().await.expect("json");
    gateway["version"].as_u64().expect("version")
}

/// When `dp` logged applying `version` (its JSON log's timestamp).
async fn applied_at(dp: &DataPlane, version: u64) -> SystemTime {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = dp.logs().lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).find_map(|entry| {
            let fields = &entry["fields"];
            (fields["message"] == "config applied" && fields["version"].as_u64() == Some(version))
                .then(|| entry["timestamp"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok()))
                .flatten()
        });
        if let Some(at) = found {
            return at.into();
        }
        assert!(Instant::now() < deadline, "{} never applied version {version}", dp.node_id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn compile_histogram(dp: &DataPlane) -> (f64, f64) {
    let metrics = reqwest::get(format!("{}/metrics", dp.status_url)).await.expect("metrics").text().await.expect("text");
    let value = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0);
    (value("portico_config_compile_seconds_sum"), value("portico_config_compile_seconds_count"))
}

async fn snapshot_size(cp: &ControlPlane, version: u64) -> usize {
    let response = cp.admin(Method::GET, &format!("/api/v1/gateways/default/versions/{version}")).send().await.expect("admin");
    let body: Value = response.json().await.expect("json");
    serde_json::to_vec(&body["config"]).map(|b| b.len()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
