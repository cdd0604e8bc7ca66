//! The response cache end to end, against the real binaries and a
//! counting origin whose answers each URL spells (`test-support`'s
//! `origin`): RFC 9111's shared-cache rules (Authorization, Set-Cookie,
//! Vary, `Vary: *`), per-consumer keys, coalescing, stale responses,
//! revalidation, the entry and memory caps, entries kept or dropped across
//! config versions, metrics, and `Cache-Status` read by an RFC 8941 parser.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::Duration;

use futures::StreamExt;

use portico_test_support::origin::Origin;
use portico_test_support::{eventually, serve_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One route `/c` to `origin` with `policies` (a `cache` policy among them).
fn config(origin: &Origin, policies: Value) -> Value {
    json!({
        "services": [{"name": "origin", "targets": [{"url": origin.url()}]}],
        "routes": [{"name": "cached", "service": "origin", "paths": ["/c"], "strip_path": false, "policies": policies}],
    })
}

/// `config` with the consumers alice and bob, each with a key-auth key
/// (`alice-key-0123456789`, `bob-key-0123456789ab`).
fn with_two_consumers(mut config: Value) -> Value {
    config["consumers"] = json!([{"username": "alice"}, {"username": "bob"}]);
    config["credentials"] = json!([
        {"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"},
        {"consumer": "bob", "type": "key-auth", "key": "bob-key-0123456789ab"},
    ]);
    config
}

/// Portico's member of `Cache-Status`, parsed as an RFC 8941 list.
#[derive(Debug, Default, PartialEq)]
struct Status {
    hit: bool,
    fwd: Option<String>,
    fwd_status: Option<i64>,
    ttl: Option<i64>,
    stored: bool,
    collapsed: bool,
    detail: Option<String>,
}

fn cache_status(headers: &reqwest::header::HeaderMap) -> Status {
    let value: Vec<&str> = headers.get_all("cache-status").iter().map(|v| v.to_str().unwrap()).collect();
    let value = value.join(", ");
    let list: sfv::List =
        sfv::Parser::new(&value).parse().unwrap_or_else(|e| panic!("Cache-Status {value:?} is not an RFC 8941 list: {e}"));
    let item = list
        .iter()
        .rev()
        .find_map(|entry| match entry {
            sfv::ListEntry::Item(item) if item.bare_item.as_token().is_some_and(|t| t.as_str() == "Portico") => Some(item),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Portico member in {value:?}"));
    let mut status = Status::default();
    for (key, value) in &item.params {
        let token = || value.as_token().map(|t| t.as_str().to_owned());
        let integer = || value.as_integer().map(i64::from);
        match key.as_str() {
            "hit" => status.hit = value.as_boolean().unwrap(),
            "fwd" => status.fwd = token(),
            "fwd-status" => status.fwd_status = integer(),
            "ttl" => status.ttl = integer(),
            "stored" => status.stored = value.as_boolean().unwrap(),
            "collapsed" => status.collapsed = value.as_boolean().unwrap(),
            "detail" => status.detail = token(),
            other => panic!("unexpected Cache-Status parameter {other} in {value:?}"),
        }
    }
    status
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

fn n(body: &str) -> u64 {
    serde_json::from_str::<Value>(body).unwrap_or_else(|_| panic!("not JSON: {body}"))["n"].as_u64().unwrap()
}

/// Waits until an answer stored with `max-age=1` is stale: time itself is
/// what these tests wait for, so there is no state to poll.
async fn outlive_max_age_1() {
    tokio::time::sleep(Duration::from_millis(1_200)).await;
}

#[tokio::test]
async fn a_fresh_response_is_served_with_age_and_a_parseable_cache_status() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/a?cc=max-age%3D60", dp.proxy_url);
    let (status, headers, body) = get(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        cache_status(&headers),
        Status { fwd: Some("uri-miss".into()), fwd_status: Some(200), ttl: Some(60), stored: true, ..Status::default() }
    );
    let (_, headers, again) = get(&url, &[]).await;
    assert_eq!(again, body, "the stored body");
    let hit = cache_status(&headers);
    assert!(hit.hit && hit.fwd.is_none() && (59..=60).contains(&hit.ttl.unwrap()), "{hit:?}");
    assert!(headers["age"].to_str().unwrap().parse::<u64>().unwrap() <= 1);
    assert_eq!(origin.requests(), 1);
    assert_eq!(dp.metric("portico_cache_hits_total{route=\"cached\"}").await, Some(1.0));
    assert_eq!(dp.metric("portico_cache_misses_total{route=\"cached\"}").await, Some(1.0));
    assert!(dp.metric("portico_cache_stored_bytes{route=\"cached\"}").await.unwrap() > 0.0);
    // A POST on the cached route goes upstream and says why.
    let post = client().post(&url).send().await.unwrap();
    assert_eq!(cache_status(post.headers()).fwd.as_deref(), Some("method"));
}

#[tokio::test]
async fn requests_with_authorization_are_not_shared_unless_the_response_allows_it() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/private?cc=max-age%3D60", dp.proxy_url);
    let (_, headers, a) = get(&url, &[("authorization", "Basic QQ==")]).await;
    assert_eq!(cache_status(&headers).detail.as_deref(), Some("authorization"));
    let (_, _, b) = get(&url, &[("authorization", "Basic Qg==")]).await;
    assert_eq!(origin.requests(), 2, "A's answer is never B's");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["authorization"], "Basic Qg==", "{a} / {b}");
    // `public` lets a shared cache answer requests with Authorization.
    let public = format!("{}/c/public?cc=public%2C%20max-age%3D60", dp.proxy_url);
    get(&public, &[("authorization", "Basic QQ==")]).await;
    let (_, headers, _) = get(&public, &[("authorization", "Basic Qg==")]).await;
    assert!(cache_status(&headers).hit);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn each_consumer_of_an_authenticated_route_has_entries_of_its_own() {
    let origin = Origin::start().await;
    let config = with_two_consumers(config(&origin, json!([{"type": "key-auth"}, {"type": "cache"}])));
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/c/me?cc=max-age%3D60", dp.proxy_url);
    let (_, _, alice) = get(&url, &[("x-api-key", "alice-key-0123456789")]).await;
    let (_, headers, bob) = get(&url, &[("x-api-key", "bob-key-0123456789ab")]).await;
    assert_eq!(cache_status(&headers).fwd.as_deref(), Some("uri-miss"), "bob never gets alice's entry: {headers:?} {bob}");
    assert_eq!(serde_json::from_str::<Value>(&alice).unwrap()["consumer"], "alice");
    assert_eq!(serde_json::from_str::<Value>(&bob).unwrap()["consumer"], "bob");
    let (_, headers, again) = get(&url, &[("x-api-key", "bob-key-0123456789ab")]).await;
    assert!(cache_status(&headers).hit);
    assert_eq!(again, bob);
    assert_eq!(origin.requests(), 2);
    let refused = client().get(&url).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(cache_status(refused.headers()).detail.as_deref(), Some("not-consulted"));
}

#[tokio::test]
async fn vary_over_two_header_lines_stores_each_variant_apart_and_vary_star_is_not_stored() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/v?cc=max-age%3D60&vary=Accept&vary=Accept-Language", dp.proxy_url);
    let (_, _, de) = get(&url, &[("accept", "application/json"), ("accept-language", "de")]).await;
    let (_, headers, fr) = get(&url, &[("accept", "application/json"), ("accept-language", "fr")]).await;
    assert_eq!(cache_status(&headers).fwd.as_deref(), Some("vary-miss"));
    assert_eq!(serde_json::from_str::<Value>(&fr).unwrap()["accept-language"], "fr");
    let (_, headers, again) = get(&url, &[("accept", "application/json"), ("accept-language", "de")]).await;
    assert!(cache_status(&headers).hit, "the first variant is still there");
    assert_eq!(again, de);
    let (_, headers, _) = get(&url, &[("accept", "text/html"), ("accept-language", "de")]).await;
    assert_eq!(cache_status(&headers).fwd.as_deref(), Some("vary-miss"), "the first Vary line counts too");
    assert_eq!(origin.requests(), 3);

    let star = format!("{}/c/star?cc=max-age%3D60&vary=*", dp.proxy_url);
    let (_, headers, _) = get(&star, &[]).await;
    assert_eq!(cache_status(&headers).detail.as_deref(), Some("vary-star"));
    get(&star, &[]).await;
    assert_eq!(origin.requests(), 5);
}

#[tokio::test]
async fn set_cookie_private_and_no_store_responses_are_not_stored() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    for (query, why) in [
        ("cc=max-age%3D60&cookie=1", "set-cookie"),
        ("cc=private%2C%20max-age%3D60", "private"),
        ("cc=no-store", "no-store"),
        ("status=500&cc=max-age%3D60", "status"),
    ] {
        let url = format!("{}/c/x?{query}", dp.proxy_url);
        let before = origin.requests();
        let (_, headers, _) = get(&url, &[]).await;
        assert_eq!(cache_status(&headers).detail.as_deref(), Some(why), "{query}");
        get(&url, &[]).await;
        assert_eq!(origin.requests(), before + 2, "{query}: both went upstream");
    }
}

#[tokio::test]
async fn a_hundred_concurrent_cold_requests_make_one_upstream_request() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/cold?cc=max-age%3D60&delay=500", dp.proxy_url);
    let answers = futures::future::join_all((0..100).map(|_| get(&url, &[]))).await;
    assert_eq!(origin.requests(), 1, "coalesced into one");
    let bodies: std::collections::HashSet<String> = answers.iter().map(|(_, _, body)| body.clone()).collect();
    assert_eq!(bodies.len(), 1, "everyone got the one answer");
    let collapsed = answers.iter().filter(|(_, headers, _)| cache_status(headers).collapsed).count();
    assert!(collapsed >= 90, "{collapsed} of 100 waited for the leader");
    assert!(dp.metric("portico_cache_coalesced_total{route=\"cached\"}").await.unwrap() >= 90.0);
}

#[tokio::test]
async fn an_uncacheable_answer_releases_every_waiter_at_once() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/hot?cc=no-store&delay=400", dp.proxy_url);
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..20).map(|_| get(&url, &[]))).await;
    // Waiters wait at most 5 s (wait_ms): released by the leader's answer, all are done long before.
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(answers.iter().all(|(status, _, _)| *status == StatusCode::OK));
    assert_eq!(origin.requests(), 20, "no-store: every request needs its own answer");
    // One leader, then the 19 waiters together: never one after another.
    assert!(origin.most_in_flight() >= 19, "at most {} in flight at once", origin.most_in_flight());
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once_in_the_background() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/swr?cc=max-age%3D1%2C%20stale-while-revalidate%3D60&delay=300", dp.proxy_url);
    let (_, _, first) = get(&url, &[]).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let stale = futures::future::join_all((0..5).map(|_| get(&url, &[]))).await;
    assert_eq!(origin.finished(), 1, "the stale answers came before the refresh finished");
    for (_, headers, body) in &stale {
        let status = cache_status(headers);
        assert!(status.hit && status.ttl.unwrap() < 0, "{status:?}");
        assert_eq!(status.detail.as_deref(), Some("stale-while-revalidate"));
        assert_eq!(body, &first);
    }
    eventually("the background refresh", Duration::from_secs(5), || async { (origin.finished() == 2).then_some(()) }).await;
    let (_, headers, fresh) = get(&url, &[]).await;
    assert!(cache_status(&headers).hit);
    assert_eq!(n(&fresh), 2, "the refreshed response");
    assert_eq!(origin.requests(), 2, "one refresh for five stale answers");
}

#[tokio::test]
async fn stale_if_error_covers_a_stopped_upstream() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache", "stale_if_error_s": 60}])), &[]).await;
    let url = format!("{}/c/sie?cc=max-age%3D1", dp.proxy_url);
    let strict = format!("{}/c/sie?cc=max-age%3D1%2C%20must-revalidate", dp.proxy_url);
    let (_, _, first) = get(&url, &[]).await;
    let (_, headers, _) = get(&strict, &[]).await;
    assert!(cache_status(&headers).stored);
    origin.stop();
    outlive_max_age_1().await;
    let (status, headers, body) = get(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, first);
    let cache = cache_status(&headers);
    assert_eq!((cache.fwd.as_deref(), cache.detail.as_deref()), (Some("stale"), Some("stale-if-error")), "{cache:?}");
    assert!(cache.ttl.unwrap() < 0);
    assert_eq!(dp.metric("portico_cache_stale_served_total{route=\"cached\"}").await, Some(1.0));
    // must-revalidate forbids the policy's window, so the expired entry was
    // of no more use (and gone): the same failure is the gateway's error.
    let (status, headers, _) = get(&strict, &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(cache_status(&headers).detail.as_deref(), Some("upstream-error"));
}

#[tokio::test]
async fn stale_if_error_from_the_response_covers_an_upstream_5xx() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/5xx?cc=max-age%3D1%2C%20stale-if-error%3D60&fail_after=1", dp.proxy_url);
    let (_, _, first) = get(&url, &[]).await;
    outlive_max_age_1().await;
    let (status, headers, body) = get(&url, &[]).await;
    assert_eq!((status, body), (StatusCode::OK, first), "the stale answer stands in for the 503");
    let cache = cache_status(&headers);
    assert_eq!((cache.fwd.as_deref(), cache.fwd_status, cache.detail.as_deref()), (Some("stale"), Some(503), Some("stale-if-error")));
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn key_headers_part_entries_and_consumers_can_share_when_the_policy_says_so() {
    let origin = Origin::start().await;
    let mut config =
        config(&origin, json!([{"type": "key-auth"}, {"type": "cache", "key": {"headers": ["accept-language"], "consumer": false}}]));
    config["consumers"] = json!([{"username": "alice"}, {"username": "bob"}]);
    config["credentials"] = json!([
        {"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"},
        {"consumer": "bob", "type": "key-auth", "key": "bob-key-0123456789ab"},
    ]);
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/c/shared?cc=max-age%3D60", dp.proxy_url);
    let (_, _, alice) = get(&url, &[("x-api-key", "alice-key-0123456789"), ("accept-language", "de")]).await;
    let (_, headers, bob) = get(&url, &[("x-api-key", "bob-key-0123456789ab"), ("accept-language", "de")]).await;
    assert!(cache_status(&headers).hit, "consumer: false shares the entry");
    assert_eq!(alice, bob);
    let (_, headers, _) = get(&url, &[("x-api-key", "bob-key-0123456789ab"), ("accept-language", "fr")]).await;
    assert_eq!(cache_status(&headers).fwd.as_deref(), Some("uri-miss"), "a key header's value parts entries");
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn an_expired_entry_is_revalidated_and_a_304_refreshes_it() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/etag?cc=max-age%3D1&etag=v1", dp.proxy_url);
    let (_, _, first) = get(&url, &[]).await;
    outlive_max_age_1().await;
    let (status, headers, body) = get(&url, &[]).await;
    assert_eq!(status, StatusCode::OK, "the client gets the stored body");
    assert_eq!(body, first);
    assert_eq!(
        cache_status(&headers),
        Status { fwd: Some("stale".into()), fwd_status: Some(304), ttl: Some(1), stored: true, ..Status::default() }
    );
    assert_eq!(origin.seen()[1].1.as_deref(), Some("\"v1\""), "revalidated with If-None-Match");
    let (_, headers, _) = get(&url, &[]).await;
    assert!(cache_status(&headers).hit, "fresh again");
    // The client's own validator is answered from the cache.
    let (status, _, body) = get(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn a_response_over_the_entry_cap_streams_through_unstored() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache", "max_entry_bytes": 10_000}])), &[]).await;
    for chunked in [false, true] {
        let url = format!("{}/c/big?cc=max-age%3D60&size=200000{}", dp.proxy_url, if chunked { "&chunked=1" } else { "" });
        let before = origin.requests();
        for _ in 0..2 {
            let (status, headers, body) = get(&url, &[]).await;
            assert_eq!((status, body.len()), (StatusCode::OK, 200_000), "whole, chunked: {chunked}");
            assert!(!cache_status(&headers).hit);
        }
        assert_eq!(origin.requests(), before + 2, "never stored, chunked: {chunked}");
    }
    let small = format!("{}/c/small?cc=max-age%3D60&size=5000&chunked=1", dp.proxy_url);
    get(&small, &[]).await;
    let (_, headers, body) = get(&small, &[]).await;
    assert!(cache_status(&headers).hit && body.len() == 5_000, "a streamed body under the cap is stored");
}

#[tokio::test]
async fn memory_stays_under_the_cap_after_ten_thousand_entries() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &["--cache-memory-mb", "4"]).await;
    let client = client();
    let fill = |range: std::ops::Range<usize>| {
        let client = &client;
        let proxy = &dp.proxy_url;
        futures::stream::iter(range).for_each_concurrent(16, move |i| async move {
            let response = client.get(format!("{proxy}/c/m{i}?cc=max-age%3D600&size=10000")).send().await.unwrap();
            assert_eq!(response.bytes().await.unwrap().len(), 10_000);
        })
    };
    // Warm up to the cap, then measure what 9,000 more entries (90 MB of bodies) add.
    fill(0..1_000).await;
    let before = resident_bytes(dp.pid());
    fill(1_000..10_000).await;
    let grown = resident_bytes(dp.pid()).saturating_sub(before);
    let stored = dp.metric("portico_cache_stored_bytes{route=\"cached\"}").await.unwrap();
    assert!(stored > 2_000_000.0 && stored <= 4.0 * 1_048_576.0, "stored {stored} bytes with a 4 MiB cap");
    assert!(grown < 24 * 1_048_576, "the node grew by {grown} bytes while 90 MB passed through a 4 MiB cache");
    let evicted = dp.metric("portico_cache_evictions_total{route=\"cached\",cause=\"size\"}").await.unwrap();
    assert!(evicted > 9_000.0, "{evicted} evicted");
}

/// A process's resident memory, from `/proc`.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status.lines().find_map(|line| line.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim();
    kib.parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn entries_survive_a_config_edit_that_keeps_the_policy_and_not_one_that_changes_it() {
    let origin = Origin::start().await;
    let mut config = config(&origin, json!([{"type": "cache"}]));
    let (_db, cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/c/keep?cc=max-age%3D60", dp.proxy_url);
    get(&url, &[]).await;
    let publish = |config: Value| {
        let cp = &cp;
        async move {
            let response = cp.admin(reqwest::Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()["version"].as_u64().unwrap()
        }
    };
    config["routes"].as_array_mut().unwrap().push(json!({"name": "other", "service": "origin", "paths": ["/other"]}));
    dp.wait_for_version(publish(config.clone()).await).await;
    let (_, headers, _) = get(&url, &[]).await;
    assert!(cache_status(&headers).hit, "another route changed: entries stay");
    config["routes"][0]["policies"] = json!([{"type": "cache", "ttl_s": 5}]);
    dp.wait_for_version(publish(config).await).await;
    let (_, headers, _) = get(&url, &[]).await;
    assert_eq!(cache_status(&headers).fwd.as_deref(), Some("uri-miss"), "a changed policy starts empty");
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn the_key_takes_the_query_as_the_policy_says_and_sends_the_same_upstream() {
    let origin = Origin::start().await;
    let policy = json!([{"type": "cache", "key": {"query": {"allow": ["cc", "page"]}}}]);
    let (_db, _cp, dp) = serve_config(&config(&origin, policy), &[]).await;
    let (_, _, first) = get(&format!("{}/c/q?page=2&cc=max-age%3D60&utm=a", dp.proxy_url), &[]).await;
    assert_eq!(serde_json::from_str::<Value>(&first).unwrap()["query"], "cc=max-age%3D60&page=2", "only the allowed, sorted");
    let (_, headers, again) = get(&format!("{}/c/q?utm=b&cc=max-age%3D60&page=2", dp.proxy_url), &[]).await;
    assert!(cache_status(&headers).hit);
    assert_eq!(again, first);
    let (_, headers, _) = get(&format!("{}/c/q?cc=max-age%3D60&page=3", dp.proxy_url), &[]).await;
    assert!(!cache_status(&headers).hit);
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn an_unsafe_method_empties_the_url_and_head_is_stored_apart() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/doc?cc=max-age%3D600&tag=doc-1", dp.proxy_url);
    let (_, headers, _) = get(&url, &[]).await;
    assert!(headers.get("cache-tag").is_none(), "tags are for the cache, not for clients");
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(cache_status(head.headers()).fwd.as_deref(), Some("uri-miss"), "HEAD has entries of its own");
    let head = client().head(&url).send().await.unwrap();
    assert!(cache_status(head.headers()).hit);
    assert!(head.headers()["content-length"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(head.bytes().await.unwrap().is_empty());
    let put = client().put(&url).body("new").send().await.unwrap();
    assert_eq!(cache_status(put.headers()).fwd.as_deref(), Some("method"));
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let after = client().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(cache_status(after.headers()).fwd.as_deref(), Some("uri-miss"), "{method} after PUT: RFC 9111 §4.4");
    }
    assert_eq!(origin.requests(), 5);
}

#[tokio::test]
async fn a_request_with_no_store_is_not_stored_and_a_cold_conditional_reaches_the_origin() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let url = format!("{}/c/ns?cc=max-age%3D600&etag=v1", dp.proxy_url);
    let (_, headers, _) = get(&url, &[("cache-control", "no-store")]).await;
    assert_eq!(cache_status(&headers).detail.as_deref(), Some("request-no-store"));
    let (status, headers, _) = get(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "nothing stored: the origin answers the client's validator");
    assert_eq!(cache_status(&headers).fwd_status, Some(304));
    let (_, headers, _) = get(&url, &[]).await;
    assert!(cache_status(&headers).stored);
    let (status, headers, _) = get(&url, &[("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "stored: answered from the cache");
    assert!(cache_status(&headers).hit);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn request_transform_profiles_keep_their_entries_apart() {
    let origin = Origin::start().await;
    let policies = json!([
        {"type": "request-transform", "when": {"header": "x-client", "equals": "mobile"},
         "headers": {"remove": ["x-client"], "set": {"accept-language": "mobile-{header.x-lang}"}}},
        {"type": "cache"}
    ]);
    let (_db, _cp, dp) = serve_config(&config(&origin, policies), &[]).await;
    let url = format!("{}/c/p?cc=max-age%3D600", dp.proxy_url);
    let (_, _, plain) = get(&url, &[]).await;
    let (_, headers, mobile_de) = get(&url, &[("x-client", "mobile"), ("x-lang", "de")]).await;
    assert_eq!(cache_status(&headers).fwd.as_deref(), Some("uri-miss"), "the mobile profile never gets the plain answer");
    assert_eq!(serde_json::from_str::<Value>(&mobile_de).unwrap()["accept-language"], "mobile-de");
    let (_, headers, mobile_fr) = get(&url, &[("x-client", "mobile"), ("x-lang", "fr")]).await;
    assert!(!cache_status(&headers).hit, "a header the profile writes from the request is part of the key");
    assert_eq!(serde_json::from_str::<Value>(&mobile_fr).unwrap()["accept-language"], "mobile-fr");
    let (_, headers, again) = get(&url, &[]).await;
    assert!(cache_status(&headers).hit);
    assert_eq!(again, plain);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn the_policys_ttls_apply_only_where_the_response_is_silent() {
    let origin = Origin::start().await;
    let policy = json!([{"type": "cache", "ttl_s": 5, "status_ttl_s": {"404": 30}}]);
    let (_db, _cp, dp) = serve_config(&config(&origin, policy), &[]).await;
    for (query, ttl) in [("x=1", 5), ("status=404", 30), ("cc=max-age%3D90", 90), ("status=404&cc=max-age%3D7", 7)] {
        let (_, headers, _) = get(&format!("{}/c/ttl?{query}", dp.proxy_url), &[]).await;
        let status = cache_status(&headers);
        assert!(status.stored && status.ttl == Some(ttl), "{query}: {status:?}");
    }
}

#[tokio::test]
async fn a_bad_cache_policy_is_refused_naming_the_field() {
    let origin = Origin::start().await;
    let (_db, cp, _dp) = serve_config(&config(&origin, json!([{"type": "cache"}])), &[]).await;
    let bad = config(&origin, json!([{"type": "cache", "methods": ["POST"], "key": {"headers": ["bad header"]}}]));
    let response = cp.admin(reqwest::Method::PUT, "/api/v1/gateways/default/config").json(&bad).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.unwrap();
    for field in ["routes[0].policies[0].methods[0]", "routes[0].policies[0].key.headers[0]"] {
        assert!(body.contains(field), "{field} in {body}");
    }
}
