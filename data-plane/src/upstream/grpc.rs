//! What a gRPC upstream's answer says: its `grpc-status` (in the response
//! headers of a trailers-only response, else in the trailers), which codes
//! count as the target failing (for passive health and the circuit
//! breaker), the codes' names, and the standard health check
//! (`grpc.health.v1.Health/Check`) the active checks of a gRPC service make.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{self, HeaderValue};

/// `grpc-status`, where gRPC puts a call's outcome.
pub const GRPC_STATUS: &str = "grpc-status";
/// `grpc-message`, the outcome's description (percent-encoded).
pub const GRPC_MESSAGE: &str = "grpc-message";

/// gRPC status codes the gateway itself uses.
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const DATA_LOSS: u32 = 15;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// The `grpc-status` in `headers` (a trailers-only response's headers, or trailers).
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Whether a call ending with `code` says the target is failing: it was
/// unavailable, broke, lost data, ran out of time or failed unexplained.
/// Other codes are the application's answers.
pub fn is_failure(code: u32) -> bool {
    matches!(code, code::UNKNOWN | code::DEADLINE_EXCEEDED | code::INTERNAL | code::UNAVAILABLE | code::DATA_LOSS)
}

/// The name of `code` as gRPC spells it (`OK`, `NOT_FOUND`, …); `UNKNOWN` past the known ones.
pub fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|index| NAMES.get(index)).copied().unwrap_or("UNKNOWN")
}

/// Whether `content_type` is gRPC's (`application/grpc`, `application/grpc+proto`, …).
pub fn is_grpc_content_type(content_type: &HeaderValue) -> bool {
    let value = content_type.as_bytes();
    value.len() >= 16 && value[..16].eq_ignore_ascii_case(b"application/grpc") && matches!(value.get(16), None | Some(b'+' | b';'))
}

/// The path of the standard health check.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The body of a `HealthCheckRequest` with no service name (the server as a
/// whole): one uncompressed gRPC message of zero bytes.
pub fn health_check_body() -> Bytes {
    Bytes::from_static(&[0, 0, 0, 0, 0])
}

/// The headers of a health check request.
pub fn health_check_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
}

/// Whether `body` (the response's gRPC messages) holds a
/// `HealthCheckResponse` saying `SERVING`: field 1 (varint) equal to 1.
pub fn says_serving(body: &[u8]) -> bool {
    matches!(body, [0, 0, 0, 0, 2, 0x08, 0x01])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_and_named() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        assert_eq!(status_of(&headers), Some(14));
        assert!(is_failure(14) && is_failure(2) && !is_failure(5) && !is_failure(0));
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        let grpc = |v: &'static str| is_grpc_content_type(&HeaderValue::from_static(v));
        assert!(grpc("application/grpc") && grpc("application/grpc+proto") && grpc("Application/GRPC;charset=x"));
        assert!(!grpc("application/grpc-web") && !grpc("application/json") && !grpc("application/grpcx"));
    }
}
