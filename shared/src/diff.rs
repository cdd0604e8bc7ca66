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
    /// For `update`, each changed field (a JSON pointer into the entity);
    /// for `create` and `delete`, one entry with the path `""` and the whole
    /// entity.
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
    let to_json = |e: &E| serde_json::to_value(e.shown().declarative()).expect("entities serialize to JSON");
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

fn field_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    json_patch::diff(before, after)
        .0
        .iter()
        .map(|op| {
            let path = op.path().to_string();
            FieldChange { old: before.pointer(&path).cloned(), new: after.pointer(&path).cloned(), path }
        })
        .collect()
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
}
