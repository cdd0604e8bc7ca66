//! HTTP/JSON to gRPC transcoding end to end: the real binaries in front of
//! an independent gRPC server (Python grpcio, `tests/grpc/server.py`)
//! whose `.proto` files are uploaded as a `protos` entity. The JSON the
//! gateway writes is compared with Python's `json_format` for the same
//! messages (`Oracle`); statuses, streams, deadlines, metadata and a proto
//! swapped under load are checked as a client sees them. Beside them, the
//! same server behind a route without `grpc` block, reached by `grpcurl`
//! through the gateway (passthrough, reflection and all).

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::{Duration, Instant};

use futures::StreamExt;
use portico_test_support::grpc_peer::{JsonOptions, Oracle, OracleCase, SHOP_SERVICE, run_grpcurl};
use portico_test_support::{ControlPlane, DataPlane, GrpcPeer, SilentUpstream, TestDb, TestUpstream, eventually, serve_config};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Gateway {
    _db: TestDb,
    cp: ControlPlane,
    dp: DataPlane,
    peer: GrpcPeer,
}

/// The peer as service `shop` (grpc), its protos as `shop`, and `routes`.
async fn gateway_with(routes: Value) -> Gateway {
    let peer = GrpcPeer::start().await;
    let config = json!({
        "services": [{"name": "shop", "protocol": "grpc", "targets": [{"url": peer.target_url()}]}],
        "protos": [GrpcPeer::protos_entity("shop")],
        "routes": routes,
    });
    let (db, cp, dp) = serve_config(&config, &[]).await;
    Gateway { _db: db, cp, dp, peer }
}

/// A route `name` on `paths` transcoding to the shop service, with `grpc` options merged in.
fn route(name: &str, paths: &[&str], options: Value) -> Value {
    let mut grpc = json!({"proto": "shop", "services": [SHOP_SERVICE]});
    grpc.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
    json!({"name": name, "service": "shop", "paths": paths, "grpc": grpc})
}

/// One route taking every rule of the shop service.
async fn gateway() -> Gateway {
    gateway_with(json!([route("shop", &["/v1", "/portico.test.v1.Shop"], json!({"forward_headers": ["x-tenant"]}))])).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

impl Gateway {
    /// Status, headers and body of `method path` with an optional JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, HeaderMap, String) {
        self.send(client().request(method, format!("{}{path}", self.dp.proxy_url)), body).await
    }

    async fn send(&self, request: reqwest::RequestBuilder, body: Option<Value>) -> (StatusCode, HeaderMap, String) {
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.unwrap())
    }

    /// The JSON answer of a call expected to succeed.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, headers, text) = self.call(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {text}");
        assert_eq!(headers["content-type"], "application/json", "{method} {path}");
        parse(&text)
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a gateway error: `status` and `error.code`, its message containing `needle`.
fn assert_refused(answer: (StatusCode, HeaderMap, String), status: StatusCode, code: &str, needle: &str) {
    let (got, _, text) = answer;
    assert_eq!(got, status, "{text}");
    let error = &parse(&text)["error"];
    assert_eq!(error["code"], code, "{text}");
    assert!(error["message"].as_str().unwrap().contains(needle), "'{needle}' in {text}");
}

#[tokio::test]
async fn rules_bind_paths_queries_and_bodies() {
    let gw = gateway().await;
    // Path variable, repeated and nested query fields, enums by name and number, well-known types.
    let got = gw
        .ok(
            Method::GET,
            "/v1/items/a%20b?tags=x&tags=y&categories=CATEGORY_BOOKS&categories=2&filter.text=t%20s&filter.max_price_cents=9007199254740993&since=2024-05-06T07:08:09Z&min_stock=3&read_mask=name,priceCents&pageSize=7",
            None,
        )
        .await;
    let request = &got["request"];
    assert_eq!(request["id"], "a b", "a one-segment variable is percent-decoded: {got}");
    assert_eq!(request["tags"], json!(["x", "y"]));
    assert_eq!(request["filter"], json!({"text": "t s", "maxPriceCents": "9007199254740993"}), "int64 above 2^53 as a string");
    assert_eq!(request["since"], "2024-05-06T07:08:09Z");
    assert_eq!(request["minStock"], 3);
    assert_eq!(request["readMask"], "name,priceCents");
    assert_eq!(request["pageSize"], 7, "the JSON name is accepted in the query too");
    assert_eq!(request["categories"].as_array().unwrap().len(), 2);

    let book = gw.ok(Method::GET, "/v1/shelves/s1/books/b2", None).await;
    assert_eq!(book["name"], "shelves/s1/books/b2", "{book}");
    let file = gw.ok(Method::GET, "/v1/files/docs/a%20b/readme.md", None).await;
    assert_eq!(file["path"], "docs/a b/readme.md", "a ** variable takes the rest of the path: {file}");

    let created = gw.ok(Method::POST, "/v1/items", Some(json!({"id": "7", "name": "lamp", "priceCents": "1999"}))).await;
    assert_eq!(created, json!({"id": "7", "name": "lamp", "priceCents": "1999"}), "body \"*\" is the whole message");
    let updated = gw.ok(Method::PATCH, "/v1/items/9?updateMask=name", Some(json!({"name": "desk"}))).await;
    assert_eq!(updated, json!({"item": {"id": "9", "name": "desk"}, "updateMask": "name"}), "body \"item\", item.id from the path");
    let archived = gw.ok(Method::POST, "/v1/items/5:archive", Some(json!({"reason": "old"}))).await;
    assert_eq!(archived, json!({"id": "5", "reason": "old"}), "a custom verb");
    let envelope = gw.ok(Method::GET, "/v1/items/3/envelope", None).await;
    assert_eq!(envelope["id"], "3", "response_body gives the item alone: {envelope}");
    assert!(envelope.get("etag").is_none(), "{envelope}");
    for (method, path) in [(Method::DELETE, "/v1/items/4"), (Method::POST, "/v1/items/4:delete"), (Method::DELETE, "/v1/shelves/s/items/4")]
    {
        let deleted = gw.ok(method.clone(), path, (method == Method::POST).then(|| json!({}))).await;
        assert_eq!(deleted["id"], "4", "additional binding {method} {path}: {deleted}");
    }
    let echoed = gw.ok(Method::POST, "/portico.test.v1.Shop/Echo", Some(json!({"stringValue": "hi"}))).await;
    assert_eq!(echoed, json!({"stringValue": "hi"}), "a method without a rule");

    assert_refused(gw.call(Method::GET, "/v1/items/1?colour=red", None).await, StatusCode::BAD_REQUEST, "bad_request", "colour");
    assert_refused(
        gw.call(Method::POST, "/v1/items", Some(json!({"id": "1", "colour": "red"}))).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "colour",
    );
    assert_refused(gw.call(Method::GET, "/v1/items/1?pageSize=many", None).await, StatusCode::BAD_REQUEST, "bad_request", "page");
    assert_refused(gw.call(Method::GET, "/v1/nothing/here", None).await, StatusCode::NOT_FOUND, "no_route", "/v1/nothing/here");
    let not_allowed = gw.call(Method::PUT, "/v1/items/1", None).await;
    assert_eq!(not_allowed.1["allow"], "DELETE, GET, PATCH", "{}", not_allowed.2);
    assert_refused(not_allowed, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "GET");
}

#[tokio::test]
async fn json_is_what_json_format_prints_with_each_option() {
    let options = [
        ("plain.test", json!({}), JsonOptions::default()),
        ("proto-names.test", json!({"names": "proto"}), JsonOptions { proto_names: true, ..JsonOptions::default() }),
        ("defaults.test", json!({"emit_defaults": true}), JsonOptions { emit_defaults: true, ..JsonOptions::default() }),
        ("ints.test", json!({"enums_as_ints": true}), JsonOptions { enums_as_ints: true, ..JsonOptions::default() }),
    ];
    let routes: Vec<Value> = options
        .iter()
        .map(|(host, grpc, _)| {
            let mut route = route(host, &["/portico.test.v1.Shop"], grpc.clone());
            route["hosts"] = json!([host]);
            route
        })
        .collect();
    let gw = gateway_with(Value::Array(routes)).await;
    let messages = [
        json!({"int64Value": "9007199254740993", "uint64Value": "18446744073709551615", "sint64Value": "-9007199254740993",
               "fixed64Value": "12345678901234567890", "sfixed64Value": "-1", "doubleValue": 1.5, "floatValue": 0.25, "boolValue": true,
               "bytesValue": "AAEC/w==", "color": "COLOR_GREEN", "category": "CATEGORY_BOOKS", "repeatedInt64": ["1", "-9007199254740993"],
               "repeatedColor": ["COLOR_RED", "COLOR_UNSPECIFIED"], "repeatedTimestamp": ["1970-01-01T00:00:00Z"]}),
        json!({"timestamp": "2024-02-29T23:59:59.123456789Z", "duration": "-1.5s", "int32Wrapper": 0, "stringWrapper": "",
               "boolWrapper": false, "uint64Wrapper": "18446744073709551615", "bytesWrapper": "aGk=", "doubleWrapper": 2.5,
               "structValue": {"a": [1, "two", null, true, {"b": {}}]}, "value": "text", "listValue": [1, {"x": 2}],
               "fieldMask": "a.b,cD", "empty": {}, "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"},
               "nullValue": null}),
        json!({"stringMap": {"k": "v", "": "empty"}, "int32Map": {"-5": {"label": "i"}}, "int64Map": {"9007199254740993": "big"},
               "boolMap": {"true": "CATEGORY_FOOD"}, "choiceText": "oneof text", "nested": {"child": {"label": "deep", "weight": 0}},
               "optionalInt32": 0, "customJSON": "custom", "repeatedNested": [{}, {"weight": -1}]}),
    ];
    let mut cases = Vec::new();
    let mut answers = Vec::new();
    for (host, _, oracle_options) in &options {
        for message in &messages {
            let request = client().post(format!("{}/portico.test.v1.Shop/Echo", gw.dp.proxy_url)).header("host", *host);
            let (status, _, text) = gw.send(request, Some(message.clone())).await;
            assert_eq!(status, StatusCode::OK, "{host}: {text}");
            answers.push((host, parse(&text)));
            cases.push(OracleCase::json("portico.test.v1.AllTypes", &message.to_string(), *oracle_options));
        }
    }
    for ((host, gateway), oracle) in answers.iter().zip(Oracle::run(&cases).await) {
        let oracle = oracle.unwrap_or_else(|e| panic!("json_format refused the message: {e}"));
        assert_eq!(numbers_as_f64(gateway), numbers_as_f64(&oracle.json), "{host}: gateway (left) and json_format (right) differ");
    }
}

/// `value` with every number as a float: json_format prints a Struct's
/// numbers as `1.0`, a JSON reader sees the same number as `1`.
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn every_grpc_status_has_its_http_status_and_a_status_body() {
    let gw = gateway().await;
    let table = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (code, http) in table {
        for after_headers in [false, true] {
            let path = format!("/v1/fail/{code}?withDetails=true&afterHeaders={after_headers}");
            let (status, headers, text) = gw.call(Method::GET, &path, None).await;
            assert_eq!(status.as_u16(), http, "gRPC {code} (after headers: {after_headers}): {text}");
            assert_eq!(headers["content-type"], "application/json");
            let body = parse(&text);
            assert_eq!(body["code"], code, "{text}");
            assert_eq!(body["message"], "échec demandé: 100% voulu", "grpc-message percent-decoded: {text}");
            let types: Vec<&str> = body["details"].as_array().unwrap().iter().map(|d| d["@type"].as_str().unwrap()).collect();
            assert_eq!(types, ["type.googleapis.com/google.rpc.BadRequest", "type.googleapis.com/google.rpc.ErrorInfo"], "{text}");
            assert_eq!(body["details"][1]["reason"], "REQUESTED_FAILURE", "details decoded: {text}");
        }
    }
    let statuses: Vec<Value> = (1..=16).map(|code| json!({"code": code})).collect();
    let oracle_case = OracleCase::json("google.rpc.Status", &statuses[4].to_string(), JsonOptions::default());
    assert!(Oracle::run(&[oracle_case]).await[0].is_ok(), "the oracle knows google.rpc.Status");
}

#[tokio::test]
async fn server_streams_arrive_message_by_message() {
    let gw = gateway().await;
    let url = format!("{}/v1/items:stream?count=3&intervalMs=400", gw.dp.proxy_url);
    let started = Instant::now();
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut arrivals = Vec::new();
    let mut buffered = String::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        buffered.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffered.find('\n') {
            let line: String = buffered.drain(..=end).collect();
            arrivals.push((started.elapsed(), parse(&line)));
        }
    }
    assert_eq!(arrivals.len(), 3, "{arrivals:?}");
    assert!(arrivals.iter().enumerate().all(|(i, (_, item))| item["id"] == format!("item-{i}")), "{arrivals:?}");
    let (first, last) = (arrivals[0].0, arrivals[2].0);
    assert!(last - first >= Duration::from_millis(600), "each line is flushed as its message arrives: {arrivals:?}");

    let sse = client().get(&url).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = sse.text().await.unwrap();
    assert_eq!(text.matches("data: {").count(), 3, "{text}");
    let array = client().get(&url).header("accept", "application/json").send().await.unwrap();
    assert_eq!(array.headers()["content-type"], "application/json");
    assert_eq!(parse(&array.text().await.unwrap()).as_array().unwrap().len(), 3);

    let failing = format!("{}/v1/items:stream?count=5&failAfter=2&failCode=14&failMessage=gone", gw.dp.proxy_url);
    let (status, _, text) = gw.send(client().get(&failing), None).await;
    assert_eq!(status, StatusCode::OK, "the head went out with the first message");
    let lines: Vec<Value> = text.lines().map(parse).collect();
    assert_eq!(lines.len(), 3, "two messages, then the error: {text}");
    assert_eq!(lines[2], json!({"error": {"code": 14, "message": "gone", "details": []}}), "{text}");
    // A client that goes away cancels the call upstream.
    let slow = client().get(format!("{}/v1/items:stream?count=20&intervalMs=500", gw.dp.proxy_url)).send().await.unwrap();
    let mut chunks = slow.bytes_stream();
    assert!(chunks.next().await.unwrap().unwrap().starts_with(b"{\"id\":\"item-0\""));
    drop(chunks);
    eventually("the abandoned stream cancelled at the peer", Duration::from_secs(5), || async {
        let calls = gw.ok(Method::GET, "/v1/calls", None).await;
        calls["cancelled"].as_array().is_some_and(|names| names.contains(&json!("ListItems"))).then_some(())
    })
    .await;
    let before_any = format!("{}/v1/items:stream?count=5&failAfter=0&failCode=5&failMessage=none", gw.dp.proxy_url);
    let (status, _, text) = gw.send(client().get(&before_any), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an error before the first message is a real status: {text}");
    assert_eq!(parse(&text)["code"], 5);
}

#[tokio::test]
async fn client_streams_are_ndjson_lines() {
    let gw = gateway().await;
    let url = format!("{}/v1/items:collect", gw.dp.proxy_url);
    let lines = "{\"id\": \"a\", \"priceCents\": \"100\"}\n\n{\"id\": \"b\", \"priceCents\": 250}\n";
    let response = client().post(&url).header("content-type", "application/x-ndjson").body(lines).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(parse(&response.text().await.unwrap()), json!({"count": 2, "totalPriceCents": "350", "ids": ["a", "b"]}));
    let broken = "{\"id\": \"a\"}\n{\"id\": 5, \"nope\": 1}\n";
    let response = client().post(&url).body(broken).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("line 2"), "the error names the line: {text}");
}

#[tokio::test]
async fn a_clients_bad_ndjson_line_is_not_counted_against_the_target() {
    let peer = GrpcPeer::start().await;
    let config = json!({
        "services": [{"name": "shop", "protocol": "grpc", "targets": [{"url": peer.target_url()}],
                      "circuit_breaker": {"min_requests": 2, "failure_rate_percent": 30, "window_ms": 60000, "open_ms": 60000}}],
        "protos": [GrpcPeer::protos_entity("shop")],
        "routes": [route("shop", &["/v1"], json!({}))],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/v1/items:collect", dp.proxy_url);
    for _ in 0..4 {
        let response = client().post(&url).body("{\"id\": \"a\"}\n{\"id\": 5}\n").send().await.unwrap();
        let status = response.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "the client's mistake, never an open circuit: {}", response.text().await.unwrap());
    }
    let lines = "{\"id\": \"a\", \"priceCents\": \"100\"}\n";
    let response = client().post(&url).body(lines).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn a_routes_deadline_longer_than_the_services_request_timeout_is_kept() {
    let peer = GrpcPeer::start().await;
    let config = json!({
        "services": [{"name": "shop", "protocol": "grpc", "targets": [{"url": peer.target_url()}], "timeouts": {"request_ms": 300}}],
        "protos": [GrpcPeer::protos_entity("shop")],
        "routes": [route("shop", &["/v1"], json!({"timeout_ms": 5000}))],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = client().get(format!("{}/v1/sleep/800", dp.proxy_url)).send().await.unwrap();
    let status = response.status();
    assert_eq!(status, StatusCode::OK, "the route's timeout_ms is the call's deadline: {}", response.text().await.unwrap());
}

#[tokio::test]
async fn deadlines_and_metadata() {
    let gw = gateway_with(json!([route(
        "shop",
        &["/v1", "/portico.test.v1.Shop"],
        json!({"timeout_ms": 300, "forward_headers": ["x-tenant"]})
    )]))
    .await;
    let started = Instant::now();
    let (status, _, text) = gw.call(Method::GET, "/v1/sleep/3000", None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{text}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at the deadline, not when the method finished");
    eventually("the call cancelled at the peer", Duration::from_secs(5), || async {
        let calls = gw.ok(Method::GET, "/v1/calls", None).await;
        calls["cancelled"].as_array().is_some_and(|names| names.contains(&json!("Sleep"))).then_some(())
    })
    .await;

    let request = client()
        .get(format!("{}/v1/metadata", gw.dp.proxy_url))
        .header("x-tenant", "acme")
        .header("x-other", "secret")
        .header("authorization", "Bearer nope")
        .header("grpc-timeout", "200m");
    let (status, headers, text) = gw.send(request, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let echo = parse(&text);
    let keys: Vec<&str> = echo["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"x-tenant") && keys.contains(&"x-request-id") && keys.contains(&"x-forwarded-for"), "{keys:?}");
    assert!(!keys.contains(&"x-other") && !keys.contains(&"authorization"), "only listed headers travel: {keys:?}");
    let left: u64 = echo["deadlineMs"].as_str().unwrap().parse().unwrap();
    assert!(left <= 200, "the client's shorter grpc-timeout wins: {left} ms");
    assert_eq!(headers["x-echo-x-tenant"], "acme", "response metadata comes back as headers");
}

#[tokio::test]
async fn bad_protos_and_colliding_rules_are_refused_by_name() {
    let db = TestDb::sqlite();
    let cp = ControlPlane::start(&db.url).await;
    let post = |path: &'static str, body: Value| {
        let cp = &cp;
        async move {
            let response = cp.admin(Method::POST, &format!("/api/v1/gateways/default/{path}")).json(&body).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let broken = "syntax = \"proto3\";\npackage bad;\nmessage M {\n  string id = ;\n}\n";
    let (status, body) = post("protos", json!({"name": "bad", "files": {"bad.proto": broken}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("bad.proto:4"), "file and line: {body}");
    let mut files = GrpcPeer::proto_files();
    files.remove("shop_types.proto");
    let (status, body) = post("protos", json!({"name": "shop", "files": files})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("shop_types.proto"), "the missing import: {body}");

    let (status, body) = post("protos", GrpcPeer::protos_entity("shop")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        post("services", json!({"name": "shop", "protocol": "grpc", "targets": [{"url": "grpc://127.0.0.1:50051"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post("routes", route("first", &["/v1"], json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post("routes", route("second", &["/v1/items"], json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "grpc", "{body}");
    assert!(body.to_string().contains("of route 'second' matches the same requests as a rule of route 'first'"), "{body}");
}

#[tokio::test]
async fn a_new_proto_version_swaps_in_under_load_without_a_failed_request() {
    let gw = gateway().await;
    let url = format!("{}/v1/items/1", gw.dp.proxy_url);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut sent = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = client.get(&url).send().await.unwrap();
                    let status = response.status();
                    let text = response.text().await.unwrap();
                    assert_eq!(status, StatusCode::OK, "request {sent} during the swaps: {text}");
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let things = format!("{}/v1/things/1", gw.dp.proxy_url);
    assert_eq!(client().get(&things).send().await.unwrap().status(), StatusCode::NOT_FOUND, "no rule yet");
    let mut files = GrpcPeer::proto_files();
    for version in 0..3 {
        let source = files.get_mut("shop.proto").unwrap();
        source.push_str(&format!("\n// revision {version}\n"));
        if version == 2 {
            let rule = r#"{get: "/v1/items/{id}"}"#;
            assert!(source.contains(rule));
            *source = source.replace(rule, r#"{get: "/v1/items/{id}" additional_bindings {get: "/v1/things/{id}"}}"#);
        }
        let response = gw
            .cp
            .admin(Method::PUT, "/api/v1/gateways/default/protos/shop")
            .json(&json!({"name": "shop", "files": files}))
            .send()
            .await
            .unwrap();
        let version: u64 = response.headers()["portico-config-version"].to_str().unwrap().parse().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
        gw.dp.wait_for_version(version).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        total += task.await.unwrap();
    }
    assert!(total > 20, "the load ran through the swaps: {total} requests");
    assert_eq!(client().get(&things).send().await.unwrap().status(), StatusCode::OK, "the last version's new rule serves");
    drop(gw.peer);
}

#[tokio::test]
async fn grpcurl_passes_through_a_route_without_grpc_block() {
    let gw = gateway_with(json!([{"name": "native", "service": "shop", "paths": ["/"]}])).await;
    let gateway = gw.dp.proxy_url.trim_start_matches("http://").to_owned();
    let listed = run_grpcurl(&["-plaintext", &gateway, "list", SHOP_SERVICE]).await;
    assert!(listed.status.success(), "reflection through the gateway: {}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("portico.test.v1.Shop.GetItem"));
    let method = format!("{SHOP_SERVICE}/GetItem");
    let got =
        run_grpcurl(&["-plaintext", "-d", r#"{"id": "7", "filter": {"max_price_cents": "9007199254740993"}}"#, &gateway, &method]).await;
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let answer: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(answer["request"]["filter"]["max_price_cents"], "9007199254740993", "{answer}");
    let failed = run_grpcurl(&["-plaintext", "-d", r#"{"code": 5, "message": "gone"}"#, &gateway, &format!("{SHOP_SERVICE}/Fail")]).await;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && stderr.contains("NotFound") && stderr.contains("gone"), "the status passes through: {stderr}");
}

#[tokio::test]
async fn message_limits_and_upstreams_that_are_not_grpc() {
    let small = json!({"max_request_message_bytes": 64, "max_response_message_bytes": 64});
    let gw = gateway_with(json!([route("small", &["/v1"], small)])).await;
    let long = "x".repeat(100);
    assert_refused(
        gw.call(Method::POST, "/v1/items", Some(json!({"id": "1", "name": long}))).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "64 bytes",
    );
    assert_refused(
        gw.call(Method::GET, &format!("/v1/items/{}", &long[..40]), None).await,
        StatusCode::BAD_GATEWAY,
        "upstream_response_too_large",
        "64 bytes",
    );
    assert_eq!(gw.ok(Method::GET, "/v1/items/1", None).await["item"]["id"], "1", "small messages pass");

    let http_only = TestUpstream::start("plain").await;
    let config = json!({
        "services": [{"name": "plain", "protocol": "grpc", "targets": [{"url": http_only.url().replace("http://", "grpc://")}]}],
        "protos": [GrpcPeer::protos_entity("shop")],
        "routes": [{"name": "plain", "service": "plain", "paths": ["/v1"], "grpc": {"proto": "shop", "services": [SHOP_SERVICE]}}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let response = client().get(format!("{}/v1/items/1", dp.proxy_url)).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "an HTTP/1 server is no gRPC upstream: {text}");
    assert!(parse(&text)["error"]["code"].as_str().unwrap().starts_with("upstream_"), "{text}");
}

#[tokio::test]
async fn identity_headers_always_travel_as_metadata_and_spoofed_ones_never() {
    let peer = GrpcPeer::start().await;
    let mut shop = route("shop", &["/v1"], json!({}));
    shop["policies"] = json!([{"type": "key-auth"}]);
    let config = json!({
        "services": [{"name": "shop", "protocol": "grpc", "targets": [{"url": peer.target_url()}]}],
        "protos": [GrpcPeer::protos_entity("shop")],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": "alice-key-0123456789"}],
        "routes": [shop],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let metadata = client()
        .get(format!("{}/v1/metadata", dp.proxy_url))
        .header("x-api-key", "alice-key-0123456789")
        .header("x-user-id", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), StatusCode::OK);
    let echo = parse(&metadata.text().await.unwrap());
    let entries: Vec<(&str, &str)> =
        echo["entries"].as_array().unwrap().iter().map(|e| (e["key"].as_str().unwrap(), e["value"].as_str().unwrap_or(""))).collect();
    assert!(entries.contains(&("x-consumer-username", "alice")), "{entries:?}");
    assert!(
        !entries.iter().any(|(key, value)| *key == "x-user-id" && *value == "mallory"),
        "a client's identity header is dropped: {entries:?}"
    );
    assert!(!entries.iter().any(|(key, _)| *key == "x-api-key"), "credentials stay at the gateway: {entries:?}");
    let refused = client().get(format!("{}/v1/metadata", dp.proxy_url)).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_grpcs_target_that_never_completes_its_handshake_fails_within_connect_ms() {
    let silent = SilentUpstream::start().await;
    let target = silent.url().replace("http://", "grpcs://");
    let config = json!({
        "services": [{"name": "stuck", "protocol": "grpcs", "targets": [{"url": target}], "timeouts": {"connect_ms": 300, "request_ms": 20000}}],
        "protos": [GrpcPeer::protos_entity("shop")],
        "routes": [{"name": "stuck", "service": "stuck", "paths": ["/v1"], "grpc": {"proto": "shop", "services": [SHOP_SERVICE]}}],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let started = Instant::now();
    let response = client().get(format!("{}/v1/items/1", dp.proxy_url)).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "a connect that timed out, as for HTTP/1 targets: {text}");
    assert!(started.elapsed() < Duration::from_secs(5), "failed at connect_ms, not request_ms: {:?}", started.elapsed());
}
