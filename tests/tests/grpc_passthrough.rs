//! gRPC through the gateway, against a real tonic server
//! (`portico_test_support::grpc`): native clients passed through over
//! HTTP/2 to `grpc` (h2c) and `grpcs` (TLS, ALPN h2) services, with their
//! streams, trailers and statuses; the gateway's own refusals as gRPC
//! statuses; `grpc-timeout`; `grpc-status` counted by the circuit breaker
//! and the active health check; gRPC-Web (binary and text) over HTTP/1.1.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_test_support::grpc::echo::echo_client::EchoClient;
use portico_test_support::grpc::echo::{FailRequest, SayReply, SayRequest, StreamRequest};
use portico_test_support::grpc::health::HealthCheckRequest;
use portico_test_support::grpc::health::health_client::HealthClient;
use portico_test_support::tls::TestCa;
use portico_test_support::{ControlPlane, DataPlane, GrpcUpstream, TestDb, eventually, free_port, serve_config};
use prost::Message;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const DEADLINE: Duration = Duration::from_secs(10);
const KEY: &str = "alice-key-0123456789";

struct Gateway {
    _db: TestDb,
    _cp: ControlPlane,
    dp: DataPlane,
    echo: GrpcUpstream,
    secure: GrpcUpstream,
    limited: GrpcUpstream,
}

impl Gateway {
    /// A client of the gateway for the routes of `host` (h2c, prior knowledge).
    async fn client(&self, host: &str) -> EchoClient<Channel> {
        EchoClient::new(self.channel(host).await)
    }

    async fn channel(&self, host: &str) -> Channel {
        let port = self.dp.proxy_url.rsplit(':').next().unwrap();
        Endpoint::from_shared(self.dp.proxy_url.clone())
            .unwrap()
            .origin(format!("http://{host}:{port}").parse().unwrap())
            .connect()
            .await
            .unwrap()
    }
}

/// `echo` (grpc) at `/echo.v1.Echo` with `Fail` behind key-auth, and by
/// host: `secure.test` a grpcs service, `down.test` one nothing listens
/// for, `fragile.test` one with a circuit breaker, `checked.test` one with
/// active health checks, `limited.test` one taking 5 streams per
/// connection, and `retrying.test` the echo service with retries
/// on `503` for any call.
async fn gateway() -> Gateway {
    let echo = GrpcUpstream::start().await;
    let ca = TestCa::new();
    let secure = GrpcUpstream::start_tls(&ca.issue(&["localhost"])).await;
    let limited = GrpcUpstream::start_limited(5).await;
    let grpc = |name: &str, url: String| json!({"name": name, "protocol": "grpc", "targets": [{"url": url}]});
    let mut fragile = grpc("fragile", echo.url());
    fragile["circuit_breaker"] = json!({"min_requests": 2, "failure_rate_percent": 30, "window_ms": 60000, "open_ms": 60000});
    let mut checked = grpc("checked", echo.url());
    checked["health_check"] = json!({"active": {"interval_ms": 100, "timeout_ms": 90, "healthy_threshold": 1, "unhealthy_threshold": 1}});
    let by_host = |name: &str| json!({"name": name, "service": name, "paths": ["/"], "hosts": [format!("{name}.test")]});
    let config = json!({
        "services": [
            grpc("echo", echo.url()),
            {"name": "secure", "protocol": "grpcs", "targets": [{"url": secure.tls_url()}], "tls": {"ca_bundle": ca.cert_pem}},
            grpc("down", format!("grpc://127.0.0.1:{}", free_port())),
            fragile,
            checked,
            grpc("limited", limited.url()),
        ],
        "routes": [
            {"name": "echo", "service": "echo", "paths": ["/echo.v1.Echo"], "strip_path": false},
            {"name": "guarded", "service": "echo", "paths": ["/echo.v1.Echo/Fail"], "strip_path": false, "policies": [{"type": "key-auth"}]},
            by_host("secure"),
            by_host("down"),
            by_host("fragile"),
            by_host("checked"),
            by_host("limited"),
            {"name": "retrying", "service": "echo", "paths": ["/"], "hosts": ["retrying.test"],
             "retries": {"attempts": 2, "on": ["connect-failure", "503"], "non_idempotent": true}},
        ],
        "consumers": [{"username": "alice"}],
        "credentials": [{"consumer": "alice", "type": "key-auth", "key": KEY}],
    });
    let (db, cp, dp) = serve_config(&config, &[]).await;
    Gateway { _db: db, _cp: cp, dp, echo, secure, limited }
}

fn with_key<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-api-key", KEY.parse().unwrap());
    request
}

fn fail(code: Code, message: &str) -> Request<FailRequest> {
    with_key(FailRequest { code: code as i32, message: message.to_owned() })
}

#[tokio::test]
async fn native_calls_pass_through_with_streams_metadata_trailers_and_statuses() {
    let gw = gateway().await;
    let mut client = gw.client("localhost").await;

    let mut unary = Request::new(SayRequest { text: "hello".into(), delay_ms: 0 });
    unary.metadata_mut().insert("x-echo-trace", "t-1".parse().unwrap());
    let reply = client.say(unary).await.unwrap();
    assert_eq!(reply.metadata().get("x-echo-trace").unwrap(), "t-1", "request metadata reaches the server, response metadata comes back");
    assert_eq!(reply.into_inner().text, "hello");

    let started = Instant::now();
    let request = StreamRequest { text: "tick".into(), count: 3, delay_ms: 300, fail_code: 0 };
    let mut stream = client.stream(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.text, "tick 0");
    assert!(started.elapsed() < Duration::from_millis(500), "the first message arrives before the stream ends");
    let mut texts = vec![first.text];
    while let Some(reply) = stream.message().await.unwrap() {
        texts.push(reply.text);
    }
    assert_eq!(texts, ["tick 0", "tick 1", "tick 2"]);
    let trailers = stream.trailers().await.unwrap().expect("the trailers arrive");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");

    let upload = futures::stream::iter(["a", "b", "c"].map(|text| SayRequest { text: text.into(), delay_ms: 0 }));
    let collected = client.collect(upload).await.unwrap().into_inner();
    assert_eq!((collected.text.as_str(), collected.index), ("a b c", 3), "client streaming arrives whole");

    for (code, message) in [(Code::NotFound, "no such echo"), (Code::InvalidArgument, "bad text: é 100%"), (Code::Unavailable, "resting")]
    {
        let status = client.fail(fail(code, message)).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message), "the server's status passes as it is");
    }

    let counted = r#"portico_grpc_requests_total{route="echo",method="echo.v1.Echo/Say",code="OK"}"#;
    eventually("the call counted by method", DEADLINE, || async { gw.dp.metric(counted).await.filter(|n| *n >= 1.0) }).await;
    let failed = r#"portico_grpc_requests_total{route="guarded",method="echo.v1.Echo/Fail",code="NOT_FOUND"}"#;
    eventually("the failed call counted by code", DEADLINE, || async { gw.dp.metric(failed).await.filter(|n| *n >= 1.0) }).await;

    let mut endless =
        client.stream(StreamRequest { text: "long".into(), count: 1000, delay_ms: 50, fail_code: 0 }).await.unwrap().into_inner();
    endless.message().await.unwrap().unwrap();
    drop(endless);
    eventually("the abandoned call cancelled upstream", DEADLINE, || async { (gw.echo.cancelled_streams() == 1).then_some(()) }).await;

    let secure = gw.client("secure.test").await;
    let calls = (0..20).map(|i| {
        let mut secure = secure.clone();
        async move { secure.say(SayRequest { text: format!("over tls {i}"), delay_ms: 200 }).await.unwrap().into_inner().text }
    });
    let replies = futures::future::join_all(calls).await;
    assert_eq!(replies[19], "over tls 19", "a grpcs service, verified against its CA");
    assert_eq!(gw.secure.connections(), 1, "20 calls at once share one multiplexed connection");

    let limited = gw.client("limited.test").await;
    limited.clone().say(SayRequest { text: "warm".into(), delay_ms: 0 }).await.unwrap();
    let calls = (0..6).map(|i| {
        let mut limited = limited.clone();
        async move { limited.say(SayRequest { text: format!("{i}"), delay_ms: 1500 }).await.map(|_| ()) }
    });
    assert!(futures::future::join_all(calls).await.iter().all(Result::is_ok));
    assert_eq!(gw.limited.connections(), 2, "5 streams on the first connection, then a full one makes the pool open another");
}

#[tokio::test]
async fn the_gateways_own_refusals_are_grpc_statuses() {
    let gw = gateway().await;
    let mut client = gw.client("localhost").await;

    let refused = client.fail(Request::new(FailRequest { code: 0, message: String::new() })).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(gw.echo.calls(), 0);

    let mut unrouted = HealthClient::new(gw.channel("localhost").await);
    let status = unrouted.check(HealthCheckRequest { service: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "no route: {status:?}");
    assert!(status.message().contains("no route matches"), "{}", status.message());

    let mut down = gw.client("down.test").await;
    let status = down.say(SayRequest { text: "anyone?".into(), delay_ms: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "upstream down: {status:?}");

    // By hand: tonic's client would enforce its own grpc-timeout first.
    let started = Instant::now();
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let slow = h2
        .post(format!("{}/echo.v1.Echo/Say", gw.dp.proxy_url))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(frame(&SayRequest { text: "slow".into(), delay_ms: 5000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.headers()["grpc-status"], "4", "the client's grpc-timeout: DEADLINE_EXCEEDED");
    let message = slow.headers()["grpc-message"].to_str().unwrap();
    assert_eq!(message, "upstream 'echo' did not answer in time", "the gateway's deadline");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at the deadline, not the server's 5 s");
}

#[tokio::test]
async fn grpc_statuses_drive_retries_the_circuit_and_the_health_check() {
    let gw = gateway().await;
    // By hand, with a declared length: a body is kept for a retry only then.
    let proxy: std::net::SocketAddr = gw.dp.proxy_url.trim_start_matches("http://").parse().unwrap();
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().resolve("retrying.test", proxy).build().unwrap();
    let failing = |code: Code| {
        h2.post(format!("http://retrying.test:{}/echo.v1.Echo/Fail", proxy.port()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(frame(&FailRequest { code: code as i32, message: "busy".into() }))
    };
    let before = gw.echo.calls();
    let answer = failing(Code::Unavailable).send().await.unwrap();
    assert_eq!(answer.headers()["grpc-status"], "14");
    assert_eq!(gw.echo.calls() - before, 2, "an immediate UNAVAILABLE is tried again");
    let before = gw.echo.calls();
    let answer = failing(Code::Internal).send().await.unwrap();
    assert_eq!(answer.headers()["grpc-status"], "13");
    assert_eq!(gw.echo.calls() - before, 1, "other failures may have done something: not retried");

    let mut fragile = gw.client("fragile.test").await;
    for _ in 0..5 {
        let status = fragile.fail(FailRequest { code: Code::NotFound as i32, message: "an answer".into() }).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    fragile.say(SayRequest { text: "still closed".into(), delay_ms: 0 }).await.expect("NOT_FOUND is an answer, not a failure");
    for _ in 0..2 {
        let status = fragile.fail(FailRequest { code: Code::Internal as i32, message: "broken".into() }).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
    }
    // Failures in the trailers, after a message, count too.
    for _ in 0..2 {
        let request = StreamRequest { text: "then down".into(), count: 1, delay_ms: 0, fail_code: Code::Unavailable as i32 };
        let Ok(response) = fragile.stream(request).await else { continue }; // the circuit opened
        let mut stream = response.into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().text, "then down 0");
        assert_eq!(stream.message().await.unwrap_err().code(), Code::Unavailable);
    }
    let status = fragile.say(SayRequest { text: "open?".into(), delay_ms: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("circuit is open"), "{}", status.message());

    let mut checked = gw.client("checked.test").await;
    checked.say(SayRequest { text: "up".into(), delay_ms: 0 }).await.unwrap();
    gw.echo.set_serving(false);
    eventually("the health check to take the target out", DEADLINE, || {
        let mut checked = checked.clone();
        async move {
            let status = checked.say(SayRequest { text: "up?".into(), delay_ms: 0 }).await.err()?;
            (status.code() == Code::Unavailable && status.message().contains("no healthy target")).then_some(())
        }
    })
    .await;
    gw.echo.set_serving(true);
    eventually("the health check to bring it back", DEADLINE, || {
        let mut checked = checked.clone();
        async move { checked.say(SayRequest { text: "back".into(), delay_ms: 0 }).await.ok().map(|_| ()) }
    })
    .await;
}

#[tokio::test]
async fn a_clients_short_grpc_timeout_is_not_counted_against_the_target() {
    let gw = gateway().await;
    let proxy: std::net::SocketAddr = gw.dp.proxy_url.trim_start_matches("http://").parse().unwrap();
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().resolve("fragile.test", proxy).build().unwrap();
    // An impatient client: the gateway gives up at its 20 ms, long before the server's 300 ms.
    for _ in 0..4 {
        let answer = h2
            .post(format!("http://fragile.test:{}/echo.v1.Echo/Say", proxy.port()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "20m")
            .body(frame(&SayRequest { text: "hurry".into(), delay_ms: 300 }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.headers()["grpc-status"], "4", "the client's deadline, never an open circuit");
    }
    let mut fragile = gw.client("fragile.test").await;
    fragile.say(SayRequest { text: "patient".into(), delay_ms: 0 }).await.expect("the client's own deadline is not the target failing");
}

/// One gRPC message: uncompressed flag, length, bytes.
fn frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&bytes);
    framed
}

/// The messages and the trailer frame's lines of a gRPC-Web body.
fn unframe(mut body: &[u8]) -> (Vec<SayReply>, Vec<String>) {
    let (mut replies, mut trailers) = (Vec::new(), Vec::new());
    while !body.is_empty() {
        let flag = body[0];
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + length];
        if flag & 0x80 != 0 {
            trailers = std::str::from_utf8(payload).unwrap().split("\r\n").filter(|l| !l.is_empty()).map(str::to_owned).collect();
        } else {
            replies.push(SayReply::decode(payload).unwrap());
        }
        body = &body[5 + length..];
    }
    (replies, trailers)
}

async fn grpc_web(gw: &Gateway, method: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    let client = reqwest::Client::builder().no_proxy().http1_only().build().unwrap();
    client
        .post(format!("{}/echo.v1.Echo/{method}", gw.dp.proxy_url))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("x-api-key", KEY)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn grpc_web_clients_over_http1_get_messages_and_a_trailer_frame() {
    let gw = gateway().await;

    let request = frame(&StreamRequest { text: "web".into(), count: 2, delay_ms: 10, fail_code: 0 });
    let response = grpc_web(&gw, "Stream", "application/grpc-web+proto", request.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.headers()["content-type"], "application/grpc-web+proto");
    let (replies, trailers) = unframe(&response.bytes().await.unwrap());
    assert_eq!(replies.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["web 0", "web 1"]);
    assert!(trailers.contains(&"grpc-status: 0".to_owned()), "{trailers:?}");

    // Text mode: base64 both ways, the request in two padded runs.
    let say = frame(&SayRequest { text: "in text".into(), delay_ms: 0 });
    let (head, tail) = say.split_at(4);
    let text = format!("{}{}", STANDARD.encode(head), STANDARD.encode(tail));
    let response = grpc_web(&gw, "Say", "application/grpc-web-text", text.into_bytes()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc-web-text");
    let decoded = STANDARD.decode(response.bytes().await.unwrap()).unwrap();
    let (replies, trailers) = unframe(&decoded);
    assert_eq!(replies[0].text, "in text");
    assert!(trailers.contains(&"grpc-status: 0".to_owned()), "{trailers:?}");

    // A failed call: its status in the headers (trailers-only) or the trailer frame.
    let failing = frame(&FailRequest { code: Code::NotFound as i32, message: "gone".into() });
    let response = grpc_web(&gw, "Fail", "application/grpc-web+proto", failing).await;
    assert_eq!(response.status(), 200);
    let in_headers = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    let (_, trailers) = unframe(&response.bytes().await.unwrap());
    let status = in_headers.or_else(|| trailers.iter().find_map(|l| l.strip_prefix("grpc-status: ").map(str::to_owned)));
    assert_eq!(status.as_deref(), Some("5"));

    // The gateway's refusal, in gRPC-Web's form.
    let client = reqwest::Client::builder().no_proxy().http1_only().build().unwrap();
    let refused = client
        .post(format!("{}/echo.v1.Echo/Fail", gw.dp.proxy_url))
        .header("content-type", "application/grpc-web+proto")
        .body(frame(&FailRequest { code: 0, message: String::new() }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 200);
    assert_eq!(refused.headers()["content-type"], "application/grpc-web+proto");
    assert_eq!(refused.headers()["grpc-status"], "16");
}
