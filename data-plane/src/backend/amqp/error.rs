//! What can go wrong sending a request to a broker, and the HTTP status
//! each means (CONTRACT.md, "A route's backend"): the broker refused or
//! lost the message (`502` unroutable or a channel it closed, `503` nacked
//! or unreachable, with `Retry-After`), or it took too long (`504`).

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmqpError {
    /// A `mandatory` message no queue is bound to take (basic.return, e.g. 312 NO_ROUTE).
    #[error("no queue takes messages to exchange '{exchange}' with routing key '{routing_key}' ({reply_code} {reply_text})")]
    Unroutable { exchange: String, routing_key: String, reply_code: u16, reply_text: String },
    /// The broker refused to take the message (basic.nack: a full queue that rejects publishes, an internal error).
    #[error("the broker refused the message to exchange '{exchange}'")]
    Nacked { exchange: String, retry_after_s: u64 },
    /// No connection to the service's broker, or the broker blocks publishers (a resource alarm).
    #[error("the broker of service '{service}' is unavailable: {reason}")]
    Unavailable { service: String, reason: String, retry_after_s: u64 },
    /// The broker did not confirm the message in time.
    #[error("the broker did not confirm the message to exchange '{exchange}' within {timeout_ms} ms")]
    Timeout { exchange: String, timeout_ms: u64 },
    /// The broker closed the channel over this message (a missing exchange: 404, no permission: 403).
    #[error("the broker refused the publish to exchange '{exchange}': {reason}")]
    ChannelClosed { exchange: String, reason: String },
    /// An `rpc` call got no reply in time.
    #[error("no reply from exchange '{exchange}' within {timeout_ms} ms")]
    NoReply { exchange: String, timeout_ms: u64 },
    /// An `rpc` reply the gateway cannot answer with (a bad status header).
    #[error("the reply is unusable: {0}")]
    InvalidReply(String),
}

impl AmqpError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unroutable { .. } | Self::ChannelClosed { .. } | Self::InvalidReply(_) => StatusCode::BAD_GATEWAY,
            Self::Nacked { .. } | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } | Self::NoReply { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Stable machine-readable code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unroutable { .. } => "amqp_unroutable",
            Self::Nacked { .. } => "amqp_nacked",
            Self::Unavailable { .. } => "amqp_unavailable",
            Self::Timeout { .. } => "amqp_timeout",
            Self::ChannelClosed { .. } => "amqp_channel_closed",
            Self::NoReply { .. } => "amqp_no_reply",
            Self::InvalidReply(_) => "amqp_invalid_reply",
        }
    }

    /// The `Retry-After` seconds of a `503`.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::Nacked { retry_after_s, .. } | Self::Unavailable { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// Whether the deadline ran out (`504`; gRPC's DEADLINE_EXCEEDED).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::NoReply { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_the_contract_status_and_only_503s_say_when_to_retry() {
        let cases = [
            (
                AmqpError::Unroutable { exchange: "x".into(), routing_key: "k".into(), reply_code: 312, reply_text: "NO_ROUTE".into() },
                502,
                "amqp_unroutable",
                None,
            ),
            (AmqpError::Nacked { exchange: "x".into(), retry_after_s: 2 }, 503, "amqp_nacked", Some(2)),
            (AmqpError::Unavailable { service: "s".into(), reason: "down".into(), retry_after_s: 5 }, 503, "amqp_unavailable", Some(5)),
            (AmqpError::Timeout { exchange: "x".into(), timeout_ms: 10 }, 504, "amqp_timeout", None),
            (AmqpError::ChannelClosed { exchange: "x".into(), reason: "404".into() }, 502, "amqp_channel_closed", None),
            (AmqpError::NoReply { exchange: "x".into(), timeout_ms: 10 }, 504, "amqp_no_reply", None),
            (AmqpError::InvalidReply("x-http-status 700".into()), 502, "amqp_invalid_reply", None),
        ];
        for (error, status, code, retry_after) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.code(), code);
            assert_eq!(error.retry_after_s(), retry_after, "{error}");
        }
    }

    #[test]
    fn the_client_sees_the_code_and_a_503_says_when_to_retry() {
        let unavailable = crate::error::ProxyError::from(AmqpError::Unavailable {
            service: "events".into(),
            reason: "connection refused".into(),
            retry_after_s: 7,
        });
        let response = unavailable.response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "7");
        assert_eq!(unavailable.code(), "amqp_unavailable");
        let timeout = crate::error::ProxyError::from(AmqpError::Timeout { exchange: "orders".into(), timeout_ms: 500 });
        assert!(timeout.response().headers().get(http::header::RETRY_AFTER).is_none());
        assert_eq!(timeout.grpc_code(), crate::upstream::grpc::code::DEADLINE_EXCEEDED);
    }
}
