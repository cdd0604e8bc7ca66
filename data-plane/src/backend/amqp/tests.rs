//! The AMQP backend against a real RabbitMQ: `PORTICO_TEST_AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2F`, which
//! `./scripts/test` makes sure answers; in CI it must be set). Tests fail,
//! never skip, when the broker does not answer. Each test declares its
//! own exchange and queues under a unique name and deletes them.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::*;

fn broker_url() -> String {
    match std::env::var("PORTICO_TEST_AMQP_URL") {
        Ok(url) => url,
        Err(_) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("PORTICO_TEST_AMQP_URL must be set in CI (./scripts/test starts a broker)")
        }
        Err(_) => "amqp://guest:guest@127.0.0.1:5672/%2F".to_owned(),
    }
}

fn broker_settings(targets: Vec<String>, pool_size: usize) -> BrokerSettings {
    BrokerSettings {
        service: "events".into(),
        targets,
        credentials: None,
        tls: TlsSettings::default(),
        pool_size,
        connect_timeout: Duration::from_secs(3),
        max_backoff: Duration::from_secs(2),
        retry_after: Duration::from_secs(5),
    }
}

fn message_settings(exchange: &str, timeout: Duration) -> MessageSettings {
    MessageSettings {
        exchange: exchange.to_owned(),
        mandatory: true,
        persistent: true,
        timeout,
        content_type: None,
        headers: MessageSettings::allow_list(&["x-tenant"], None).unwrap(),
    }
}

/// A broker of the test broker, connected.
async fn connected_broker(pool_size: usize) -> Arc<Broker> {
    let url = broker_url();
    let broker = Broker::new(broker_settings(vec![url.clone()], pool_size), None).unwrap();
    assert!(
        broker.wait_available(Duration::from_secs(10)).await,
        "RabbitMQ does not answer at {url}; run ./scripts/test, which starts one, or set PORTICO_TEST_AMQP_URL"
    );
    broker
}

/// A test's own exchange (direct) and queues on it, deleted on `cleanup`.
struct Topology {
    connection: Connection,
    channel: Channel,
    exchange: String,
    queues: Vec<String>,
}

impl Topology {
    async fn new(test: &str) -> Self {
        let connection = Connection::connect(&broker_url(), ConnectionProperties::default()).await.expect("test broker");
        let channel = connection.create_channel().await.unwrap();
        let exchange = format!("portico-test-{test}-{}", uuid::Uuid::new_v4());
        channel
            .exchange_declare(exchange.as_str().into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap();
        Self { connection, channel, exchange, queues: Vec::new() }
    }

    /// A queue bound with `routing_key`.
    async fn queue(&mut self, routing_key: &str, arguments: FieldTable) -> String {
        let queue = format!("{}-{routing_key}", self.exchange);
        self.channel.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), arguments).await.unwrap();
        self.channel
            .queue_bind(
                queue.as_str().into(),
                self.exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.queues.push(queue.clone());
        queue
    }

    async fn cleanup(self) {
        for queue in &self.queues {
            let _ = self.channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
        let _ = self.channel.exchange_delete(self.exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "acme".parse().unwrap());
    headers.insert("authorization", "Bearer secret".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    headers
}

fn text(value: &Option<ShortString>) -> Option<&str> {
    value.as_ref().map(ShortString::as_str)
}

#[tokio::test]
async fn a_publish_is_answered_once_confirmed_and_the_message_carries_the_request() {
    let broker = connected_broker(2).await;
    let mut topology = Topology::new("confirm").await;
    let queue = topology.queue("created", FieldTable::default()).await;
    let settings = message_settings(&topology.exchange, Duration::from_secs(5));
    let message = Message::from_request(&settings, &request_headers(), "req-7", Bytes::from_static(b"{\"id\":1}"));
    let message_id = broker.publish(&settings, "created", message).await.unwrap();

    let got = topology.channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("the message");
    let properties = &got.delivery.properties;
    assert_eq!(got.delivery.data, b"{\"id\":1}");
    assert_eq!(text(properties.message_id()), Some(message_id.as_str()));
    assert_eq!(text(properties.correlation_id()), Some("req-7"));
    assert_eq!(text(properties.content_type()), Some("application/json"));
    assert_eq!(*properties.delivery_mode(), Some(2));
    let headers = properties.headers().as_ref().unwrap().inner();
    assert_eq!(headers.get("x-tenant"), Some(&AMQPValue::LongString("acme".into())));
    assert_eq!(headers.get("x-request-id"), Some(&AMQPValue::LongString("req-7".into())));
    assert!(!headers.contains_key("authorization"));
    assert_eq!(broker.channels_in_use(), 0);
    topology.cleanup().await;
}

#[tokio::test]
async fn a_mandatory_message_no_queue_takes_is_unroutable() {
    let broker = connected_broker(2).await;
    let topology = Topology::new("unroutable").await;
    let settings = message_settings(&topology.exchange, Duration::from_secs(5));
    let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::new());
    let error = broker.publish(&settings, "nobody", message.clone()).await.unwrap_err();
    assert!(matches!(&error, AmqpError::Unroutable { reply_code: 312, .. }), "{error:?}");
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    // Without `mandatory` the broker drops it silently, and acks.
    let optional = MessageSettings { mandatory: false, ..settings };
    assert!(broker.publish(&optional, "nobody", message).await.is_ok());
    topology.cleanup().await;
}

#[tokio::test]
async fn a_message_a_full_queue_rejects_is_nacked() {
    let broker = connected_broker(2).await;
    let mut topology = Topology::new("nack").await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    topology.queue("full", arguments).await;
    let settings = message_settings(&topology.exchange, Duration::from_secs(5));
    let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::from_static(b"1"));
    broker.publish(&settings, "full", message.clone()).await.unwrap();
    let error = broker.publish(&settings, "full", message).await.unwrap_err();
    assert!(matches!(error, AmqpError::Nacked { retry_after_s: 5, .. }), "{error:?}");
    assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    topology.cleanup().await;
}

#[tokio::test]
async fn a_channel_closed_over_a_missing_exchange_is_replaced() {
    // One channel: the next publish can only work on a new one.
    let broker = connected_broker(1).await;
    let mut topology = Topology::new("deleted").await;
    topology.queue("ok", FieldTable::default()).await;
    let missing = message_settings(&format!("{}-missing", topology.exchange), Duration::from_secs(5));
    let message = Message::from_request(&missing, &HeaderMap::new(), "r", Bytes::new());
    let error = broker.publish(&missing, "ok", message.clone()).await.unwrap_err();
    match &error {
        AmqpError::ChannelClosed { exchange, reason } => {
            assert_eq!(exchange, &missing.exchange);
            assert!(reason.contains("404"), "{reason}");
        }
        other => panic!("expected a closed channel, got {other:?}"),
    }
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    let present = message_settings(&topology.exchange, Duration::from_secs(5));
    broker.publish(&present, "ok", message).await.unwrap();
    assert!(broker.is_available());
    topology.cleanup().await;
}

/// How the test's responder answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// With the request's correlation id, status `201` and the body
    /// `<correlation id>: <request body>`.
    Echo,
    /// As `Echo`, each request after this long.
    After(Duration),
    /// Never.
    Silent,
    /// First a reply with a correlation id nobody awaits, then as `Echo`.
    StrayFirst,
}

/// Answers each request on `queue` to its `reply_to`, each independently of the others.
async fn responder(queue: &str, answer: Answer) -> tokio::task::JoinHandle<()> {
    let connection = Connection::connect(&broker_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut requests = channel
        .basic_consume(queue.into(), "responder".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    tokio::spawn(async move {
        let _connection = connection;
        while let Some(Ok(request)) = requests.next().await {
            let delay = match answer {
                Answer::Silent => continue,
                Answer::After(delay) => delay,
                Answer::Echo | Answer::StrayFirst => Duration::ZERO,
            };
            let channel = channel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let reply_to = request.properties.reply_to().clone().unwrap();
                if answer == Answer::StrayFirst {
                    let stray = BasicProperties::default().with_correlation_id("not-a-call".into());
                    channel.basic_publish("".into(), reply_to.clone(), BasicPublishOptions::default(), b"stray", stray).await.unwrap();
                }
                let mut headers = FieldTable::default();
                headers.insert(STATUS_HEADER.into(), AMQPValue::ShortInt(201));
                let correlation_id = request.properties.correlation_id().clone().unwrap();
                let body = [correlation_id.as_str().as_bytes(), b": ", &request.data].concat();
                let properties = BasicProperties::default()
                    .with_content_type("text/plain".into())
                    .with_headers(headers)
                    .with_correlation_id(correlation_id);
                // The reply-to of a channel closed meanwhile refuses it: nothing to do then.
                let _ = channel.basic_publish("".into(), reply_to, BasicPublishOptions::default(), &body, properties).await;
            });
        }
    })
}

#[tokio::test]
async fn an_rpc_answers_with_the_reply_and_concurrent_calls_never_cross() {
    let broker = connected_broker(4).await;
    let mut topology = Topology::new("rpc").await;
    let queue = topology.queue("echo", FieldTable::default()).await;
    let responder = responder(&queue, Answer::Echo).await;
    let settings = message_settings(&topology.exchange, Duration::from_secs(10));

    let message = Message::from_request(&settings, &request_headers(), "req-1", Bytes::from_static(b"ping"));
    let reply = broker.rpc(&settings, "echo", message).await.unwrap();
    let body = Bytes::from_static(b"req-1: ping"); // The correlation id is the request id.
    assert_eq!(reply, Reply { status: StatusCode::CREATED, content_type: Some("text/plain".into()), body });
    let response = reply.into_response();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["content-type"], "text/plain");

    // The same request id, so the same correlation id, for all: each call holds its own channel.
    let calls = (0..50).map(|n| {
        let broker = Arc::clone(&broker);
        let settings = settings.clone();
        async move {
            let message = Message::from_request(&settings, &HeaderMap::new(), "same-request-id", Bytes::from(format!("call {n}")));
            (n, broker.rpc(&settings, "echo", message).await)
        }
    });
    for (n, reply) in futures::future::join_all(calls).await {
        assert_eq!(reply.unwrap().body, format!("same-request-id: call {n}"), "call {n} got its own reply");
    }
    assert_eq!(broker.rpc_waiters(), 0);
    assert_eq!(broker.channels_in_use(), 0);
    assert_eq!(broker.stray_replies(), 0);
    responder.abort();
    topology.cleanup().await;
}

#[tokio::test]
async fn an_rpc_without_reply_times_out_and_leaves_no_waiter() {
    let broker = connected_broker(2).await;
    let mut topology = Topology::new("silent").await;
    let queue = topology.queue("silent", FieldTable::default()).await;
    let responder = responder(&queue, Answer::Silent).await;
    let settings = message_settings(&topology.exchange, Duration::from_millis(300));
    let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::new());
    let started = std::time::Instant::now();
    let error = broker.rpc(&settings, "silent", message.clone()).await.unwrap_err();
    assert!(matches!(error, AmqpError::NoReply { timeout_ms: 300, .. }), "{error:?}");
    assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(broker.rpc_waiters(), 0);
    assert_eq!(broker.channels_in_use(), 0);

    // A client going away (the call's future dropped) removes its waiter too.
    let patient = MessageSettings { timeout: Duration::from_secs(60), ..settings };
    let call = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move { broker.rpc(&patient, "silent", message).await }
    });
    let waiting = async {
        while broker.rpc_waiters() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the call waits for its reply");
    call.abort();
    let _ = call.await;
    assert_eq!(broker.rpc_waiters(), 0);
    assert_eq!(broker.channels_in_use(), 0);
    responder.abort();
    topology.cleanup().await;
}

#[tokio::test]
async fn a_late_reply_never_answers_a_later_call_with_the_same_request_id() {
    // One channel: a later call could only be answered on the channel the first one used, were it pooled again.
    let broker = connected_broker(1).await;
    let mut topology = Topology::new("late").await;
    let queue = topology.queue("slow", FieldTable::default()).await;
    let responder = responder(&queue, Answer::After(Duration::from_millis(600))).await;
    let impatient = message_settings(&topology.exchange, Duration::from_millis(300));
    let first = Message::from_request(&impatient, &HeaderMap::new(), "same-request-id", Bytes::from_static(b"first"));
    let error = broker.rpc(&impatient, "slow", first).await.unwrap_err();
    assert!(matches!(error, AmqpError::NoReply { timeout_ms: 300, .. }), "{error:?}");

    // Sent before the first call's reply comes (600 ms after it), with the same request id.
    let patient = MessageSettings { timeout: Duration::from_secs(5), ..impatient };
    let second = Message::from_request(&patient, &HeaderMap::new(), "same-request-id", Bytes::from_static(b"second"));
    let reply = broker.rpc(&patient, "slow", second).await.unwrap();
    assert_eq!(reply.body, Bytes::from_static(b"same-request-id: second"), "its own reply, not the first call's late one");
    // The first call's channel was closed 300 ms before its reply came: the broker dropped the reply.
    assert_eq!(broker.stray_replies(), 0, "the late reply reached no channel of ours");
    assert_eq!(broker.rpc_waiters(), 0);
    assert_eq!(broker.channels_in_use(), 0);
    responder.abort();
    topology.cleanup().await;
}

#[tokio::test]
async fn calls_beyond_the_pool_wait_for_a_channel_within_their_timeout() {
    let broker = connected_broker(1).await;
    let mut topology = Topology::new("busy").await;
    let queue = topology.queue("slow", FieldTable::default()).await;
    let responder = responder(&queue, Answer::After(Duration::from_millis(400))).await;
    let patient = message_settings(&topology.exchange, Duration::from_secs(5));
    let impatient = MessageSettings { timeout: Duration::from_millis(200), ..patient.clone() };
    let call = |settings: MessageSettings, body: &'static [u8]| {
        let broker = Arc::clone(&broker);
        async move {
            let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::from_static(body));
            broker.rpc(&settings, "slow", message).await
        }
    };
    let holder = tokio::spawn(call(patient.clone(), b"holder"));
    let holding = async {
        while broker.rpc_waiters() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), holding).await.expect("the first call holds the one channel");
    let (waiter, refused) = tokio::join!(call(patient, b"waiter"), call(impatient, b"refused"));
    assert_eq!(holder.await.unwrap().unwrap().body, Bytes::from_static(b"r: holder"));
    assert_eq!(waiter.unwrap().body, Bytes::from_static(b"r: waiter"), "a channel freed within its timeout");
    let refused = refused.unwrap_err();
    assert!(
        matches!(&refused, AmqpError::Unavailable { reason, .. } if reason.contains("every channel of the pool is busy")),
        "{refused:?}"
    );
    assert_eq!((refused.status(), refused.code()), (StatusCode::SERVICE_UNAVAILABLE, "amqp_unavailable"));
    assert_eq!(broker.rpc_waiters(), 0);
    assert_eq!(broker.channels_in_use(), 0);
    responder.abort();
    topology.cleanup().await;
}

#[tokio::test]
async fn a_broker_nobody_listens_for_is_unavailable_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broker = Broker::new(broker_settings(vec![format!("amqp://127.0.0.1:{port}/%2F")], 2), None).unwrap();
    let settings = message_settings("anything", Duration::from_secs(10));
    let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::new());
    let started = std::time::Instant::now();
    let error = broker.publish(&settings, "k", message.clone()).await.unwrap_err();
    assert!(matches!(error, AmqpError::Unavailable { retry_after_s: 5, .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // Once known down, at once.
    let started = std::time::Instant::now();
    assert!(broker.publish(&settings, "k", message).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(100), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_broker_is_kept_across_versions_while_its_settings_are_unchanged() {
    let settings = broker_settings(vec!["amqp://127.0.0.1:1/%2F".into()], 2);
    let first = Broker::new(settings.clone(), None).unwrap();
    let same = Broker::new(settings.clone(), Some(&first)).unwrap();
    assert!(Arc::ptr_eq(&first, &same));
    let changed = Broker::new(BrokerSettings { pool_size: 3, ..settings }, Some(&first)).unwrap();
    assert!(!Arc::ptr_eq(&first, &changed));
    let error = Broker::new(broker_settings(vec!["http://nope".into()], 1), None).unwrap_err();
    assert!(error.contains("http://nope"), "{error}");
}

/// A TCP relay to the test broker that can be cut (every connection
/// dropped, nothing listening) and restored on the same port.
struct Relay {
    addr: std::net::SocketAddr,
    tasks: tokio::task::JoinSet<()>,
}

impl Relay {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relay = Self { addr, tasks: tokio::task::JoinSet::new() };
        relay.serve(listener);
        relay
    }

    fn url(&self) -> String {
        let broker = lapin::uri::AMQPUri::from_str(&broker_url()).unwrap();
        let vhost = percent_encoding::utf8_percent_encode(&broker.vhost, percent_encoding::NON_ALPHANUMERIC);
        let user = &broker.authority.userinfo;
        format!("amqp://{}:{}@{}/{vhost}", user.username, user.password, self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let broker = lapin::uri::AMQPUri::from_str(&broker_url()).unwrap();
        let upstream = format!("{}:{}", broker.authority.host, broker.authority.port);
        self.tasks.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    }

    /// Drops every connection and stops listening.
    async fn cut(&mut self) {
        self.tasks.shutdown().await;
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn a_lost_connection_fails_fast_and_recovers_without_a_restart() {
    let mut relay = Relay::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // The first target is down: the second serves (failover).
    let targets = vec![format!("amqp://127.0.0.1:{}/%2F", dead.port()), relay.url()];
    let broker = Broker::new(broker_settings(targets, 2), None).unwrap();
    assert!(broker.wait_available(Duration::from_secs(10)).await, "the relay's broker connects");
    let mut topology = Topology::new("recover").await;
    topology.queue("k", FieldTable::default()).await;
    let settings = message_settings(&topology.exchange, Duration::from_secs(10));
    let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::new());
    broker.publish(&settings, "k", message.clone()).await.unwrap();

    relay.cut().await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let error = broker.publish(&settings, "k", message.clone()).await.unwrap_err();
        assert!(matches!(error, AmqpError::Unavailable { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
    assert!(!broker.is_available());

    relay.restore().await;
    assert!(broker.wait_available(Duration::from_secs(10)).await, "reconnected");
    broker.publish(&settings, "k", message).await.unwrap();
    topology.cleanup().await;
}

/// A relay of one connection to the test broker that can slip frames of
/// its own between the broker's (as if the broker had sent them).
async fn injecting_relay() -> (String, tokio::sync::mpsc::UnboundedSender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = lapin::uri::AMQPUri::from_str(&broker_url()).unwrap();
    let upstream = format!("{}:{}", broker.authority.host, broker.authority.port);
    let vhost = percent_encoding::utf8_percent_encode(&broker.vhost, percent_encoding::NON_ALPHANUMERIC);
    let user = &broker.authority.userinfo;
    let url = format!("amqp://{}:{}@{}/{vhost}", user.username, user.password, listener.local_addr().unwrap());
    let (inject, mut injected) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let task = tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
        // The broker's side is whole frames: header (type, channel, size), payload, 0xCE.
        loop {
            let mut header = [0u8; 7];
            tokio::select! {
                read = server_read.read_exact(&mut header) => {
                    if read.is_err() { return; }
                    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
                    let mut rest = vec![0u8; size + 1];
                    if server_read.read_exact(&mut rest).await.is_err() { return; }
                    let _ = client_write.write_all(&header).await;
                    let _ = client_write.write_all(&rest).await;
                }
                Some(frame) = injected.recv() => { let _ = client_write.write_all(&frame).await; }
            }
        }
    });
    (url, inject, task)
}

/// A method frame on channel 0 of class `connection` (10).
fn connection_method(method: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = 10u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(arguments);
    let mut frame = vec![1, 0, 0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

#[tokio::test]
async fn while_the_broker_blocks_publishers_publishes_fail_fast() {
    let (url, inject, relay) = injecting_relay().await;
    let broker = Broker::new(broker_settings(vec![url], 2), None).unwrap();
    assert!(broker.wait_available(Duration::from_secs(10)).await, "the relay's broker connects");
    let settings = message_settings("amq.direct", Duration::from_secs(10));
    let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::new());

    let reason = b"low on memory";
    let mut blocked = vec![u8::try_from(reason.len()).unwrap()];
    blocked.extend_from_slice(reason);
    inject.send(connection_method(60, &blocked)).unwrap();
    let blocked = async {
        while broker.is_available() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), blocked).await.expect("connection.blocked seen");
    let started = std::time::Instant::now();
    let error = broker.publish(&settings, "k", message.clone()).await.unwrap_err();
    match &error {
        AmqpError::Unavailable { reason, .. } => assert!(reason.contains("blocks publishers"), "{reason}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(500));

    inject.send(connection_method(61, &[])).unwrap();
    assert!(broker.wait_available(Duration::from_secs(5)).await, "connection.unblocked seen");
    // amq.direct exists and nothing is bound: returned, but published and confirmed.
    let optional = MessageSettings { mandatory: false, ..settings };
    broker.publish(&optional, "k", message).await.unwrap();
    relay.abort();
}

#[tokio::test]
async fn a_reply_no_call_awaits_is_dropped_and_counted() {
    let broker = connected_broker(1).await;
    let mut topology = Topology::new("stray").await;
    let queue = topology.queue("stray", FieldTable::default()).await;
    let responder = responder(&queue, Answer::StrayFirst).await;
    let settings = message_settings(&topology.exchange, Duration::from_secs(10));
    let message = Message::from_request(&settings, &HeaderMap::new(), "r", Bytes::from_static(b"mine"));
    let reply = broker.rpc(&settings, "stray", message).await.unwrap();
    assert_eq!(reply.body, Bytes::from_static(b"r: mine"));
    assert_eq!(broker.stray_replies(), 1);
    assert_eq!(broker.rpc_waiters(), 0);
    responder.abort();
    topology.cleanup().await;
}
