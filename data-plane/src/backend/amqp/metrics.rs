//! The AMQP backend's Prometheus metrics (`portico_amqp_*`), by service;
//! [`describe`] belongs in `crate::metrics::install`.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Describes every AMQP metric; call once, with the recorder installed.
pub fn describe() {
    describe_counter!(
        "portico_amqp_published_total",
        "Messages published to a broker, by service and result (confirmed, returned, nacked, timeout, unavailable, channel_closed)"
    );
    describe_histogram!(
        "portico_amqp_rpc_duration_seconds",
        metrics::Unit::Seconds,
        "AMQP request/reply calls, publish to reply, by service and result (replied, no_reply, or the publish's failure)"
    );
    describe_gauge!("portico_amqp_channels_in_use", "Channels of a service's pool lent to requests");
    describe_gauge!("portico_amqp_channel_pool_size", "Most channels a service's pool opens");
    describe_gauge!("portico_amqp_rpc_waiters", "AMQP request/reply calls awaiting their reply, by service");
    describe_counter!(
        "portico_amqp_stray_replies_total",
        "Replies dropped because the call holding their channel awaits another correlation id, or none, by service"
    );
    describe_gauge!("portico_amqp_connected", "1 while the service's broker connection is up");
}

pub(super) fn published(service: &str, result: &'static str) {
    counter!("portico_amqp_published_total", "service" => service.to_owned(), "result" => result).increment(1);
}

pub(super) fn rpc_done(service: &str, result: &'static str, elapsed: Duration) {
    histogram!("portico_amqp_rpc_duration_seconds", "service" => service.to_owned(), "result" => result).record(elapsed.as_secs_f64());
}

pub(super) fn channels_in_use(service: &str, in_use: usize) {
    gauge!("portico_amqp_channels_in_use", "service" => service.to_owned()).set(in_use as f64);
}

pub(super) fn pool_size(service: &str, size: usize) {
    gauge!("portico_amqp_channel_pool_size", "service" => service.to_owned()).set(size as f64);
}

pub(super) fn rpc_waiters(service: &str, waiters: usize) {
    gauge!("portico_amqp_rpc_waiters", "service" => service.to_owned()).set(waiters as f64);
}

pub(super) fn stray_reply(service: &str) {
    counter!("portico_amqp_stray_replies_total", "service" => service.to_owned()).increment(1);
}

pub(super) fn connected(service: &str, up: bool) {
    gauge!("portico_amqp_connected", "service" => service.to_owned()).set(if up { 1.0 } else { 0.0 });
}
