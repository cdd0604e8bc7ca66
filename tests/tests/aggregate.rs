//! Aggregation end to end against the real binaries: one client call fanned
//! out to several upstreams and merged into one JSON answer. The upstreams
//! are `test-support`'s: the counting `Origin` (answers spelled by the
//! query), `DocumentUpstream` (fixed JSON by path, so timing never changes
//! a body), `TestUpstream` (echoes the headers it got) and
//! `SilentUpstream` (never answers, notes when the gateway hangs up).

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::{Duration, Instant};

use portico_test_support::origin::Origin;
use portico_test_support::{ControlPlane, DocumentUpstream, SilentUpstream, TestDb, TestUpstream, eventually, refusing_url, serve_config};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A GET's status, headers and body.
async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let request = headers.iter().fold(client().get(url), |request, (name, value)| request.header(*name, *value));
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A service `name` with one target, `url`.
fn service(name: &str, url: &str) -> Value {
    json!({"name": name, "targets": [{"url": url}]})
}

/// A route `name` on `path` answered by `aggregate`.
fn route(name: &str, path: &str, aggregate: Value) -> Value {
    json!({"name": name, "paths": [path], "aggregate": aggregate})
}

/// Asserts a failed answer: `status`, and `{"error": {"code", "message", "call"}}` naming `call`.
fn assert_call_failed(status: StatusCode, body: &str, expected: StatusCode, code: &str, call: &str) {
    assert_eq!(status, expected, "{body}");
    let error = &parse(body)["error"];
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(error["call"], call, "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&format!("'{call}'")), "the message names the call: {body}");
    assert_eq!(error.as_object().unwrap().len(), 3, "code, message and call: {body}");
}

#[tokio::test]
async fn calls_run_and_merge_in_call_order() {
    let (users, orders) = (Origin::start().await, Origin::start().await);
    let config = json!({
        "services": [service("users", &users.url()), service("orders", &orders.url())],
        "routes": [route("dashboard", "/me/{id}", json!({"timeout_ms": 2000, "calls": [
            {"name": "profile", "service": "users", "path": "/users/{path.id}?delay=50"},
            {"name": "orders", "service": "orders", "path": "/orders?user={path.id}"},
            {"name": "again", "service": "orders", "path": "/again/{profile.path}", "required": false}
        ]}))]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, headers, body) = get(&format!("{}/me/7", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["portico-aggregate"], "complete");
    assert_eq!(headers["content-type"], "application/json");
    let at = |key: &str| body.find(&format!("\"{key}\":{{")).unwrap_or_else(|| panic!("no {key} in {body}"));
    assert!(at("profile") < at("orders") && at("orders") < at("again"), "keys in call order, though profile came last: {body}");
    let value = parse(&body);
    assert_eq!(value["profile"]["path"], "/users/7");
    assert_eq!(value["orders"]["query"], "user=7");
    assert_eq!(value["again"]["path"], "/again/%2Fusers%2F7", "a value from another call is one escaped segment");
}

#[tokio::test]
async fn either_order_of_arrival_gives_the_same_bytes_namespaced_and_deep() {
    // `zeta` comes first in the calls, after `alpha` in the alphabet; both write `shared`.
    let documents = DocumentUpstream::start(&[
        ("/zeta", json!({"user": {"name": "ann"}, "shared": "from zeta", "z": 1})),
        ("/alpha", json!({"user": {"tier": "gold"}, "shared": "from alpha", "a": 2})),
    ])
    .await;
    // The client's query says which call is slow; the bodies never depend on it.
    let calls = json!([
        {"name": "zeta", "service": "documents", "path": "/zeta?delay={query.zeta}"},
        {"name": "alpha", "service": "documents", "path": "/alpha?delay={query.alpha}"}
    ]);
    let config = json!({
        "services": [service("documents", &documents.url())],
        "routes": [
            route("namespaced", "/namespaced", json!({"merge": "namespaced", "calls": calls})),
            route("deep", "/deep", json!({"merge": "deep", "calls": calls})),
        ]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    for (merge, expected) in [
        (
            "namespaced",
            r#"{"zeta":{"shared":"from zeta","user":{"name":"ann"},"z":1},"alpha":{"a":2,"shared":"from alpha","user":{"tier":"gold"}}}"#,
        ),
        ("deep", r#"{"a":2,"shared":"from alpha","user":{"name":"ann","tier":"gold"},"z":1}"#),
    ] {
        let (status, _, zeta_last) = get(&format!("{}/{merge}?zeta=150&alpha=0", dp.proxy_url), &[]).await;
        assert_eq!(status, StatusCode::OK, "{zeta_last}");
        let (status, _, alpha_last) = get(&format!("{}/{merge}?zeta=0&alpha=150", dp.proxy_url), &[]).await;
        assert_eq!(status, StatusCode::OK, "{alpha_last}");
        assert_eq!(zeta_last, alpha_last, "{merge}: the same bytes whichever call answered first");
        assert_eq!(zeta_last, expected, "{merge}: call order decides, the later call winning a clash");
    }
    let targets = documents.targets();
    for slow in ["/zeta?delay=150", "/alpha?delay=150"] {
        assert_eq!(targets.iter().filter(|t| *t == slow).count(), 2, "each call was the slow one once per merge: {targets:?}");
    }
}

#[tokio::test]
async fn an_optional_call_that_times_out_gives_a_partial_answer_at_its_timeout() {
    let origin = Origin::start().await;
    let config = json!({
        "services": [service("origin", &origin.url())],
        "routes": [route("dashboard", "/me", json!({"timeout_ms": 8000, "calls": [
            {"name": "profile", "service": "origin", "path": "/profile?cc=max-age=60"},
            {"name": "orders", "service": "origin", "path": "/orders?delay=5000", "timeout_ms": 300, "required": false}
        ]}))]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let started = Instant::now();
    let (status, headers, body) = get(&format!("{}/me", dp.proxy_url), &[]).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "answered at the call's 300 ms timeout, not the upstream's 5 s: {took:?}");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["portico-aggregate"], "partial");
    assert_eq!(headers["cache-control"], "no-store", "a partial answer is never stored, whatever the other calls said");
    let value = parse(&body);
    assert_eq!(value["profile"]["path"], "/profile");
    assert_eq!(value["orders"], Value::Null);
    let errors = value["_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!((&errors[0]["name"], &errors[0]["status"]), (&json!("orders"), &json!(504)), "{body}");
    assert!(errors[0]["error"].as_str().unwrap().contains("300 ms"), "{body}");
    assert_eq!(errors[0].as_object().unwrap().len(), 3, "name, status and error: {body}");
}

#[tokio::test]
async fn a_required_call_that_fails_fails_the_answer_naming_it() {
    let origin = Origin::start().await;
    let unreachable = refusing_url();
    // A slow optional call runs beside the failing one: a required failure does not wait for it.
    let with_orders = |orders: Value| {
        json!({"timeout_ms": 8000, "calls": [
            {"name": "profile", "service": "origin", "path": "/profile"},
            {"name": "later", "service": "origin", "path": "/later?delay=5000", "required": false},
            orders
        ]})
    };
    let config = json!({
        "services": [service("origin", &origin.url()), service("gone", &unreachable)],
        "routes": [
            route("erroring", "/erroring", with_orders(json!({"name": "orders", "service": "origin", "path": "/orders?status=500"}))),
            route("unreachable", "/unreachable", with_orders(json!({"name": "orders", "service": "gone", "path": "/orders"}))),
            route("slow", "/slow", with_orders(json!({"name": "orders", "service": "origin", "path": "/orders?delay=5000", "timeout_ms": 300}))),
        ]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    for (path, expected, code) in [
        ("/erroring", StatusCode::BAD_GATEWAY, "aggregate_call_failed"),
        ("/unreachable", StatusCode::BAD_GATEWAY, "aggregate_call_failed"),
        ("/slow", StatusCode::GATEWAY_TIMEOUT, "aggregate_call_timeout"),
    ] {
        let started = Instant::now();
        let (status, headers, body) = get(&format!("{}{path}", dp.proxy_url), &[]).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{path}: ended at the failure, not after the 5 s call");
        assert_call_failed(status, &body, expected, code, "orders");
        assert!(headers.get("portico-aggregate").is_none(), "{path}: no merged answer");
    }
}

/// The aggregate's deadline in the cancellation test.
const DEADLINE_MS: u64 = 500;

#[tokio::test]
async fn the_aggregate_deadline_or_a_client_gone_closes_the_connection_of_a_call_still_running() {
    let (silent, documents) = (SilentUpstream::start().await, DocumentUpstream::start(&[("/profile", json!({"id": 7}))]).await);
    let deadline = Duration::from_millis(DEADLINE_MS);
    // `stuck` starts after profile's 300 ms: its own timeout (the aggregate's 500 ms) would end later than the deadline.
    let config = json!({
        "services": [service("silent", &silent.url()), service("documents", &documents.url())],
        "routes": [
            route("dashboard", "/me", json!({"timeout_ms": DEADLINE_MS, "calls": [
                {"name": "profile", "service": "documents", "path": "/profile?delay=300"},
                {"name": "stuck", "service": "silent", "path": "/stuck/{profile.id}"}]})),
            route("patient", "/patient", json!({"timeout_ms": 60000, "calls": [{"name": "stuck", "service": "silent", "path": "/stuck"}]})),
        ]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let started = Instant::now();
    let (status, _, body) = get(&format!("{}/me", dp.proxy_url), &[]).await;
    let answered = Instant::now();
    assert_call_failed(status, &body, StatusCode::GATEWAY_TIMEOUT, "aggregate_call_timeout", "stuck");
    assert!(body.contains("deadline of 500 ms"), "the aggregate's deadline ended it: {body}");
    assert!(answered - started >= deadline, "not before the deadline");
    assert!(answered - started < Duration::from_secs(3), "at the deadline, not the service's 30 s request timeout");
    assert_eq!(silent.requests().len(), 1, "the stuck call reached its upstream");
    let closed = eventually("the stuck call's upstream to see its connection closed", Duration::from_secs(5), || async {
        silent.closes().first().copied()
    })
    .await;
    assert!(closed >= started + deadline, "closed by the deadline, not before it");
    assert!(closed < answered + Duration::from_secs(2), "closed when the deadline passed: {:?} after the answer", closed - answered);

    // A client that gives up takes its calls with it.
    let request = client().get(format!("{}/patient", dp.proxy_url)).send();
    assert!(tokio::time::timeout(Duration::from_millis(300), request).await.is_err(), "the call never answers");
    let gone = Instant::now();
    let closed = eventually("the upstream to see the gone client's call closed", Duration::from_secs(5), || async {
        silent.closes().get(1).copied()
    })
    .await;
    assert_eq!(silent.requests().len(), 2);
    assert!(closed < gone + Duration::from_secs(2), "closed when the client left: {:?} after", closed - gone);
}

#[tokio::test]
async fn a_dependent_call_sends_a_field_of_the_first_calls_answer() {
    let documents =
        DocumentUpstream::start(&[("/users/7", json!({"id": 7, "segment": "gold"})), ("/recs/gold", json!({"items": ["lamp", "desk"]}))])
            .await;
    let config = json!({
        "services": [service("users", &documents.url()), service("recs", &documents.url())],
        "routes": [route("dashboard", "/me/{id}", json!({"calls": [
            {"name": "profile", "service": "users", "path": "/users/{path.id}"},
            {"name": "recs", "service": "recs", "path": "/recs/{profile.segment}"}
        ]}))]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, _, body) = get(&format!("{}/me/7", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parse(&body), json!({"profile": {"id": 7, "segment": "gold"}, "recs": {"items": ["lamp", "desk"]}}));
    assert_eq!(documents.targets(), ["/users/7", "/recs/gold"], "recs waited for profile and sent its segment");
}

#[tokio::test]
async fn fan_out_answers_in_item_order_up_to_max_items_and_join_batches_ids() {
    // The first item answers last, the second first.
    let documents = DocumentUpstream::start(&[
        ("/orders", json!({"items": [{"id": 1, "delay": 200}, {"id": 2, "delay": 0}, {"id": 3, "delay": 100}]})),
        ("/lines/1", json!({"line": 1})),
        ("/lines/2", json!({"line": 2})),
        ("/lines/3", json!({"line": 3})),
        ("/products", json!({"products": ["lamp", "desk", "chair"]})),
    ])
    .await;
    let lines = |max_items: u32| json!({"name": "lines", "service": "shop", "path": "/lines/{item.id}?delay={item.delay}", "for_each": "orders.items", "max_items": max_items});
    let orders = json!({"name": "orders", "service": "shop", "path": "/orders"});
    let config = json!({
        "services": [service("shop", &documents.url())],
        "routes": [
            route("fan", "/fan", json!({"calls": [orders, lines(3),
                {"name": "products", "service": "shop", "path": "/products?ids={orders.items[*].id|join:,}"}]})),
            route("over", "/over", json!({"calls": [orders, lines(2)]})),
        ]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, _, body) = get(&format!("{}/fan", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let value = parse(&body);
    assert_eq!(value["lines"], json!([{"line": 1}, {"line": 2}, {"line": 3}]), "in item order, not arrival order");
    assert_eq!(value["products"]["products"][0], "lamp");
    let targets = documents.targets();
    assert!(targets.contains(&"/products?ids=1,2,3".to_owned()), "one batched call: {targets:?}");

    let (status, _, body) = get(&format!("{}/over", dp.proxy_url), &[]).await;
    assert_call_failed(status, &body, StatusCode::BAD_GATEWAY, "aggregate_call_failed", "lines");
    assert!(body.contains("max_items (2)"), "the message says which limit: {body}");
    let lines_requested = documents.targets().iter().filter(|t| t.starts_with("/lines/")).count();
    assert_eq!(lines_requested, 3, "only /fan's three items reached the upstream, none of /over's");
}

#[tokio::test]
async fn a_null_or_absent_value_is_never_sent_as_a_path() {
    let documents = DocumentUpstream::start(&[("/users/7", json!({"id": 7, "segment": null}))]).await;
    let profile = json!({"name": "profile", "service": "users", "path": "/users/{path.id}"});
    let config = json!({
        "services": [service("users", &documents.url())],
        "routes": [
            route("optional", "/optional/{id}", json!({"calls": [profile,
                {"name": "recs", "service": "users", "path": "/recs/{profile.segment}", "required": false},
                {"name": "extra", "service": "users", "path": "/x/{profile.nothing}", "required": false}]})),
            route("required", "/required/{id}", json!({"calls": [profile,
                {"name": "recs", "service": "users", "path": "/recs/{profile.segment}"}]})),
        ]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, headers, body) = get(&format!("{}/optional/7", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["portico-aggregate"], "partial");
    let value = parse(&body);
    assert_eq!((&value["recs"], &value["extra"]), (&Value::Null, &Value::Null), "{body}");
    let errors = value["_errors"].as_array().unwrap();
    let names: Vec<&Value> = errors.iter().map(|e| &e["name"]).collect();
    assert_eq!(names, [&json!("recs"), &json!("extra")], "{body}");
    assert!(errors.iter().all(|e| e["status"].is_null()), "not made, so no status: {body}");

    let (status, _, body) = get(&format!("{}/required/7", dp.proxy_url), &[]).await;
    assert_call_failed(status, &body, StatusCode::BAD_GATEWAY, "aggregate_call_failed", "recs");
    assert_eq!(documents.targets(), ["/users/7", "/users/7"], "only the profile calls reached the upstream: no /recs/null, no /x/");
}

#[tokio::test]
async fn a_value_the_request_lacks_is_the_clients_mistake_before_any_call_is_made() {
    let documents =
        DocumentUpstream::start(&[("/users/7", json!({"id": 7})), ("/tags", json!(["a"])), ("/find", json!({"hits": 1}))]).await;
    let config = json!({
        "services": [service("users", &documents.url())],
        "routes": [route("search", "/search/{id}", json!({"calls": [
            {"name": "profile", "service": "users", "path": "/users/{path.id}"},
            {"name": "tags", "service": "users", "path": "/tags", "headers": {"x-tenant": "{header.x-tenant}"}, "required": false},
            {"name": "found", "service": "users", "path": "/find?q={query.q}&by={profile.id}"}]}))]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, _, body) = get(&format!("{}/search/7", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = &parse(&body)["error"];
    assert_eq!(error["code"], "bad_request", "{body}");
    assert_eq!(error["message"], "call 'found': the request has no value for query parameter 'q'", "{body}");
    assert!(documents.targets().is_empty(), "no call was made, not even the independent ones: {:?}", documents.targets());

    // An optional call only is not made.
    let (status, headers, body) = get(&format!("{}/search/7?q=lamp", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["portico-aggregate"], "partial");
    let failure = &parse(&body)["_errors"][0];
    assert_eq!((&failure["name"], &failure["status"]), (&json!("tags"), &Value::Null), "{body}");
    assert!(failure["error"].as_str().unwrap().contains("header 'x-tenant'"), "{body}");
}

#[tokio::test]
async fn set_cookie_stays_behind_and_the_most_restrictive_cache_control_wins() {
    let origin = Origin::start().await;
    let calls = |b: &str| json!({"calls": [{"name": "a", "service": "origin", "path": "/a?cc=max-age=60"}, {"name": "b", "service": "origin", "path": b}]});
    let config = json!({
        "services": [service("origin", &origin.url())],
        "routes": [
            route("ages", "/ages", calls("/b?cc=max-age=10")),
            route("cookie", "/cookie", calls("/b?cc=max-age=10&cookie=1")),
        ]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, headers, body) = get(&format!("{}/ages", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "max-age=10");
    let (status, headers, body) = get(&format!("{}/cookie", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.get("set-cookie").is_none(), "a call's cookie is not the client's: {headers:?}");
    assert_eq!(headers["cache-control"], "private, max-age=10", "a cookie makes the whole answer private");
}

#[tokio::test]
async fn bad_aggregates_are_refused_naming_the_field() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let services = json!([service("users", "http://127.0.0.1:9"), service("orders", "http://127.0.0.1:9")]);
    let call = |name: &str, path: &str| json!({"name": name, "service": "users", "path": path});
    let write = |name: &str, method: &str| json!({"name": name, "service": "users", "path": "/w", "method": method});
    let aggregate = |aggregate: Value| route("r", "/r", aggregate);
    let cases = [
        ("a cycle", aggregate(json!({"calls": [call("a", "/a/{b.id}"), call("b", "/b/{a.id}")]})), "aggregate.calls[0]"),
        ("an unknown call", aggregate(json!({"calls": [call("a", "/a"), call("b", "/b/{prof.id}")]})), "aggregate.calls[1].path"),
        ("two writes", aggregate(json!({"calls": [write("a", "POST"), write("b", "PATCH")]})), "aggregate.calls[1].method"),
        (
            "a deep collision",
            aggregate(json!({"merge": "deep", "calls": [
                {"name": "a", "service": "users", "path": "/a", "fields": ["id", "name"]},
                {"name": "b", "service": "orders", "path": "/b", "fields": ["name"]}]})),
            "aggregate.calls[1].fields[0]",
        ),
        (
            "a missing service",
            aggregate(json!({"calls": [call("a", "/a"), {"name": "b", "service": "nope", "path": "/b"}]})),
            "aggregate.calls[1].service",
        ),
        (
            "both a service and an aggregate",
            json!({"name": "r", "paths": ["/r"], "service": "users", "aggregate": {"calls": [call("a", "/a")]}}),
            "aggregate",
        ),
    ];
    let refused = |response: reqwest::Response, what: String, field: String| async move {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["field"], field, "{what}: {error}");
    };
    for (what, route, field) in &cases {
        let config = json!({"services": services, "routes": [route]});
        let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config).send().await.unwrap();
        refused(response, format!("PUT {what}"), format!("routes[0].{field}")).await;
    }
    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&json!({"services": services})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for (what, route, field) in &cases {
        let response = cp.admin(Method::POST, "/api/v1/gateways/default/routes").json(route).send().await.unwrap();
        refused(response, format!("POST {what}"), (*field).to_owned()).await;
    }
}

/// A route whose two calls go to an upstream echoing the headers it got,
/// behind key-auth for alice (`alice-key-0123456789`), with `policies` after it.
fn echoing_behind_key_auth(upstream: &str, policies: &[Value]) -> Value {
    let mut all = vec![json!({"type": "key-auth"})];
    all.extend_from_slice(policies);
    json!({
        "services": [service("echo", upstream)],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"}],
        "routes": [{"name": "me", "paths": ["/me"], "policies": all, "aggregate": {"calls": [
            {"name": "profile", "service": "echo", "path": "/profile"},
            {"name": "orders", "service": "echo", "path": "/orders"}
        ]}}]
    })
}

#[tokio::test]
async fn each_call_carries_the_gateways_and_transforms_headers_and_none_of_the_clients_others() {
    let upstream = TestUpstream::start("echo").await;
    let transform = json!({"type": "request-transform", "headers": {"set": {"x-tenant": "acme-{consumer.username}"}}});
    let (_db, _cp, dp) = serve_config(&echoing_behind_key_auth(&upstream.url(), &[transform]), &[]).await;
    let client_headers = [("x-api-key", "alice-key-0123456789"), ("x-secret", "s3cr3t"), ("cookie", "session=abc")];
    let (status, headers, body) = get(&format!("{}/me", dp.proxy_url), &client_headers).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let value = parse(&body);
    let request_id = headers["x-request-id"].to_str().unwrap();
    for call in ["profile", "orders"] {
        let seen = &value[call]["headers"];
        assert_eq!(seen["x-request-id"], request_id, "{call}: {seen}");
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{call}: {seen}");
        assert_eq!(seen["x-consumer-username"], "alice", "{call}: {seen}");
        assert_eq!(seen["x-tenant"], "acme-alice", "{call}: what a request-transform wrote is carried: {seen}");
        for kept_back in ["x-secret", "cookie", "x-api-key"] {
            assert!(seen.get(kept_back).is_none(), "{call} got the client's {kept_back}: {seen}");
        }
    }
}

#[tokio::test]
async fn key_auth_refuses_before_any_call_is_made() {
    let origin = Origin::start().await;
    let (_db, _cp, dp) = serve_config(&echoing_behind_key_auth(&origin.url(), &[]), &[]).await;
    let (status, _, body) = get(&format!("{}/me", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = get(&format!("{}/me", dp.proxy_url), &[("x-api-key", "wrong-key-0123456789")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(origin.requests(), 0, "no call was made for a refused request");
    let (status, _, body) = get(&format!("{}/me", dp.proxy_url), &[("x-api-key", "alice-key-0123456789")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parse(&body)["profile"]["consumer"], "alice");
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn a_cache_policy_stores_a_complete_answer_and_never_a_partial_one() {
    let origin = Origin::start().await;
    let cache = json!([{"type": "cache"}]);
    let config = json!({
        "services": [service("origin", &origin.url())],
        "routes": [
            {"name": "complete", "paths": ["/complete"], "policies": cache, "aggregate": {"calls": [
                {"name": "a", "service": "origin", "path": "/a?cc=max-age=60"},
                {"name": "b", "service": "origin", "path": "/b?cc=max-age=30"}]}},
            {"name": "partial", "paths": ["/partial"], "policies": cache, "aggregate": {"calls": [
                {"name": "a", "service": "origin", "path": "/a?cc=max-age=60"},
                {"name": "b", "service": "origin", "path": "/b?cc=max-age=30&status=500", "required": false}]}},
        ]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/complete", dp.proxy_url);
    let (status, headers, first) = get(&url, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(headers["cache-control"], "max-age=30");
    assert_eq!(origin.requests(), 2);
    let (_, headers, again) = get(&url, &[]).await;
    assert_eq!(again, first, "the stored answer");
    assert!(headers["cache-status"].to_str().unwrap().starts_with("Portico; hit"), "{headers:?}");
    assert_eq!(origin.requests(), 2, "a hit makes no call");

    let url = format!("{}/partial", dp.proxy_url);
    for round in 1..=2 {
        let (status, headers, body) = get(&url, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["portico-aggregate"], "partial");
        assert!(headers["cache-status"].to_str().unwrap().ends_with("detail=no-store"), "{headers:?}");
        assert_eq!(origin.requests(), 2 + 2 * round, "round {round}: both calls made again");
    }
}

#[tokio::test]
async fn a_cached_answer_whose_calls_read_a_client_header_is_kept_per_value_of_it() {
    let origin = Origin::start().await;
    let config = json!({
        "services": [service("origin", &origin.url())],
        "routes": [{"name": "localized", "paths": ["/localized"], "policies": [{"type": "cache"}], "aggregate": {"calls": [
            {"name": "a", "service": "origin", "path": "/a?cc=max-age=60", "headers": {"accept-language": "{header.accept-language}"}}]}}]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/localized", dp.proxy_url);
    for (language, requests) in [("de", 1), ("fr", 2), ("de", 2), ("fr", 2)] {
        let (status, headers, body) = get(&url, &[("accept-language", language)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["vary"], "accept-language");
        assert_eq!(parse(&body)["a"]["accept-language"], language, "{language} gets its own answer: {headers:?}");
        assert_eq!(origin.requests(), requests, "{language}: {headers:?}");
    }
}

#[tokio::test]
async fn a_cached_answer_is_kept_per_value_of_every_request_value_the_calls_read() {
    let origin = Origin::start().await;
    // The policy's key leaves the query out; the calls read it all the same.
    let config = json!({
        "services": [service("origin", &origin.url())],
        "routes": [{"name": "search", "paths": ["/search"], "policies": [{"type": "cache", "key": {"query": "none"}}],
            "aggregate": {"calls": [{"name": "a", "service": "origin", "path": "/a?cc=max-age=60&q={query.q}"}]}}]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    for (q, requests) in [("alice", 1), ("bob", 2), ("alice", 2), ("bob", 2)] {
        let (status, headers, body) = get(&format!("{}/search?q={q}", dp.proxy_url), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(parse(&body)["a"]["query"].as_str().unwrap().ends_with(&format!("q={q}")), "{q} gets its own answer: {body}");
        assert_eq!(origin.requests(), requests, "{q}: {headers:?}");
    }
}

#[tokio::test]
async fn a_client_body_goes_into_a_call_only_as_one_json_value() {
    let documents = DocumentUpstream::start(&[("/orders", json!({"id": 1}))]).await;
    let config = json!({
        "services": [service("orders", &documents.url())],
        "routes": [route("order", "/order", json!({"calls": [
            {"name": "created", "service": "orders", "method": "POST", "path": "/orders", "body": "{{\"user\":\"{header.x-user}\",\"order\":{body}}}"}]}))]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let post = |body: &'static str| client().post(format!("{}/order", dp.proxy_url)).header("x-user", "ann").body(body).send();
    let response = post(r#"{"sku": "lamp"}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(documents.bodies(), [r#"{"user":"ann","order":{"sku": "lamp"}}"#]);
    for smuggling in [r#"{"x":1},"user":"admin""#, "", "not json"] {
        let response = post(smuggling).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{smuggling:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains("call 'created': the request has no value for request body"), "{body}");
    }
    assert_eq!(documents.bodies().len(), 1, "nothing more was sent");
}

#[tokio::test]
async fn at_the_deadline_the_running_call_is_blamed_not_the_one_waiting_for_it() {
    let documents = DocumentUpstream::start(&[("/profile", json!({"segment": "gold"})), ("/recs/gold", json!([]))]).await;
    // `recs` is listed first but waits for `profile`, which is too slow.
    let config = json!({
        "services": [service("documents", &documents.url())],
        "routes": [route("dashboard", "/me", json!({"timeout_ms": 300, "calls": [
            {"name": "recs", "service": "documents", "path": "/recs/{profile.segment}"},
            {"name": "profile", "service": "documents", "path": "/profile?delay=3000"}]}))]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, _, body) = get(&format!("{}/me", dp.proxy_url), &[]).await;
    assert_call_failed(status, &body, StatusCode::GATEWAY_TIMEOUT, "aggregate_call_timeout", "profile");
}

#[tokio::test]
async fn call_durations_are_measured_by_route_call_and_outcome() {
    let origin = Origin::start().await;
    let config = json!({
        "services": [service("origin", &origin.url())],
        "routes": [route("dashboard", "/me", json!({"calls": [
            {"name": "profile", "service": "origin", "path": "/profile"},
            {"name": "orders", "service": "origin", "path": "/orders?status=503", "required": false},
            {"name": "recs", "service": "origin", "path": "/recs/{orders.segment}", "required": false}
        ]}))]
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let (status, _, body) = get(&format!("{}/me", dp.proxy_url), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = reqwest::get(format!("{}/metrics", dp.status_url)).await.unwrap().text().await.unwrap();
    for (call, outcome) in [("profile", "ok"), ("orders", "error"), ("recs", "not_made")] {
        let labels = [r#"route="dashboard""#.to_owned(), format!(r#"call="{call}""#), format!(r#"outcome="{outcome}""#)];
        let count = metrics.lines().find(|line| {
            line.starts_with("portico_aggregate_call_duration_seconds_count{") && labels.iter().all(|label| line.contains(label.as_str()))
        });
        assert_eq!(count.and_then(|line| line.rsplit(' ').next()), Some("1"), "{call} {outcome} counted once in:\n{metrics}");
    }
}
