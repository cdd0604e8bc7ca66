//! The gRPC test peers on their own, without the gateway: the Python
//! grpcio server answers grpcurl (through server reflection) for unary,
//! streaming, failing, slow and metadata-echoing calls (and counts them), in h2c and TLS;
//! its `.proto` files compile with the gateway's compiler to the methods
//! the server serves; and the json_format oracle answers batches.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use portico_shared::grpc::compile::{compile, decode};
use portico_test_support::grpc_peer::{JsonOptions, Oracle, OracleCase, SHOP_SERVICE, run_grpcurl};
use portico_test_support::{GrpcPeer, eventually, tls};
use serde_json::{Value, json};

/// Calls `method` of the shop service on `peer` in cleartext with the
/// JSON `request`, plus `flags` before the address, and returns grpcurl's
/// output with the messages it printed.
async fn call(peer: &GrpcPeer, flags: &[&str], method: &str, request: &Value) -> (std::process::Output, Vec<Value>) {
    let output = grpcurl_call(peer, flags, method, request).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let messages = serde_json::Deserializer::from_str(&stdout).into_iter::<Value>().collect::<Result<_, _>>();
    let messages = messages.unwrap_or_else(|e| panic!("grpcurl printed something other than JSON messages ({e}):\n{stdout}"));
    (output, messages)
}

async fn grpcurl_call(peer: &GrpcPeer, flags: &[&str], method: &str, request: &Value) -> std::process::Output {
    let (address, method, request) = (peer.addr().to_string(), format!("{SHOP_SERVICE}/{method}"), request.to_string());
    let mut args = vec!["-plaintext", "-d", &request];
    args.extend_from_slice(flags);
    args.extend([address.as_str(), method.as_str()]);
    run_grpcurl(&args).await
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn peer_serves_by_reflection_the_methods_its_protos_compile_to() {
    let pool = decode(&compile(&GrpcPeer::proto_files()).expect("the peer's protos compile")).expect("and decode");
    let service = pool.get_service_by_name(SHOP_SERVICE).expect("shop.proto defines the service");
    let compiled: BTreeSet<String> = service.methods().map(|m| m.full_name().to_owned()).collect();

    let peer = GrpcPeer::start().await;
    let output = run_grpcurl(&["-plaintext", &peer.addr().to_string(), "list", SHOP_SERVICE]).await;
    assert!(output.status.success(), "grpcurl list: {}\npeer log:\n{}", stderr(&output), peer.logs());
    let served: BTreeSet<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    assert_eq!(served, compiled, "grpcurl lists, by reflection, the methods compiled from the files a test uploads");
    assert_eq!(served.len(), 15);

    let mut without_types = GrpcPeer::proto_files();
    without_types.remove("shop_types.proto");
    let error = compile(&without_types).expect_err("shop.proto imports shop_types.proto");
    assert_eq!(error.file.as_deref(), Some("shop.proto"), "{error}");
}

#[tokio::test]
async fn peer_answers_unary_streaming_and_failing_calls() {
    let peer = GrpcPeer::start().await;

    let request = json!({"id": "42", "filter": {"max_price_cents": "9007199254740993"}, "since": "2024-05-01T10:00:00Z"});
    let (output, messages) = call(&peer, &[], "GetItem", &request).await;
    assert!(output.status.success(), "GetItem: {}", stderr(&output));
    assert_eq!(messages, [json!({"item": {"id": "42", "name": "item 42"}, "request": request})], "it answers the request it received");

    let started = Instant::now();
    let (output, messages) = call(&peer, &[], "ListItems", &json!({"count": 3, "interval_ms": 150})).await;
    assert!(output.status.success(), "ListItems: {}", stderr(&output));
    let ids: Vec<&Value> = messages.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, ["item-0", "item-1", "item-2"]);
    assert!(started.elapsed() >= Duration::from_millis(300), "two intervals of 150 ms between three messages");

    let (output, messages) =
        call(&peer, &[], "ListItems", &json!({"count": 3, "fail_after": 2, "fail_code": 14, "fail_message": "gone"})).await;
    assert!(!output.status.success() && stderr(&output).contains("Code: Unavailable"), "{}", stderr(&output));
    assert_eq!(messages.len(), 2, "two messages before the status");

    let (output, _) = call(&peer, &[], "Fail", &json!({"code": 5, "with_details": true})).await;
    let failure = stderr(&output);
    assert!(!output.status.success(), "Fail answers an error");
    for expected in ["Code: NotFound", "Message: échec demandé: 100% voulu", "google.rpc.BadRequest", "\"reason\":\"REQUESTED_FAILURE\""]
    {
        assert!(failure.contains(expected), "grpcurl's error lacks {expected:?}:\n{failure}");
    }
}

#[tokio::test]
async fn peer_echoes_metadata_and_counts_cancelled_calls() {
    let peer = GrpcPeer::start().await;

    let verbose = grpcurl_call(&peer, &["-v", "-H", "x-tenant: acme"], "EchoMetadata", &json!({})).await;
    let shown = String::from_utf8_lossy(&verbose.stdout);
    assert!(shown.contains("x-echo-x-tenant: acme") && shown.contains("x-echo-trailer-x-tenant: acme"), "headers and trailers:\n{shown}");

    let (output, messages) = call(&peer, &["-max-time", "5", "-H", "x-tenant: acme"], "EchoMetadata", &json!({})).await;
    assert!(output.status.success(), "EchoMetadata: {}", stderr(&output));
    let [echo] = &messages[..] else { panic!("one message: {messages:?}") };
    assert!(echo["entries"].as_array().expect("entries").contains(&json!({"key": "x-tenant", "value": "acme"})), "{echo}");
    let deadline_ms: u64 = echo["deadline_ms"].as_str().and_then(|ms| ms.parse().ok()).expect("grpc-timeout arrived");
    assert!((1..=5000).contains(&deadline_ms), "{deadline_ms} ms left of 5 s");

    let (output, _) = call(&peer, &["-max-time", "0.3"], "Sleep", &json!({"ms": 5000})).await;
    assert!(stderr(&output).contains("Code: DeadlineExceeded"), "{}", stderr(&output));
    let calls = eventually("the peer to count the cancelled Sleep", Duration::from_secs(5), || async {
        let (_, messages) = call(&peer, &[], "GetCalls", &json!({})).await;
        messages.into_iter().find(|calls| calls["cancelled"] == json!(["Sleep"]))
    })
    .await;
    assert_eq!((&calls["received"]["EchoMetadata"], &calls["received"]["Sleep"]), (&json!("2"), &json!("1")), "{calls}");
}

#[tokio::test]
async fn tls_peer_answers_with_its_certificate() {
    let certificate = tls::self_signed(&["localhost"], false);
    let ca = tempfile::NamedTempFile::new().expect("a file for the CA");
    std::fs::write(ca.path(), &certificate.cert_pem).expect("write the CA");
    let peer = GrpcPeer::start_tls(&certificate).await;
    assert_eq!(peer.target_url(), format!("grpcs://{}", peer.addr()));
    let ca = ca.path().to_string_lossy();
    let address = peer.addr().to_string();
    let method = format!("{SHOP_SERVICE}/GetBook");
    let output =
        run_grpcurl(&["-cacert", &ca, "-servername", "localhost", "-d", r#"{"name": "shelves/1/books/2"}"#, &address, &method]).await;
    assert!(output.status.success(), "GetBook over TLS: {}\npeer log:\n{}", stderr(&output), peer.logs());
    let book: Value = serde_json::from_slice(&output.stdout).expect("a JSON message");
    assert_eq!(book, json!({"name": "shelves/1/books/2", "title": "the book at shelves/1/books/2"}));
}

#[tokio::test]
async fn oracle_prints_what_json_format_prints() {
    const ALL_TYPES: &str = "portico.test.v1.AllTypes";
    let input = r#"{"int64Value": "9007199254740993", "uint64Value": 18446744073709551615, "color": 1,
        "duration": "1.5s", "int32Wrapper": 0, "any": {"@type": "type.googleapis.com/portico.test.v1.Item", "id": "x"}}"#;
    let every_option = JsonOptions { proto_names: true, emit_defaults: true, enums_as_ints: true, ignore_unknown: true };
    let answers = Oracle::run(&[
        OracleCase::json(ALL_TYPES, input, JsonOptions::default()),
        OracleCase::json(ALL_TYPES, input, every_option),
        OracleCase::json(ALL_TYPES, r#"{"nope": 1}"#, JsonOptions::default()),
        OracleCase::json(ALL_TYPES, r#"{"nope": 1}"#, JsonOptions { ignore_unknown: true, ..JsonOptions::default() }),
    ])
    .await;
    let printed = answers[0].as_ref().expect("json_format accepts the input");
    assert_eq!(
        printed.json,
        json!({"int64Value": "9007199254740993", "uint64Value": "18446744073709551615", "color": "COLOR_RED", "duration": "1.500s",
               "int32Wrapper": 0, "any": {"@type": "type.googleapis.com/portico.test.v1.Item", "id": "x"}})
    );
    let with_options = &answers[1].as_ref().expect("json_format accepts the input").json;
    assert_eq!(
        (&with_options["int64_value"], &with_options["color"], &with_options["bool_value"]),
        (&json!("9007199254740993"), &json!(1), &json!(false))
    );
    assert!(answers[2].as_ref().is_err_and(|error| error.contains("nope")), "{:?}", answers[2]);
    assert_eq!(answers[3].as_ref().map(|printed| &printed.text), Ok(&"{}".to_owned()), "unknown fields ignored on request");

    let status = r#"{"code": 5, "message": "é", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R"}]}"#;
    let decoded = Oracle::run(&[
        OracleCase::binary(ALL_TYPES, &printed.binary, JsonOptions::default()),
        OracleCase::json("google.rpc.Status", status, JsonOptions::default()),
    ])
    .await;
    assert_eq!(decoded[0].as_ref().map(|p| &p.json), Ok(&printed.json), "the encoded message prints the same");
    assert_eq!(decoded[1].as_ref().map(|p| p.text.as_str()), Ok(status), "an error body, details included");
}
