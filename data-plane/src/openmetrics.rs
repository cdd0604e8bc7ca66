//! The data plane's metrics in OpenMetrics, for scrapers that ask for it
//! (`Accept: application/openmetrics-text`): the same families as the
//! Prometheus text, and on the buckets of `portico_request_duration_seconds`
//! the trace id of the latest sampled request that fell in each, as an
//! exemplar (while tracing is on). The exporter
//! (`metrics-exporter-prometheus`) has no exemplars, so they are kept here
//! and written into its text.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::TraceId;
use portico_shared::metrics::BUCKETS;

/// What `/metrics` answers OpenMetrics with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The histogram whose buckets carry exemplars.
const HISTOGRAM: &str = "portico_request_duration_seconds";

/// A sampled request's trace id, its duration and when it ended.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: TraceId,
    seconds: f64,
    at: f64,
}

/// By route, by bucket (the last: `+Inf`). Routes are those of the
/// configs served, so the map stays as small as they are.
type Buckets = [Option<Exemplar>; BUCKETS.len() + 1];

static EXEMPLARS: LazyLock<Mutex<HashMap<String, Buckets>>> = LazyLock::new(Mutex::default);

/// Keeps a sampled request of `route` that took `seconds` as the exemplar of its bucket.
pub fn record(route: &str, seconds: f64, trace_id: TraceId) {
    let bucket = BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(BUCKETS.len());
    let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |since| since.as_secs_f64());
    let mut exemplars = EXEMPLARS.lock().unwrap_or_else(PoisonError::into_inner);
    let buckets = match exemplars.get_mut(route) {
        Some(buckets) => buckets,
        None => exemplars.entry(route.to_owned()).or_insert([None; BUCKETS.len() + 1]),
    };
    buckets[bucket] = Some(Exemplar { trace_id, seconds, at });
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.contains("application/openmetrics-text"))
}

/// The exporter's Prometheus `text` as OpenMetrics: counter families named
/// without their `_total`, exemplars on the request histogram's buckets,
/// and the closing `# EOF`.
pub fn render(text: &str) -> String {
    let counters: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let exemplars = EXEMPLARS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = name.strip_suffix("_total").filter(|_| counters.contains(&name)).unwrap_or(name);
            out.push_str(&line[..7]);
            out.push_str(family);
            out.push(' ');
            out.push_str(tail);
        } else {
            out.push_str(line);
            if let Some(exemplar) = exemplar_of(line, &exemplars) {
                let Exemplar { trace_id, seconds, at } = exemplar;
                out.push_str(&format!(" # {{trace_id=\"{trace_id}\"}} {seconds} {at:.3}"));
            }
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

/// The exemplar for a sample `line`, if it is a bucket of the request
/// histogram that has one.
fn exemplar_of(line: &str, exemplars: &HashMap<String, Buckets>) -> Option<Exemplar> {
    let labels = line.strip_prefix(HISTOGRAM)?.strip_prefix("_bucket{")?;
    let label = |name: &str| {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        labels[start..].split_once('"').map(|(value, _)| value)
    };
    let (route, le) = (label("route")?, label("le")?);
    let bucket = match le {
        "+Inf" => BUCKETS.len(),
        bound => BUCKETS.iter().position(|b| bound.parse::<f64>().is_ok_and(|le| le == *b))?,
    };
    exemplars.get(route)?[bucket]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_lose_total_in_their_family_name_and_buckets_get_exemplars() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        record("exemplar-test", 0.003, trace_id);
        let text = "# HELP portico_requests_total Requests\n# TYPE portico_requests_total counter\nportico_requests_total{route=\"exemplar-test\",status=\"200\"} 1\n\n\
            # HELP portico_request_duration_seconds Time\n# TYPE portico_request_duration_seconds histogram\n\
            portico_request_duration_seconds_bucket{route=\"exemplar-test\",le=\"0.0025\"} 0\n\
            portico_request_duration_seconds_bucket{route=\"exemplar-test\",le=\"0.005\"} 1\n\
            portico_request_duration_seconds_bucket{route=\"exemplar-test\",le=\"+Inf\"} 1\n";
        let rendered = render(text);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], "# HELP portico_requests Requests");
        assert_eq!(lines[1], "# TYPE portico_requests counter");
        assert_eq!(lines[2], "portico_requests_total{route=\"exemplar-test\",status=\"200\"} 1", "samples keep their name");
        assert_eq!(lines[5], "portico_request_duration_seconds_bucket{route=\"exemplar-test\",le=\"0.0025\"} 0", "no exemplar below it");
        assert!(
            lines[6].starts_with("portico_request_duration_seconds_bucket{route=\"exemplar-test\",le=\"0.005\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.003 "),
            "{}",
            lines[6]
        );
        assert_eq!(*lines.last().unwrap(), "# EOF");
    }
}
