//! Authentication and authorization end to end: real control plane, real
//! data planes, tokens minted here with the test keys, a test identity
//! provider for JWKS, and an echo upstream that shows what reached it.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::Algorithm;
use portico_test_support::jwt::{self, EC_PRIVATE, EC_PUBLIC, RSA_PRIVATE, RSA_PUBLIC, RSA2_PRIVATE, mint, now};
use portico_test_support::{ControlPlane, DataPlane, TestDb, TestIdp, TestUpstream, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);
const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

struct Setup {
    _db: TestDb,
    cp: ControlPlane,
    upstream: TestUpstream,
}

async fn setup() -> Setup {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    Setup { _db: db, cp, upstream: TestUpstream::start("a").await }
}

async fn admin(cp: &ControlPlane, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let response = cp.admin(method, &format!("/api/v1/gateways/default{path}")).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_config(cp: &ControlPlane, config: Value) -> u64 {
    let (status, body) = admin(cp, Method::PUT, "/config", config).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["version"].as_u64().unwrap()
}

async fn data_plane(cp: &ControlPlane, node: &str, version: u64) -> DataPlane {
    let dp = DataPlane::start(&cp.grpc_url, &cp.cluster_token, "default", node, None).await;
    dp.wait_for_version(version).await;
    dp
}

struct Call {
    status: StatusCode,
    challenges: Vec<String>,
    body: Value,
    text: String,
}

async fn call(dp: &DataPlane, path: &str, headers: &[(&str, &str)]) -> Call {
    let mut request = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}{path}", dp.proxy_url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenges = response.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let text = response.text().await.unwrap();
    Call { status, challenges, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn service_and_route(upstream: &TestUpstream, route_policies: Value) -> Value {
    json!({
        "services": [{"name": "users", "targets": [{"url": upstream.url()}]}],
        "routes": [
            {"name": "private", "service": "users", "paths": ["/private"], "policies": route_policies},
            {"name": "open", "service": "users", "paths": ["/open"]},
        ],
        "consumers": [{"username": "alice", "custom_id": "12345", "scopes": ["read"]}, {"username": "guest"}],
    })
}

#[tokio::test]
async fn key_auth_admits_the_right_key_only_and_rotation_reaches_every_data_plane() {
    let Setup { _db, cp, upstream } = setup().await;
    put_config(&cp, service_and_route(&upstream, json!([{"type": "key-auth"}, {"type": "scopes", "all_of": ["read"]}]))).await;
    let (status, created) = admin(&cp, Method::POST, "/consumers/alice/credentials", json!({"type": "key-auth"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let version = current_version(&cp).await;
    let dp1 = data_plane(&cp, "dp-1", version).await;
    let dp2 = data_plane(&cp, "dp-2", version).await;

    let missing = call(&dp1, "/private/x", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{}", missing.text);
    assert_eq!(missing.body["error"]["code"], "unauthorized");
    assert_eq!(missing.challenges, ["APIKey realm=\"portico\", header=\"x-api-key\""]);

    let near_miss = format!("{}{}", &key[..key.len() - 1], if key.ends_with('A') { 'B' } else { 'A' });
    let wrong = call(&dp1, "/private/x", &[("x-api-key", &near_miss)]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!wrong.text.contains(&near_miss[..20]), "an error names no secret: {}", wrong.text);

    let spoofed: [(&str, &str); 5] = [
        ("x-api-key", &key),
        ("X-Consumer-Username", "mallory"),
        ("X_User_Id", "0"),
        ("x.scopes", "admin"),
        ("X-Anonymous-Consumer", "true"),
    ];
    let ok = call(&dp1, "/private/x", &spoofed).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let seen = &ok.body["headers"];
    assert_eq!(seen["x-consumer-username"], "alice");
    let (_, alice) = admin(&cp, Method::GET, "/consumers/alice", Value::Null).await;
    assert_eq!(seen["x-consumer-id"], alice["id"]);
    assert_eq!(seen["x-user-id"], "12345", "custom_id when there is no JWT subject");
    assert_eq!(seen["x-scopes"], "read");
    assert!(seen.get("x-api-key").is_none(), "credentials are hidden from the upstream");
    for spoof in ["x_user_id", "x.scopes", "x-anonymous-consumer"] {
        assert!(seen.get(spoof).is_none(), "{spoof} reached the upstream: {seen}");
    }
    let open = call(&dp1, "/open", &[("X-Consumer-Username", "mallory"), ("x-scopes", "admin")]).await;
    assert!(open.body["headers"].get("x-consumer-username").is_none() && open.body["headers"].get("x-scopes").is_none());

    let by_query = call(&dp2, &format!("/private/q?a=1&apikey={key}&b=2"), &[]).await;
    assert_eq!(by_query.status, StatusCode::OK, "{}", by_query.text);
    assert_eq!(by_query.body["query"], "a=1&b=2", "the key is taken out of the query");

    // Rotation through the admin API: every data plane takes the new key and refuses the old one.
    let (status, rotated) =
        admin(&cp, Method::PATCH, &format!("/consumers/alice/credentials/{id}"), json!({"key": "rotated-key-0123456789"})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    for dp in [&dp1, &dp2] {
        eventually("the rotated key works", DEADLINE, || async {
            (call(dp, "/private/x", &[("x-api-key", "rotated-key-0123456789")]).await.status == StatusCode::OK).then_some(())
        })
        .await;
        assert_eq!(call(dp, "/private/x", &[("x-api-key", &key)]).await.status, StatusCode::UNAUTHORIZED);
    }
}

async fn current_version(cp: &ControlPlane) -> u64 {
    let response = cp.admin(Method::GET, "/api/v1/gateways/default/versions").send().await.unwrap();
    response.json::<Value>().await.unwrap()["data"][0]["version"].as_u64().unwrap()
}

#[tokio::test]
async fn jwt_tokens_pass_with_their_credential_only_and_every_forgery_is_refused() {
    let Setup { _db, cp, upstream } = setup().await;
    let mut config = service_and_route(&upstream, json!([{"type": "jwt", "audience": ["api"]}]));
    config["routes"].as_array_mut().unwrap().push(json!({"name": "writes", "service": "users", "paths": ["/writes"],
        "policies": [{"type": "jwt", "audience": ["api"]}, {"type": "scopes", "all_of": ["write"]}]}));
    config["consumers"].as_array_mut().unwrap().extend([json!({"username": "rsa-app"}), json!({"username": "ec-app"})]);
    config["credentials"] = json!([
        {"consumer": "alice", "type": "jwt", "issuer": "mobile-app", "algorithm": "HS256", "secret": HS_SECRET},
        {"consumer": "rsa-app", "type": "jwt", "issuer": "https://idp.example", "algorithm": "RS256", "public_key": RSA_PUBLIC},
        {"consumer": "ec-app", "type": "jwt", "issuer": "https://ec.example", "algorithm": "ES256", "public_key": EC_PUBLIC},
    ]);
    let version = put_config(&cp, config).await;
    let dp = data_plane(&cp, "dp-1", version).await;
    let claims = |iss: &str| json!({"iss": iss, "sub": "user-7", "aud": "api", "exp": now() + 600, "scope": "read write"});

    let hs = mint(Algorithm::HS256, HS_SECRET, None, &claims("mobile-app"));
    let rs = mint(Algorithm::RS256, RSA_PRIVATE, Some("any"), &claims("https://idp.example"));
    let es = mint(Algorithm::ES256, EC_PRIVATE, None, &claims("https://ec.example"));
    for (token, consumer) in [(&hs, "alice"), (&rs, "rsa-app"), (&es, "ec-app")] {
        let ok = call(&dp, "/writes", &[("authorization", &bearer(token))]).await;
        assert_eq!(ok.status, StatusCode::OK, "{consumer}: {}", ok.text);
        let seen = &ok.body["headers"];
        assert_eq!(seen["x-consumer-username"], consumer);
        assert_eq!(seen["x-user-id"], "user-7", "the JWT subject wins over custom_id");
        assert_eq!(seen["x-scopes"], "read write");
        assert!(seen.get("authorization").is_none(), "the token is hidden from the upstream");
    }

    let read_only =
        mint(Algorithm::HS256, HS_SECRET, None, &json!({"iss": "mobile-app", "aud": "api", "exp": now() + 600, "scp": ["read"]}));
    let forbidden = call(&dp, "/writes", &[("authorization", &bearer(&read_only))]).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{}", forbidden.text);
    assert_eq!(forbidden.body["error"]["code"], "insufficient_scope");
    assert!(forbidden.challenges[0].contains("insufficient_scope") && forbidden.challenges[0].contains("write"));
    assert_eq!(call(&dp, "/private", &[("authorization", &bearer(&read_only))]).await.status, StatusCode::OK);

    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims("mobile-app")));
    let hs_with_rsa_public_key = mint(Algorithm::HS256, RSA_PUBLIC, None, &claims("https://idp.example"));
    let mut tampered_parts: Vec<String> = rs.split('.').map(str::to_owned).collect();
    tampered_parts[1] = b64(&json!({"iss": "https://idp.example", "sub": "admin", "aud": "api", "exp": now() + 600}));
    let tampered = tampered_parts.join(".");
    let with = |extra: Value| {
        let mut c = claims("mobile-app");
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        mint(Algorithm::HS256, HS_SECRET, None, &c)
    };
    let refused = [
        ("alg none", alg_none),
        ("HS256 signed with the RS256 public key", hs_with_rsa_public_key),
        ("expired", with(json!({"exp": now() - 3600}))),
        ("not yet valid", with(json!({"nbf": now() + 3600}))),
        ("exp as a string", with(json!({"exp": (now() + 600).to_string()}))),
        ("nbf as a string", with(json!({"nbf": (now() - 60).to_string()}))),
        ("aud as a number", with(json!({"aud": 7}))),
        ("sub as a number", with(json!({"sub": 7}))),
        ("no exp", mint(Algorithm::HS256, HS_SECRET, None, &json!({"iss": "mobile-app", "aud": "api"}))),
        ("wrong iss", mint(Algorithm::HS256, HS_SECRET, None, &claims("someone-else"))),
        ("wrong aud", with(json!({"aud": "other-api"}))),
        ("tampered payload", tampered),
        ("a large token", with(json!({"pad": "x".repeat(40_000)}))),
        ("wrong secret", mint(Algorithm::HS256, "another-secret-of-at-least-32-bytes!", None, &claims("mobile-app"))),
        ("ES256 token for the RS256 issuer", mint(Algorithm::ES256, EC_PRIVATE, None, &claims("https://idp.example"))),
    ];
    for (what, token) in refused {
        let reply = call(&dp, "/private", &[("authorization", &bearer(&token))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text);
        assert_eq!(reply.challenges, ["Bearer realm=\"portico\", error=\"invalid_token\""], "{what}");
        assert!(!reply.text.contains(HS_SECRET) && !reply.text.contains(&token[..token.len().min(40)]), "{what}: {}", reply.text);
    }
    let huge = with(json!({"pad": "x".repeat(1_000_000)}));
    let reply = call(&dp, "/private", &[("authorization", &bearer(&huge))]).await;
    assert!(reply.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "a 1 MB token: {}", reply.status);
    assert_eq!(call(&dp, "/private", &[]).await.challenges, ["Bearer realm=\"portico\""]);
}

#[tokio::test]
async fn jwks_keys_are_fetched_refreshed_on_unknown_kid_and_kept_when_the_idp_is_down() {
    let Setup { _db, cp, upstream } = setup().await;
    let idp = TestIdp::start(&jwt::jwks(&[jwt::jwk(Algorithm::RS256, RSA_PRIVATE, "k1")])).await;
    let mut config = service_and_route(&upstream, json!([{"type": "jwt"}]));
    config["credentials"] =
        json!([{"consumer": "alice", "type": "jwt", "issuer": "https://idp.test", "algorithm": "RS256", "jwks_url": idp.jwks_url()}]);
    let version = put_config(&cp, config).await;
    let dp = data_plane(&cp, "dp-1", version).await;
    let token = |kid: &str, key: &str, sub: &str| {
        mint(Algorithm::RS256, key, Some(kid), &json!({"iss": "https://idp.test", "sub": sub, "exp": now() + 600}))
    };

    let ok = call(&dp, "/private", &[("authorization", &bearer(&token("k1", RSA_PRIVATE, "u1")))]).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["headers"]["x-consumer-username"], "alice");

    let unknown = call(&dp, "/private", &[("authorization", &bearer(&token("k2", RSA2_PRIVATE, "u2")))]).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "unknown kid: {}", unknown.text);

    // The IdP rotates in k2: an unknown kid refetches the set (at most every 10 s).
    idp.publish(&jwt::jwks(&[jwt::jwk(Algorithm::RS256, RSA_PRIVATE, "k1"), jwt::jwk(Algorithm::RS256, RSA2_PRIVATE, "k2")]));
    eventually("a token signed with the new key passes", DEADLINE, || async {
        let reply = call(&dp, "/private", &[("authorization", &bearer(&token("k2", RSA2_PRIVATE, "u2")))]).await;
        (reply.status == StatusCode::OK).then_some(())
    })
    .await;
    let fetches = idp.fetches();
    assert!(fetches <= 4, "unknown kids must not hammer the IdP: {fetches} fetches");

    // The IdP goes away: known keys keep working (fresh tokens, so no cache hit).
    idp.stop();
    let after = call(&dp, "/private", &[("authorization", &bearer(&token("k1", RSA_PRIVATE, "u3")))]).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
    assert_eq!(after.body["headers"]["x-user-id"], "u3");
}

#[tokio::test]
async fn anonymous_callers_and_alternative_policies_and_gateway_wide_policies() {
    let Setup { _db, cp, upstream } = setup().await;
    let mut config =
        service_and_route(&upstream, json!([{"type": "key-auth", "anonymous": "guest"}, {"type": "jwt", "anonymous": "guest"}]));
    config["credentials"] = json!([
        {"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"},
        {"consumer": "alice", "type": "jwt", "issuer": "mobile-app", "algorithm": "HS256", "secret": HS_SECRET},
    ]);
    config["policies"] = json!([{"type": "key-auth", "header": "x-gateway-key"}]);
    let version = put_config(&cp, config).await;
    let dp = data_plane(&cp, "dp-1", version).await;

    let anonymous = call(&dp, "/private", &[]).await;
    assert_eq!(anonymous.status, StatusCode::OK, "{}", anonymous.text);
    assert_eq!(anonymous.body["headers"]["x-consumer-username"], "guest");
    assert_eq!(anonymous.body["headers"]["x-anonymous-consumer"], "true");
    assert_eq!(
        call(&dp, "/private", &[("x-api-key", "not-a-valid-key-at-all")]).await.status,
        StatusCode::UNAUTHORIZED,
        "a presented but wrong credential is refused, not made anonymous"
    );
    let by_key = call(&dp, "/private", &[("x-api-key", "alice-key-0123456789")]).await;
    assert_eq!(by_key.body["headers"]["x-consumer-username"], "alice");
    let token = mint(Algorithm::HS256, HS_SECRET, None, &json!({"iss": "mobile-app", "exp": now() + 60}));
    let by_token = call(&dp, "/private", &[("authorization", &bearer(&token))]).await;
    assert_eq!(by_token.body["headers"]["x-consumer-username"], "alice", "{}", by_token.text);

    // The open route has no policy of its own: the gateway's key-auth (own header) applies.
    let refused = call(&dp, "/open", &[("x-api-key", "alice-key-0123456789")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.challenges, ["APIKey realm=\"portico\", header=\"x-gateway-key\""]);
    assert_eq!(call(&dp, "/open", &[("x-gateway-key", "alice-key-0123456789")]).await.status, StatusCode::OK);
}
