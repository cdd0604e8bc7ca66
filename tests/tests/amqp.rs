//! HTTP to AMQP end to end: the real binaries, RabbitMQ, and an
//! independent peer written with pika (`tests/amqp/consumer.py`) that
//! declares, consumes what the gateway published with its properties, and
//! answers `rpc` calls. The shared broker (`PORTICO_TEST_AMQP_URL`) serves
//! every test but the one that stops a broker and raises its memory
//! alarm, which runs a throwaway one of its own.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::{Duration, Instant};

use portico_test_support::amqp::{QueueOptions, Responder, amqp_url};
use portico_test_support::{Consumer, ThrowawayBroker, eventually, serve_config};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const ALICE_KEY: &str = "alice-key-0123456789";

/// A name no other test run uses.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("portico-test.{what}.{}.{nanos}", std::process::id())
}

/// The service `events` for the broker at `url` (`amqp://user:pass@host:port/vhost`):
/// the target without the login, which goes in `credentials`.
fn events_service(url: &str) -> Value {
    let (login, address) = url.strip_prefix("amqp://").and_then(|rest| rest.split_once('@')).unwrap();
    let (username, password) = login.split_once(':').unwrap();
    json!({
        "name": "events", "protocol": "amqp", "targets": [{"url": format!("amqp://{address}")}],
        "credentials": {"username": username, "password": password},
    })
}

/// An `amqp` route `name` on `path` publishing to `events`.
fn route(name: &str, path: &str, amqp: Value) -> Value {
    json!({"name": name, "service": "events", "paths": [path], "methods": ["POST"], "amqp": amqp})
}

/// A POST's status, headers and body, and how long it took.
async fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String, Duration) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let request = headers.iter().fold(client.post(url).body(body.to_owned()), |request, (name, value)| request.header(*name, *value));
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    (status, headers, text, started.elapsed())
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Asserts the gateway's error answer: `status` and `{"error": {"code", …}}`; its message.
fn assert_error(status: StatusCode, body: &str, expected: StatusCode, code: &str) -> String {
    assert_eq!(status, expected, "{body}");
    let error = &parse(body)["error"];
    assert_eq!(error["code"], code, "{body}");
    error["message"].as_str().unwrap().to_owned()
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36 && text.split('-').map(str::len).eq([8, 4, 4, 4, 12]) && text.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[tokio::test]
async fn a_publish_is_answered_202_once_confirmed_and_the_consumer_gets_the_request() {
    let peer = Consumer::start(&amqp_url()).await;
    let exchange = unique("orders");
    peer.declare_exchange(&exchange, "direct").await;
    let queue = peer.declare_queue("", QueueOptions::default()).await;
    peer.bind(&queue, &exchange, "order.created").await;
    // Takes one message, then has the broker nack the next: the confirm held back.
    let full = peer.declare_queue("", QueueOptions { max_length: Some(1), reject_publish: true, ..QueueOptions::default() }).await;
    let config = json!({
        "services": [events_service(&amqp_url())],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": ALICE_KEY}],
        "routes": [
            {
                "name": "events", "service": "events", "paths": ["/events/{kind}"], "methods": ["POST"],
                "amqp": {"exchange": exchange, "routing_key": "order.{path.kind}", "headers": ["x-tenant"]},
                "policies": [{"type": "key-auth"}],
            },
            route("by-body", "/by-body", json!({
                "exchange": exchange, "routing_key": "order.{body.kind}", "persistent": false, "content_type": "application/json",
            })),
            route("full", "/full", json!({"exchange": "", "routing_key": full})),
            {
                "name": "small", "service": "events", "paths": ["/small"],
                "amqp": {"exchange": exchange, "routing_key": "order.created"},
                "policies": [{"type": "request-size-limit", "max_bytes": 16}],
            },
        ],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    peer.consume(&queue).await;

    let request = [
        ("x-api-key", ALICE_KEY),
        ("content-type", "application/json"),
        ("idempotency-key", "order-42"),
        ("x-tenant", "acme"),
        ("x-other", "not copied"),
        ("authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("cookie", "session=secret"),
    ];
    let (status, headers, body, _) = post(&format!("{}/events/created", dp.proxy_url), r#"{"id":42}"#, &request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(parse(&body), json!({"message_id": "order-42"}), "the client's Idempotency-Key names the message");
    assert_eq!(headers["content-type"], "application/json");
    let request_id = headers["x-request-id"].to_str().unwrap();
    let message = peer.next_message().await;
    assert_eq!((message.exchange.as_str(), message.routing_key.as_str()), (exchange.as_str(), "order.created"), "{{path.kind}}");
    assert_eq!(message.body, br#"{"id":42}"#);
    assert_eq!(message.content_type.as_deref(), Some("application/json"), "the request's");
    assert_eq!(message.delivery_mode, Some(2), "persistent by default");
    assert_eq!(message.message_id.as_deref(), Some("order-42"));
    assert_eq!(message.correlation_id.as_deref(), Some(request_id), "the request id the client got back");
    assert_eq!(message.app_id.as_deref(), Some("portico"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(message.timestamp.is_some_and(|at| at.abs_diff(now) < 60), "{:?}", message.timestamp);
    let headers = &message.headers;
    assert_eq!(headers["x-tenant"], "acme", "allow-listed");
    assert_eq!(headers["x-consumer-username"], "alice", "the identity the gateway set");
    assert!(headers["x-consumer-id"].as_str().is_some_and(is_uuid), "{headers:?}");
    assert_eq!(headers["x-request-id"], request_id);
    for refused in ["authorization", "cookie", "x-api-key", "x-other"] {
        assert!(!headers.contains_key(refused), "{refused} reached the message: {headers:?}");
    }

    let (status, _, body, _) = post(&format!("{}/events/created", dp.proxy_url), "second", &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let message_id = parse(&body)["message_id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&message_id), "without an Idempotency-Key a new UUID: {message_id}");
    let message = peer.next_message().await;
    assert_eq!((message.message_id.as_deref(), message.body_text().as_str()), (Some(message_id.as_str()), "second"));

    let (status, _, body, _) = post(&format!("{}/events/shipped", dp.proxy_url), "{}", &[("x-api-key", ALICE_KEY)]).await;
    let error = assert_error(status, &body, StatusCode::BAD_GATEWAY, "amqp_unroutable");
    assert!(error.contains("order.shipped"), "no queue is bound to it, and the message is mandatory: {error}");

    let (status, _, body, _) = post(&format!("{}/by-body", dp.proxy_url), r#"{"kind":"created","n":1}"#, &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let message = peer.next_message().await;
    assert_eq!(message.routing_key, "order.created", "{{body.kind}}");
    assert_eq!((message.content_type.as_deref(), message.delivery_mode), (Some("application/json"), Some(1)), "the route's settings");
    let (status, _, body, _) = post(&format!("{}/by-body", dp.proxy_url), r#"{"n":1}"#, &[]).await;
    let error = assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert!(error.contains("routing key") && error.contains("field 'kind' of the JSON request body"), "{error}");
    let (status, _, body, _) = post(&format!("{}/by-body", dp.proxy_url), &format!(r#"{{"kind":"{}"}}"#, "k".repeat(250)), &[]).await;
    assert!(assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request").contains("at most 255"), "{body}");

    let (status, _, body, _) = post(&format!("{}/small", dp.proxy_url), &"x".repeat(17), &[]).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let (status, _, body, _) = post(&format!("{}/full", dp.proxy_url), "first", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the queue takes one: {body}");
    let (status, headers, body, _) = post(&format!("{}/full", dp.proxy_url), "second", &[]).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "amqp_nacked");
    assert_eq!(headers["retry-after"], "5", "{headers:?}");
    assert_eq!(peer.message_count(&full).await, 1, "the broker refused the second, and the client was told");
    assert_eq!(peer.next_message_within(Duration::from_millis(200)).await, None, "nothing else was published");
}

#[tokio::test]
async fn a_deleted_exchange_is_a_502_naming_it_and_the_route_recovers_once_it_is_back() {
    let peer = Consumer::start(&amqp_url()).await;
    let exchange = unique("deleted");
    let queue = peer.declare_queue("", QueueOptions::default()).await;
    let declare = || async {
        peer.declare_exchange(&exchange, "direct").await;
        peer.bind(&queue, &exchange, "k").await;
    };
    declare().await;
    let config = json!({
        "services": [events_service(&amqp_url())],
        "routes": [route("events", "/events", json!({"exchange": exchange, "routing_key": "k"}))],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/events", dp.proxy_url);
    assert_eq!(post(&url, "one", &[]).await.0, StatusCode::ACCEPTED);

    peer.delete_exchange(&exchange).await;
    let (status, _, body, _) = post(&url, "two", &[]).await;
    let error = assert_error(status, &body, StatusCode::BAD_GATEWAY, "amqp_channel_closed");
    assert!(error.contains(&exchange) && error.contains("NOT_FOUND"), "{error}");

    declare().await;
    let (status, _, body, _) = post(&url, "three", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a new channel replaced the one the broker closed: {body}");
    peer.consume(&queue).await;
    assert_eq!(peer.next_message().await.body, b"one");
    assert_eq!(peer.next_message().await.body, b"three");
}

#[tokio::test]
async fn rpc_answers_with_the_reply_each_call_its_own_and_no_reply_is_a_504_leaving_no_waiter() {
    let responder = Consumer::start(&amqp_url()).await;
    let echo = responder.declare_queue("", QueueOptions::default()).await;
    let reply = Responder { content_type: Some("text/plain".into()), headers: json!({"x-http-status": 201}), ..Responder::echo("echo: ") };
    responder.respond(&echo, reply).await;
    let silent = responder.declare_queue("", QueueOptions::default()).await;
    responder.respond(&silent, Responder::silent()).await;
    let slow = responder.declare_queue("", QueueOptions::default()).await;
    responder.respond(&slow, Responder { delay: Duration::from_millis(600), ..Responder::echo("slow: ") }).await;
    let config = json!({
        "services": [events_service(&amqp_url())],
        "routes": [
            route("echo", "/echo", json!({"exchange": "", "routing_key": echo, "mode": "rpc"})),
            route("slow-impatient", "/slow-impatient", json!({"exchange": "", "routing_key": slow, "mode": "rpc", "timeout_ms": 300})),
            route("slow", "/slow", json!({"exchange": "", "routing_key": slow, "mode": "rpc", "timeout_ms": 5000})),
            route("silent", "/silent", json!({"exchange": "", "routing_key": silent, "mode": "rpc", "timeout_ms": 500})),
            route("patient", "/patient", json!({"exchange": "", "routing_key": silent, "mode": "rpc", "timeout_ms": 60000})),
        ],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;

    let (status, headers, body, _) = post(&format!("{}/echo", dp.proxy_url), "ping", &[("content-type", "text/plain")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, "echo: ping"), "the reply's body, and its x-http-status");
    assert_eq!(headers["content-type"], "text/plain", "the reply's content type");
    let request = responder.next_message().await;
    assert_eq!(request.body, b"ping");
    assert!(request.reply_to.as_deref().is_some_and(|to| to.starts_with("amq.rabbitmq.reply-to")), "{:?}", request.reply_to);
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(request.headers["x-request-id"], request_id, "the request id travels as a header");
    assert_eq!(request.correlation_id.as_deref(), Some(request_id), "the correlation id is the request id");

    // One request id, so one correlation id, for all 50: each call still gets its own reply.
    let calls = (0..50).map(|i| {
        let url = format!("{}/echo", dp.proxy_url);
        async move { (i, post(&url, &format!("call {i}"), &[("x-request-id", "one-id-for-all")]).await) }
    });
    for (i, (status, _, body, _)) in futures::future::join_all(calls).await {
        assert_eq!((status, body), (StatusCode::CREATED, format!("echo: call {i}")), "call {i} got its own reply");
    }

    // A reply that comes after its call timed out never answers a later call with the same request id.
    let same_id = [("x-request-id", "client-chosen-id")];
    let (status, _, body, _) = post(&format!("{}/slow-impatient", dp.proxy_url), "first", &same_id).await;
    assert_error(status, &body, StatusCode::GATEWAY_TIMEOUT, "amqp_no_reply");
    let (status, headers, body, _) = post(&format!("{}/slow", dp.proxy_url), "second", &same_id).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow: second"), "its own reply, not the first call's late one");
    assert_eq!(headers["x-request-id"], "client-chosen-id");
    let strays = dp.metric("portico_amqp_stray_replies_total{service=\"events\"}").await;
    assert_eq!(strays.unwrap_or(0.0), 0.0, "the first call's channel was closed: the broker dropped its late reply");

    let waiters = "portico_amqp_rpc_waiters{service=\"events\"}";
    let (status, _, body, took) = post(&format!("{}/silent", dp.proxy_url), "hello?", &[]).await;
    assert!(assert_error(status, &body, StatusCode::GATEWAY_TIMEOUT, "amqp_no_reply").contains("500 ms"), "{body}");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(dp.metric(waiters).await, Some(0.0), "the waiter went with the call");

    // A client that gives up takes its waiter with it, long before the route's timeout.
    let impatient = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(300)).build().unwrap();
    assert!(impatient.post(format!("{}/patient", dp.proxy_url)).body("anyone?").send().await.is_err());
    eventually("the waiter of a call the client left to go", Duration::from_secs(10), || async {
        (dp.metric(waiters).await == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stopped_or_blocked_broker_is_a_quick_503_and_publishing_resumes_without_a_restart() {
    let mut broker = ThrowawayBroker::start().await;
    let queue = unique("durable");
    Consumer::start(&broker.url()).await.declare_queue(&queue, QueueOptions { durable: true, ..QueueOptions::default() }).await;
    let config = json!({
        "services": [events_service(&broker.url())],
        "routes": [route("events", "/events", json!({"exchange": "", "routing_key": queue, "timeout_ms": 3000}))],
    });
    let (_db, _cp, dp) = serve_config(&config, &[]).await;
    let url = format!("{}/events", dp.proxy_url);
    let published = || async {
        let (status, _, body, _) = post(&url, "event", &[]).await;
        (status == StatusCode::ACCEPTED).then_some(body)
    };
    eventually("a first publish", Duration::from_secs(10), published).await;
    // Unavailable: answered at once, never after a hang, and told when to retry.
    let quick_503 = || async {
        let (status, headers, body, took) = post(&url, "event", &[]).await;
        assert!(took < Duration::from_secs(2), "answered after {took:?}: {status} {body}");
        (status == StatusCode::SERVICE_UNAVAILABLE).then(|| {
            assert_eq!(headers["retry-after"], "5", "{headers:?}");
            assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "amqp_unavailable")
        })
    };

    broker.stop().await;
    let error = eventually("a 503 once the broker is gone", Duration::from_secs(10), quick_503).await;
    assert!(error.contains("'events'"), "{error}");
    broker.start_again().await;
    eventually("a publish once the broker is back", Duration::from_secs(30), published).await;

    broker.raise_memory_alarm().await;
    let error = eventually("a 503 while the broker blocks publishers", Duration::from_secs(10), quick_503).await;
    assert!(error.contains("blocks publishers"), "{error}");
    broker.clear_memory_alarm().await;
    eventually("a publish once the alarm is cleared", Duration::from_secs(10), published).await;
    let peer = Consumer::start(&broker.url()).await;
    assert!(peer.message_count(&queue).await >= 3, "the confirmed messages are in the durable queue");
}
