//! One access log line: a [`Record`]'s fields as a JSON object, in the
//! order the plan names them (every field, in [`AccessLogField::ALL`]'s
//! order, when it names none). A field with no value (no route, no
//! upstream call, no TLS) is `null`, so every line of a plan has the same keys.

use chrono::{DateTime, Datelike, Timelike, Utc};
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
            AccessLogField::Time => map.serialize_entry(key, rfc3339(arrival.time).as_str())?,
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
            AccessLogField::Client => {
                let client = record.findings.client.map(|ip| {
                    let mut text = String::with_capacity(39);
                    crate::proxy::headers::push_ip(&mut text, ip);
                    text
                });
                map.serialize_entry(key, &client)?;
            }
            AccessLogField::TlsVersion => map.serialize_entry(key, &record.findings.tls.as_ref().map(|tls| tls.version))?,
            AccessLogField::Sni => map.serialize_entry(key, &record.findings.tls.as_ref().and_then(|tls| tls.sni.as_deref()))?,
            AccessLogField::Completed => map.serialize_entry(key, &record.completed)?,
        }
    }
    map.end()
}

/// `time` in RFC 3339, UTC, to the microsecond (`2026-12-07T12:15:33.266376Z`):
/// chrono finds the calendar date, the digits are written here (chrono's
/// formatter cost a sixth of a line).
fn rfc3339(time: std::time::SystemTime) -> RfcTime {
    let time = DateTime::<Utc>::from(time);
    let mut out = [0u8; 27];
    let mut at = 0;
    let mut put = |value: u32, digits: u32, then: u8| {
        for place in (0..digits).rev() {
            out[at] = b'0' + u8::try_from(value / 10u32.pow(place) % 10).unwrap_or(0);
            at += 1;
        }
        out[at] = then;
        at += 1;
    };
    put(u32::try_from(time.year()).unwrap_or(0), 4, b'-');
    put(time.month(), 2, b'-');
    put(time.day(), 2, b'T');
    put(time.hour(), 2, b':');
    put(time.minute(), 2, b':');
    put(time.second(), 2, b'.');
    put(time.timestamp_subsec_micros().min(999_999), 6, b'Z');
    RfcTime(out)
}

/// An RFC 3339 time, as [`rfc3339`] writes it.
struct RfcTime([u8; 27]);

impl RfcTime {
    fn as_str(&self) -> &str {
        // Digits and ASCII punctuation only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
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
    fn times_are_written_as_chrono_writes_them() {
        for nanos in [0_u64, 1_765_108_533_266_376_901, 951_782_400_000_001_000, 4_102_444_799_999_999_999] {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
            let expected = DateTime::<Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(rfc3339(time).as_str(), expected);
        }
    }

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
