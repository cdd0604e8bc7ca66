//! Combining calls' answers into one, in call order so that the same
//! answers always give the same bytes whatever order they arrived in.
//!
//! - `namespaced`: `{"<call>": <answer>, …}` with the calls in config
//!   order; a failed optional call's key is `null`.
//! - `deep`: the object answers merged recursively into one object (keys
//!   in sorted order); where two calls give one key a value that is not an
//!   object in both, the later call in config order wins and
//!   `portico_aggregate_merge_collisions_total` counts it. An answer that
//!   is not an object (an array, a scalar, a `for_each` call's array) goes
//!   under the call's name. A failed optional call's `fields` are `null`
//!   unless another call gave them.
//!
//! Either way a call's `fields` keep only those top-level fields of an
//! object answer, and failed optional calls are listed in `_errors` as
//! `{"name", "status", "error"}`. `Cache-Control` of the whole is the most
//! restrictive of the calls' ([`cache_control`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use portico_shared::model::{AggregateCall, Merge};
use serde_json::{Map, Value};

use super::call::{Answer, Outcome};
use crate::stage::cache::freshness::{Directives, http_date};

/// What one upstream response said about caching.
#[derive(Debug)]
pub(super) struct Caching {
    directives: Directives,
    /// It said anything at all (`Cache-Control`, `Expires`, a cookie).
    stated: bool,
    /// It set a cookie, so it was meant for this caller alone.
    set_cookie: bool,
    /// Freshness left: `max-age` (else `Expires` less `Date`) less `Age`.
    max_age: Option<Duration>,
    /// Freshness left for shared caches, when it gave `s-maxage`.
    s_maxage: Option<Duration>,
}

impl Caching {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let directives = Directives::parse(headers);
        let seconds = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()?.parse::<u64>().ok()).map(Duration::from_secs);
        let age = seconds(header::AGE).unwrap_or_default();
        // An `Expires` that does not parse is in the past (RFC 9111 §5.3).
        let expires = headers.contains_key(header::EXPIRES).then(|| {
            let now = http_date(headers, header::DATE).unwrap_or_else(SystemTime::now);
            http_date(headers, header::EXPIRES).and_then(|expires| expires.duration_since(now).ok()).unwrap_or_default()
        });
        Self {
            max_age: directives.max_age.or(expires).map(|d| d.saturating_sub(age)),
            s_maxage: directives.s_maxage.map(|d| d.saturating_sub(age)),
            stated: headers.contains_key(header::CACHE_CONTROL) || expires.is_some(),
            set_cookie: headers.contains_key(header::SET_COOKIE),
            directives,
        }
    }
}

/// Where a call's answer goes in the merged one.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) name: Arc<str>,
    /// Top-level fields kept of an object answer (all when empty).
    fields: Vec<String>,
    /// A `for_each` call, whose answer is an array.
    fans_out: bool,
}

impl Slot {
    pub(super) fn of(call: &AggregateCall) -> Self {
        Self { name: call.name.as_str().into(), fields: call.fields.clone(), fans_out: call.for_each.is_some() }
    }
}

/// One entry of `_errors`, its fields in this order.
#[derive(serde::Serialize)]
struct ErrorEntry<'a> {
    name: &'a str,
    status: Option<u16>,
    error: String,
}

/// The merged answer's bytes: the calls' answers, then `_errors` when one
/// failed. The answers are moved into it, never copied.
pub(super) fn merge(merge: Merge, calls: &[Slot], outcomes: Vec<Outcome>, route: &str) -> Vec<u8> {
    let mut errors = Vec::new();
    let answers: Vec<Option<Value>> = calls
        .iter()
        .zip(outcomes)
        .map(|(call, outcome)| match outcome {
            Ok(answer) => Some(kept(call, answer.value)),
            Err(failure) => {
                errors.push(ErrorEntry { name: &call.name, status: failure.status, error: failure.error });
                None
            }
        })
        .collect();
    // Writing JSON values and strings to a Vec cannot fail.
    let mut out = match merge {
        // Written by hand: a serde_json map would sort the calls by name.
        Merge::Namespaced => {
            let mut out = vec![b'{'];
            for (i, (call, answer)) in calls.iter().zip(&answers).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut out, &*call.name);
                out.push(b':');
                let _ = serde_json::to_writer(&mut out, answer.as_ref().unwrap_or(&Value::Null));
            }
            out.push(b'}');
            out
        }
        Merge::Deep => serde_json::to_vec(&deep(calls, answers, route)).unwrap_or_default(),
    };
    if !errors.is_empty() {
        // In place of the closing brace: `,"_errors":[…]}` (no comma after `{`).
        out.pop();
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"_errors\":");
        let _ = serde_json::to_writer(&mut out, &errors);
        out.push(b'}');
    }
    out
}

/// The answer with only the call's `fields` of an object (of each item's,
/// for a `for_each` call), when it lists some.
fn kept(call: &Slot, value: Value) -> Value {
    let keep = |value: Value| match value {
        Value::Object(mut map) if !call.fields.is_empty() => {
            Value::Object(call.fields.iter().filter_map(|f| Some((f.clone(), map.remove(f)?))).collect())
        }
        other => other,
    };
    match value {
        Value::Array(items) if call.fans_out => Value::Array(items.into_iter().map(keep).collect()),
        other => keep(other),
    }
}

/// The deep merge of the calls' answers (`None`: the call failed).
fn deep(calls: &[Slot], answers: Vec<Option<Value>>, route: &str) -> Map<String, Value> {
    let mut root = Map::new();
    let mut failed = Vec::new();
    for (call, answer) in calls.iter().zip(answers) {
        let Some(answer) = answer else {
            failed.push(call);
            continue;
        };
        let mut collisions = 0;
        match answer {
            Value::Object(mut map) if !call.fans_out => {
                // The root's `_errors` is the gateway's alone.
                map.remove("_errors");
                merge_into(&mut root, map, &mut collisions);
            }
            other => {
                collisions += u64::from(root.insert(call.name.to_string(), other).is_some());
            }
        }
        if collisions > 0 {
            crate::metrics::aggregate_collisions(route, &call.name, collisions);
        }
    }
    for call in failed {
        let keys = if call.fans_out { vec![call.name.to_string()] } else { call.fields.clone() };
        for key in keys.into_iter().filter(|key| key != "_errors") {
            root.entry(key).or_insert(Value::Null);
        }
    }
    root
}

/// Merges `from` into `into`: objects recursively, anything else replaced
/// (each replacement counted).
fn merge_into(into: &mut Map<String, Value>, from: Map<String, Value>, collisions: &mut u64) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => merge_into(existing, incoming, collisions),
            (Some(existing), value) => {
                *existing = value;
                *collisions += 1;
            }
            (None, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The most restrictive caching of the answers' responses: `no-store` if
/// any says so; `private` if any is private or sets a cookie; `no-cache`,
/// `must-revalidate` and `proxy-revalidate` if any has them; `public` only
/// if all are; the smallest `max-age` and `s-maxage` left (after `Age`;
/// `Expires` counts as a `max-age`); `stale-*` only when every response
/// allows it, at the smallest. `None` when no response said anything.
pub(super) fn cache_control<'a>(answers: impl Iterator<Item = &'a Answer>) -> Option<HeaderValue> {
    let responses: Vec<_> = answers.flat_map(|answer| &answer.caching).collect();
    if !responses.iter().any(|r| r.stated || r.set_cookie) {
        return None;
    }
    if responses.iter().any(|r| r.directives.no_store) {
        return Some(HeaderValue::from_static("no-store"));
    }
    let least = |pick: &dyn Fn(&Caching) -> Option<Duration>| responses.iter().filter_map(|r| pick(r)).min();
    let all = |pick: &dyn Fn(&Caching) -> Option<Duration>| {
        if responses.iter().all(|r| pick(r).is_some()) { least(pick) } else { None }
    };
    let private = responses.iter().any(|r| r.directives.private || r.set_cookie);
    let mut directives: Vec<String> = Vec::new();
    if private {
        directives.push("private".to_owned());
    } else if responses.iter().all(|r| r.directives.public) {
        directives.push("public".to_owned());
    }
    if responses.iter().any(|r| r.directives.no_cache) {
        directives.push("no-cache".to_owned());
    }
    if responses.iter().any(|r| r.directives.must_revalidate) {
        directives.push("must-revalidate".to_owned());
    }
    if responses.iter().any(|r| r.directives.proxy_revalidate) {
        directives.push("proxy-revalidate".to_owned());
    }
    if let Some(max_age) = least(&|r| r.max_age) {
        directives.push(format!("max-age={}", max_age.as_secs()));
    }
    if !private
        && responses.iter().any(|r| r.s_maxage.is_some())
        && let Some(shared) = least(&|r| r.s_maxage.or(r.max_age))
    {
        directives.push(format!("s-maxage={}", shared.as_secs()));
    }
    if let Some(stale) = all(&|r| r.directives.stale_while_revalidate) {
        directives.push(format!("stale-while-revalidate={}", stale.as_secs()));
    }
    if let Some(stale) = all(&|r| r.directives.stale_if_error) {
        directives.push(format!("stale-if-error={}", stale.as_secs()));
    }
    if directives.is_empty() {
        return None;
    }
    HeaderValue::from_str(&directives.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::backend::aggregate::call::Failure;

    fn slot(name: &str, fields: &[&str], fans_out: bool) -> Slot {
        Slot { name: name.into(), fields: fields.iter().map(|f| (*f).to_owned()).collect(), fans_out }
    }

    fn answer(value: Value, cache_control: Option<&'static str>, set_cookie: bool) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(value) = cache_control {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
        }
        if set_cookie {
            headers.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        }
        Ok(Answer { value, caching: vec![Caching::of(&headers)] })
    }

    fn failed(status: Option<u16>) -> Outcome {
        let mut failure = Failure::timeout("it broke".to_owned());
        failure.status = status;
        Err(failure)
    }

    fn text(merge_as: Merge, slots: &[Slot], outcomes: Vec<Outcome>) -> String {
        String::from_utf8(merge(merge_as, slots, outcomes, "r")).unwrap()
    }

    #[test]
    fn namespaced_keeps_call_order_fields_and_lists_failures() {
        let slots = [slot("zeta", &[], false), slot("alpha", &["id"], false), slot("orders", &[], false)];
        let outcomes = vec![answer(json!([1, 2]), None, false), answer(json!({"id": 7, "secret": "x"}), None, false), failed(Some(504))];
        assert_eq!(
            text(Merge::Namespaced, &slots, outcomes),
            r#"{"zeta":[1,2],"alpha":{"id":7},"orders":null,"_errors":[{"name":"orders","status":504,"error":"it broke"}]}"#
        );
    }

    #[test]
    fn deep_merges_objects_recursively_and_the_later_call_wins_a_clash() {
        let slots = [slot("a", &[], false), slot("b", &[], false), slot("list", &[], false), slot("gone", &["total"], false)];
        let outcomes = vec![
            answer(json!({"user": {"id": 1, "name": "ann"}, "plan": "free"}), None, false),
            answer(json!({"user": {"email": "a@x"}, "plan": "pro"}), None, false),
            answer(json!(["x"]), None, false),
            failed(None),
        ];
        let merged: Value = serde_json::from_str(&text(Merge::Deep, &slots, outcomes)).unwrap();
        assert_eq!(
            merged,
            json!({"user": {"id": 1, "name": "ann", "email": "a@x"}, "plan": "pro", "list": ["x"], "total": null,
                   "_errors": [{"name": "gone", "status": null, "error": "it broke"}]})
        );
    }

    #[test]
    fn cache_control_is_the_most_restrictive_of_the_calls() {
        let one = |cc, cookie| answer(json!({}), cc, cookie).unwrap();
        let combined = |answers: &[Answer]| cache_control(answers.iter()).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(combined(&[one(Some("max-age=60"), false), one(Some("max-age=10"), false)]).as_deref(), Some("max-age=10"));
        assert_eq!(combined(&[one(Some("public, max-age=60"), false), one(None, false)]).as_deref(), Some("max-age=60"));
        assert_eq!(
            combined(&[one(Some("public, max-age=60"), false), one(Some("public, s-maxage=5"), false)]).as_deref(),
            Some("public, max-age=60, s-maxage=5")
        );
        assert_eq!(
            combined(&[one(Some("max-age=60"), false), one(None, true)]).as_deref(),
            Some("private, max-age=60"),
            "a cookie makes it private"
        );
        assert_eq!(combined(&[one(Some("max-age=60"), false), one(Some("no-store"), false)]).as_deref(), Some("no-store"));
        assert_eq!(combined(&[one(None, false), one(None, false)]), None, "nothing said, nothing added");
        assert_eq!(
            combined(&[one(Some("max-age=5, stale-while-revalidate=30"), false), one(Some("max-age=9"), false)]).as_deref(),
            Some("max-age=5"),
            "stale only when every call allows it"
        );
        let mut aged = HeaderMap::new();
        aged.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60, s-maxage=90, proxy-revalidate"));
        aged.insert(header::AGE, HeaderValue::from_static("50"));
        let mut expiring = HeaderMap::new();
        expiring.insert(header::DATE, HeaderValue::from_static("Mon, 07 Dec 2026 01:00:00 GMT"));
        expiring.insert(header::EXPIRES, HeaderValue::from_static("Mon, 07 Dec 2026 01:00:30 GMT"));
        let answers = [aged, expiring].map(|headers| Answer { value: json!({}), caching: vec![Caching::of(&headers)] });
        assert_eq!(
            combined(&answers).as_deref(),
            Some("proxy-revalidate, max-age=10, s-maxage=30"),
            "what is left after Age, Expires as a max-age"
        );
    }

    #[test]
    fn errors_come_last_in_name_status_error_order_even_after_an_empty_object() {
        let slots = [slot("gone", &[], false)];
        assert_eq!(text(Merge::Deep, &slots, vec![failed(None)]), r#"{"_errors":[{"name":"gone","status":null,"error":"it broke"}]}"#);
    }

    #[test]
    fn fields_apply_to_each_item_and_the_roots_errors_are_the_gateways() {
        let slots = [slot("a", &[], false), slot("lines", &["id"], true)];
        let outcomes = || {
            vec![
                answer(json!({"_errors": ["upstream's own"], "x": 1}), None, false),
                answer(json!([{"id": 1, "secret": 2}, 3]), None, false),
            ]
        };
        assert_eq!(text(Merge::Deep, &slots, outcomes()), r#"{"lines":[{"id":1},3],"x":1}"#);
        assert_eq!(
            text(Merge::Namespaced, &slots, outcomes()),
            r#"{"a":{"_errors":["upstream's own"],"x":1},"lines":[{"id":1},3]}"#,
            "under its name an answer keeps its own _errors"
        );
    }
}
