//! What can go wrong translating a call, and the HTTP status each means:
//! the client's mistakes (a `400` naming the field, `404`, `405`, `413`)
//! and the upstream's (`502`: not gRPC, garbage, a message over the
//! limit, a body that broke). A gRPC status the upstream answered is not
//! an error here: it is a response ([`super::status`]).

use http::StatusCode;

use crate::body::BoxError;

use super::frame::FrameError;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// No binding's path matches.
    #[error("no gRPC method is bound to {path}")]
    NoBinding { path: String },
    /// A binding's path matches, for other HTTP methods.
    #[error("{method} is not bound to {path}; it takes {}", allowed.join(", "))]
    MethodNotAllowed { method: String, path: String, allowed: Vec<String> },
    /// A path variable, query parameter or bound field has a value it cannot take.
    #[error("field '{field}': {message}")]
    InvalidField { field: String, message: String },
    #[error("unknown query parameter '{0}'")]
    UnknownQueryParameter(String),
    /// The JSON body (or an NDJSON line of it) does not fit the message.
    #[error("invalid JSON body{}{}: {message}", line.map(|line| format!(" on line {line}")).unwrap_or_default(), field.as_ref().map(|field| format!(" at '{field}'")).unwrap_or_default())]
    InvalidJson { line: Option<usize>, field: Option<String>, message: String },
    #[error("this method takes no request body")]
    BodyNotAllowed,
    /// The request message (or an NDJSON line) exceeds the limit.
    #[error("the request message exceeds the limit of {limit} bytes")]
    RequestTooLarge { limit: usize },
    /// The upstream's response is not gRPC (status and content type as received).
    #[error("the upstream did not answer gRPC (HTTP {status}, content-type {content_type:?})")]
    NotGrpc { status: u16, content_type: Option<String> },
    #[error("the upstream sent a malformed gRPC response: {0}")]
    MalformedResponse(String),
    #[error("the upstream sent a message over the limit of {limit} bytes")]
    ResponseTooLarge { limit: usize },
    /// Reading the upstream's body failed (reset, idle timeout, ...).
    #[error("the upstream's response broke off: {0}")]
    UpstreamBody(#[source] BoxError),
}

impl TranscodeError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoBinding { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidField { .. } | Self::UnknownQueryParameter(_) | Self::InvalidJson { .. } | Self::BodyNotAllowed => {
                StatusCode::BAD_REQUEST
            }
            Self::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotGrpc { .. } | Self::MalformedResponse(_) | Self::ResponseTooLarge { .. } | Self::UpstreamBody(_) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoBinding { .. } => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InvalidField { .. } | Self::UnknownQueryParameter(_) | Self::InvalidJson { .. } | Self::BodyNotAllowed => "bad_request",
            Self::RequestTooLarge { .. } => "payload_too_large",
            Self::NotGrpc { .. } => "upstream_not_grpc",
            Self::MalformedResponse(_) => "upstream_malformed",
            Self::ResponseTooLarge { .. } => "upstream_response_too_large",
            Self::UpstreamBody(_) => "upstream_unavailable",
        }
    }

    /// A copy of a client's mistake, as found in the error chain of an
    /// upstream call whose request body was translated as it streamed.
    pub fn client_copy(&self) -> Option<Self> {
        Some(match self {
            Self::InvalidField { field, message } => Self::InvalidField { field: field.clone(), message: message.clone() },
            Self::UnknownQueryParameter(name) => Self::UnknownQueryParameter(name.clone()),
            Self::InvalidJson { line, field, message } => Self::InvalidJson { line: *line, field: field.clone(), message: message.clone() },
            Self::BodyNotAllowed => Self::BodyNotAllowed,
            Self::RequestTooLarge { limit } => Self::RequestTooLarge { limit: *limit },
            _ => return None,
        })
    }

    /// The upstream's fault rather than the client's.
    pub fn is_upstream(&self) -> bool {
        self.status() == StatusCode::BAD_GATEWAY
    }

    /// A broken frame of the upstream's response.
    pub(crate) fn from_response_frame(error: FrameError) -> Self {
        match error {
            FrameError::TooLarge { limit, .. } => Self::ResponseTooLarge { limit },
            other => Self::MalformedResponse(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_line() {
        let error = TranscodeError::InvalidJson { line: Some(3), field: Some("items[0].price".into()), message: "invalid type".into() };
        assert_eq!(error.to_string(), "invalid JSON body on line 3 at 'items[0].price': invalid type");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let error =
            TranscodeError::MethodNotAllowed { method: "PUT".into(), path: "/v1/x".into(), allowed: vec!["GET".into(), "POST".into()] };
        assert_eq!(error.to_string(), "PUT is not bound to /v1/x; it takes GET, POST");
        assert_eq!(TranscodeError::from_response_frame(FrameError::TooLarge { size: 9, limit: 4 }).status(), StatusCode::BAD_GATEWAY);
    }
}
