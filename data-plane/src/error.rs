//! What can go wrong with a proxied request, where it came from, and the
//! one place it becomes a response: a status code and a JSON body, or for a
//! gRPC client a gRPC error (`200`, trailers-only, `grpc-status` and
//! `grpc-message`; [`ProxyError::grpc_code`] is README's table).

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

use crate::body::ResponseBody;
use crate::proxy::grpc::GrpcClient;
use crate::upstream::grpc::{GRPC_MESSAGE, GRPC_STATUS, code};

/// Bytes of a `grpc-message` that are percent-encoded: all but printable
/// ASCII, and `%` itself (gRPC over HTTP/2, "Responses").
const GRPC_MESSAGE_ENCODED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Which side of the proxy an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or was too slow.
    Upstream,
    /// This node cannot serve (no config yet).
    Internal,
}

/// A request the gateway answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("this gateway has no config yet")]
    NoConfig,
    #[error("no route matches {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    #[error("malformed request: {0}")]
    Malformed(crate::http1::Violation),
    #[error("the request body did not arrive in time")]
    ClientTimeout,
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request headers exceed {max_fields} fields or {max_bytes} bytes")]
    HeadersTooLarge { max_fields: usize, max_bytes: usize },
    #[error("{message}")]
    Unauthorized { message: &'static str, challenges: Vec<http::HeaderValue> },
    #[error("the credentials lack a scope this route requires")]
    Forbidden { challenge: http::HeaderValue },
    #[error("this route does not take requests from your address")]
    IpForbidden,
    /// A template of the route needs a value the request lacks (or one
    /// that cannot go where the template puts it).
    #[error("{0}")]
    Unexpandable(String),
    #[error("the request body cannot be transformed: {0}")]
    UntransformableBody(&'static str),
    #[error("rate limit exceeded: {} requests per {window_s} s", decision.limit)]
    RateLimited { window_s: u64, decision: crate::ratelimit::algorithm::Decision },
    #[error("upstream '{upstream}' refused or reset the connection: {reason}")]
    UpstreamUnavailable { upstream: String, reason: String },
    #[error("upstream '{upstream}' sent a malformed response: {violation}")]
    UpstreamMalformed { upstream: String, violation: crate::http1::Violation },
    #[error("upstream '{upstream}' did not answer in time")]
    UpstreamTimeout { upstream: String },
    #[error("upstream '{upstream}' has no healthy target")]
    NoHealthyTarget { upstream: String },
    #[error("upstream '{upstream}' is failing; its circuit is open")]
    CircuitOpen { upstream: String, retry_after_s: u64 },
    /// A required call of an aggregate failed (`timeout`: it ran out of time).
    #[error("{message}")]
    AggregateCall { call: String, timeout: bool, message: String },
    /// HTTP/JSON to gRPC translation failed (the client's request or the upstream's answer).
    #[error(transparent)]
    Transcode(#[from] crate::backend::grpc::TranscodeError),
    /// Publishing to a broker, or awaiting its reply, failed.
    #[error(transparent)]
    Amqp(#[from] crate::backend::amqp::AmqpError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoConfig => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::IpForbidden => StatusCode::FORBIDDEN,
            Self::Unexpandable(_) => StatusCode::BAD_REQUEST,
            Self::UntransformableBody(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable { .. } | Self::UpstreamMalformed { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::NoHealthyTarget { .. } | Self::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::AggregateCall { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::AggregateCall { timeout: false, .. } => StatusCode::BAD_GATEWAY,
            Self::Transcode(error) => error.status(),
            Self::Amqp(error) => error.status(),
        }
    }

    /// Stable machine-readable code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoConfig => "no_config",
            Self::NoRoute { .. } => "no_route",
            Self::BadRequest(_) | Self::Malformed(_) => "bad_request",
            Self::ClientTimeout => "request_timeout",
            Self::BodyTooLarge { .. } => "payload_too_large",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "insufficient_scope",
            Self::IpForbidden => "ip_forbidden",
            Self::Unexpandable(_) => "bad_request",
            Self::UntransformableBody(_) => "unsupported_body",
            Self::RateLimited { .. } => "rate_limited",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::UpstreamMalformed { .. } => "upstream_malformed",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::NoHealthyTarget { .. } => "no_healthy_upstream",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::AggregateCall { timeout: true, .. } => "aggregate_call_timeout",
            Self::AggregateCall { timeout: false, .. } => "aggregate_call_failed",
            Self::Transcode(error) => error.code(),
            Self::Amqp(error) => error.code(),
        }
    }

    pub fn source(&self) -> ErrorSource {
        match self {
            Self::NoConfig => ErrorSource::Internal,
            Self::NoRoute { .. }
            | Self::BadRequest(_)
            | Self::Malformed(_)
            | Self::ClientTimeout
            | Self::BodyTooLarge { .. }
            | Self::HeadersTooLarge { .. }
            | Self::Unauthorized { .. }
            | Self::Forbidden { .. }
            | Self::IpForbidden
            | Self::Unexpandable(_)
            | Self::UntransformableBody(_)
            | Self::RateLimited { .. } => ErrorSource::Downstream,
            Self::UpstreamUnavailable { .. }
            | Self::UpstreamMalformed { .. }
            | Self::UpstreamTimeout { .. }
            | Self::NoHealthyTarget { .. }
            | Self::CircuitOpen { .. }
            | Self::AggregateCall { .. } => ErrorSource::Upstream,
            Self::Transcode(error) if error.is_upstream() => ErrorSource::Upstream,
            Self::Transcode(_) => ErrorSource::Downstream,
            Self::Amqp(_) => ErrorSource::Upstream,
        }
    }

    /// Whether trying again (elsewhere or later) may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::NoConfig
                | Self::UpstreamUnavailable { .. }
                | Self::UpstreamMalformed { .. }
                | Self::UpstreamTimeout { .. }
                | Self::NoHealthyTarget { .. }
                | Self::CircuitOpen { .. }
                | Self::AggregateCall { .. }
        )
    }

    /// The gRPC status a gRPC client gets instead of [`ProxyError::status`]
    /// (gRPC's own HTTP mapping where it has one: a `400` of the gateway is
    /// a broken request, not an argument the service judged, so `INTERNAL`).
    pub fn grpc_code(&self) -> u32 {
        match self {
            Self::NoConfig | Self::NoHealthyTarget { .. } | Self::CircuitOpen { .. } | Self::UpstreamUnavailable { .. } => {
                code::UNAVAILABLE
            }
            Self::NoRoute { .. } => code::UNIMPLEMENTED,
            Self::BadRequest(_) | Self::Malformed(_) | Self::UntransformableBody(_) | Self::UpstreamMalformed { .. } => code::INTERNAL,
            Self::Unexpandable(_) => code::INVALID_ARGUMENT,
            Self::ClientTimeout | Self::UpstreamTimeout { .. } | Self::AggregateCall { timeout: true, .. } => code::DEADLINE_EXCEEDED,
            Self::BodyTooLarge { .. } | Self::HeadersTooLarge { .. } | Self::RateLimited { .. } => code::RESOURCE_EXHAUSTED,
            Self::Unauthorized { .. } => code::UNAUTHENTICATED,
            Self::Forbidden { .. } | Self::IpForbidden => code::PERMISSION_DENIED,
            Self::AggregateCall { timeout: false, .. } => code::UNAVAILABLE,
            // A transcoded route's client speaks JSON; this is for completeness.
            Self::Transcode(error) if error.is_upstream() => code::UNAVAILABLE,
            Self::Transcode(_) => code::INVALID_ARGUMENT,
            Self::Amqp(error) if error.is_timeout() => code::DEADLINE_EXCEEDED,
            Self::Amqp(_) => code::UNAVAILABLE,
        }
    }

    /// The answer to the client: for a gRPC client (`grpc`, from its
    /// request's content type) a gRPC error, else [`ProxyError::response`].
    pub fn response_to(&self, grpc: Option<&GrpcClient>) -> Response<ResponseBody> {
        let Some(client) = grpc else { return self.response() };
        let mut response = Response::new(ResponseBody::Local(Full::new(Bytes::new())));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, client.content_type().clone());
        headers.insert(GRPC_STATUS, http::HeaderValue::from(self.grpc_code()));
        let message = percent_encoding::utf8_percent_encode(&self.to_string(), GRPC_MESSAGE_ENCODED).to_string();
        if let Ok(message) = http::HeaderValue::from_str(&message) {
            headers.insert(GRPC_MESSAGE, message);
        }
        self.decorate(response)
    }

    /// `{"error": {"code", "message"}}` with the status (and the
    /// `WWW-Authenticate` challenges of a `401` or `403`); an aggregate
    /// call's failure names the call as `error.call`.
    pub fn response(&self) -> Response<ResponseBody> {
        let response = match self {
            Self::AggregateCall { call, .. } => {
                let body = serde_json::json!({"error": {"code": self.code(), "message": self.to_string(), "call": call}});
                json_body(self.status(), body.to_string())
            }
            _ => json_response(self.status(), self.code(), &self.to_string()),
        };
        self.decorate(response)
    }

    /// Adds the challenges, `Retry-After` and rate-limit headers this error calls for.
    fn decorate(&self, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
        let challenges = match self {
            Self::Unauthorized { challenges, .. } => challenges.as_slice(),
            Self::Forbidden { challenge } => std::slice::from_ref(challenge),
            _ => &[],
        };
        for challenge in challenges {
            response.headers_mut().append(header::WWW_AUTHENTICATE, challenge.clone());
        }
        if let Self::Transcode(crate::backend::grpc::TranscodeError::MethodNotAllowed { allowed, .. }) = self
            && let Ok(allow) = http::HeaderValue::from_str(&allowed.join(", "))
        {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        if let Self::Amqp(error) = self
            && let Some(retry_after_s) = error.retry_after_s()
        {
            response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from(retry_after_s));
        }
        if let Self::CircuitOpen { retry_after_s, .. } = self {
            response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from(*retry_after_s));
        }
        if let Self::RateLimited { decision, .. } = self {
            crate::ratelimit::add_headers(response.headers_mut(), decision);
            let retry_after = decision.retry_after.ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from(retry_after));
        }
        response
    }
}

/// A JSON error response built by the gateway itself.
pub fn json_response(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    json_body(status, serde_json::json!({"error": {"code": code, "message": message}}).to_string())
}

fn json_body(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Local(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
