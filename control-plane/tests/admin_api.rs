//! The admin API in-process (`Router::oneshot`) on a real SQLite store:
//! status codes, error bodies naming fields, versions and auth as a client
//! sees them.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use portico_cp::api::auth::Authenticator;
use portico_cp::api::{self, AppState};
use portico_cp::distribution::Hub;
use portico_cp::publish::Publisher;
use portico_cp::store::{DEFAULT_GATEWAY, NodeHello, Store};
use portico_shared::secret::KeyHasher;
use portico_test_support::TestDb;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-for-tests-0123";
const CLUSTER_TOKEN: &str = "cluster-token-for-tests-0123";

struct Api {
    router: Router,
    store: Store,
    _db: TestDb,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn version(&self) -> u64 {
        self.headers["portico-config-version"].to_str().unwrap().parse().unwrap()
    }

    fn error_field(&self) -> String {
        self.json()["error"]["field"].as_str().unwrap_or_default().to_owned()
    }
}

impl Api {
    async fn new() -> Self {
        let db = TestDb::sqlite();
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        store.ensure_default_gateway().await.unwrap();
        let hub = Hub::default();
        let state = AppState {
            publisher: Publisher::new(store.clone(), hub),
            auth: Authenticator::new(Some(ADMIN), store.clone()),
            keys: KeyHasher::from_cluster_token(CLUSTER_TOKEN),
            store: store.clone(),
            heartbeat: Duration::from_secs(5),
            metrics: portico_cp::metrics::install().unwrap(),
        };
        Self { router: api::router(state), store, _db: db }
    }

    async fn send(&self, method: Method, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<(&str, String)>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some((content_type, body)) => request.header("content-type", content_type).body(Body::from(body)),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        Reply { status, headers, text: String::from_utf8(bytes.to_vec()).unwrap() }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(ADMIN), &[], None).await
    }

    async fn write(&self, method: Method, path: &str, body: Value) -> Reply {
        self.send(method, path, Some(ADMIN), &[], Some(("application/json", body.to_string()))).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, Some(ADMIN), &[], None).await
    }
}

const SERVICES: &str = "/api/v1/gateways/default/services";
const CONFIG: &str = "/api/v1/gateways/default/config";
const ROUTES: &str = "/api/v1/gateways/default/routes";

fn users_service() -> Value {
    json!({"name": "users", "targets": [{"url": "http://10.0.0.5:8000", "weight": 100}]})
}

fn users_route() -> Value {
    json!({"name": "users-api", "service": "users", "paths": ["/users"], "methods": ["GET", "POST"]})
}

#[tokio::test]
async fn requires_a_valid_bearer_token() {
    let api = Api::new().await;
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let reply = api.send(Method::GET, "/api/v1/gateways", token, &[], None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(reply.json()["error"]["code"], "unauthorized");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(api.send(Method::GET, "/healthz", None, &[], None).await.status, StatusCode::OK);
    assert_eq!(api.send(Method::GET, "/api/v1/openapi.json", None, &[], None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_are_shown_once_and_revocable_and_read_only_cannot_write() {
    let api = Api::new().await;
    let created = api.write(Method::POST, "/api/v1/tokens", json!({"name": "ci", "role": "read-only"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let listed = api.get("/api/v1/tokens").await;
    assert!(!listed.text.contains(&secret), "a listed token must not show its secret");
    assert_eq!(listed.json()["data"][0]["name"], "ci");
    let one = api.get("/api/v1/tokens/ci").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let token = one.json();
    let mut fields: Vec<&str> = token.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_at", "created_by", "name", "role"], "metadata only: {}", one.text);
    assert_eq!((one.json()["role"].as_str(), one.json()["created_by"].as_str()), (Some("read-only"), Some("bootstrap")));
    assert_eq!(api.get("/api/v1/tokens/nope").await.status, StatusCode::NOT_FOUND);

    let reader = Some(secret.as_str());
    assert_eq!(api.send(Method::GET, SERVICES, reader, &[], None).await.status, StatusCode::OK);
    let write = api.send(Method::POST, SERVICES, reader, &[], Some(("application/json", users_service().to_string()))).await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    assert_eq!(write.json()["error"]["code"], "forbidden");
    let diff = api.send(Method::POST, "/api/v1/gateways/default/config/diff", reader, &[], Some(("application/json", "{}".into()))).await;
    assert_eq!(diff.status, StatusCode::OK, "a read-only token may preview a diff");
    assert_eq!(api.send(Method::GET, "/api/v1/tokens", reader, &[], None).await.status, StatusCode::FORBIDDEN);

    let duplicate = api.write(Method::POST, "/api/v1/tokens", json!({"name": "ci", "role": "admin"})).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    let bad_role = api.write(Method::POST, "/api/v1/tokens", json!({"name": "x", "role": "root"})).await;
    assert_eq!((bad_role.status, bad_role.error_field().as_str()), (StatusCode::BAD_REQUEST, "role"));

    assert_eq!(api.delete("/api/v1/tokens/ci").await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.send(Method::GET, SERVICES, reader, &[], None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.delete("/api/v1/tokens/ci").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn writes_publish_versions_and_record_author_and_message() {
    let api = Api::new().await;
    let created = api.write(Method::POST, SERVICES, users_service()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.version(), 2);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(created.headers["location"], format!("{SERVICES}/{id}"));
    assert!(created.headers.contains_key("etag"));

    let message = [("portico-change-message", "add the users API")];
    let route = api.send(Method::POST, ROUTES, Some(ADMIN), &message, Some(("application/json", users_route().to_string()))).await;
    assert_eq!((route.status, route.version()), (StatusCode::CREATED, 3));

    let by_name = api.get(&format!("{SERVICES}/users")).await;
    let by_id = api.get(&format!("{SERVICES}/{id}")).await;
    assert_eq!(by_name.json(), by_id.json());
    assert_eq!(by_name.json()["targets"][0]["url"], "http://10.0.0.5:8000");

    let versions = api.get("/api/v1/gateways/default/versions").await.json();
    assert_eq!(versions["total"], 3);
    assert_eq!(versions["data"][0]["version"], 3);
    assert_eq!(versions["data"][0]["author"], "bootstrap");
    assert_eq!(versions["data"][0]["message"], "add the users API");
    assert_eq!(versions["data"][0]["hash"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn a_write_that_changes_nothing_publishes_nothing() {
    let api = Api::new().await;
    api.write(Method::POST, SERVICES, users_service()).await;
    let same = api.write(Method::PUT, &format!("{SERVICES}/users"), users_service()).await;
    assert_eq!((same.status, same.version()), (StatusCode::OK, 2));
    let same_with_other_spelling =
        api.write(Method::PUT, &format!("{SERVICES}/users"), json!({"name": "users", "targets": [{"url": "http://10.0.0.5:8000/"}]})).await;
    assert_eq!(same_with_other_spelling.version(), 2);
    let changed = api.write(Method::PATCH, &format!("{SERVICES}/users"), json!({"timeouts": {"connect_ms": 500}})).await;
    assert_eq!((changed.status, changed.version()), (StatusCode::OK, 3), "{}", changed.text);
    assert_eq!(changed.json()["timeouts"]["connect_ms"], 500);
    assert_eq!(changed.json()["timeouts"]["request_ms"], 30000, "merge patch keeps sibling fields");
    assert_eq!(api.get("/api/v1/gateways/default/versions").await.json()["total"], 3);
}

#[tokio::test]
async fn invalid_input_is_a_400_naming_the_field() {
    let api = Api::new().await;
    api.write(Method::POST, SERVICES, users_service()).await;
    let cases = [
        (SERVICES, json!({"name": "s", "targets": [{"url": "not a url"}]}), "targets[0].url"),
        (SERVICES, json!({"name": "s", "targets": []}), "targets"),
        (SERVICES, json!({"name": "s", "targets": [{"url": "http://a:1", "weight": 5000}]}), "targets[0].weight"),
        (SERVICES, json!({"name": "Bad Name", "targets": [{"url": "http://a:1"}]}), "name"),
        (SERVICES, json!({"name": "s", "targets": [{"url": "http://a:1"}], "policies": [{"type": "teleport"}]}), "policies[0].type"),
        (SERVICES, json!({"name": "s", "targets": [{"url": "http://a:1"}], "strip_paht": true}), "strip_paht"),
        (SERVICES, json!({"targets": [{"url": "http://a:1"}]}), "name"),
        (ROUTES, json!({"name": "r", "service": "users", "paths": ["/a", "/a/"]}), "paths[1]"),
        (ROUTES, json!({"name": "r", "service": "users", "paths": ["no-slash"]}), "paths[0]"),
        (ROUTES, json!({"name": "r", "service": "missing", "paths": ["/a"]}), "service"),
        (ROUTES, json!({"name": "r", "service": "users", "methods": ["FETCH"]}), "methods[0]"),
    ];
    for (path, body, field) in cases {
        let reply = api.write(Method::POST, path, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!(reply.json()["error"]["code"], "invalid_input");
        assert_eq!(reply.error_field(), field, "{body}");
    }
    let malformed = api.send(Method::POST, SERVICES, Some(ADMIN), &[], Some(("application/json", "{\"name\":".into()))).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let wrong_type = api.send(Method::POST, SERVICES, Some(ADMIN), &[], Some(("text/plain", users_service().to_string()))).await;
    assert_eq!((wrong_type.status, wrong_type.error_field().as_str()), (StatusCode::BAD_REQUEST, "Content-Type"));
    let bad_page = api.get(&format!("{SERVICES}?limit=0")).await;
    assert_eq!((bad_page.status, bad_page.error_field().as_str()), (StatusCode::BAD_REQUEST, "limit"));
    let bad_query = api.get(&format!("{SERVICES}?limit=many")).await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/api/v1/gateways/default/versions").await.json()["total"], 2, "nothing rejected was published");
}

#[tokio::test]
async fn a_config_with_several_mistakes_is_one_400_listing_each_with_its_field() {
    let api = Api::new().await;
    let document = json!({
        "services": [{"name": "users", "targets": [{"url": "ftp://10.0.0.5:8000"}]}],
        "routes": [{"name": "users-api", "service": "users", "paths": ["/users"], "methods": ["FETCH"]}],
        "consumers": [{"username": "not valid"}]
    });
    let reply = api.send(Method::PUT, CONFIG, Some(ADMIN), &[], Some(("application/json", document.to_string()))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let body = reply.json();
    let errors = body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors.iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["services[0].targets[0].url", "routes[0].methods[0]", "consumers[0].username"], "{}", reply.text);
    for error in errors {
        assert_eq!(error["code"], "invalid_input");
        let (message, field) = (error["message"].as_str().unwrap(), error["field"].as_str().unwrap());
        assert!(!message.contains(field), "the message is the text alone, not the field again: {message}");
    }
    assert_eq!(body["error"], errors[0], "`error` is the first of `errors`, as clients of one error read it");
    assert_eq!(api.get("/api/v1/gateways/default/versions").await.json()["total"], 1, "nothing was published");

    // A 409 only when every mistake is a clash with the rest of the config.
    let twice = json!({"services": [users_service(), users_service()], "consumers": [{"username": "a"}, {"username": "a"}]});
    let reply = api.send(Method::PUT, CONFIG, Some(ADMIN), &[], Some(("application/json", twice.to_string()))).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert_eq!(reply.json()["errors"].as_array().unwrap().len(), 2, "{}", reply.text);
    let mixed = json!({"services": [users_service(), users_service()], "consumers": [{"username": "not valid"}]});
    let reply = api.send(Method::PUT, CONFIG, Some(ADMIN), &[], Some(("application/json", mixed.to_string()))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let body = reply.json();
    let codes: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["conflict", "invalid_input"], "{}", reply.text);

    // One entity's mistakes come together too, relative to it.
    let service = json!({"name": "Bad Name", "targets": [{"url": "http://a:1", "weight": 5000}], "timeouts": {"connect_ms": 0}});
    let reply = api.write(Method::POST, SERVICES, service).await;
    let fields: Vec<String> = reply.json()["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect();
    assert_eq!(fields, ["name", "targets[0].weight", "timeouts.connect_ms"], "{}", reply.text);
}

#[tokio::test]
async fn unknown_things_are_404_and_conflicts_are_409() {
    let api = Api::new().await;
    assert_eq!(api.get(&format!("{SERVICES}/nope")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/gateways/nope/services").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/nothing-here").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/gateways/default/versions/99").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/gateways/%00/services").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/gateways/%C3%BC").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/gateways/default/versions/99999999999999999999999").await.status, StatusCode::BAD_REQUEST);
    let nul = api.write(Method::POST, "/api/v1/gateways", json!({"name": "x", "description": "a\u{0}b"})).await;
    assert_eq!((nul.status, nul.error_field().as_str()), (StatusCode::BAD_REQUEST, "description"));

    api.write(Method::POST, SERVICES, users_service()).await;
    let duplicate = api.write(Method::POST, SERVICES, users_service()).await;
    assert_eq!((duplicate.status, duplicate.error_field().as_str()), (StatusCode::CONFLICT, "name"));

    api.write(Method::POST, ROUTES, users_route()).await;
    let in_use = api.delete(&format!("{SERVICES}/users")).await;
    assert_eq!(in_use.status, StatusCode::CONFLICT);
    assert!(in_use.json()["error"]["message"].as_str().unwrap().contains("users-api"));
    let rename = api.write(Method::PATCH, &format!("{SERVICES}/users"), json!({"name": "people"})).await;
    assert_eq!(rename.status, StatusCode::CONFLICT, "renaming a service in use would orphan its routes");

    let shadow =
        api.write(Method::POST, ROUTES, json!({"name": "copy", "service": "users", "paths": ["/users"], "methods": ["POST", "GET"]})).await;
    assert_eq!(shadow.status, StatusCode::CONFLICT, "{}", shadow.text);

    assert_eq!(api.delete(&format!("{ROUTES}/users-api")).await.status, StatusCode::NO_CONTENT);
    let deleted = api.delete(&format!("{SERVICES}/users")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.version(), 5);
}

#[tokio::test]
async fn stale_if_match_is_a_409_and_fresh_one_passes() {
    let api = Api::new().await;
    let created = api.write(Method::POST, SERVICES, users_service()).await;
    let etag = created.headers["etag"].to_str().unwrap().to_owned();
    let path = format!("{SERVICES}/users");
    let body = json!({"name": "users", "targets": [{"url": "http://10.0.0.6:8000"}]}).to_string();
    let first = api.send(Method::PUT, &path, Some(ADMIN), &[("if-match", &etag)], Some(("application/json", body.clone()))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let second = api.send(Method::PUT, &path, Some(ADMIN), &[("if-match", &etag)], Some(("application/json", body))).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.json()["error"]["code"], "precondition_failed");

    let config = api.get("/api/v1/gateways/default/config").await;
    let hash = config.headers["etag"].to_str().unwrap().to_owned();
    api.delete(&path).await;
    let stale = api
        .send(Method::PUT, "/api/v1/gateways/default/config", Some(ADMIN), &[("if-match", &hash)], Some(("application/json", "{}".into())))
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn lists_are_paginated() {
    let api = Api::new().await;
    for i in 0..5 {
        api.write(Method::POST, "/api/v1/gateways/default/consumers", json!({"username": format!("user{i}")})).await;
    }
    let first = api.get("/api/v1/gateways/default/consumers?limit=2").await.json();
    assert_eq!((first["total"].as_u64(), first["next_offset"].as_u64()), (Some(5), Some(2)));
    assert_eq!(first["data"][0]["username"], "user0");
    let last = api.get("/api/v1/gateways/default/consumers?limit=2&offset=4").await.json();
    assert_eq!(last["data"].as_array().unwrap().len(), 1);
    assert!(last.get("next_offset").is_none());
}

#[tokio::test]
async fn declarative_config_round_trips_in_json_and_yaml() {
    let api = Api::new().await;
    let config =
        json!({"services": [users_service()], "routes": [users_route()], "consumers": [{"username": "alice", "custom_id": "12345"}]});
    let applied = api.write(Method::PUT, "/api/v1/gateways/default/config", config.clone()).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text);
    assert_eq!(applied.json()["published"], true);
    assert_eq!(applied.json()["diff"]["summary"]["create"], 3);
    let version = applied.version();

    let yaml = api.send(Method::GET, "/api/v1/gateways/default/config", Some(ADMIN), &[("accept", "application/yaml")], None).await;
    assert_eq!(yaml.headers["content-type"], "application/yaml");
    assert!(yaml.text.contains("name: users-api"), "{}", yaml.text);
    assert!(!yaml.text.contains("created_at"), "exports are declarative");
    let reapplied =
        api.send(Method::PUT, "/api/v1/gateways/default/config", Some(ADMIN), &[], Some(("application/yaml", yaml.text.clone()))).await;
    assert_eq!(reapplied.json()["published"], false, "{}", reapplied.text);
    assert_eq!(reapplied.version(), version);

    let edited = yaml.text.replace("http://10.0.0.5:8000", "http://10.0.0.9:8000");
    let preview =
        api.send(Method::POST, "/api/v1/gateways/default/config/diff", Some(ADMIN), &[], Some(("application/yaml", edited))).await.json();
    assert_eq!(preview["summary"]["update"], 1);
    assert_eq!(preview["changes"][0]["fields"][0]["path"], "/targets/0/url");
    assert_eq!(preview["changes"][0]["fields"][0]["old"], "http://10.0.0.5:8000");
    assert_eq!(preview["base_version"].as_u64(), Some(version));

    let ids_before = api.get(&format!("{SERVICES}/users")).await.json()["id"].clone();
    let mut changed = config.clone();
    changed["services"][0]["targets"][0]["url"] = json!("http://10.0.0.9:8000");
    api.write(Method::PUT, "/api/v1/gateways/default/config", changed).await;
    assert_eq!(api.get(&format!("{SERVICES}/users")).await.json()["id"], ids_before, "ids are stable by name");

    let invalid = api
        .write(Method::PUT, "/api/v1/gateways/default/config", json!({"routes": [{"name": "r", "service": "ghost", "paths": ["/"]}]}))
        .await;
    assert_eq!((invalid.status, invalid.error_field().as_str()), (StatusCode::BAD_REQUEST, "routes[0].service"));
}

#[tokio::test]
async fn rollback_publishes_the_old_content_as_a_new_version() {
    let api = Api::new().await;
    api.write(Method::POST, SERVICES, users_service()).await; // v2
    api.write(Method::PATCH, &format!("{SERVICES}/users"), json!({"targets": [{"url": "http://10.0.0.7:8000"}]})).await; // v3
    let v2 = api.get("/api/v1/gateways/default/versions/2").await.json();
    assert_eq!(v2["config"]["services"][0]["targets"][0]["url"], "http://10.0.0.5:8000");

    let rolled = api.send(Method::POST, "/api/v1/gateways/default/versions/2/rollback", Some(ADMIN), &[], None).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.text);
    assert_eq!(rolled.version(), 4);
    let body = rolled.json();
    assert_eq!((body["version"].as_u64(), body["rollback_of"].as_u64()), (Some(4), Some(2)));
    assert_eq!(body["hash"], v2["hash"], "content equals version 2");
    assert_eq!(api.get(&format!("{SERVICES}/users")).await.json()["targets"][0]["url"], "http://10.0.0.5:8000");

    let again = api.send(Method::POST, "/api/v1/gateways/default/versions/2/rollback", Some(ADMIN), &[], None).await;
    assert_eq!((again.status, again.version()), (StatusCode::OK, 4), "already equal: nothing published");
    assert_eq!(
        api.send(Method::POST, "/api/v1/gateways/default/versions/x/rollback", Some(ADMIN), &[], None).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn gateways_have_their_own_entities_and_history() {
    let api = Api::new().await;
    let created = api.write(Method::POST, "/api/v1/gateways", json!({"name": "mobile", "description": "apps"})).await;
    assert_eq!((created.status, created.version()), (StatusCode::CREATED, 1));
    assert_eq!(api.write(Method::POST, "/api/v1/gateways", json!({"name": "mobile"})).await.status, StatusCode::CONFLICT);
    assert_eq!(api.write(Method::POST, "/api/v1/gateways", json!({"name": "Mobile!"})).await.error_field(), "name");

    api.write(Method::POST, "/api/v1/gateways/mobile/services", users_service()).await;
    assert_eq!(api.get("/api/v1/gateways/mobile/services").await.json()["total"], 1);
    assert_eq!(api.get(SERVICES).await.json()["total"], 0);
    assert_eq!(api.get("/api/v1/gateways/default").await.json()["version"], 1);
    assert_eq!(api.get("/api/v1/gateways/mobile").await.json()["version"], 2);

    assert_eq!(api.delete("/api/v1/gateways/default").await.status, StatusCode::CONFLICT);
    assert_eq!(api.delete("/api/v1/gateways/mobile").await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/api/v1/gateways/mobile/services").await.status, StatusCode::NOT_FOUND);
    let names: Vec<Value> =
        api.get("/api/v1/gateways").await.json()["data"].as_array().unwrap().iter().map(|g| g["name"].clone()).collect();
    assert_eq!(names, [json!("default")]);
}

#[tokio::test]
async fn fleet_view_is_empty_before_any_data_plane() {
    let api = Api::new().await;
    let fleet = api.get("/api/v1/gateways/default/data-planes").await.json();
    assert_eq!(fleet, json!({"data": [], "total": 0, "limit": 100, "offset": 0, "current_version": 1}));
}

fn hello(node_id: &str, session_id: &str) -> NodeHello {
    NodeHello {
        node_id: node_id.into(),
        gateway: DEFAULT_GATEWAY.into(),
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        software_version: "test".into(),
        session_id: session_id.into(),
        ..NodeHello::default()
    }
}

const FLEET: &str = "/api/v1/gateways/default/data-planes";

#[tokio::test]
async fn fleet_keeps_an_old_rejection_as_history_and_only_a_rejected_node_has_a_reason() {
    let api = Api::new().await;
    api.store.node_connected(&hello("dp-1", "s1")).await.unwrap();
    api.store.node_nacked(DEFAULT_GATEWAY, "dp-1", 1, "cannot resolve users").await.unwrap();
    let rejected = &api.get(FLEET).await.json()["data"][0];
    assert_eq!((rejected["status"].as_str(), rejected["reason"].as_str()), (Some("rejected"), Some("cannot resolve users")), "{rejected}");

    let hash = api.get("/api/v1/gateways/default/versions/1").await.json()["hash"].as_str().unwrap().to_owned();
    api.store.node_acked(DEFAULT_GATEWAY, "dp-1", 1, &hash).await.unwrap();
    let synced = &api.get(FLEET).await.json()["data"][0];
    assert_eq!(synced["status"], "in_sync", "{synced}");
    assert_eq!(synced["reason"], Value::Null, "an old rejection is not current: {synced}");
    assert_eq!(synced["last_rejection"]["version"], 1, "{synced}");
    assert_eq!(synced["last_rejection"]["reason"], "cannot resolve users", "{synced}");
    assert!(synced["last_rejection"]["at"].is_string(), "the rejection keeps its time: {synced}");
    assert_eq!(synced["labels"], json!({"zone": "a"}));
}

#[tokio::test]
async fn a_disconnected_node_can_be_removed_and_a_live_one_cannot() {
    let api = Api::new().await;
    for (node, session) in [("dp-1", "s1"), ("dp-2", "s2")] {
        api.store.node_connected(&hello(node, session)).await.unwrap();
    }
    let page = api.get(&format!("{FLEET}?limit=1")).await.json();
    assert_eq!((page["total"].as_u64(), page["data"].as_array().unwrap().len(), page["next_offset"].as_u64()), (Some(2), 1, Some(1)));

    let live = api.delete(&format!("{FLEET}/dp-1")).await;
    assert_eq!((live.status, live.json()["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{}", live.text);
    api.store.node_seen(DEFAULT_GATEWAY, "dp-1", "s1", false).await.unwrap();
    assert_eq!(api.delete(&format!("{FLEET}/dp-1")).await.status, StatusCode::NO_CONTENT);
    let nodes: Vec<Value> = api.get(FLEET).await.json()["data"].as_array().unwrap().iter().map(|n| n["node_id"].clone()).collect();
    assert_eq!(nodes, [json!("dp-2")]);
    assert_eq!(api.delete(&format!("{FLEET}/dp-1")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.delete("/api/v1/gateways/nope/data-planes/dp-2").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.delete(&format!("{FLEET}/%00")).await.status, StatusCode::NOT_FOUND);
}

const PURGE: &str = "/api/v1/gateways/default/cache/purge";

#[tokio::test]
async fn a_cache_purge_names_one_target_and_bad_ones_are_a_400_naming_the_field() {
    let api = Api::new().await;
    let cases = [
        (json!({}), "url"),
        (json!({"url": "/a", "prefix": "/b"}), "prefix"),
        (json!({"url": "users/7"}), "url"),
        (json!({"url": "ftp://example.com/a"}), "url"),
        (json!({"prefix": "/a?x=1"}), "prefix"),
        (json!({"tag": "two words"}), "tag"),
        (json!({"tag": ""}), "tag"),
        (json!({"tag": 7}), "tag"),
        (json!({"path": "/a"}), "path"),
    ];
    for (body, field) in cases {
        let reply = api.write(Method::POST, PURGE, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!((reply.json()["error"]["code"].as_str(), reply.error_field().as_str()), (Some("invalid_input"), field), "{body}");
    }
    let slow = api.write(Method::POST, &format!("{PURGE}?timeout_ms=30001"), json!({"tag": "t"})).await;
    assert_eq!((slow.status, slow.error_field().as_str()), (StatusCode::BAD_REQUEST, "timeout_ms"), "{}", slow.text);
    let unknown = api.write(Method::POST, "/api/v1/gateways/nope/cache/purge", json!({"tag": "t"})).await;
    assert_eq!((unknown.status, unknown.json()["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{}", unknown.text);
    let anonymous = api.send(Method::POST, PURGE, None, &[], Some(("application/json", json!({"tag": "t"}).to_string()))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(api.store.purges_after(DEFAULT_GATEWAY, 0).await.unwrap().is_empty(), "nothing refused was recorded");
    assert_eq!(api.get("/api/v1/gateways/default/versions").await.json()["total"], 1, "a purge is not config");
}

#[tokio::test]
async fn a_cache_purge_answers_which_nodes_applied_it_and_why_the_others_did_not() {
    let api = Api::new().await;
    let empty = api.write(Method::POST, PURGE, json!({"prefix": "/users"})).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text);
    let first = empty.json()["id"].as_u64().unwrap();
    assert_eq!(
        empty.json(),
        json!({"id": first, "purge": {"prefix": "/users"}, "nodes": 0, "applied": 0, "removed": 0, "applied_by": [], "not_applied": [],
               "connected_after": [], "timeout_ms": 5000}),
        "with no data plane there is nobody to wait for"
    );

    for (node, session) in [("quick", "s1"), ("silent", "s2"), ("gone", "s3"), ("restarted", "s4")] {
        api.store.node_connected(&hello(node, session)).await.unwrap();
    }
    api.store.node_seen(DEFAULT_GATEWAY, "gone", "s3", false).await.unwrap();
    // "quick" answers as its stream would record it, on whichever replica
    // holds it; "restarted" reconnects with a new cache, started past the purge.
    let store = api.store.clone();
    let quick = tokio::spawn(async move {
        loop {
            if let Some(purge) = store.purges_after(DEFAULT_GATEWAY, first).await.unwrap().first() {
                store.record_purge_ack(DEFAULT_GATEWAY, "quick", purge.id, 4).await.unwrap();
                store.node_connected(&NodeHello { purge_cursor: Some(purge.id), ..hello("restarted", "s5") }).await.unwrap();
                return purge.id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let reply = api.write(Method::POST, &format!("{PURGE}?timeout_ms=300"), json!({"url": "/users/7"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let id = quick.await.unwrap();
    assert!(id > first);
    assert_eq!(
        reply.json(),
        json!({
            "id": id, "purge": {"url": "/users/7"}, "nodes": 4, "applied": 1, "removed": 4,
            "applied_by": [{"node_id": "quick", "removed": 4}],
            "not_applied": [{"node_id": "gone", "reason": "disconnected"}, {"node_id": "silent", "reason": "no_answer"}],
            "connected_after": [{"node_id": "restarted"}],
            "timeout_ms": 300
        })
    );
}

/// Every documented list endpoint (an operation taking `limit`), with the
/// number of items it holds in [`every_list_answers_one_paginated_shape`].
const LISTS: [(&str, u64); 9] = [
    ("/api/v1/gateways", 2),
    ("/api/v1/gateways/{gw}/services", 2),
    ("/api/v1/gateways/{gw}/routes", 0),
    ("/api/v1/gateways/{gw}/consumers", 1),
    ("/api/v1/gateways/{gw}/certificates", 0),
    ("/api/v1/gateways/{gw}/protos", 0),
    ("/api/v1/gateways/{gw}/consumers/{c}/credentials", 2),
    ("/api/v1/gateways/{gw}/versions", 6),
    ("/api/v1/gateways/{gw}/data-planes", 2),
];

#[tokio::test]
async fn every_list_answers_one_paginated_shape() {
    let api = Api::new().await;
    api.write(Method::POST, "/api/v1/gateways", json!({"name": "mobile"})).await;
    for name in ["a", "b"] {
        api.write(Method::POST, SERVICES, json!({"name": name, "targets": [{"url": "http://10.0.0.5:8000"}]})).await;
        api.write(Method::POST, "/api/v1/tokens", json!({"name": name, "role": "read-only"})).await;
        api.store.node_connected(&hello(name, name)).await.unwrap();
    }
    api.write(Method::POST, CONSUMERS, json!({"username": "alice"})).await;
    for _ in 0..2 {
        assert_eq!(api.write(Method::POST, ALICE_CREDENTIALS, json!({"type": "key-auth"})).await.status, StatusCode::CREATED);
    }
    let doc = api.get("/api/v1/openapi.json").await.json();
    let mut documented: Vec<String> = operations(&doc)
        .into_iter()
        .filter(|(method, _, op)| *method == Method::GET && op["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == "limit"))
        .map(|(_, template, _)| template)
        .collect();
    documented.sort();
    let mut expected: Vec<String> =
        LISTS.iter().map(|(t, _)| (*t).to_owned()).chain(["/api/v1/tokens".to_owned(), "/api/v1/audit".to_owned()]).collect();
    expected.sort();
    assert_eq!(documented, expected, "every list takes ?limit=&offset=");
    for (template, total) in LISTS.into_iter().chain([("/api/v1/tokens", 2)]) {
        let path = template.replace("{gw}", "default").replace("{c}", "alice");
        let reply = api.get(&format!("{path}?limit=1&offset=1")).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        let page = reply.json();
        assert_eq!(page["data"].as_array().map(Vec::len), Some(total.min(2) as usize - usize::from(total > 0)), "{path}: {page}");
        assert_eq!(
            (page["total"].as_u64(), page["limit"].as_u64(), page["offset"].as_u64()),
            (Some(total), Some(1), Some(1)),
            "{path}: {page}"
        );
        let bad = api.get(&format!("{path}?limit=0")).await;
        assert_eq!((bad.status, bad.error_field().as_str()), (StatusCode::BAD_REQUEST, "limit"), "{path}");
    }
}

/// The message of an error is the text alone: the field it concerns is in
/// `field`, never repeated at the start of `message`.
#[tokio::test]
async fn error_messages_do_not_repeat_their_field() {
    let api = Api::new().await;
    api.write(Method::POST, SERVICES, users_service()).await;
    api.write(Method::POST, CONSUMERS, json!({"username": "alice"})).await;
    let settings = "/api/v1/gateways/default/settings";
    let cases = [
        (Method::POST, SERVICES, json!({"name": "s", "targets": [{"url": "http://a:1"}], "timeouts": {"connect_ms": 0}})),
        (Method::POST, SERVICES, json!({"name": "s", "targets": [{"url": "http://a:1"}], "timeouts": {"connect_ms": "soon"}})),
        (Method::POST, SERVICES, json!({"name": "s", "targets": [{"url": "http://a:1", "wieght": 1}]})),
        (Method::PATCH, "/api/v1/gateways/default/services/users", json!({"timeouts": {"request_ms": -1}})),
        (Method::POST, ROUTES, json!({"name": "r", "service": "users", "paths": ["/a"], "policies": [{"type": "rate-limit"}]})),
        (Method::POST, ALICE_CREDENTIALS, json!({"type": "key-auth", "key": "short"})),
        (Method::POST, ALICE_CREDENTIALS, json!({"type": "jwt", "issuer": "i", "algorithm": "HS256", "secret": "too short"})),
        (Method::PUT, settings, json!({"trusted_proxies": ["10.0.0.0/33"]})),
        (Method::PUT, settings, json!({"policies": [{"type": "cors", "origins": ["not an origin"]}]})),
        (Method::PUT, CONFIG, json!({"services": [{"name": "s", "targets": [{"url": "ftp://a:1"}]}]})),
        (Method::POST, "/api/v1/gateways", json!({"name": "Not Valid"})),
        (Method::POST, "/api/v1/tokens", json!({"name": "x", "role": "root"})),
    ];
    for (method, path, body) in cases {
        let reply = api.write(method.clone(), path, body.clone()).await;
        assert!(reply.status.is_client_error(), "{method} {path} {body}: {}", reply.text);
        let errors = reply.json()["errors"].as_array().unwrap().clone();
        assert!(!errors.is_empty(), "{}", reply.text);
        for error in errors {
            let (field, message) = (error["field"].as_str().unwrap_or_default(), error["message"].as_str().unwrap());
            assert!(!field.is_empty(), "{method} {path} {body}: the error names its field: {error}");
            assert!(
                !message.starts_with(field) && !message.contains(&format!("{field}:")),
                "{method} {path} {body}: the message repeats the field: {error}"
            );
        }
    }
}

#[tokio::test]
async fn openapi_documents_every_endpoint() {
    let api = Api::new().await;
    let doc = api.get("/api/v1/openapi.json").await.json();
    let expected = [
        ("/api/v1/gateways", vec!["get", "post"]),
        ("/api/v1/gateways/{gw}", vec!["get", "delete"]),
        ("/api/v1/gateways/{gw}/services", vec!["get", "post"]),
        ("/api/v1/gateways/{gw}/services/{key}", vec!["get", "put", "patch", "delete"]),
        ("/api/v1/gateways/{gw}/routes", vec!["get", "post"]),
        ("/api/v1/gateways/{gw}/routes/{key}", vec!["get", "put", "patch", "delete"]),
        ("/api/v1/gateways/{gw}/consumers", vec!["get", "post"]),
        ("/api/v1/gateways/{gw}/consumers/{key}", vec!["get", "put", "patch", "delete"]),
        ("/api/v1/gateways/{gw}/consumers/{c}/credentials", vec!["get", "post"]),
        ("/api/v1/gateways/{gw}/consumers/{c}/credentials/{key}", vec!["get", "put", "patch", "delete"]),
        ("/api/v1/gateways/{gw}/settings", vec!["get", "put"]),
        ("/api/v1/gateways/{gw}/certificates", vec!["get", "post"]),
        ("/api/v1/gateways/{gw}/certificates/{key}", vec!["get", "put", "patch", "delete"]),
        ("/api/v1/gateways/{gw}/protos", vec!["get", "post"]),
        ("/api/v1/gateways/{gw}/protos/{key}", vec!["get", "put", "patch", "delete"]),
        ("/api/v1/gateways/{gw}/config", vec!["get", "put"]),
        ("/api/v1/gateways/{gw}/config/diff", vec!["post"]),
        ("/api/v1/gateways/{gw}/versions", vec!["get"]),
        ("/api/v1/gateways/{gw}/versions/{n}", vec!["get"]),
        ("/api/v1/gateways/{gw}/versions/{n}/rollback", vec!["post"]),
        ("/api/v1/gateways/{gw}/data-planes", vec!["get"]),
        ("/api/v1/gateways/{gw}/data-planes/{node}", vec!["delete"]),
        ("/api/v1/gateways/{gw}/cache/purge", vec!["post"]),
        ("/api/v1/tokens", vec!["get", "post"]),
        ("/api/v1/tokens/{name}", vec!["get", "delete"]),
        ("/api/v1/audit", vec!["get"]),
        ("/api/v1/openapi.json", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/metrics", vec!["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, methods) in expected {
        for method in methods {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} is not documented");
        }
    }
    for schema in [
        "Service",
        "Route",
        "Consumer",
        "Credential",
        "Policy",
        "GatewaySettings",
        "Certificate",
        "Proto",
        "GrpcBackend",
        "AmqpBackend",
        "BrokerCredentials",
        "GatewayConfig",
        "ErrorBody",
        "Fleet",
        "CachePurge",
        "PurgeOutcome",
        "AuditEntry",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
    // A credential is one of its kinds, each with its own fields.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Credential"]["allOf"][0]["$ref"], "#/components/schemas/CredentialKind", "{}", schemas["Credential"]);
    let kinds: Vec<&Value> =
        schemas["CredentialKind"]["oneOf"].as_array().unwrap().iter().map(|k| &k["allOf"][1]["properties"]["type"]["enum"][0]).collect();
    assert_eq!(kinds, [&json!("key-auth"), &json!("jwt")]);
    assert_eq!(schemas["JwtCredential"]["required"], json!(["issuer", "algorithm"]), "{}", schemas["JwtCredential"]);
    assert!(schemas["KeyAuthCredential"]["properties"]["key_hash"].is_object());
    // A route's backend is flattened into it: a proxy route documents `service`.
    assert_eq!(schemas["Route"]["allOf"][0]["$ref"], "#/components/schemas/RouteBackend", "{}", schemas["Route"]);
    let proxy = &schemas["RouteBackend"]["oneOf"][0];
    assert_eq!((&proxy["required"], proxy["properties"]["service"]["type"].as_str()), (&json!(["service"]), Some("string")), "{proxy}");
    let aggregate = &schemas["RouteBackend"]["oneOf"][1];
    assert_eq!(aggregate["required"], json!(["aggregate"]), "{aggregate}");
    assert_eq!(schemas["Aggregate"]["required"], json!(["calls"]), "{}", schemas["Aggregate"]);
    assert_eq!(schemas["AggregateCall"]["required"], json!(["name", "service", "path"]), "{}", schemas["AggregateCall"]);
    assert_eq!(schemas["Merge"]["enum"], json!(["namespaced", "deep"]), "{}", schemas["Merge"]);
    let grpc = &schemas["RouteBackend"]["oneOf"][2];
    assert_eq!(grpc["required"], json!(["service", "grpc"]), "{grpc}");
    assert_eq!(schemas["GrpcBackend"]["required"], json!(["proto", "services"]), "{}", schemas["GrpcBackend"]);
    assert_eq!(schemas["Proto"]["required"], json!(["name"]), "{}", schemas["Proto"]);
    let amqp = &schemas["RouteBackend"]["oneOf"][3];
    assert_eq!(amqp["required"], json!(["service", "amqp"]), "{amqp}");
    assert_eq!(schemas["AmqpBackend"]["required"], json!(["exchange", "routing_key"]), "{}", schemas["AmqpBackend"]);
    assert_eq!(schemas["AmqpMode"]["enum"], json!(["publish", "rpc"]), "{}", schemas["AmqpMode"]);
    assert_eq!(schemas["BrokerCredentials"]["required"], json!(["username"]), "{}", schemas["BrokerCredentials"]);
    let protocols = &schemas["Protocol"];
    assert!(protocols.to_string().contains("\"amqps\""), "{protocols}");
    let connected_after = &schemas["PurgeOutcome"]["properties"]["connected_after"];
    assert!(connected_after["description"].as_str().is_some_and(|d| d.contains("never sent the purge")), "{connected_after}");
    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    assert!(error_body["properties"]["errors"].is_object(), "every problem of an error is documented: {error_body}");
}

const CONSUMERS: &str = "/api/v1/gateways/default/consumers";
const ALICE_CREDENTIALS: &str = "/api/v1/gateways/default/consumers/alice/credentials";
const TEST_RSA_PUBLIC: &str = include_str!("../../test-support/keys/rsa.pub.pem");

#[tokio::test]
async fn api_keys_are_generated_shown_once_and_stored_only_as_keyed_hashes() {
    let api = Api::new().await;
    assert_eq!(api.write(Method::POST, CONSUMERS, json!({"username": "alice", "scopes": ["read"]})).await.status, StatusCode::CREATED);
    let created = api.write(Method::POST, ALICE_CREDENTIALS, json!({"type": "key-auth"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let body = created.json();
    let key = body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pk_") && key.len() >= 40, "a strong generated key: {key}");
    assert_eq!(body["consumer"], "alice");
    let expected_hash = KeyHasher::from_cluster_token(CLUSTER_TOKEN).hash_hex(&key);
    assert_eq!(body["key_hash"], expected_hash.as_str());
    let id = body["id"].as_str().unwrap().to_owned();

    let read = api.get(&format!("{ALICE_CREDENTIALS}/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(!read.text.contains(&key), "the key is shown once only");
    let export = api.get("/api/v1/gateways/default/config").await;
    assert!(!export.text.contains(&key) && export.text.contains(&expected_hash), "exports carry the hash, never the key");
    let version = api.get("/api/v1/gateways/default/versions/2").await;
    assert!(!version.text.contains(&key), "snapshots never hold the key");

    // Re-applying the export changes nothing; a second credential with the same key conflicts.
    let applied =
        api.send(Method::PUT, "/api/v1/gateways/default/config", Some(ADMIN), &[], Some(("application/json", export.text.clone()))).await;
    assert_eq!(applied.json()["published"], false, "{}", applied.text);
    let duplicate = api.write(Method::POST, ALICE_CREDENTIALS, json!({"type": "key-auth", "key": key})).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT, "{}", duplicate.text);

    // Rotation: a new key through PATCH is shown in that response only.
    let rotated = api.write(Method::PATCH, &format!("{ALICE_CREDENTIALS}/{id}"), json!({"key": "a-new-key-of-enough-length"})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_eq!(rotated.json()["key"], "a-new-key-of-enough-length");
    assert_ne!(rotated.json()["key_hash"], expected_hash.as_str());

    // Credentials live under their consumer, who cannot go while they exist.
    assert_eq!(api.write(Method::POST, CONSUMERS, json!({"username": "bob"})).await.status, StatusCode::CREATED);
    let elsewhere = api.get(&format!("/api/v1/gateways/default/consumers/bob/credentials/{id}")).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/gateways/default/consumers/bob/credentials").await.json()["total"], 0);
    assert_eq!(api.get("/api/v1/gateways/default/consumers/nobody/credentials").await.status, StatusCode::NOT_FOUND);
    let in_use = api.delete(&format!("{CONSUMERS}/alice")).await;
    assert_eq!(in_use.status, StatusCode::CONFLICT, "{}", in_use.text);
    assert!(in_use.text.contains("credential"), "{}", in_use.text);
    assert_eq!(api.delete(&format!("{ALICE_CREDENTIALS}/{id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.delete(&format!("{CONSUMERS}/alice")).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_credentials_and_auth_policies_are_refused_naming_the_field() {
    let api = Api::new().await;
    api.write(Method::POST, CONSUMERS, json!({"username": "alice"})).await;
    let cases = [
        (json!({"type": "key-auth", "key": "short"}), "key"),
        (json!({"type": "key-auth", "issuer": "x"}), "issuer"),
        (json!({"type": "key-auth", "colour": "red"}), "colour"),
        (
            json!({"type": "jwt", "issuer": "i", "algorithm": "HS256", "secret": "0123456789abcdef0123456789abcdef", "key_hash": "00"}),
            "key_hash",
        ),
        (json!({"type": "jwt", "issuer": 7, "algorithm": "HS256"}), "issuer"),
        (json!({"type": "password"}), "type"),
        (json!({"type": "jwt", "algorithm": "HS256", "secret": "0123456789abcdef0123456789abcdef"}), "issuer"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "HS256", "secret": "too-short"}), "secret"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "none", "secret": "0123456789abcdef0123456789abcdef"}), "algorithm"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "RS256", "public_key": "not a key"}), "public_key"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "ES256", "public_key": TEST_RSA_PUBLIC}), "public_key"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "RS256", "secret": "0123456789abcdef0123456789abcdef"}), "secret"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "RS256", "jwks_url": "ftp://idp/jwks"}), "jwks_url"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "RS256"}), "public_key"),
        (json!({"type": "jwt", "issuer": "i", "algorithm": "RS256", "public_key": TEST_RSA_PUBLIC, "consumer": "bob"}), "consumer"),
    ];
    for (body, field) in cases {
        let reply = api.write(Method::POST, ALICE_CREDENTIALS, body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!(reply.error_field(), field, "{body}: {}", reply.text);
    }
    let rsa = json!({"type": "jwt", "issuer": "https://idp", "algorithm": "RS256", "public_key": TEST_RSA_PUBLIC});
    assert_eq!(api.write(Method::POST, ALICE_CREDENTIALS, rsa.clone()).await.status, StatusCode::CREATED);
    assert_eq!(api.write(Method::POST, ALICE_CREDENTIALS, rsa).await.status, StatusCode::CONFLICT, "one key per issuer without key ids");

    api.write(Method::POST, SERVICES, users_service()).await;
    let policy_cases = [
        (json!([{"type": "key-auth", "header": "bad header"}]), "policies[0].header"),
        (json!([{"type": "key-auth", "anonymous": "ghost"}]), "policies[0].anonymous"),
        (json!([{"type": "jwt", "leeway_s": 100000}]), "policies[0].leeway_s"),
        (json!([{"type": "scopes"}]), "policies[0].all_of"),
        (json!([{"type": "key-auth"}, {"type": "key-auth"}]), "policies[1]"),
        (json!([{"type": "scopes", "all_of": ["write"]}]), "policies"),
        (json!([{"type": "proxy-cache"}]), "policies[0].type"),
        (json!([{"type": "cache", "methods": ["POST"]}]), "policies[0].methods[0]"),
    ];
    for (policies, field) in policy_cases {
        let mut route = users_route();
        route["policies"] = policies.clone();
        let reply = api.write(Method::POST, ROUTES, route).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{policies}: {}", reply.text);
        assert!(reply.error_field().ends_with(field), "{policies}: {}", reply.text);
    }
    let settings = json!({"policies": [{"type": "key-auth", "header": "X-Key"}], "trusted_proxies": ["10.1.2.3/8", "::1"]});
    let gateway = api.write(Method::PUT, "/api/v1/gateways/default/settings", settings).await;
    assert_eq!(gateway.status, StatusCode::OK, "{}", gateway.text);
    assert_eq!(gateway.json()["policies"][0]["header"], "x-key");
    assert_eq!(gateway.json()["trusted_proxies"], json!(["10.0.0.0/8", "::1/128"]));
    assert_eq!(api.get("/api/v1/gateways/default/settings").await.json()["policies"][0]["query"], "apikey");
    let bad = api.write(Method::PUT, "/api/v1/gateways/default/settings", json!({"trusted_proxies": ["10.0.0.0/33"]})).await;
    assert_eq!((bad.status, bad.error_field()), (StatusCode::BAD_REQUEST, "trusted_proxies[0]".to_owned()), "{}", bad.text);
    let mut route = users_route();
    route["policies"] = json!([{"type": "scopes", "any_of": ["read"]}]);
    assert_eq!(api.write(Method::POST, ROUTES, route).await.status, StatusCode::CREATED, "the gateway's key-auth authenticates the route");
}

/// A concrete URL for a documented path: `default` for the gateway, `1` for
/// a version, a made-up name for everything else.
fn concrete(template: &str) -> String {
    template
        .replace("{gw}", "default")
        .replace("{n}", "1")
        .replace("{key}", "made-up")
        .replace("{c}", "made-up")
        .replace("{name}", "made-up")
        .replace("{node}", "made-up")
}

/// Every `(method, path template)` of the OpenAPI document, with its operation.
fn operations(doc: &Value) -> Vec<(Method, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for (method, operation) in item.as_object().expect("a path item is an object") {
            let method = match method.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "put" => Method::PUT,
                "patch" => Method::PATCH,
                "delete" => Method::DELETE,
                "head" => Method::HEAD,
                "options" => Method::OPTIONS,
                "trace" => Method::TRACE,
                _ => continue, // `parameters`, `summary`, … are not operations
            };
            found.push((method, path.clone(), operation.clone()));
        }
    }
    found
}

#[tokio::test]
async fn patch_refuses_duplicate_keys_of_every_entity_naming_the_path() {
    let api = Api::new().await;
    api.write(Method::POST, SERVICES, users_service()).await;
    let mut route = users_route();
    route["policies"] = json!([{"type": "key-auth"}]);
    assert_eq!(api.write(Method::POST, ROUTES, route).await.status, StatusCode::CREATED);
    api.write(Method::POST, CONSUMERS, json!({"username": "alice"})).await;
    let credential = api.write(Method::POST, ALICE_CREDENTIALS, json!({"type": "key-auth", "key": "alice-key-of-enough-length"})).await;
    assert_eq!(credential.status, StatusCode::CREATED, "{}", credential.text);
    let credential_id = credential.json()["id"].as_str().unwrap().to_owned();
    let cert = portico_test_support::tls::self_signed(&["site.example"], false);
    let certificate = api
        .write(Method::POST, "/api/v1/gateways/default/certificates", json!({"name": "site", "cert": cert.cert_pem, "key": cert.key_pem}))
        .await;
    assert_eq!(certificate.status, StatusCode::CREATED, "{}", certificate.text);
    let before = api.get("/api/v1/gateways/default/versions").await.json()["total"].clone();

    let service = format!("{SERVICES}/users");
    let route = format!("{ROUTES}/users-api");
    let consumer = format!("{CONSUMERS}/alice");
    let credential = format!("{ALICE_CREDENTIALS}/{credential_id}");
    let certificate = "/api/v1/gateways/default/certificates/site".to_owned();
    let cases = [
        (&service, r#"{"policies":[{"type":"key-auth"}],"policies":[]}"#, "policies"),
        (&service, r#"{"timeouts":{"connect_ms":500,"connect_ms":1}}"#, "timeouts.connect_ms"),
        (&route, r#"{"policies":[{"type":"key-auth"}],"policies":[]}"#, "policies"),
        (&route, r#"{"policies":[{"type":"jwt","type":"key-auth"}]}"#, "policies[0].type"),
        (&route, r#"{"headers":{"x-tenant":["a"],"x-tenant":["b"]}}"#, "headers.x-tenant"),
        (&consumer, r#"{"scopes":["admin"],"scopes":[]}"#, "scopes"),
        (&consumer, r#"{"custom_id":"1","tags":["a"],"custom_id":"2"}"#, "custom_id"),
        (&credential, r#"{"key":"first-key-of-enough-length","key":"second-key-of-enough-length"}"#, "key"),
        (&certificate, r#"{"snis":["site.example"],"snis":[]}"#, "snis"),
        (&certificate, r#"{"default":true,"default":false}"#, "default"),
    ];
    for content_type in ["application/json", "application/merge-patch+json"] {
        for (path, body, field) in &cases {
            let reply = api.send(Method::PATCH, path, Some(ADMIN), &[], Some((content_type, (*body).to_owned()))).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "PATCH {path} {body}: {}", reply.text);
            assert_eq!(reply.json()["error"]["code"], "invalid_input", "{}", reply.text);
            assert_eq!(reply.error_field(), *field, "PATCH {path} {body}: {}", reply.text);
            assert!(reply.json()["error"]["message"].as_str().unwrap().contains("duplicate key"), "{}", reply.text);
        }
    }
    assert_eq!(api.get("/api/v1/gateways/default/versions").await.json()["total"], before, "nothing refused was published");
    assert_eq!(api.get(&route).await.json()["policies"][0]["type"], "key-auth", "the route keeps its authentication");
    let fine = api.write(Method::PATCH, &service, json!({"timeouts": {"connect_ms": 500}})).await;
    assert_eq!(fine.status, StatusCode::OK, "a patch without duplicates still applies: {}", fine.text);
}

#[tokio::test]
async fn declarative_documents_refuse_duplicate_keys_in_json_and_yaml() {
    let api = Api::new().await;
    let yaml_nested = "services:\n  - name: users\n    targets: [{url: \"http://10.0.0.5:8000\"}]\nroutes:\n  - name: r\n    service: users\n    paths: [/r]\n    headers:\n      x-tenant: [a]\n      x-tenant: [b]\n";
    let yaml_top = "routes: []\nservices: []\nroutes: []\n";
    let json_nested = r#"{"services":[{"name":"users","targets":[{"url":"http://10.0.0.5:8000"}]}],"routes":[{"name":"r","service":"users","paths":["/r"],"headers":{"x-a":["1"],"x-a":["2"]}}]}"#;
    let cases = [
        ("application/yaml", yaml_nested, "routes[0].headers.x-tenant"),
        ("application/yaml", yaml_top, "routes"),
        ("application/json", json_nested, "routes[0].headers.x-a"),
    ];
    for (method, path) in [(Method::PUT, "/api/v1/gateways/default/config"), (Method::POST, "/api/v1/gateways/default/config/diff")] {
        for (content_type, body, field) in cases {
            let reply = api.send(method.clone(), path, Some(ADMIN), &[], Some((content_type, body.to_owned()))).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path} {body}: {}", reply.text);
            assert_eq!(reply.error_field(), field, "{method} {path} {content_type}: {}", reply.text);
            assert!(reply.json()["error"]["message"].as_str().unwrap().contains("duplicate key"), "{}", reply.text);
        }
    }
    assert_eq!(api.get("/api/v1/gateways/default/versions").await.json()["total"], 1, "nothing refused was published");
}

/// Enumerates the OpenAPI document: every operation that takes a body
/// refuses a duplicate key, nested, in each format it documents.
#[tokio::test]
async fn every_documented_body_is_parsed_strictly() {
    let api = Api::new().await;
    let doc = api.get("/api/v1/openapi.json").await.json();
    let mut checked = 0;
    for (method, template, operation) in operations(&doc) {
        let Some(content) = operation["requestBody"]["content"].as_object() else { continue };
        let path = concrete(&template);
        for content_type in content.keys() {
            let body = if content_type.contains("yaml") { "probe:\n  k: 1\n  k: 2\n" } else { r#"{"probe":{"k":1,"k":2}}"# };
            let reply = api.send(method.clone(), &path, Some(ADMIN), &[], Some((content_type, body.to_owned()))).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {template} ({content_type}): {}", reply.text);
            assert_eq!(reply.error_field(), "probe.k", "{method} {template} ({content_type}): {}", reply.text);
            checked += 1;
        }
    }
    // services, routes, consumers, certificates, protos, credentials: POST, PUT, PATCH each;
    // settings PUT, config PUT (JSON, YAML), diff (JSON, YAML), gateways POST, tokens POST.
    assert!(checked >= 24, "only {checked} bodies checked: is the document empty?");
}

/// Operations that answer without a token, each for a reason.
const PUBLIC: [(&str, &str); 3] = [
    ("GET", "/healthz"),             // liveness, for orchestrators: says nothing but "ok"
    ("GET", "/readyz"),              // readiness, for orchestrators: whether the store answers
    ("GET", "/api/v1/openapi.json"), // the API's shape, documented public: it holds no secrets
];

/// What a read-only token may do besides reading, and what reading it may not.
fn read_only_exception(method: &Method, template: &str) -> Option<StatusCode> {
    match (method.as_str(), template) {
        ("POST", "/api/v1/gateways/{gw}/config/diff") => Some(StatusCode::OK), // a preview writes nothing
        (_, t) if t.starts_with("/api/v1/tokens") => Some(StatusCode::FORBIDDEN), // only admins manage tokens
        (_, t) if t.starts_with("/api/v1/audit") => Some(StatusCode::FORBIDDEN), // it holds client addresses
        _ => None,
    }
}

/// Calls an operation as a client would, with `{}` as the body of a write.
async fn call(api: &Api, method: &Method, path: &str, token: Option<&str>) -> Reply {
    let body = (*method != Method::GET).then(|| ("application/json", "{}".to_owned()));
    api.send(method.clone(), path, token, &[], body).await
}

/// Enumerates the OpenAPI document, so an endpoint added without auth fails here.
#[tokio::test]
async fn every_documented_operation_requires_a_token_and_read_only_tokens_only_read() {
    let api = Api::new().await;
    let doc = api.send(Method::GET, "/api/v1/openapi.json", None, &[], None).await.json();
    let created = api.write(Method::POST, "/api/v1/tokens", json!({"name": "reader", "role": "read-only"})).await;
    let reader = created.json()["secret"].as_str().unwrap().to_owned();
    let operations = operations(&doc);
    let mut public_seen = Vec::new();
    let mut authenticated = 0;
    for (method, template, operation) in &operations {
        let path = concrete(template);
        let documented_public =
            operation["security"].as_array().is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|r| r.is_empty())));
        if PUBLIC.contains(&(method.as_str(), template.as_str())) {
            assert!(documented_public, "{method} {template} is public but its document asks for a token");
            let reply = call(&api, method, &path, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{method} {template} without a token: {}", reply.text);
            public_seen.push((method.as_str().to_owned(), template.clone()));
            continue;
        }
        assert!(!documented_public, "{method} {template} is documented as public but is not on the allow-list");
        for token in [None, Some("wrong-token-0123456789")] {
            let reply = call(&api, method, &path, token).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {template} with {token:?}: {}", reply.text);
            assert_eq!(reply.json()["error"]["code"], "unauthorized", "{method} {template}");
        }
        let as_reader = call(&api, method, &path, Some(&reader)).await.status;
        match read_only_exception(method, template) {
            Some(expected) => assert_eq!(as_reader, expected, "{method} {template} with a read-only token"),
            None if *method == Method::GET => assert!(
                as_reader != StatusCode::UNAUTHORIZED && as_reader != StatusCode::FORBIDDEN,
                "GET {template} with a read-only token: {as_reader}"
            ),
            None => assert_eq!(as_reader, StatusCode::FORBIDDEN, "{method} {template} with a read-only token"),
        }
        let as_admin = call(&api, method, &path, Some(ADMIN)).await.status;
        assert!(as_admin != StatusCode::UNAUTHORIZED && as_admin != StatusCode::FORBIDDEN, "{method} {template} as admin: {as_admin}");
        authenticated += 1;
    }
    assert_eq!(public_seen.len(), PUBLIC.len(), "every allow-listed operation is in the document: {public_seen:?}");
    // 48 authenticated operations today (see openapi_documents_every_endpoint); more is fine, fewer means the enumeration broke.
    assert!(authenticated >= 48, "only {authenticated} authenticated operations enumerated");
}

#[tokio::test]
async fn shaping_policies_round_trip_through_export_and_apply_and_are_documented() {
    let api = Api::new().await;
    let config = json!({
        "services": [users_service()],
        "routes": [{"name": "orders", "service": "users", "paths": ["/users/{id}/orders"], "policies": [
            {"type": "jwt"},
            {"type": "request-transform", "path": "/orders", "query": {"add": {"user": "{path.id}"}},
             "headers": {"set": {"X-Tenant": "{claim.tenant}"}}, "body": {"deny": ["$.password"]}},
            {"type": "response-transform", "when": {"claim": "client_type", "equals": "mobile"},
             "body": {"allow": ["$.items[*].id"]}, "max_body_bytes": 65536},
            {"type": "response-transform", "when": {"header": "X-Client", "equals": "web"}, "headers": {"remove": ["server"]}},
            {"type": "cors", "origins": ["HTTPS://App.Example.com:443"], "credentials": true},
            {"type": "ip-restriction", "allow": ["10.1.2.3/8"], "deny": ["::ffff:10.9.0.0/112"]}]}],
    });
    let applied = api.write(Method::PUT, "/api/v1/gateways/default/config", config).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text);
    let version = applied.version();
    let route = api.get("/api/v1/gateways/default/routes/orders").await.json();
    let policies = &route["policies"];
    assert_eq!(policies[1]["headers"]["set"]["x-tenant"], "{claim.tenant}", "header names are stored lowercase");
    assert_eq!(policies[3]["when"]["header"], "x-client");
    assert_eq!(policies[4]["origins"][0], "https://app.example.com", "origins are stored normalized");
    assert_eq!(policies[5]["allow"][0], "10.0.0.0/8");
    assert_eq!(policies[5]["deny"][0], "10.9.0.0/16", "IPv4-mapped CIDRs are stored as IPv4");

    for accept in ["application/json", "application/yaml"] {
        let export = api.send(Method::GET, "/api/v1/gateways/default/config", Some(ADMIN), &[("accept", accept)], None).await;
        let reapplied =
            api.send(Method::PUT, "/api/v1/gateways/default/config", Some(ADMIN), &[], Some((accept, export.text.clone()))).await;
        assert_eq!(reapplied.status, StatusCode::OK, "{}", reapplied.text);
        assert_eq!(reapplied.json()["published"], false, "{accept}: an export re-applied changes nothing");
        assert_eq!(reapplied.version(), version);
    }

    let doc = api.get("/api/v1/openapi.json").await.json();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in ["CorsPolicy", "IpRestrictionPolicy", "RequestTransformPolicy", "ResponseTransformPolicy", "JsonOps", "When"] {
        assert!(schemas.contains_key(schema), "{schema} is documented");
    }
    let policy = serde_json::to_string(&schemas["Policy"]).unwrap();
    for kind in ["cors", "ip-restriction", "request-transform", "response-transform"] {
        assert!(policy.contains(&format!("\"{kind}\"")), "the {kind} policy type is documented");
    }
}

const PROTOS: &str = "/api/v1/gateways/default/protos";

/// `shop.Orders` with a `google.api.http` rule; `extra` is added at the end.
fn orders_proto(extra: &str) -> String {
    format!(
        r#"syntax = "proto3";
package shop;
import "google/api/annotations.proto";
service Orders {{
  rpc GetOrder(GetOrderRequest) returns (Order) {{
    option (google.api.http) = {{ get: "/v1/orders/{{id}}" }};
  }}
}}
message GetOrderRequest {{ string id = 1; }}
message Order {{ string id = 1; }}
{extra}"#
    )
}

#[tokio::test]
async fn protos_are_compiled_on_write_and_errors_name_file_and_line() {
    let api = Api::new().await;
    let created = api.write(Method::POST, PROTOS, json!({"name": "shop", "files": {"shop/orders.proto": orders_proto("")}})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let compiled = created.json()["descriptor_set"].as_str().unwrap().to_owned();
    let pool =
        portico_shared::grpc::compile::decode(&base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &compiled).unwrap())
            .unwrap();
    assert!(pool.get_service_by_name("shop.Orders").is_some(), "the snapshot carries the compiled set");
    let shown = api.get(&format!("{PROTOS}/shop")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["files"]["shop/orders.proto"], orders_proto(""));
    assert_eq!(api.get(PROTOS).await.json()["total"], 1);

    let broken = "syntax = \"proto3\";\npackage shop;\n\nmessage Broken {\n  string id = ;\n}\n";
    let reply = api.write(Method::POST, PROTOS, json!({"name": "broken", "files": {"shop/broken.proto": broken}})).await;
    assert_eq!((reply.status, reply.error_field().as_str()), (StatusCode::BAD_REQUEST, "files.shop/broken.proto"), "{}", reply.text);
    assert!(reply.json()["error"]["message"].as_str().unwrap().starts_with("shop/broken.proto:5: "), "{}", reply.text);
    let missing_import = orders_proto("").replace("package shop;\n", "package shop;\nimport \"shop/money.proto\";\n");
    let reply = api.write(Method::POST, PROTOS, json!({"name": "cart", "files": {"shop/cart.proto": missing_import}})).await;
    assert_eq!((reply.status, reply.error_field().as_str()), (StatusCode::BAD_REQUEST, "files.shop/cart.proto"), "{}", reply.text);
    let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("shop/cart.proto:3: ") && message.contains("shop/money.proto"), "{message}");
    for (body, field) in [
        (json!({"name": "none"}), "files"),
        (json!({"name": "bad", "descriptor_set": "not base64"}), "descriptor_set"),
        (json!({"name": "bad", "descriptor_set": "//79"}), "descriptor_set"),
        (json!({"name": "bad", "files": {"../shop.proto": orders_proto("")}}), "files.../shop.proto"),
    ] {
        let reply = api.write(Method::POST, PROTOS, body.clone()).await;
        assert_eq!((reply.status, reply.error_field().as_str()), (StatusCode::BAD_REQUEST, field), "{body}: {}", reply.text);
    }

    let set_only = api.write(Method::POST, PROTOS, json!({"name": "shop-set", "descriptor_set": compiled})).await;
    assert_eq!(set_only.status, StatusCode::CREATED, "a base64 FileDescriptorSet alone is a proto: {}", set_only.text);
    assert_eq!(set_only.json()["descriptor_set"], compiled);
    assert!(set_only.json().get("files").is_none());
    assert_eq!(api.delete(&format!("{PROTOS}/shop-set")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&format!("{PROTOS}/shop-set")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn grpc_routes_refer_to_protos_which_stay_while_used() {
    let api = Api::new().await;
    api.write(Method::POST, SERVICES, users_service()).await;
    let grpc_service = json!({"name": "orders-grpc", "protocol": "grpc", "targets": [{"url": "grpc://10.0.0.7:50051"}]});
    assert_eq!(api.write(Method::POST, SERVICES, grpc_service).await.status, StatusCode::CREATED);
    let proto = api.write(Method::POST, PROTOS, json!({"name": "shop", "files": {"shop/orders.proto": orders_proto("")}})).await;
    assert_eq!(proto.status, StatusCode::CREATED, "{}", proto.text);

    let route =
        json!({"name": "orders-json", "service": "orders-grpc", "paths": ["/v1"], "grpc": {"proto": "shop", "services": ["shop.Orders"]}});
    let created = api.write(Method::POST, ROUTES, route.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json()["grpc"]["services"], json!(["shop.Orders"]));
    assert_eq!(created.json()["grpc"]["max_request_message_bytes"], 4_194_304, "defaults are written out");

    let mut on_http = route.clone();
    on_http["name"] = json!("on-http");
    on_http["service"] = json!("users");
    on_http["paths"] = json!(["/h"]);
    let mut unknown_service = route.clone();
    unknown_service["name"] = json!("carts");
    unknown_service["paths"] = json!(["/carts"]);
    unknown_service["grpc"]["services"] = json!(["shop.Carts"]);
    let mut unknown_proto = unknown_service.clone();
    unknown_proto["grpc"] = json!({"proto": "catalog", "services": ["shop.Orders"]});
    for (body, field, message) in [
        (on_http, "grpc", "a grpc block needs a service of protocol grpc or grpcs; service 'users' is http"),
        (unknown_service.clone(), "grpc.services[0]", "proto 'shop' has no service 'shop.Carts' (it has: shop.Orders)"),
        (unknown_proto, "grpc.proto", "route 'carts' refers to proto 'catalog', which does not exist"),
    ] {
        let reply = api.write(Method::POST, ROUTES, body.clone()).await;
        assert_eq!((reply.status, reply.error_field().as_str()), (StatusCode::BAD_REQUEST, field), "{body}: {}", reply.text);
        assert_eq!(reply.json()["error"]["message"], message);
    }

    for reply in
        [api.delete(&format!("{PROTOS}/shop")).await, api.write(Method::PATCH, &format!("{PROTOS}/shop"), json!({"name": "shop2"})).await]
    {
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
        assert!(reply.json()["error"]["message"].as_str().unwrap().contains("route 'orders-json'"), "{}", reply.text);
    }

    // Read, edit the sources, write back with the stale compiled set: the set is compiled again.
    let mut shop = api.get(&format!("{PROTOS}/shop")).await.json();
    let carts = "service Carts {\n  rpc GetCart(GetOrderRequest) returns (Order);\n}\n";
    shop["files"]["shop/orders.proto"] = json!(orders_proto(carts));
    let replaced = api.write(Method::PUT, &format!("{PROTOS}/shop"), shop.clone()).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_ne!(replaced.json()["descriptor_set"], shop["descriptor_set"], "the given set is replaced by the compiled one");
    assert_eq!(api.write(Method::POST, ROUTES, unknown_service).await.status, StatusCode::CREATED, "shop.Carts now exists");

    let version = api.get(CONFIG).await.version();
    for accept in ["application/json", "application/yaml"] {
        let export = api.send(Method::GET, CONFIG, Some(ADMIN), &[("accept", accept)], None).await;
        assert!(export.text.contains("protos"), "{}", export.text);
        let reapplied = api.send(Method::PUT, CONFIG, Some(ADMIN), &[], Some((accept, export.text.clone()))).await;
        assert_eq!(reapplied.status, StatusCode::OK, "{}", reapplied.text);
        assert_eq!(reapplied.json()["published"], false, "{accept}: compiling again gives the same set, so nothing changes");
        assert_eq!(reapplied.version(), version);
    }

    for route in ["orders-json", "carts"] {
        assert_eq!(api.delete(&format!("{ROUTES}/{route}")).await.status, StatusCode::NO_CONTENT);
    }
    assert_eq!(api.delete(&format!("{PROTOS}/shop")).await.status, StatusCode::NO_CONTENT, "unused, it can go");
}

#[tokio::test]
async fn the_test_peers_protos_compile_with_their_well_known_imports() {
    use portico_test_support::grpc_peer::{GrpcPeer, SHOP_SERVICE};
    let api = Api::new().await;
    let created = api.write(Method::POST, PROTOS, GrpcPeer::protos_entity("shop")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let service = json!({"name": "peer", "protocol": "grpc", "targets": [{"url": "grpc://127.0.0.1:50051"}]});
    assert_eq!(api.write(Method::POST, SERVICES, service).await.status, StatusCode::CREATED);
    let route = json!({"name": "shop", "service": "peer", "paths": ["/"], "grpc": {"proto": "shop", "services": [SHOP_SERVICE]}});
    let reply = api.write(Method::POST, ROUTES, route).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

const BROKER_PASSWORD: &str = "broker-password-never-shown";

fn events_service() -> Value {
    json!({"name": "events", "protocol": "amqp", "targets": [{"url": "amqp://10.0.0.8"}],
        "credentials": {"username": "portico", "password": BROKER_PASSWORD}})
}

/// The config data planes receive for `version`, as stored.
async fn snapshot_text(api: &Api, version: u64) -> String {
    let (_, bytes) = api.store.version(DEFAULT_GATEWAY, version).await.unwrap().unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn a_broker_password_is_write_only_but_reaches_the_data_planes() {
    let api = Api::new().await;
    let created = api.write(Method::POST, SERVICES, events_service()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let body = created.json();
    assert_eq!(body["credentials"], json!({"username": "portico"}), "{}", created.text);
    assert_eq!(body["targets"][0]["url"], "amqp://10.0.0.8:5672/%2F", "the canonical URL names the port and the vhost");
    assert!(snapshot_text(&api, created.version()).await.contains(BROKER_PASSWORD), "data planes need the password");
    let yaml = api.send(Method::GET, CONFIG, Some(ADMIN), &[("accept", "application/yaml")], None).await;
    for read in [
        api.get(&format!("{SERVICES}/events")).await,
        api.get(SERVICES).await,
        api.get(CONFIG).await,
        yaml,
        api.get(&format!("/api/v1/gateways/default/versions/{}", created.version())).await,
    ] {
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        assert!(read.text.contains("portico") && !read.text.contains(BROKER_PASSWORD), "never shown: {}", read.text);
    }

    // Writing back what was read keeps the password: PUT, PATCH, and the export re-applied.
    let shown = api.get(&format!("{SERVICES}/events")).await.json();
    let mut edited = shown.clone();
    edited["timeouts"] = json!({"connect_ms": 500});
    let put = api.write(Method::PUT, &format!("{SERVICES}/events"), edited).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert!(!put.text.contains(BROKER_PASSWORD));
    assert!(snapshot_text(&api, put.version()).await.contains(BROKER_PASSWORD), "a PUT without the password keeps it");
    let patched = api.write(Method::PATCH, &format!("{SERVICES}/events"), json!({"tags": ["orders"]})).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert!(snapshot_text(&api, patched.version()).await.contains(BROKER_PASSWORD), "a PATCH keeps it");
    let export = api.get(CONFIG).await;
    let applied = api.send(Method::PUT, CONFIG, Some(ADMIN), &[], Some(("application/json", export.text))).await;
    assert_eq!((applied.status, applied.json()["published"].clone()), (StatusCode::OK, json!(false)), "{}", applied.text);

    // A new broker, or a new login, must be given the password, whatever the method.
    for patch in [json!({"targets": [{"url": "amqp://broker.elsewhere"}]}), json!({"credentials": {"username": "other"}})] {
        let refused = api.write(Method::PATCH, &format!("{SERVICES}/events"), patch.clone()).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{patch}: {}", refused.text);
        assert!(refused.error_field().ends_with("credentials.password"), "{}", refused.text);
    }
    let mut moved = shown.clone();
    moved["targets"] = json!([{"url": "amqp://10.0.0.8"}, {"url": "amqp://broker.elsewhere"}]);
    let refused = api.write(Method::PUT, &format!("{SERVICES}/events"), moved.clone()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(refused.error_field().ends_with("credentials.password"), "{}", refused.text);
    moved["credentials"]["password"] = json!("another-password");
    let given = api.write(Method::PUT, &format!("{SERVICES}/events"), moved).await;
    assert_eq!(given.status, StatusCode::OK, "{}", given.text);
    let snapshot = snapshot_text(&api, given.version()).await;
    assert!(snapshot.contains("another-password") && !snapshot.contains(BROKER_PASSWORD), "{snapshot}");
}

#[tokio::test]
async fn amqp_services_and_routes_are_checked_naming_the_field() {
    let api = Api::new().await;
    let mut without = events_service();
    without.as_object_mut().unwrap().remove("credentials");
    let refused = api.write(Method::POST, SERVICES, without).await;
    assert_eq!((refused.status, refused.error_field()), (StatusCode::BAD_REQUEST, "credentials".to_owned()), "{}", refused.text);
    let mut in_url = events_service();
    in_url["targets"][0]["url"] = json!("amqp://guest:guest@10.0.0.8/");
    let refused = api.write(Method::POST, SERVICES, in_url).await;
    assert_eq!(refused.error_field(), "targets[0].url", "{}", refused.text);
    assert!(refused.text.contains("must not contain credentials"), "{}", refused.text);
    assert_eq!(api.write(Method::POST, SERVICES, events_service()).await.status, StatusCode::CREATED);
    assert_eq!(api.write(Method::POST, SERVICES, users_service()).await.status, StatusCode::CREATED);

    let proxied = api.write(Method::POST, ROUTES, json!({"name": "events", "service": "events", "paths": ["/events"]})).await;
    assert_eq!((proxied.status, proxied.error_field()), (StatusCode::BAD_REQUEST, "amqp".to_owned()), "{}", proxied.text);
    assert!(proxied.text.contains("a route to an AMQP service needs an amqp block"), "{}", proxied.text);
    let amqp = json!({"exchange": "orders", "routing_key": "order.{path.kind}"});
    let to_http = api.write(Method::POST, ROUTES, json!({"name": "e", "service": "users", "paths": ["/e/{kind}"], "amqp": amqp})).await;
    assert_eq!((to_http.status, to_http.error_field()), (StatusCode::BAD_REQUEST, "amqp".to_owned()), "{}", to_http.text);
    let copies_key = api
        .write(
            Method::POST,
            ROUTES,
            json!({"name": "e", "service": "events", "paths": ["/e/{kind}"], "amqp": {"exchange": "orders", "routing_key": "k", "headers": ["authorization"]}}),
        )
        .await;
    assert_eq!(copies_key.error_field(), "amqp.headers[0]", "{}", copies_key.text);

    let route = json!({"name": "order-events", "service": "events", "paths": ["/events/{kind}"], "methods": ["POST"], "amqp": amqp});
    let created = api.write(Method::POST, ROUTES, route).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        created.json()["amqp"],
        json!({"exchange": "orders", "routing_key": "order.{path.kind}", "mode": "publish", "persistent": true, "mandatory": true, "timeout_ms": 5000}),
        "{}",
        created.text
    );
}

/// The client address the audit tests' requests come from.
const CLIENT: &str = "203.0.113.9:41234";

/// An audit entry as `(author, source, action, gateway, target, version, message)`.
type AuditRow = (String, String, String, String, String, Option<u64>, String);

/// Each entry of a page of the audit log, newest first.
fn audit_rows(page: &Value) -> Vec<AuditRow> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                text(&e["author"]),
                text(&e["source"]),
                text(&e["action"]),
                text(&e["gateway"]),
                text(&e["target"]),
                e["version"].as_u64(),
                text(&e["message"]),
            )
        })
        .collect()
}

#[tokio::test]
async fn audit_log_records_who_changed_what_when_and_from_where() {
    let mut api = Api::new().await;
    api.router = api.router.layer(axum::extract::connect_info::MockConnectInfo(CLIENT.parse::<std::net::SocketAddr>().unwrap()));
    let note = [("portico-change-message", "on-call")];
    let json_body = |body: Value| Some(("application/json", body.to_string()));
    let ops = api.send(Method::POST, "/api/v1/tokens", Some(ADMIN), &note, json_body(json!({"name": "ops", "role": "admin"}))).await;
    let ops_secret = ops.json()["secret"].as_str().unwrap().to_owned();
    let ops = Some(ops_secret.as_str());
    let reader = api.write(Method::POST, "/api/v1/tokens", json!({"name": "reader", "role": "read-only"})).await;
    let reader_secret = reader.json()["secret"].as_str().unwrap().to_owned();

    let add = [("portico-change-message", "add users")];
    assert_eq!(api.send(Method::POST, SERVICES, ops, &add, json_body(users_service())).await.version(), 2);
    let moved = json!({"targets": [{"url": "http://10.0.0.7:8000"}]});
    assert_eq!(api.send(Method::PATCH, &format!("{SERVICES}/users"), ops, &[], json_body(moved.clone())).await.version(), 3);
    assert_eq!(api.send(Method::PATCH, &format!("{SERVICES}/users"), ops, &[], json_body(moved)).await.version(), 3, "no change");
    assert_eq!(api.send(Method::POST, CONSUMERS, ops, &[], json_body(json!({"username": "alice"}))).await.version(), 4);
    let credential = json!({"type": "key-auth", "name": "alice-key", "key": "alice-secret-key-0123456789"});
    assert_eq!(api.send(Method::POST, ALICE_CREDENTIALS, ops, &[], json_body(credential)).await.version(), 5);
    let settings = json!({"trusted_proxies": ["10.0.0.0/8"]});
    assert_eq!(api.send(Method::PUT, "/api/v1/gateways/default/settings", ops, &[], json_body(settings)).await.version(), 6);
    let rollback = api.send(Method::POST, "/api/v1/gateways/default/versions/2/rollback", ops, &[], None).await;
    assert_eq!(rollback.version(), 7, "{}", rollback.text);
    assert_eq!(api.send(Method::POST, "/api/v1/gateways", ops, &[], json_body(json!({"name": "mobile"}))).await.version(), 1);
    let config = json!({"services": [{"name": "web", "targets": [{"url": "http://10.0.0.9:80"}]}]});
    assert_eq!(api.send(Method::PUT, "/api/v1/gateways/mobile/config", ops, &[], json_body(config)).await.version(), 2);
    let purge =
        api.send(Method::POST, "/api/v1/gateways/mobile/cache/purge?timeout_ms=0", ops, &[], json_body(json!({"prefix": "/web"}))).await;
    assert_eq!(purge.status, StatusCode::OK, "{}", purge.text);
    assert_eq!(api.send(Method::DELETE, "/api/v1/gateways/mobile", ops, &[], None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.send(Method::DELETE, &format!("{SERVICES}/nope"), ops, &[], None).await.status, StatusCode::NOT_FOUND, "refused");
    assert_eq!(api.send(Method::DELETE, "/api/v1/tokens/reader", ops, &[], None).await.status, StatusCode::NO_CONTENT);

    let log = api.get("/api/v1/audit").await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    let row = |author: &str, action: &str, gateway: &str, target: &str, version: Option<u64>, message: &str| {
        (author.to_owned(), CLIENT.to_owned(), action.to_owned(), gateway.to_owned(), target.to_owned(), version, message.to_owned())
    };
    let expected = [
        row("ops", "token.revoke", "", "reader", None, ""),
        row("ops", "gateway.delete", "mobile", "mobile", None, ""),
        row("ops", "cache.purge", "mobile", "prefix /web", None, ""),
        row("ops", "config.replace", "mobile", "", Some(2), ""),
        row("ops", "gateway.create", "mobile", "mobile", Some(1), "gateway created"),
        row("ops", "version.rollback", "default", "2", Some(7), "rollback to version 2"),
        row("ops", "settings.replace", "default", "", Some(6), ""),
        row("ops", "credential.create", "default", "alice/alice-key", Some(5), ""),
        row("ops", "consumer.create", "default", "alice", Some(4), ""),
        row("ops", "service.update", "default", "users", Some(3), ""),
        row("ops", "service.create", "default", "users", Some(2), "add users"),
        row("bootstrap", "token.create", "", "reader", None, "role: read-only"),
        row("bootstrap", "token.create", "", "ops", None, "on-call"),
    ];
    let rows = audit_rows(&log.json());
    assert_eq!(rows[..expected.len()], expected, "{}", log.text);
    assert_eq!(rows[expected.len()..].iter().map(|r| (r.0.as_str(), r.2.as_str())).collect::<Vec<_>>(), [("portico", "gateway.create")]);
    assert_eq!(log.json()["data"][expected.len()]["source"], Value::Null, "the control plane's own change has no client");
    for secret in [ops_secret.as_str(), reader_secret.as_str(), "alice-secret-key-0123456789"] {
        assert!(!log.text.contains(secret), "the audit log holds no secret");
    }

    let mobile = api.get("/api/v1/audit?gateway=mobile").await.json();
    assert_eq!(mobile["total"], 4, "a deleted gateway's entries stay: {mobile}");
    let tokens = api.get("/api/v1/audit?action=token&author=bootstrap").await.json();
    assert_eq!(tokens["total"], 2, "{tokens}");
    assert_eq!(api.get("/api/v1/audit?action=service.update").await.json()["data"][0]["version"], 3);
    let first = api.get("/api/v1/audit?author=ops&limit=2").await.json();
    assert_eq!((first["total"].as_u64(), first["next_offset"].as_u64()), (Some(11), Some(2)), "{first}");
    let last_id = first["data"][1]["id"].as_u64().unwrap();
    let next = api.get(&format!("/api/v1/audit?author=ops&limit=2&before={last_id}")).await.json();
    assert_eq!(audit_rows(&next), expected[2..4], "a cursor page follows on");
    let second = api.get("/api/v1/audit?author=ops&limit=2&offset=2").await.json();
    assert_eq!(second["data"], next["data"], "so does the next offset");

    let id = api.get(&format!("{SERVICES}/users")).await.json()["id"].as_str().unwrap().to_owned();
    let by_id = api.send(Method::PATCH, &format!("{SERVICES}/{id}"), ops, &[], json_body(json!({"tags": ["x"]}))).await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.text);
    let entry = &api.get("/api/v1/audit?action=service.update&limit=1").await.json()["data"][0];
    assert_eq!((entry["target"].as_str(), entry["version"].as_u64()), (Some("users"), Some(8)), "named, not by its id: {entry}");

    for (query, field) in [
        ("gw=default", "gw"),
        ("gateway=Not%20Valid", "gateway"),
        ("author=a&author=b", "author"),
        ("action=service_%25", "action"),
        ("before=0", "before"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
    ] {
        let reply = api.get(&format!("/api/v1/audit?{query}")).await;
        assert_eq!((reply.status, reply.error_field()), (StatusCode::BAD_REQUEST, field.to_owned()), "{query}: {}", reply.text);
    }
    let reader = api.write(Method::POST, "/api/v1/tokens", json!({"name": "auditor", "role": "read-only"})).await;
    let auditor = reader.json()["secret"].as_str().unwrap().to_owned();
    let refused = api.send(Method::GET, "/api/v1/audit", Some(&auditor), &[], None).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let reserved = api.write(Method::POST, "/api/v1/tokens", json!({"name": "portico", "role": "admin"})).await;
    assert_eq!((reserved.status, reserved.error_field()), (StatusCode::CONFLICT, "name".to_owned()), "the control plane's own author name");
}

/// Without connect info (a router served bare), writes are still recorded, with no address.
#[tokio::test]
async fn audit_entries_without_connect_info_have_no_source() {
    let api = Api::new().await;
    assert_eq!(api.write(Method::POST, SERVICES, users_service()).await.status, StatusCode::CREATED);
    let entry = &api.get("/api/v1/audit?limit=1").await.json()["data"][0];
    assert_eq!(
        (entry["action"].as_str(), entry["author"].as_str(), entry["version"].as_u64()),
        (Some("service.create"), Some("bootstrap"), Some(2))
    );
    assert_eq!(entry["source"], Value::Null, "{entry}");
}

#[tokio::test]
async fn metrics_count_admin_requests_by_route_template_never_by_raw_path() {
    let api = Api::new().await;
    assert_eq!(api.get("/api/v1/gateways/default/routes/route-with-a-unique-name").await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/no/such/endpoint-with-a-unique-name").await.status, StatusCode::NOT_FOUND);
    let odd_method = Method::from_bytes(b"PROPFIND").unwrap();
    assert_eq!(api.send(odd_method, "/api/v1/gateways", Some(ADMIN), &[], None).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(api.send(Method::GET, "/metrics", None, &[], None).await.status, StatusCode::UNAUTHORIZED);
    let reply = api.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    for series in [
        r#"portico_cp_admin_requests_total{method="GET",path="/api/v1/gateways/{gw}/routes/{key}",status="404"}"#,
        r#"portico_cp_admin_requests_total{method="GET",path="unmatched",status="404"}"#,
        r#"portico_cp_admin_requests_total{method="other",path="/api/v1/gateways",status="405"}"#,
        r#"portico_cp_admin_requests_total{method="GET",path="/metrics",status="401"}"#,
        r#"portico_cp_data_planes{gateway="default",status="in_sync"}"#,
        r#"portico_cp_config_version{gateway="default"}"#,
    ] {
        assert!(reply.text.lines().any(|line| line.starts_with(&format!("{series} "))), "{series} in:\n{}", reply.text);
    }
    assert!(!reply.text.contains("unique-name"), "a raw path became a label value:\n{}", reply.text);
}
