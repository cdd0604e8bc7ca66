//! Declarative config: merging a desired document into the current config
//! (identity by name), and a readable, structured diff between two configs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::model::{Entity, EntityKind, GatewayConfig};

/// Gives `desired`'s entities their identity: an entity whose name exists
/// in `current` keeps its id and `created_at` (and its `updated_at` when
/// nothing else changed); a new one gets a fresh id (or the one it was
/// given) and `now`. Both configs should already be normalized.
pub fn merge(current: &GatewayConfig, mut desired: GatewayConfig, now: DateTime<Utc>) -> GatewayConfig {
    merge_entities(&current.services, &mut desired.services, now);
    merge_entities(&current.routes, &mut desired.routes, now);
    merge_entities(&current.consumers, &mut desired.consumers, now);
    merge_entities(&current.credentials, &mut desired.credentials, now);
    merge_entities(&current.certificates, &mut desired.certificates, now);
    merge_entities(&current.protos, &mut desired.protos, now);
    desired
}

fn merge_entities<E: Entity>(current: &[E], desired: &mut [E], now: DateTime<Utc>) {
    let by_name: HashMap<&str, &E> = current.iter().map(|e| (e.name(), e)).collect();
    for entity in desired {
        match by_name.get(entity.name()) {
            Some(old) => {
                entity.keep_secrets_of(old);
                let updated = if old.declarative() == entity.declarative() { old.updated_at() } else { Some(now) };
                entity.set_meta(old.id(), old.created_at(), updated);
            }
            None => {
                let id = entity.id().unwrap_or_else(Uuid::new_v4);
                entity.set_meta(Some(id), Some(now), Some(now));
            }
        }
    }
}

/// What applying a config would change, entity by entity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ConfigDiff {
    pub changes: Vec<EntityChange>,
    pub summary: DiffSummary,
}

/// Counts of entities created, updated, deleted and left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct DiffSummary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One entity that changes.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EntityChange {
    pub kind: EntityKind,
    pub name: String,
    pub action: Action,
    /// For `update`, each changed field (a JSON pointer into the entity), in
    /// order: applied one after another they turn the old entity into the
    /// new one, so a path into a list counts from the list as the changes
    /// before it left it (removing `GET` and `PATCH` from `[GET, PATCH]` is
    /// two removals at `/methods/0`, of `GET` then of `PATCH`); for `create`
    /// and `delete`, one entry with the path `""` and the whole entity.
    pub fields: Vec<FieldChange>,
}

/// One changed value; `old` is absent for an addition, `new` for a removal.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Compares the declarative forms of two configs (server-assigned fields
/// are ignored).
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> ConfigDiff {
    let mut result = ConfigDiff::default();
    diff_entities(&old.services, &new.services, &mut result);
    diff_entities(&old.routes, &new.routes, &mut result);
    diff_entities(&old.consumers, &new.consumers, &mut result);
    diff_entities(&old.credentials, &new.credentials, &mut result);
    diff_entities(&old.certificates, &new.certificates, &mut result);
    diff_entities(&old.protos, &new.protos, &mut result);
    diff_gateway_settings(old, new, &mut result);
    result
}

/// The gateway's own policies and trusted proxies, shown as an update of
/// the `gateway` entity named `settings`.
fn diff_gateway_settings(old: &GatewayConfig, new: &GatewayConfig, out: &mut ConfigDiff) {
    let to_json = |c: &GatewayConfig| serde_json::json!({"policies": c.policies, "trusted_proxies": c.trusted_proxies});
    let fields = field_changes(&to_json(old), &to_json(new));
    if !fields.is_empty() {
        out.summary.update += 1;
        out.changes.push(EntityChange { kind: EntityKind::Gateway, name: "settings".to_owned(), action: Action::Update, fields });
    }
}

fn diff_entities<E: Entity>(old: &[E], new: &[E], out: &mut ConfigDiff) {
    // What the control plane derives (a proto's compiled set) changes with
    // what it is derived from, which the diff shows instead.
    let to_json = |e: &E| {
        let mut written = e.shown().declarative();
        written.drop_derived();
        serde_json::to_value(written).expect("entities serialize to JSON")
    };
    let old_by_name: HashMap<&str, &E> = old.iter().map(|e| (e.name(), e)).collect();
    let new_by_name: HashMap<&str, &E> = new.iter().map(|e| (e.name(), e)).collect();
    let whole = |value: Value, created: bool| FieldChange {
        path: String::new(),
        old: (!created).then(|| value.clone()),
        new: created.then_some(value),
    };
    for entity in new {
        let change = match old_by_name.get(entity.name()) {
            None => Some((Action::Create, vec![whole(to_json(entity), true)])),
            Some(before) => {
                let (before, after) = (to_json(before), to_json(entity));
                let fields = field_changes(&before, &after);
                (!fields.is_empty()).then_some((Action::Update, fields))
            }
        };
        match change {
            Some((action, fields)) => {
                match action {
                    Action::Create => out.summary.create += 1,
                    _ => out.summary.update += 1,
                }
                out.changes.push(EntityChange { kind: E::KIND, name: entity.name().to_owned(), action, fields });
            }
            None => out.summary.unchanged += 1,
        }
    }
    for entity in old.iter().filter(|e| !new_by_name.contains_key(e.name())) {
        out.summary.delete += 1;
        out.changes.push(EntityChange {
            kind: E::KIND,
            name: entity.name().to_owned(),
            action: Action::Delete,
            fields: vec![whole(to_json(entity), false)],
        });
    }
}

/// The changes that turn `before` into `after`, in order: each one's `old`
/// is read from the value as the earlier changes left it, so removing
/// several elements of an array names each element once (an array's
/// indexes shift as its elements go).
fn field_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    use json_patch::PatchOperation;
    let mut current = before.clone();
    let mut changes = Vec::new();
    for op in json_patch::diff(before, after).0 {
        let path = op.path().to_string();
        let (old, new) = match &op {
            PatchOperation::Add(add) => (None, Some(add.value.clone())),
            PatchOperation::Replace(replace) => (current.pointer(&path).cloned(), Some(replace.value.clone())),
            _ => (current.pointer(&path).cloned(), None),
        };
        // The op was made from these very values, so it applies.
        if json_patch::patch(&mut current, std::slice::from_ref(&op)).is_err() {
            break;
        }
        changes.push(FieldChange { path, old, new });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;
    use crate::snapshot::Snapshot;

    fn config(json: &str) -> GatewayConfig {
        Snapshot::compile(from_json(json.as_bytes()).unwrap()).unwrap().config
    }

    const BASE: &str =
        r#"{"services":[{"name":"users","targets":[{"url":"http://a:1"}]},{"name":"old","targets":[{"url":"http://o:1"}]}]}"#;

    #[test]
    fn diff_lists_creates_updates_and_deletes() {
        let old = config(BASE);
        let new =
            config(r#"{"services":[{"name":"users","targets":[{"url":"http://b:1"}]},{"name":"new","targets":[{"url":"http://n:1"}]}]}"#);
        let d = diff(&old, &new);
        assert_eq!(d.summary, DiffSummary { create: 1, update: 1, delete: 1, unchanged: 0 });
        let update = d.changes.iter().find(|c| c.action == Action::Update).unwrap();
        assert_eq!(update.name, "users");
        assert_eq!(update.fields[0].path, "/targets/0/url");
        assert_eq!(update.fields[0].old, Some(Value::from("http://a:1")));
        assert_eq!(update.fields[0].new, Some(Value::from("http://b:1")));
    }

    #[test]
    fn merge_keeps_identity_by_name_and_diff_ignores_it() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap();
        let current = merge(&GatewayConfig::default(), config(BASE), t0);
        let id = current.services[0].id.unwrap();
        let again = merge(&current, config(BASE), t1);
        assert_eq!(again, current, "applying the same document changes nothing");
        let changed = merge(&current, config(&BASE.replace("http://a:1", "http://c:1")), t1);
        let users = changed.services.iter().find(|s| s.name == "users").unwrap();
        assert_eq!(users.id, current.services.iter().find(|s| s.name == "users").unwrap().id);
        assert_eq!((users.created_at, users.updated_at), (Some(t0), Some(t1)));
        assert!(current.services.iter().any(|s| s.id == Some(id)));
        assert!(diff(&current, &config(BASE)).is_empty());
    }

    #[test]
    fn a_proto_diff_shows_its_sources_not_its_compiled_set() {
        let proto = |source: &str| {
            let json = serde_json::json!({"protos": [{"name": "shop", "files": {"shop/orders.proto": source}}]});
            config(&json.to_string())
        };
        let before = proto(crate::model::proto::TEST_ORDERS_PROTO);
        let after = proto(&format!("{}message Extra {{}}\n", crate::model::proto::TEST_ORDERS_PROTO));
        assert_ne!(before.protos[0].descriptor_set, after.protos[0].descriptor_set);
        let d = diff(&before, &after);
        let paths: Vec<&str> = d.changes.iter().flat_map(|c| c.fields.iter().map(|f| f.path.as_str())).collect();
        assert_eq!(paths, ["/files/shop~1orders.proto"]);
        let created = diff(&GatewayConfig::default(), &before);
        assert!(created.changes[0].fields[0].new.as_ref().is_some_and(|p| p.get("descriptor_set").is_none()), "{created:?}");
    }

    #[test]
    fn removing_several_elements_of_a_list_names_each_once() {
        let route = |methods: &str| {
            config(&format!(
                r#"{{"services":[{{"name":"users","targets":[{{"url":"http://a:1"}}]}}],
                "routes":[{{"name":"r","service":"users","paths":["/"],"methods":{methods}}}]}}"#
            ))
        };
        let d = diff(&route(r#"["GET","PATCH"]"#), &route("[]"));
        let removed: Vec<Option<Value>> = d.changes[0].fields.iter().map(|f| f.old.clone()).collect();
        assert_eq!(removed.len(), 2, "{d:?}");
        assert!(removed.contains(&Some(Value::from("GET"))) && removed.contains(&Some(Value::from("PATCH"))), "{removed:?}");
    }

    /// Replays a diff's description of one entity: an `old` without `new`
    /// is a removal, a `new` without `old` an addition, both a replacement;
    /// each `old` must be what is there when its change comes.
    fn replay(before: &Value, fields: &[FieldChange]) -> Value {
        let mut value = before.clone();
        for field in fields {
            if field.old.is_some() {
                assert_eq!(value.pointer(&field.path), field.old.as_ref(), "the old value of {}", field.path);
            }
            let op = match (&field.old, &field.new) {
                (Some(_), None) => serde_json::json!({"op": "remove", "path": field.path}),
                (None, Some(new)) => serde_json::json!({"op": "add", "path": field.path, "value": new}),
                (Some(_), Some(new)) => serde_json::json!({"op": "replace", "path": field.path, "value": new}),
                (None, None) => panic!("a change with neither side: {field:?}"),
            };
            let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([op])).unwrap();
            json_patch::patch(&mut value, &patch).unwrap_or_else(|e| panic!("{field:?} does not apply: {e}"));
        }
        value
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0..5i64).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from)
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                proptest::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn replaying_the_changes_of_any_two_values_gives_the_second(before in json(), after in json()) {
            proptest::prop_assert_eq!(replay(&before, &field_changes(&before, &after)), after);
        }

        #[test]
        fn replaying_a_route_diff_gives_the_new_route(
            old_methods in proptest::sample::subsequence(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], 0..6),
            new_methods in proptest::sample::subsequence(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], 0..6),
            old_paths in proptest::sample::subsequence(vec!["/a", "/b", "/c/{id}", "/d"], 1..4),
            new_paths in proptest::sample::subsequence(vec!["/a", "/b", "/c/{id}", "/d"], 1..4),
            old_tags in proptest::sample::subsequence(vec!["a", "b", "c", "d"], 0..4),
            new_tags in proptest::sample::subsequence(vec!["a", "b", "c", "d"], 0..4),
            strip in proptest::bool::ANY,
        ) {
            let route = |methods: &[&str], paths: &[&str], tags: &[&str], strip_path: bool| {
                let doc = serde_json::json!({
                    "services": [{"name": "users", "targets": [{"url": "http://a:1"}]}],
                    "routes": [{"name": "r", "service": "users", "paths": paths, "methods": methods, "tags": tags, "strip_path": strip_path}],
                });
                config(&doc.to_string())
            };
            let (old, new) = (route(&old_methods, &old_paths, &old_tags, true), route(&new_methods, &new_paths, &new_tags, strip));
            let as_json = |c: &GatewayConfig| serde_json::to_value(c.routes[0].declarative()).unwrap();
            let d = diff(&old, &new);
            let fields = d.changes.iter().find(|c| c.kind == EntityKind::Route).map(|c| c.fields.clone()).unwrap_or_default();
            proptest::prop_assert_eq!(replay(&as_json(&old), &fields), as_json(&new));
        }
    }
}
