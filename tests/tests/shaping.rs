//! Shaping for each client, end to end against the real binaries: response
//! profiles picked by a JWT claim and by a header, bodies from a gzip
//! upstream, request rewrites with templates, `ip-restriction` with and
//! without trusted proxies, CORS answered by the gateway, and bad policies
//! refused on write naming the field.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use jsonwebtoken::Algorithm;
use portico_test_support::jwt::{mint, now};
use portico_test_support::upstream::CATALOG;
use portico_test_support::{TestUpstream, serve_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn token(client_type: &str) -> String {
    mint(Algorithm::HS256, SECRET, None, &json!({"iss": "app", "sub": "u-1", "exp": now() + 600, "client_type": client_type}))
}

/// A `catalog` route behind JWT (anonymous callers allowed) with three
/// response profiles: mobile by claim, web by header, and a default.
fn catalog_config(upstream: &str, extra_policies: &[Value]) -> Value {
    let mut policies = vec![
        json!({"type": "jwt", "anonymous": "guest"}),
        json!({"type": "response-transform", "when": {"claim": "client_type", "equals": "mobile"},
               "body": {"allow": ["$.items[*].id", "$.items[*].name"]}, "headers": {"set": {"x-profile": "mobile"}}}),
        json!({"type": "response-transform", "when": {"header": "X-Client", "equals": "web"},
               "body": {"deny": ["$.internal"]}, "headers": {"set": {"x-profile": "web"}}}),
        json!({"type": "response-transform", "body": {"deny": ["$.internal", "$.items[*].description"]}}),
    ];
    policies.extend(extra_policies.iter().cloned());
    json!({
        "services": [{"name": "shop", "targets": [{"url": upstream}]}],
        "routes": [{"name": "catalog", "service": "shop", "paths": ["/catalog"], "strip_path": false, "policies": policies}],
        "consumers": [{"username": "guest"}, {"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "jwt", "issuer": "app", "algorithm": "HS256", "secret": SECRET}],
    })
}

async fn json_of(response: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, headers, value)
}

#[tokio::test]
async fn one_route_serves_each_client_profile_by_claim_and_by_header() {
    let upstream = TestUpstream::start("shop").await;
    let (_db, _cp, dp) = serve_config(&catalog_config(&upstream.url(), &[]), &[]).await;
    let url = format!("{}/catalog/identity", dp.proxy_url);

    let mobile = client().get(&url).bearer_auth(token("mobile")).send().await.unwrap();
    let (status, headers, body) = json_of(mobile).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"items": [{"id": 1, "name": "lamp"}, {"id": 2, "name": "desk"}]}));
    assert_eq!(headers["x-profile"], "mobile");
    assert_eq!(headers["etag"], "W/\"catalog-v1\"", "a shaped body's strong ETag is weakened");
    assert!(headers.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("x-client")), "the choice depends on X-Client");

    let web = client().get(&url).header("x-client", "web").send().await.unwrap();
    let (_, headers, body) = json_of(web).await;
    let mut expected: Value = serde_json::from_str(CATALOG).unwrap();
    expected.as_object_mut().unwrap().remove("internal");
    assert_eq!(body, expected, "web gets everything but internal");
    assert_eq!(headers["x-profile"], "web");

    let (_, headers, body) = json_of(client().get(&url).send().await.unwrap()).await;
    assert!(headers.get("x-profile").is_none());
    assert_eq!(body["items"][0], json!({"id": 1, "name": "lamp", "price": 30}), "the default profile");
    assert!(body.get("internal").is_none());
}

#[tokio::test]
async fn compressed_upstream_bodies_are_shaped_and_sent_as_identity_with_their_length() {
    let upstream = TestUpstream::start("shop").await;
    let (_db, _cp, dp) = serve_config(&catalog_config(&upstream.url(), &[]), &[]).await;
    for coding in ["gzip", "deflate"] {
        let response = client()
            .get(format!("{}/catalog/{coding}", dp.proxy_url))
            .bearer_auth(token("mobile"))
            .header("accept-encoding", "gzip, deflate")
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("content-encoding").is_none(), "{coding}: sent as identity");
        let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = response.bytes().await.unwrap();
        assert_eq!(length, body.len(), "{coding}: Content-Length fits the shaped body");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"items": [{"id": 1, "name": "lamp"}, {"id": 2, "name": "desk"}]})
        );
    }
}

#[tokio::test]
async fn bodies_over_the_limit_pass_untouched_and_are_counted() {
    let upstream = TestUpstream::start("shop").await;
    let config = json!({
        "services": [{"name": "shop", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "catalog", "service": "shop", "paths": ["/catalog"], "strip_path": false, "policies": [
            {"type": "response-transform", "body": {"deny": ["$.internal"]}, "max_body_bytes": 16}]}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = client().get(format!("{}/catalog/identity", dp.proxy_url)).send().await.unwrap();
    assert_eq!(response.headers()["etag"], "\"catalog-v1\"", "untouched: the strong ETag stays");
    assert_eq!(response.text().await.unwrap(), CATALOG, "byte for byte, never half a body");
    let gzip = client().get(format!("{}/catalog/gzip", dp.proxy_url)).send().await.unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip", "an untouched body keeps its coding");
    let metrics = reqwest::get(format!("{}/metrics", dp.status_url)).await.unwrap().text().await.unwrap();
    let counted = metrics.lines().find(|l| l.starts_with("portico_transform_skipped_total") && l.contains("reason=\"too_large\""));
    assert!(counted.is_some_and(|line| line.ends_with(" 2")), "{metrics}");
}

#[tokio::test]
async fn cache_control_no_transform_is_honoured() {
    let upstream = TestUpstream::start("shop").await;
    let (_db, _cp, dp) = serve_config(&catalog_config(&upstream.url(), &[]), &[]).await;
    let response = client().get(format!("{}/catalog/no-transform", dp.proxy_url)).bearer_auth(token("mobile")).send().await.unwrap();
    assert_eq!(response.headers()["x-profile"], "mobile", "headers are still the profile's");
    assert_eq!(response.text().await.unwrap(), CATALOG, "the body is the upstream's, untouched");
    let metrics = reqwest::get(format!("{}/metrics", dp.status_url)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("portico_transform_skipped_total") && l.contains("reason=\"no_transform\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn request_transforms_rewrite_path_query_headers_and_json_bodies_from_templates() {
    let upstream = TestUpstream::start("users").await;
    let config = json!({
        "services": [{"name": "users", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "orders", "service": "users", "paths": ["/users/{id}/orders"], "policies": [
            {"type": "request-transform",
             "path": "/v2/orders/{path.id}",
             "query": {"remove": ["debug"], "rename": {"q": "search"}, "add": {"tenant": "{header.x-org}"}},
             "headers": {"set": {"x-request": "{request_id}"}, "remove": ["x-internal"], "rename": {"x-old": "x-new"}},
             "body": {"deny": ["$.password"]}}]}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = client()
        .post(format!("{}/users/a%20b/orders?q=lamp&debug=1", dp.proxy_url))
        .header("x-org", "acme & co")
        .header("x-internal", "secret")
        .header("x-old", "moved")
        .header("x-request-id", "req-42")
        .json(&json!({"item": 7, "password": "hunter2"}))
        .send()
        .await
        .unwrap();
    let (status, _, echo) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["path"], "/v2/orders/a%20b", "the parameter lands percent-encoded as sent");
    assert_eq!(echo["query"], "search=lamp&tenant=acme%20%26%20co");
    assert_eq!(echo["headers"]["x-request"], "req-42");
    assert_eq!(echo["headers"]["x-new"], "moved");
    assert!(echo["headers"].get("x-internal").is_none() && echo["headers"].get("x-old").is_none());
    assert_eq!(echo["body"], json!({"item": 7}), "the password never reaches the upstream");

    let missing = client().post(format!("{}/users/7/orders", dp.proxy_url)).json(&json!({})).send().await.unwrap();
    let (status, _, error) = json_of(missing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an absent template value is the client's 400");
    assert!(error["error"]["message"].as_str().unwrap().contains("header 'x-org'"), "{error}");
    assert_eq!(upstream.requests(), 1, "nothing with an empty value went upstream");
}

#[tokio::test]
async fn ip_restriction_uses_the_client_address_trusted_proxies_find() {
    let upstream = TestUpstream::start("app").await;
    let config = |trusted: Value| {
        json!({
            "services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
            "routes": [
                {"name": "office", "service": "app", "paths": ["/office"], "policies": [{"type": "ip-restriction", "allow": ["203.0.113.0/24"]}]},
                {"name": "open", "service": "app", "paths": ["/open"], "policies": [{"type": "ip-restriction", "deny": ["127.0.0.0/8"]}]},
            ],
            "trusted_proxies": trusted,
        })
    };
    let (_db, cp, dp) = serve_config(&config(json!([])), &[]).await;
    let get = |path: &str, xff: Option<&str>| {
        let request = client().get(format!("{}{path}", dp.proxy_url));
        match xff {
            Some(xff) => request.header("x-forwarded-for", xff),
            None => request,
        }
        .send()
    };
    let refused = get("/open", None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "ip_forbidden");
    let spoofed = get("/office", Some("203.0.113.9")).await.unwrap();
    assert_eq!(spoofed.status(), StatusCode::FORBIDDEN, "X-Forwarded-For from an untrusted peer changes nothing");
    assert_eq!(upstream.requests(), 0);

    let response = cp.admin(Method::PUT, "/api/v1/gateways/default/config").json(&config(json!(["127.0.0.1/32"]))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let version = response.json::<Value>().await.unwrap()["version"].as_u64().unwrap();
    dp.wait_for_version(version).await;
    assert_eq!(get("/office", Some("203.0.113.9")).await.unwrap().status(), StatusCode::OK, "behind a trusted proxy");
    assert_eq!(get("/office", Some("198.51.100.1")).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(get("/open", Some("198.51.100.1")).await.unwrap().status(), StatusCode::OK, "the client, not the proxy, is checked");
}

#[tokio::test]
async fn cors_preflights_are_answered_before_auth_and_errors_carry_cors_headers() {
    let upstream = TestUpstream::start("app").await;
    let origin = "https://app.example.com";
    let config = json!({
        "services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "api", "service": "app", "paths": ["/api"], "methods": ["GET"], "policies": [
            {"type": "cors", "origins": ["https://APP.example.com:443"], "methods": ["GET"], "headers": ["x-api-key"], "credentials": true},
            {"type": "key-auth"},
            {"type": "rate-limit", "algorithm": "fixed_window", "limit": 2, "window_s": 60}]}],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/api/x", dp.proxy_url);

    let preflight = client()
        .request(Method::OPTIONS, &url)
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT, "answered on a GET-only, key-auth route");
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin);
    assert_eq!(preflight.headers()["access-control-allow-credentials"], "true");
    assert_eq!(upstream.requests(), 0, "the preflight never reached the upstream");

    let unauthorized = client().get(&url).header("origin", origin).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unauthorized.headers()["access-control-allow-origin"], origin, "CORS headers on the gateway's own 401");
    assert!(unauthorized.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().contains("Origin")));

    let ok = client().get(&url).header("origin", origin).header("x-api-key", "alice-key-0123456789").send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers().get_all("access-control-allow-origin").iter().count(), 1);
    let limited = client().get(&url).header("origin", origin).header("x-api-key", "alice-key-0123456789").send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["access-control-allow-origin"], origin, "and on its 429");

    let evil = client().get(&url).header("origin", "https://app.example.com.evil.io").send().await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none(), "a look-alike origin gets no ACAO");
}

#[tokio::test]
async fn bad_shaping_policies_are_refused_naming_the_field() {
    let upstream = TestUpstream::start("app").await;
    let (_db, cp, _dp) = serve_config(&json!({"services": [{"name": "app", "targets": [{"url": upstream.url()}]}]}), &[]).await;
    let cases = [
        (json!({"type": "request-transform", "headers": {"set": {"x-a": "{nope.x}"}}}), "routes[0].policies[0].headers.set.x-a"),
        (
            json!({"type": "request-transform", "headers": {"set": {"x-consumer-id": "me"}}}),
            "routes[0].policies[0].headers.set.x-consumer-id",
        ),
        (json!({"type": "response-transform", "body": {"allow": ["$.items[*"]}}), "routes[0].policies[0].body.allow[0]"),
        (json!({"type": "ip-restriction", "allow": ["10.0.0.0/33"]}), "routes[0].policies[0].allow[0]"),
        (json!({"type": "cors", "origins": ["*"], "credentials": true}), "routes[0].policies[0].credentials"),
        (json!({"type": "cors", "origins": ["https://example.com/path"]}), "routes[0].policies[0].origins[0]"),
    ];
    for (policy, field) in cases {
        let route = json!({"name": "r", "service": "app", "paths": ["/"], "policies": [policy]});
        let response = cp.admin(Method::POST, "/api/v1/gateways/default/routes").json(&route).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{policy}");
        let error: Value = response.json().await.unwrap();
        let named = error["error"]["field"].as_str().unwrap_or_default();
        assert!(field.ends_with(named) && !named.is_empty(), "{policy}: expected {field}, got {error}");
    }
}

#[tokio::test]
async fn a_path_template_needs_the_parameter_in_every_path_of_its_route() {
    let upstream = TestUpstream::start("app").await;
    let (_db, cp, _dp) = serve_config(&json!({"services": [{"name": "app", "targets": [{"url": upstream.url()}]}]}), &[]).await;
    let route = json!({"name": "r", "service": "app", "paths": ["/users/{id}", "/people"],
        "policies": [{"type": "request-transform", "path": "/v2/users/{path.id}"}]});
    let response = cp.admin(Method::POST, "/api/v1/gateways/default/routes").json(&route).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["field"], "paths", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("'/people' has no {id}"), "{error}");
}

#[tokio::test]
async fn a_claim_profile_needs_a_jwt_policy_on_its_route() {
    let upstream = TestUpstream::start("app").await;
    let (_db, cp, _dp) = serve_config(&json!({"services": [{"name": "app", "targets": [{"url": upstream.url()}]}]}), &[]).await;
    let route = json!({"name": "r", "service": "app", "paths": ["/"], "policies": [
        {"type": "response-transform", "when": {"claim": "client_type", "equals": "mobile"}, "headers": {"set": {"x-profile": "mobile"}}}]});
    let response = cp.admin(Method::POST, "/api/v1/gateways/default/routes").json(&route).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("needs a jwt policy"), "{error}");
}

#[tokio::test]
async fn a_shaped_route_asks_the_upstream_for_the_whole_body_in_a_coding_it_reads() {
    let upstream = TestUpstream::start("shop").await;
    let config = json!({
        "services": [{"name": "shop", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "echo", "service": "shop", "paths": ["/echo"], "policies": [
            {"type": "response-transform", "body": {"deny": ["$.secret"]}}]}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = client()
        .get(format!("{}/echo", dp.proxy_url))
        .header("range", "bytes=0-")
        .header("if-range", "\"v1\"")
        .header("accept-encoding", "zstd, gzip")
        .send()
        .await
        .unwrap();
    let (status, _, echo) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(echo["headers"].get("range").is_none(), "a 206 would go to the client unshaped: {echo}");
    assert!(echo["headers"].get("if-range").is_none(), "{echo}");
    assert_eq!(echo["headers"]["accept-encoding"], "gzip", "a zstd body could not be shaped: {echo}");
}

#[tokio::test]
async fn a_request_body_transform_keeps_the_routes_size_limit() {
    let upstream = TestUpstream::start("app").await;
    let config = json!({
        "services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "signup", "service": "app", "paths": ["/signup"], "policies": [
            {"type": "request-size-limit", "max_bytes": 64},
            {"type": "request-transform", "body": {"deny": ["$.is_admin"]}}]}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let big = json!({"name": "x".repeat(200)}).to_string();
    // Chunked (no Content-Length), so only reading the body can find its size.
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(big)]);
    let response = client()
        .post(format!("{}/signup", dp.proxy_url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn an_empty_body_labelled_json_passes_a_request_body_transform() {
    let upstream = TestUpstream::start("app").await;
    let config = json!({
        "services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "items", "service": "app", "paths": ["/items"], "policies": [
            {"type": "request-transform", "body": {"deny": ["$.is_admin"]}}]}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    // Many HTTP clients label every request JSON, bodiless GETs and DELETEs included.
    for method in [Method::GET, Method::DELETE] {
        let response = client()
            .request(method.clone(), format!("{}/items/7", dp.proxy_url))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        let (status, _, echo) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{method}: {echo}");
        assert_eq!(echo["body_bytes"], 0, "{method}");
    }
}

#[tokio::test]
async fn head_answers_on_a_shaped_route_agree_with_get_and_gateway_errors_carry_the_profile_vary() {
    let upstream = TestUpstream::start("shop").await;
    let (_db, _cp, dp) = serve_config(&catalog_config(&upstream.url(), &[]), &[]).await;
    let head = client().head(format!("{}/catalog/identity", dp.proxy_url)).bearer_auth(token("mobile")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["etag"], "W/\"catalog-v1\"", "the validator a GET would get");
    assert!(head.headers().get("content-length").is_none_or(|length| length != &CATALOG.len().to_string()), "never the upstream's length");

    let refused = client().get(format!("{}/catalog/identity", dp.proxy_url)).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().contains("x-client")),
        "the gateway's own answers vary too"
    );
}

#[tokio::test]
async fn a_request_with_two_content_types_is_refused_where_bodies_are_shaped() {
    let upstream = TestUpstream::start("app").await;
    let config = json!({
        "services": [{"name": "app", "targets": [{"url": upstream.url()}]}],
        "routes": [{"name": "r", "service": "app", "paths": ["/"], "policies": [{"type": "request-transform", "body": {"deny": ["$.password"]}}]}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = client()
        .post(format!("{}/signup", dp.proxy_url))
        .header("content-type", "text/plain")
        .header("content-type", "application/json")
        .body(r#"{"password": "hunter2"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn a_consumer_template_needs_authentication_on_its_route() {
    let upstream = TestUpstream::start("app").await;
    let (_db, cp, _dp) = serve_config(&json!({"services": [{"name": "app", "targets": [{"url": upstream.url()}]}]}), &[]).await;
    let route = json!({"name": "r", "service": "app", "paths": ["/"], "policies": [
        {"type": "request-transform", "headers": {"set": {"x-user": "{consumer.username}"}}}]});
    let response = cp.admin(Method::POST, "/api/v1/gateways/default/routes").json(&route).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("needs key-auth or jwt"), "{error}");
}
