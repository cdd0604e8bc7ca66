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

use http::HeaderValue;
use portico_shared::model::Merge;
use serde_json::{Map, Value, json};

use super::call::{Answer, Call, Outcome};

/// The merged answer's bytes.
pub(super) fn merge(merge: Merge, calls: &[Call], outcomes: &[Outcome], route: &str) -> Vec<u8> {
    let errors: Vec<Value> = calls
        .iter()
        .zip(outcomes)
        .filter_map(|(call, outcome)| outcome.as_ref().err().map(|f| json!({"name": &*call.name, "status": f.status, "error": f.error})))
        .collect();
    // Writing JSON values and strings to a Vec cannot fail.
    match merge {
        // Written by hand: a serde_json map would sort the calls by name.
        Merge::Namespaced => {
            let mut out = vec![b'{'];
            for (i, (call, outcome)) in calls.iter().zip(outcomes).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut out, &*call.name);
                out.push(b':');
                let _ = serde_json::to_writer(&mut out, &outcome.as_ref().map_or(Value::Null, |a| kept(call, a)));
            }
            if !errors.is_empty() {
                out.extend_from_slice(b",\"_errors\":");
                let _ = serde_json::to_writer(&mut out, &errors);
            }
            out.push(b'}');
            out
        }
        Merge::Deep => {
            let mut merged = deep(calls, outcomes, route);
            if !errors.is_empty() {
                merged.insert("_errors".to_owned(), Value::Array(errors));
            }
            serde_json::to_vec(&merged).unwrap_or_default()
        }
    }
}

/// The answer with only the call's `fields`, when it lists some and the answer is an object.
fn kept(call: &Call, answer: &Answer) -> Value {
    match &answer.value {
        Value::Object(map) if !call.fields.is_empty() => {
            Value::Object(call.fields.iter().filter_map(|f| Some((f.clone(), map.get(f)?.clone()))).collect())
        }
        other => other.clone(),
    }
}

fn deep(calls: &[Call], outcomes: &[Outcome], route: &str) -> Map<String, Value> {
    let mut root = Map::new();
    for (call, answer) in calls.iter().zip(outcomes).filter_map(|(call, outcome)| Some((call, outcome.as_ref().ok()?))) {
        let mut collisions = 0;
        match kept(call, answer) {
            Value::Object(map) if !call.fans_out() => merge_into(&mut root, map, &mut collisions),
            other => {
                collisions += u64::from(root.insert(call.name.to_string(), other).is_some());
            }
        }
        if collisions > 0 {
            crate::metrics::aggregate_collisions(route, &call.name, collisions);
        }
    }
    for (call, _) in calls.iter().zip(outcomes).filter(|(_, outcome)| outcome.is_err()) {
        let keys = if call.fans_out() { vec![call.name.to_string()] } else { call.fields.clone() };
        for key in keys {
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
/// any says so; `private` if any is private or sets a cookie; `no-cache`
/// and `must-revalidate` if any has them; `public` only if all are; the
/// smallest `max-age` and `s-maxage` given; `stale-*` only when every
/// response allows it, at the smallest. `None` when no response said
/// anything.
pub(super) fn cache_control<'a>(answers: impl Iterator<Item = &'a Answer>) -> Option<HeaderValue> {
    let responses: Vec<_> = answers.flat_map(|answer| &answer.caching).collect();
    if !responses.iter().any(|r| r.stated || r.set_cookie) {
        return None;
    }
    if responses.iter().any(|r| r.directives.no_store) {
        return Some(HeaderValue::from_static("no-store"));
    }
    let least = |pick: &dyn Fn(&super::call::Caching) -> Option<std::time::Duration>| responses.iter().filter_map(|r| pick(r)).min();
    let all = |pick: &dyn Fn(&super::call::Caching) -> Option<std::time::Duration>| {
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
    if let Some(max_age) = least(&|r| r.directives.max_age) {
        directives.push(format!("max-age={}", max_age.as_secs()));
    }
    if !private && responses.iter().any(|r| r.directives.s_maxage.is_some()) {
        if let Some(shared) = least(&|r| r.directives.s_maxage.or(r.directives.max_age)) {
            directives.push(format!("s-maxage={}", shared.as_secs()));
        }
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
