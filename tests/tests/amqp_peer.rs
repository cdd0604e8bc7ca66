//! The AMQP test peers on their own, without the gateway: the pika peer
//! declares, publishes with confirms (acked, nacked by a full queue with
//! `reject-publish`, returned as unroutable) and reports what it consumes
//! with its properties; its RPC responder answers a call over direct
//! reply-to, or stays silent; and a throwaway broker stops (its port
//! refuses connections) and starts again on the same port, with its
//! durable queue, and blocks publishers under a memory alarm.

use std::time::{Duration, Instant};

use portico_test_support::amqp::{Confirm, Publish, QueueOptions, Responder, amqp_url};
use portico_test_support::{Consumer, ThrowawayBroker};
use serde_json::json;

/// A name no other test run uses.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    format!("portico-test.{what}.{}.{nanos}", std::process::id())
}

#[tokio::test]
async fn peer_consumes_what_it_published_with_every_property() {
    let peer = Consumer::start(&amqp_url()).await;
    let exchange = unique("orders");
    peer.declare_exchange(&exchange, "direct").await;
    let queue = peer.declare_queue("", QueueOptions::default()).await;
    peer.bind(&queue, &exchange, "order.created").await;

    let properties = json!({
        "content_type": "application/json", "delivery_mode": 2, "message_id": "m-1", "correlation_id": "req-1",
        "headers": {"x-tenant": "acme, é", "x-count": 3},
    });
    let message = Publish { exchange: &exchange, routing_key: "order.created", body: b"{\"id\":1}", properties, mandatory: true };
    assert_eq!(peer.publish(message).await, Confirm::Ack);
    assert_eq!(peer.message_count(&queue).await, 1, "the message waits until the peer consumes");

    peer.consume(&queue).await;
    let delivered = peer.next_message().await;
    assert_eq!(delivered.body, b"{\"id\":1}");
    assert_eq!(
        (delivered.exchange.as_str(), delivered.routing_key.as_str(), delivered.queue.as_str()),
        (exchange.as_str(), "order.created", queue.as_str())
    );
    assert_eq!(delivered.content_type.as_deref(), Some("application/json"));
    assert_eq!(delivered.delivery_mode, Some(2));
    assert_eq!((delivered.message_id.as_deref(), delivered.correlation_id.as_deref()), (Some("m-1"), Some("req-1")));
    assert_eq!(json!(delivered.headers), json!({"x-tenant": "acme, é", "x-count": 3}));
    assert_eq!((delivered.timestamp, delivered.app_id.as_deref(), delivered.reply_to.as_deref()), (None, None, None));
    assert_eq!(peer.next_message_within(Duration::from_millis(200)).await, None, "one message, delivered once");

    let unroutable = Publish { exchange: &exchange, routing_key: "nobody.listens", body: b"x", mandatory: true, ..Publish::default() };
    assert_eq!(peer.publish(unroutable).await, Confirm::Returned);
    let missing = unique("missing");
    let error =
        peer.try_publish(Publish { exchange: &missing, routing_key: "k", ..Publish::default() }).await.expect_err("no such exchange");
    assert!(error.contains("404") && error.contains("NOT_FOUND"), "{error}");
    peer.delete_exchange(&exchange).await;
    let error = peer.try_publish(Publish { exchange: &exchange, routing_key: "order.created", ..Publish::default() }).await;
    assert!(error.expect_err("the exchange is gone").contains("NOT_FOUND"), "a deleted exchange refuses publishes");
}

#[tokio::test]
async fn a_full_reject_publish_queue_nacks_until_consumed() {
    let peer = Consumer::start(&amqp_url()).await;
    let queue = peer.declare_queue("", QueueOptions { max_length: Some(1), reject_publish: true, ..QueueOptions::default() }).await;
    let publish = |body: &'static [u8]| Publish { routing_key: &queue, body, ..Publish::default() };

    assert_eq!(peer.publish(publish(b"first")).await, Confirm::Ack);
    assert_eq!(peer.publish(publish(b"second")).await, Confirm::Nack, "the queue is full");
    peer.consume(&queue).await;
    assert_eq!(peer.next_message().await.body, b"first");
    peer.cancel(&queue).await;
    assert_eq!(peer.publish(publish(b"third")).await, Confirm::Ack, "room again once consumed");
    assert_eq!(peer.message_count(&queue).await, 1, "the paused consumer leaves it in the queue");
}

#[tokio::test]
async fn responder_answers_calls_over_direct_reply_to() {
    let url = amqp_url();
    let (responder, caller) = tokio::join!(Consumer::start(&url), Consumer::start(&url));
    let queue = responder.declare_queue("", QueueOptions::default()).await;
    let answer = Responder { content_type: Some("text/plain".into()), headers: json!({"x-status": 201}), ..Responder::echo("echo: ") };
    responder.respond(&queue, answer).await;

    let reply = caller.call(&queue, b"ping", Duration::from_secs(10)).await.expect("a reply");
    let request = responder.next_message().await;
    assert_eq!(request.body, b"ping");
    let reply_to = request.reply_to.as_deref().expect("the request names where to reply");
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
    assert_eq!(reply.body_text(), "echo: ping");
    assert_eq!(reply.correlation_id, request.correlation_id, "the reply carries the request's correlation id");
    assert!(reply.correlation_id.is_some());
    assert_eq!(reply.content_type.as_deref(), Some("text/plain"));
    assert_eq!(json!(reply.headers), json!({"x-status": 201}));

    let slow = responder.declare_queue("", QueueOptions::default()).await;
    responder.respond(&slow, Responder { delay: Duration::from_millis(300), ..Responder::echo("") }).await;
    let started = Instant::now();
    let late = caller.call(&slow, b"later", Duration::from_secs(10)).await.expect("a late reply");
    assert_eq!(late.body, b"later");
    assert!(started.elapsed() >= Duration::from_millis(300), "the reply waited {:?}", started.elapsed());

    let silent = responder.declare_queue("", QueueOptions::default()).await;
    responder.respond(&silent, Responder::silent()).await;
    assert_eq!(caller.call(&silent, b"hello?", Duration::from_millis(500)).await, None, "no reply in time");
    assert_eq!(responder.next_message().await.queue, slow);
    assert_eq!(responder.next_message().await.body, b"hello?", "the silent responder got the request");
}

#[tokio::test]
async fn throwaway_broker_stops_and_starts_again_on_the_same_port() {
    let started = Instant::now();
    let mut broker = ThrowawayBroker::start().await;
    let boot = started.elapsed();
    assert_ne!(broker.url(), amqp_url(), "never the shared broker");
    let queue = unique("durable");
    {
        let peer = Consumer::start(&broker.url()).await;
        peer.declare_queue(&queue, QueueOptions { durable: true, ..QueueOptions::default() }).await;
        let persistent = Publish { routing_key: &queue, body: b"kept", properties: json!({"delivery_mode": 2}), ..Publish::default() };
        assert_eq!(peer.publish(persistent).await, Confirm::Ack);
    }

    broker.stop().await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", broker.port())).await;
    assert!(refused.is_err(), "a stopped broker refuses connections");

    let started = Instant::now();
    broker.start_again().await;
    let reboot = started.elapsed();
    let peer = Consumer::start(&broker.url()).await;
    assert_eq!(peer.message_count(&queue).await, 1, "the durable queue and its persistent message survived");
    peer.consume(&queue).await;
    assert_eq!(peer.next_message().await.body, b"kept");
    println!("throwaway broker: booted in {boot:?}, again in {reboot:?}");
}

#[tokio::test]
async fn a_memory_alarm_blocks_publishers_until_cleared() {
    let broker = ThrowawayBroker::start().await;
    broker.raise_memory_alarm().await;
    // pika gives up on a blocked connection after blocked_connection_timeout.
    let blocked = Consumer::start(&format!("{}?blocked_connection_timeout=1", broker.url())).await;
    let error = blocked.try_publish(Publish { routing_key: "anywhere", body: b"x", ..Publish::default() }).await;
    assert!(error.expect_err("a blocked connection cannot publish").contains("ConnectionBlockedTimeout"));

    broker.clear_memory_alarm().await;
    let peer = Consumer::start(&broker.url()).await;
    assert_eq!(peer.publish(Publish { routing_key: "anywhere", body: b"x", ..Publish::default() }).await, Confirm::Ack);
}
