//! One access log line: a [`Record`]'s fields as a JSON object, in the
//! order the plan names them (every field, in [`AccessLogField::ALL`]'s
//! order, when it names none). A field with no value (no route, no
//! upstream call, no TLS) is `null`, so every line of a plan has the same keys.

use chrono::{DateTime, SecondsFormat, Utc};
use http::HeaderValue;
use portico_shared::model::policy::access_log::AccessLogField;
use serde::Serializer;
use serde::ser::SerializeMap;

use super::{LimitOutcome, Record};
use http::Version;

/// Appends `record`'s line (with its newline) to `out`, for a node of `gateway`.
pub(super) fn write(out: &mut Vec<u8>, record: &Record, gateway: &str) {
    let fields = record.fields.as_deref().unwrap_or(&AccessLogField::ALL);
    let mut serializer = serde_json::Serializer::new(&mut *out);
    // Writing to a Vec fails only on a value that cannot be JSON, and every one here can.
    let _ = write_fields(&mut serializer, record, fields, gateway);
    out.push(b'\n');
}

fn write_fields<S: Serializer>(serializer: S, record: &Record, fields: &[AccessLogField], gateway: &str) -> Result<S::Ok, S::Error> {
    let trail = record.findings.trail.as_ref();
    let arrival = &record.arrival;
    let mut map = serializer.serialize_map(Some(fields.len()))?;
    for field in fields {
        let key = field.key();
        match field {
            AccessLogField::Time => {
                let time = DateTime::<Utc>::from(arrival.time).to_rfc3339_opts(SecondsFormat::Micros, true);
                map.serialize_entry(key, &time)?;
            }
            AccessLogField::RequestId => map.serialize_entry(key, &text(&record.answer.request_id))?,
            AccessLogField::TraceId => map.serialize_entry(key, &arrival.trace_id.map(|id| id.to_string()))?,
            AccessLogField::Gateway => map.serialize_entry(key, gateway)?,
            AccessLogField::Route => map.serialize_entry(key, &record.route.as_deref())?,
            AccessLogField::Service => map.serialize_entry(key, &record.service.as_deref())?,
            AccessLogField::Target => map.serialize_entry(key, &record.target.as_deref())?,
            AccessLogField::Consumer => map.serialize_entry(key, &record.findings.consumer)?,
            AccessLogField::Method => map.serialize_entry(key, arrival.method.as_str())?,
            AccessLogField::Path => map.serialize_entry(key, arrival.uri.path())?,
            AccessLogField::Protocol => map.serialize_entry(key, protocol(arrival.version))?,
            AccessLogField::Status => map.serialize_entry(key, &record.answer.status.as_u16())?,
            AccessLogField::BytesIn => map.serialize_entry(key, &arrival.bytes_in)?,
            AccessLogField::BytesOut => map.serialize_entry(key, &record.bytes_out)?,
            AccessLogField::DurationMs => map.serialize_entry(key, &millis(record.duration))?,
            AccessLogField::UpstreamMs => map.serialize_entry(key, &trail.and_then(super::Trail::upstream).map(millis))?,
            AccessLogField::Retries => map.serialize_entry(key, &trail.map_or(0, super::Trail::retries))?,
            AccessLogField::Cache => map.serialize_entry(key, &record.answer.cache.as_ref().and_then(text))?,
            AccessLogField::RateLimit => {
                let outcome = record.findings.rate_limit.map(|outcome| match outcome {
                    LimitOutcome::Allowed => "allowed",
                    LimitOutcome::Refused => "refused",
                });
                map.serialize_entry(key, &outcome)?;
            }
            AccessLogField::Client => map.serialize_entry(key, &record.findings.client.map(|ip| ip.to_string()))?,
            AccessLogField::TlsVersion => map.serialize_entry(key, &record.findings.tls.as_ref().map(|tls| tls.version))?,
            AccessLogField::Sni => map.serialize_entry(key, &record.findings.tls.as_ref().and_then(|tls| tls.sni.as_deref()))?,
            AccessLogField::Completed => map.serialize_entry(key, &record.completed)?,
        }
    }
    map.end()
}

/// A header value as text (those logged are visible ASCII, or left out).
fn text(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok()
}

/// Milliseconds, to the microsecond.
fn millis(duration: std::time::Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// The protocol as a request line names it (`HTTP/2` for either kind of HTTP/2).
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`),
/// unless it is malformed or all zeros.
pub(super) fn trace_id(traceparent: &HeaderValue) -> Option<opentelemetry::trace::TraceId> {
    let value = traceparent.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex(version, 2) && version != "ff" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2);
    let valid = valid && trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0');
    valid.then(|| opentelemetry::trace::TraceId::from_hex(trace).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let id = |v: &'static str| trace_id(&HeaderValue::from_static(v)).map(|id| id.to_string());
        assert_eq!(id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }
}
