//! The request-smuggling corpus (`tests/smuggling/requests/`) through a real
//! `portico-dp`: a catch-all route to the recording upstream, every vector
//! on a fresh connection, one after the other. Fails if any vector fails,
//! listing each with its source and reason.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use portico_test_support::smuggling::{Recorder, Timing, VerdictKind, corpus, load_corpus, probe};
use portico_test_support::{ControlPlane, DataPlane, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn every_smuggling_vector_is_rejected_or_forwarded_cleanly() {
    let vectors = load_corpus(&corpus::default_dir()).unwrap();
    let db = TestDb::postgres().await;
    let cp = ControlPlane::start(&db.url).await;
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", "dp-smuggling", None).await;
    let recorder = Recorder::start().await;
    let config = json!({
        "services": [{"name": "recorder", "targets": [{"url": recorder.url()}]}],
        "routes": [{"name": "all", "service": "recorder", "paths": ["/"], "strip_path": false}]
    });
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    let version = response.json::<serde_json::Value>().await.unwrap()["version"].as_u64().unwrap();
    dp.wait_for_version(version).await;
    let proxy = dp.proxy_url.trim_start_matches("http://").parse().unwrap();

    let timing = Timing::default();
    let (mut rejected, mut forwarded, mut failures) = (0, 0, Vec::new());
    let verbose = std::env::var_os("SMUGGLING_VERBOSE").is_some();
    for vector in &vectors {
        let started = std::time::Instant::now();
        let verdict = probe(proxy, vector, &recorder, &timing).await;
        if verbose {
            println!("{:?} {} ({} ms): {}", verdict.kind, vector.name, started.elapsed().as_millis(), verdict.reason);
        }
        match verdict.kind {
            VerdictKind::Rejected => rejected += 1,
            VerdictKind::ForwardedCleanly => forwarded += 1,
            VerdictKind::Failed => failures.push((vector, verdict.reason)),
        }
    }
    let passed = vectors.len() - failures.len();
    println!("{} vectors: {passed} passed ({rejected} rejected, {forwarded} forwarded cleanly), {} failed", vectors.len(), failures.len());
    for (vector, reason) in &failures {
        println!("FAILED {} [{}]: {reason}", vector.name, vector.source);
    }
    assert!(failures.is_empty(), "{} of {} smuggling vectors failed (listed above)", failures.len(), vectors.len());
}
