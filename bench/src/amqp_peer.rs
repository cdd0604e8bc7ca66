//! The broker side of `bench/amqp`: `amqp-peer URL NAME` connects to the
//! RabbitMQ at URL (`amqp://user:pass@host:port/vhost`) and declares
//!
//! * `NAME.events`, a durable queue bound to `amq.direct` with the routing
//!   key `NAME.events`, holding at most 1,000 messages (`x-max-length`,
//!   `x-overflow: drop-head`), so that published messages are stored as
//!   the broker stores any (a persistent one is written to disk before it
//!   is confirmed) while the queue never grows, with nobody consuming it;
//! * `NAME.rpc`, an exclusive queue on the default exchange whose every
//!   request is answered at once: the same body and content type,
//!   published to its `reply_to` with its `correlation_id`.
//!
//! Both queues expire a minute after their last use (`x-expires`), so a
//! peer that is killed leaves nothing behind for long; publishing is no
//! use to RabbitMQ, so the peer declares `NAME.events` again every
//! `LEASE_RENEWAL` while it runs. It prints `ready`
//! on standard output once both exist, then serves until killed.
//!
//! Single-threaded (`bench/amqp` pins it to the load generator's core).

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// How long (ms) an unused queue outlives its peer.
const QUEUE_EXPIRY_MS: i32 = 60_000;
/// How often the consumer-less queue is declared again, so it does not expire while in use.
const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(15);

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(name)) = (args.next(), args.next()) else {
        eprintln!("usage: amqp-peer AMQP_URL NAME");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    if let Err(error) = runtime.block_on(serve(&url, &name)) {
        eprintln!("amqp-peer: {error}");
        std::process::exit(1);
    }
}

async fn serve(url: &str, name: &str) -> lapin::Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default().with_connection_name("portico bench/amqp".into())).await?;
    let channel = connection.create_channel().await?;
    let expiring = |mut arguments: FieldTable| {
        arguments.insert("x-expires".into(), AMQPValue::LongInt(QUEUE_EXPIRY_MS));
        arguments
    };
    let mut bounded = FieldTable::default();
    bounded.insert("x-max-length".into(), AMQPValue::LongInt(1_000));
    bounded.insert("x-overflow".into(), AMQPValue::LongString("drop-head".into()));
    let events = format!("{name}.events");
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let events_arguments = expiring(bounded);
    channel.queue_declare(events.as_str().into(), durable, events_arguments.clone()).await?;
    channel
        .queue_bind(events.as_str().into(), "amq.direct".into(), events.as_str().into(), QueueBindOptions::default(), FieldTable::default())
        .await?;
    let rpc = format!("{name}.rpc");
    let exclusive = QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(rpc.as_str().into(), exclusive, expiring(FieldTable::default())).await?;
    let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let mut requests = channel.basic_consume(rpc.as_str().into(), "responder".into(), no_ack, FieldTable::default()).await?;
    let renewing = channel.clone();
    let renewed = events.clone();
    tokio::spawn(async move {
        let mut renewal = tokio::time::interval(LEASE_RENEWAL);
        loop {
            renewal.tick().await;
            if let Err(error) = renewing.queue_declare(renewed.as_str().into(), durable, events_arguments.clone()).await {
                eprintln!("amqp-peer: declaring {renewed} again: {error}");
            }
        }
    });
    println!("ready");
    while let Some(request) = requests.next().await {
        let request = request?;
        let Some(reply_to) = request.properties.reply_to().clone() else { continue };
        let mut properties = BasicProperties::default();
        if let Some(correlation_id) = request.properties.correlation_id() {
            properties = properties.with_correlation_id(correlation_id.clone());
        }
        if let Some(content_type) = request.properties.content_type() {
            properties = properties.with_content_type(content_type.clone());
        }
        channel.basic_publish("".into(), reply_to, BasicPublishOptions::default(), &request.data, properties).await?;
    }
    Ok(())
}
