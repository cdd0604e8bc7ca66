//! CORS as a browser enforces it: real chromium (Debian's), driven by
//! `playwright-core` through `tests/browser/cors.mjs`, calls the real data
//! plane from pages on other origins. What counts is what the page's script
//! can read, not which headers went by: that is how users meet CORS.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::path::Path;

use portico_test_support::browser::{chromium, run_script};
use portico_test_support::{StaticPage, TestUpstream, serve_config};
use serde_json::{Value, json};

const KEY: &str = "alice-key-0123456789";
const PAGE: &str = "<!doctype html><meta charset=utf-8><title>Portico CORS test page</title><p>calls the gateway from here";

/// The result of fetch `name` in visit `visit`, with the visit's console as context.
fn result<'a>(seen: &'a Value, visit: &str, name: &str) -> (&'a Value, String) {
    let visit = seen["visits"].as_array().unwrap().iter().find(|v| v["name"] == visit).unwrap();
    let result = visit["results"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap();
    (result, format!("{visit:#}"))
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_reads_answers_and_errors_while_other_origins_are_refused() {
    let chromium = chromium();
    let upstream = TestUpstream::start("api").await;
    let allowed = StaticPage::start(PAGE).await;
    let foreign = StaticPage::start(PAGE).await;
    let config = json!({
        "services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
        "routes": [{
            "name": "api", "service": "app", "paths": ["/api"], "methods": ["GET"],
            "policies": [
                {"type": "key-auth"},
                {"type": "cors", "origins": [allowed.origin()], "credentials": true, "headers": ["x-api-key"]},
            ],
        }],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": KEY}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;

    let api = format!("{}/api/x", dp.proxy_url);
    let call = |name: &str, key: &str| json!({"name": name, "url": api, "headers": {"x-api-key": key}, "credentials": "include"});
    let input = json!({
        "chromium": chromium,
        "visits": [
            {"name": "allowed", "page": allowed.url(), "fetches": [call("right key", KEY), call("wrong key", "not-alices-key-0123456789")]},
            {"name": "foreign", "page": foreign.url(), "fetches": [call("right key", KEY)]},
        ],
    });
    let seen = run_script(&Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/cors.mjs"), &input).await;
    println!("the browser saw: {seen:#}");

    let (ok, context) = result(&seen, "allowed", "right key");
    assert_eq!(ok["status"], 200, "the browser let the page read the answer; {context}\ndata plane log:\n{}", dp.logs());
    let echo: Value = serde_json::from_str(ok["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["headers"]["x-consumer-username"], "alice", "the key went along and authenticated");
    assert_eq!(echo["headers"]["origin"], allowed.origin());

    let (refused, context) = result(&seen, "allowed", "wrong key");
    assert_eq!(refused["status"], 401, "the page can read the gateway's own 401; {context}");
    let error: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");

    let (blocked, context) = result(&seen, "foreign", "right key");
    assert_eq!(blocked["error"]["name"], "TypeError", "a page on another origin cannot read the API; {context}");

    assert_eq!(upstream.requests(), 1, "the gateway answered the preflights; only the allowed page's GET went upstream");
}
