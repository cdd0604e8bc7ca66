//! gRPC statuses as HTTP clients see them: the codes with their names, the
//! standard HTTP status of each (googleapis `google/rpc/code.proto`, as
//! Envoy and grpc-gateway map them; a missing or invalid `grpc-status` is
//! a `500`), the status read from trailers (or from the headers of a
//! trailers-only response), and its `google.rpc.Status` JSON body:
//! `grpc-message` percent-decoded, `details` from
//! `grpc-status-details-bin`, each `Any` rendered with its `@type` when
//! the descriptors know the type, else as `{"@type", "value": base64}`.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use percent_encoding::percent_decode;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions, Value};
use serde_json::json;

/// The gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    pub fn from_i32(code: i32) -> Option<Self> {
        usize::try_from(code).ok().and_then(|index| CODES.get(index)).copied()
    }

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// `NOT_FOUND`, as `google.rpc.Code` names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    pub fn http_status(self) -> StatusCode {
        match self {
            Self::Ok => StatusCode::OK,
            // 499 Client Closed Request (nginx), as everyone maps it.
            Self::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unknown | Self::Internal | Self::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => StatusCode::BAD_REQUEST,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => StatusCode::CONFLICT,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A call's status as the upstream reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStatus {
    /// `None` when `grpc-status` was missing or not a known code.
    pub code: Option<Code>,
    /// Percent-decoded.
    pub message: String,
    /// The encoded `google.rpc.Status` of `grpc-status-details-bin`.
    pub details: Option<Bytes>,
}

/// `grpc-status-details-bin` is base64 with or without padding.
const BASE64_ANY_PADDING: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

impl GrpcStatus {
    /// The status in `headers` (trailers, or a trailers-only response's
    /// headers); `None` when they carry no `grpc-status`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let raw_code = headers.get("grpc-status")?;
        let code = std::str::from_utf8(raw_code.as_bytes()).ok().and_then(|code| code.trim().parse().ok()).and_then(Code::from_i32);
        let mut message = headers
            .get("grpc-message")
            .map(|message| percent_decode(message.as_bytes()).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        if code.is_none() {
            let raw_code = String::from_utf8_lossy(raw_code.as_bytes());
            message = format!("the upstream sent an invalid grpc-status '{raw_code}'{}", suffix(&message));
        }
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|details| BASE64_ANY_PADDING.decode(details.as_bytes().trim_ascii()).ok())
            .map(Bytes::from);
        Some(Self { code, message, details })
    }

    /// The upstream ended the call without a status.
    pub fn missing() -> Self {
        Self { code: None, message: "the upstream ended the call without a grpc-status".into(), details: None }
    }

    /// A status the gateway gives a stream that broke.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code: Some(code), message: message.into(), details: None }
    }

    pub fn is_ok(&self) -> bool {
        self.code == Some(Code::Ok)
    }

    /// By the standard table; a missing or invalid code is a `500`.
    pub fn http_status(&self) -> StatusCode {
        self.code.map_or(StatusCode::INTERNAL_SERVER_ERROR, Code::http_status)
    }

    /// The `google.rpc.Status` JSON mapping: `{"code", "message",
    /// "details"}` (a missing or invalid code reads `UNKNOWN`); `pool`
    /// resolves the details' types, see [`with_error_types`].
    pub fn to_json(&self, pool: &DescriptorPool, options: &SerializeOptions) -> serde_json::Value {
        let code = self.code.unwrap_or(Code::Unknown).as_i32();
        let mut message = self.message.clone();
        let mut details = Vec::new();
        let status = self.details.as_ref().zip(pool.get_message_by_name("google.rpc.Status"));
        if let Some(Ok(status)) = status.map(|(bytes, descriptor)| DynamicMessage::decode(descriptor, bytes.clone())) {
            if message.is_empty() {
                message = status.get_field_by_name("message").as_deref().and_then(Value::as_str).unwrap_or_default().to_owned();
            }
            if let Some(Value::List(anys)) = status.get_field_by_name("details").as_deref() {
                details = anys.iter().filter_map(Value::as_message).map(|any| any_json(any, options)).collect();
            }
        }
        json!({"code": code, "message": message, "details": details})
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

/// An `Any` as ProtoJSON when its type (and any `Any` inside) is known,
/// else its type URL and base64 bytes.
fn any_json(any: &DynamicMessage, options: &SerializeOptions) -> serde_json::Value {
    if let Ok(rendered) = any.serialize_with_options(serde_json::value::Serializer, options) {
        return rendered;
    }
    let type_url = any.get_field_by_name("type_url").as_deref().and_then(Value::as_str).unwrap_or_default().to_owned();
    let value =
        any.get_field_by_name("value").as_deref().and_then(Value::as_bytes).map(|bytes| base64::prelude::BASE64_STANDARD.encode(bytes));
    json!({"@type": type_url, "value": value.unwrap_or_default()})
}

/// The descriptors of `google/rpc/status.proto` and `error_details.proto`,
/// compiled once, for details of any route.
static ERROR_TYPES: LazyLock<Option<Vec<u8>>> = LazyLock::new(|| {
    let source = "syntax = \"proto3\";\nimport \"google/rpc/status.proto\";\nimport \"google/rpc/error_details.proto\";\n";
    let files = std::collections::BTreeMap::from([("portico/error_types.proto".to_owned(), source.to_owned())]);
    match portico_shared::grpc::compile::compile(&files) {
        Ok(set) => Some(set),
        Err(error) => {
            tracing::error!(%error, "the built-in google.rpc descriptors do not compile");
            None
        }
    }
});

/// `pool` with `google.rpc.Status` and the standard error details added
/// (files it already has are kept as they are); `pool` alone if they clash.
pub fn with_error_types(pool: &DescriptorPool) -> DescriptorPool {
    let mut merged = pool.clone();
    match ERROR_TYPES.as_deref().map(|set| merged.decode_file_descriptor_set(set)) {
        Some(Ok(())) => merged,
        Some(Err(error)) => {
            tracing::warn!(%error, "the google.rpc error types clash with the route's descriptors; details of unknown types stay base64");
            pool.clone()
        }
        None => pool.clone(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use prost_reflect::prost::Message;

    use super::*;

    fn headers(entries: &[(&'static str, &str)]) -> HeaderMap {
        entries.iter().map(|(name, value)| (http::HeaderName::from_static(name), HeaderValue::from_str(value).unwrap())).collect()
    }

    #[test]
    fn maps_every_code_by_the_standard_table() {
        let table: Vec<(i32, &str, u16)> = (0..=16)
            .map(|code| {
                let code = Code::from_i32(code).unwrap();
                (code.as_i32(), code.name(), code.http_status().as_u16())
            })
            .collect();
        assert_eq!(
            table,
            [
                (0, "OK", 200),
                (1, "CANCELLED", 499),
                (2, "UNKNOWN", 500),
                (3, "INVALID_ARGUMENT", 400),
                (4, "DEADLINE_EXCEEDED", 504),
                (5, "NOT_FOUND", 404),
                (6, "ALREADY_EXISTS", 409),
                (7, "PERMISSION_DENIED", 403),
                (8, "RESOURCE_EXHAUSTED", 429),
                (9, "FAILED_PRECONDITION", 400),
                (10, "ABORTED", 409),
                (11, "OUT_OF_RANGE", 400),
                (12, "UNIMPLEMENTED", 501),
                (13, "INTERNAL", 500),
                (14, "UNAVAILABLE", 503),
                (15, "DATA_LOSS", 500),
                (16, "UNAUTHENTICATED", 401),
            ]
        );
        assert_eq!(Code::from_i32(17), None);
        assert_eq!(Code::from_i32(-1), None);
    }

    #[test]
    fn reads_status_and_percent_decoded_message() {
        let status =
            GrpcStatus::from_headers(&headers(&[("grpc-status", "5"), ("grpc-message", "No%20such%20order%3A%20%E2%82%AC7")])).unwrap();
        assert_eq!(status, GrpcStatus { code: Some(Code::NotFound), message: "No such order: €7".into(), details: None });
        assert_eq!(status.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(GrpcStatus::from_headers(&headers(&[("content-type", "application/grpc")])), None);
    }

    #[test]
    fn invalid_or_missing_codes_are_500_unknown() {
        for raw in ["abc", "17", "-1", ""] {
            let status = GrpcStatus::from_headers(&headers(&[("grpc-status", raw), ("grpc-message", "boom")])).unwrap();
            assert_eq!(status.http_status(), StatusCode::INTERNAL_SERVER_ERROR, "{raw}");
            assert_eq!(status.message, format!("the upstream sent an invalid grpc-status '{raw}': boom"));
            assert_eq!(status.to_json(&DescriptorPool::new(), &SerializeOptions::new())["code"], 2);
        }
        assert_eq!(GrpcStatus::missing().http_status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// A `google.rpc.Status` with a `BadRequest`, a `RetryInfo` and a detail of a type nobody knows.
    fn status_details(pool: &DescriptorPool) -> Vec<u8> {
        let message = |name: &str, json: serde_json::Value| {
            DynamicMessage::deserialize(pool.get_message_by_name(name).unwrap(), json).unwrap().encode_to_vec()
        };
        let any = |type_url: &str, value: Vec<u8>| {
            let mut any = DynamicMessage::new(pool.get_message_by_name("google.protobuf.Any").unwrap());
            any.set_field_by_name("type_url", Value::String(type_url.into()));
            any.set_field_by_name("value", Value::Bytes(value.into()));
            Value::Message(any)
        };
        let bad_request = message("google.rpc.BadRequest", json!({"fieldViolations": [{"field": "id", "description": "must be set"}]}));
        let retry = message("google.rpc.RetryInfo", json!({"retryDelay": "1.500s"}));
        let mut status = DynamicMessage::new(pool.get_message_by_name("google.rpc.Status").unwrap());
        status.set_field_by_name("code", Value::I32(3));
        status.set_field_by_name("message", Value::String("from details".into()));
        status.set_field_by_name(
            "details",
            Value::List(vec![
                any("type.googleapis.com/google.rpc.BadRequest", bad_request),
                any("type.googleapis.com/google.rpc.RetryInfo", retry),
                any("type.googleapis.com/acme.Secret", vec![1, 2, 3]),
            ]),
        );
        status.encode_to_vec()
    }

    #[test]
    fn details_render_known_types_and_keep_unknown_ones_as_base64() {
        let pool = with_error_types(&DescriptorPool::new());
        let encoded = status_details(&pool);
        for details_bin in [base64::prelude::BASE64_STANDARD.encode(&encoded), base64::prelude::BASE64_STANDARD_NO_PAD.encode(&encoded)] {
            let status = GrpcStatus::from_headers(&headers(&[("grpc-status", "3"), ("grpc-status-details-bin", &details_bin)])).unwrap();
            assert_eq!(
                status.to_json(&pool, &SerializeOptions::new()),
                json!({
                    "code": 3,
                    "message": "from details",
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "id", "description": "must be set"}]},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.500s"},
                        {"@type": "type.googleapis.com/acme.Secret", "value": "AQID"},
                    ]
                })
            );
        }
    }

    #[test]
    fn garbage_details_are_ignored_not_fatal() {
        let pool = with_error_types(&DescriptorPool::new());
        for garbage in ["!!!not base64", "AAECAwQ"] {
            let status =
                GrpcStatus::from_headers(&headers(&[("grpc-status", "13"), ("grpc-message", "bad"), ("grpc-status-details-bin", garbage)]))
                    .unwrap();
            assert_eq!(status.to_json(&pool, &SerializeOptions::new()), json!({"code": 13, "message": "bad", "details": []}));
        }
    }

    #[test]
    fn error_types_merge_into_a_pool_that_has_some_of_them() {
        let files = std::collections::BTreeMap::from([(
            "a.proto".to_owned(),
            "syntax = \"proto3\";\npackage a;\nimport \"google/rpc/status.proto\";\nmessage M { google.rpc.Status s = 1; }\n".to_owned(),
        )]);
        let pool = portico_shared::grpc::compile::decode(&portico_shared::grpc::compile::compile(&files).unwrap()).unwrap();
        let merged = with_error_types(&pool);
        assert!(merged.get_message_by_name("a.M").is_some());
        assert!(merged.get_message_by_name("google.rpc.BadRequest").is_some());
    }
}
