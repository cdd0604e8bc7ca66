//! The `grpc` backend of a route: HTTP/JSON requests transcoded to calls
//! of a gRPC service, described by a [`super::Proto`]. What can be checked
//! without the rest of the config is checked here (service names, header
//! names, limits); that the route's service speaks gRPC, that the proto
//! exists and has the services named, is [`crate::validate`]'s.
//! Transcoding itself is the data plane's.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::Validate;
use crate::validate::rules::{MAX_LIST, Result, bounded, in_range, is_token_byte, name, unique};

/// Longest gRPC deadline of a route.
pub const MAX_TIMEOUT_MS: u32 = 300_000;
/// Largest message limit, either way.
pub const MAX_MESSAGE_BYTES: u32 = 64 * 1024 * 1024;
/// Message limit when none is given, either way.
pub const DEFAULT_MESSAGE_BYTES: u32 = 4 * 1024 * 1024;
/// Longest full name of a gRPC service.
const MAX_SERVICE_NAME_LEN: usize = 256;
/// Request headers that may not be forwarded as metadata: they describe the
/// HTTP/1 connection or frame the message, which gRPC sets itself.
const NOT_METADATA: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
];
/// The identity headers (who called): only the gateway sets them, and it
/// always sends them, as headers or as metadata.
pub const IDENTITY_HEADERS: [&str; 5] = ["x-consumer-id", "x-consumer-username", "x-user-id", "x-scopes", "x-anonymous-consumer"];

/// How a route calls a gRPC service: the proto describing it, which of its
/// services the route serves, and the JSON mapping's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcBackend {
    /// Name of the proto (entity) that describes the services.
    pub proto: String,
    /// Full names of the services the route serves (`shop.Orders`), 1 to 64:
    /// their `google.api.http` rules, and `POST /shop.Orders/GetOrder` for
    /// methods without one.
    pub services: Vec<String>,
    /// JSON field names: `json` (lowerCamelCase, the default) or `proto` (as
    /// declared). Requests are read in either.
    #[serde(default)]
    pub names: JsonNames,
    /// Write fields that hold their default value (`0`, `""`, `false`).
    #[serde(default)]
    pub emit_defaults: bool,
    /// Write enums as numbers, not names.
    #[serde(default)]
    pub enums_as_ints: bool,
    /// Ignore unknown JSON fields and query parameters (by default each is a `400`).
    #[serde(default)]
    pub ignore_unknown: bool,
    /// Request headers sent as gRPC metadata besides the identity headers
    /// (lowercase names; not hop-by-hop, `host`, `content-length`,
    /// `content-type` or `grpc-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
    /// The call's gRPC deadline in milliseconds, at most 300,000 (absent:
    /// the service's `timeouts.request_ms`); a client's shorter
    /// `grpc-timeout` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Largest request message, in bytes (default 4 MiB, at most 64 MiB); a
    /// larger one is a `413`.
    #[serde(default = "default_message_bytes")]
    pub max_request_message_bytes: u32,
    /// Largest response message, in bytes (default 4 MiB, at most 64 MiB);
    /// a larger one is a `502`.
    #[serde(default = "default_message_bytes")]
    pub max_response_message_bytes: u32,
}

/// The JSON names of message fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JsonNames {
    /// lowerCamelCase, as proto3's JSON mapping writes them (`json_name`).
    #[default]
    Json,
    /// The field names as declared in the `.proto` file.
    Proto,
}

fn default_message_bytes() -> u32 {
    DEFAULT_MESSAGE_BYTES
}

impl Validate for GrpcBackend {
    fn normalize_and_validate(&mut self) -> std::result::Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(name("proto", &self.proto));
        if self.services.is_empty() {
            errors.add(ConfigError::invalid("services", "name at least one service of the proto (`shop.Orders`)"));
        }
        if errors.check(bounded("services", self.services.len(), MAX_LIST)).is_some() {
            let before = errors.count();
            for (i, service) in self.services.iter().enumerate() {
                errors.check(service_name(&format!("services[{i}]"), service));
            }
            if errors.count() == before {
                errors.check(unique("services", &self.services));
            }
        }
        if errors.check(bounded("forward_headers", self.forward_headers.len(), MAX_LIST)).is_some() {
            let before = errors.count();
            for (i, header) in self.forward_headers.iter_mut().enumerate() {
                header.make_ascii_lowercase();
                errors.check(metadata_header(&format!("forward_headers[{i}]"), header));
            }
            if errors.count() == before {
                errors.check(unique("forward_headers", &self.forward_headers));
            }
        }
        if let Some(timeout_ms) = self.timeout_ms {
            errors.check(in_range("timeout_ms", timeout_ms, 1, MAX_TIMEOUT_MS));
        }
        errors.check(in_range("max_request_message_bytes", self.max_request_message_bytes, 1, MAX_MESSAGE_BYTES));
        errors.check(in_range("max_response_message_bytes", self.max_response_message_bytes, 1, MAX_MESSAGE_BYTES));
        errors.finish()
    }
}

/// A service's full name: dot-separated identifiers (`shop.v1.Orders`).
fn service_name(field: &str, service: &str) -> Result {
    let identifier = |part: &str| {
        part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if service.len() > MAX_SERVICE_NAME_LEN || !service.split('.').all(identifier) {
        return Err(ConfigError::invalid(
            field,
            format!("'{service}' is not a full service name (package and service, dot-separated: `shop.Orders`)"),
        ));
    }
    Ok(())
}

/// A request header that may travel as gRPC metadata.
fn metadata_header(field: &str, header: &str) -> Result {
    if header.is_empty() || !header.bytes().all(is_token_byte) {
        return Err(ConfigError::invalid(field, format!("'{header}' is not a valid header name")));
    }
    if header.starts_with("grpc-") || NOT_METADATA.contains(&header) {
        return Err(ConfigError::invalid(field, format!("'{header}' is set by the gRPC call itself and cannot be forwarded")));
    }
    if IDENTITY_HEADERS.contains(&header) {
        return Err(ConfigError::invalid(field, format!("'{header}' is an identity header, always sent by the gateway")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    fn errors_of(json: &str) -> Vec<String> {
        let mut grpc: GrpcBackend = from_json(json.as_bytes()).unwrap();
        grpc.normalize_and_validate().map_or_else(|e| e.iter().map(|e| e.field().to_owned()).collect(), |()| Vec::new())
    }

    #[test]
    fn defaults_are_json_names_strict_and_four_mebibytes() {
        let mut grpc: GrpcBackend = from_json(br#"{"proto":"shop","services":["shop.Orders"],"forward_headers":["X-Tenant"]}"#).unwrap();
        grpc.normalize_and_validate().unwrap();
        assert_eq!(grpc.names, JsonNames::Json);
        assert!(!grpc.ignore_unknown && !grpc.emit_defaults && !grpc.enums_as_ints);
        assert_eq!((grpc.max_request_message_bytes, grpc.max_response_message_bytes), (4_194_304, 4_194_304));
        assert_eq!(grpc.forward_headers, ["x-tenant"], "header names are lowercased");
        let options: GrpcBackend = from_json(br#"{"proto":"shop","services":["Orders"],"names":"proto"}"#).unwrap();
        assert_eq!(options.names, JsonNames::Proto);
        assert_eq!(from_json::<GrpcBackend>(br#"{"proto":"shop","services":[],"names":"camel"}"#).unwrap_err().field(), "names");
    }

    #[test]
    fn refuses_bad_service_names_headers_and_limits_naming_each() {
        assert_eq!(errors_of(r#"{"proto":"Shop","services":[]}"#), ["proto", "services"]);
        assert_eq!(
            errors_of(r#"{"proto":"shop","services":["shop.Orders","shop..Orders","/shop.Orders/Get","1shop.A"]}"#),
            ["services[1]", "services[2]", "services[3]"]
        );
        assert_eq!(errors_of(r#"{"proto":"shop","services":["a.B","a.B"]}"#), ["services[1]"]);
        assert_eq!(
            errors_of(
                r#"{"proto":"shop","services":["a.B"],"forward_headers":["x-ok","grpc-timeout","te","content-type","x-consumer-id","bad header","X-OK"]}"#
            ),
            ["forward_headers[1]", "forward_headers[2]", "forward_headers[3]", "forward_headers[4]", "forward_headers[5]"]
        );
        assert_eq!(errors_of(r#"{"proto":"shop","services":["a.B"],"forward_headers":["x-ok","X-OK"]}"#), ["forward_headers[1]"]);
        assert_eq!(
            errors_of(
                r#"{"proto":"shop","services":["a.B"],"timeout_ms":300001,"max_request_message_bytes":0,"max_response_message_bytes":67108865}"#
            ),
            ["timeout_ms", "max_request_message_bytes", "max_response_message_bytes"]
        );
        assert!(errors_of(r#"{"proto":"shop","services":["a.B"],"timeout_ms":300000,"max_response_message_bytes":67108864}"#).is_empty());
    }
}
