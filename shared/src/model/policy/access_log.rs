//! The `access-log` policy as users write it: which requests of a route
//! (service, gateway) the data plane writes an access log line for, how many
//! of the successful ones, and which fields. Where lines go is the data
//! plane's `--access-log` flag; without it no line is written.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::Validate;

/// Fields of the `access-log` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogPolicy {
    /// `all` (the default), `errors` (status 400 and above) or `off`.
    #[serde(default)]
    pub mode: AccessLogMode,
    /// The share of successful requests (status below 400) logged, 0 to 1
    /// (default 1). Errors are always logged while `mode` is not `off`.
    #[serde(default = "all_of_them")]
    pub sample: f64,
    /// The fields each line has, in this order; empty (the default): all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<AccessLogField>,
}

fn all_of_them() -> f64 {
    1.0
}

impl Default for AccessLogPolicy {
    fn default() -> Self {
        Self { mode: AccessLogMode::All, sample: 1.0, fields: Vec::new() }
    }
}

/// Which requests are logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogMode {
    #[default]
    All,
    Errors,
    Off,
}

/// A field of an access log line (README: "Access logs" has each one's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogField {
    Time,
    RequestId,
    TraceId,
    Gateway,
    Route,
    Service,
    Target,
    Consumer,
    Method,
    Path,
    Protocol,
    Status,
    BytesIn,
    BytesOut,
    DurationMs,
    UpstreamMs,
    Retries,
    Cache,
    RateLimit,
    Client,
    TlsVersion,
    Sni,
    Completed,
}

impl AccessLogField {
    /// Every field, in the order of a line that names none.
    pub const ALL: [Self; 23] = [
        Self::Time,
        Self::RequestId,
        Self::TraceId,
        Self::Gateway,
        Self::Route,
        Self::Service,
        Self::Target,
        Self::Consumer,
        Self::Method,
        Self::Path,
        Self::Protocol,
        Self::Status,
        Self::BytesIn,
        Self::BytesOut,
        Self::DurationMs,
        Self::UpstreamMs,
        Self::Retries,
        Self::Cache,
        Self::RateLimit,
        Self::Client,
        Self::TlsVersion,
        Self::Sni,
        Self::Completed,
    ];

    /// Its key in a line.
    pub fn key(self) -> &'static str {
        match self {
            Self::Time => "time",
            Self::RequestId => "request_id",
            Self::TraceId => "trace_id",
            Self::Gateway => "gateway",
            Self::Route => "route",
            Self::Service => "service",
            Self::Target => "target",
            Self::Consumer => "consumer",
            Self::Method => "method",
            Self::Path => "path",
            Self::Protocol => "protocol",
            Self::Status => "status",
            Self::BytesIn => "bytes_in",
            Self::BytesOut => "bytes_out",
            Self::DurationMs => "duration_ms",
            Self::UpstreamMs => "upstream_ms",
            Self::Retries => "retries",
            Self::Cache => "cache",
            Self::RateLimit => "rate_limit",
            Self::Client => "client",
            Self::TlsVersion => "tls_version",
            Self::Sni => "sni",
            Self::Completed => "completed",
        }
    }
}

impl Validate for AccessLogPolicy {
    /// Checks the sample share and that no field is named twice.
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if !(0.0..=1.0).contains(&self.sample) {
            errors.add(ConfigError::invalid("sample", "must be between 0 and 1 (the share of successful requests logged)"));
        }
        for (i, field) in self.fields.iter().enumerate() {
            if self.fields[..i].contains(field) {
                errors.add(ConfigError::invalid(format!("fields[{i}]"), format!("'{}' is named twice", field.key())));
            }
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    #[test]
    fn defaults_log_everything() {
        let policy: AccessLogPolicy = from_json(b"{}").unwrap();
        assert_eq!(policy, AccessLogPolicy::default());
    }

    #[test]
    fn bad_fields_are_named() {
        for (json, field) in
            [(r#"{"sample":1.5}"#, "sample"), (r#"{"sample":-0.1}"#, "sample"), (r#"{"fields":["status","path","status"]}"#, "fields[2]")]
        {
            let mut policy: AccessLogPolicy = from_json(json.as_bytes()).unwrap();
            assert_eq!(policy.normalize_and_validate().unwrap_err().first().field(), field, "{json}");
        }
        assert!(from_json::<AccessLogPolicy>(br#"{"fields":["nope"]}"#).is_err(), "unknown fields are refused");
        assert!(from_json::<AccessLogPolicy>(br#"{"mode":"some"}"#).is_err(), "unknown modes are refused");
    }

    #[test]
    fn every_field_has_its_own_key() {
        let keys: std::collections::HashSet<&str> = AccessLogField::ALL.iter().map(|f| f.key()).collect();
        assert_eq!(keys.len(), AccessLogField::ALL.len());
        for field in AccessLogField::ALL {
            assert_eq!(serde_json::to_value(field).unwrap(), field.key(), "the key is the name users write");
        }
    }
}
