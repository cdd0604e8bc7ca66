//! `--select-tag`: `apply`, `diff` and `export` limited to the entities
//! carrying every selected tag, as decK's `--select-tag` does, so teams can
//! each manage their part of one gateway from their own file.
//!
//! Done on the client over the whole-config API: the current config is
//! exported, the file's entities replace the selected ones, and the result
//! is `PUT` with `If-Match` on the exported hash, so a change made meanwhile
//! is a `409`, never lost. Entities of the file get the selected tags added
//! (they need not be written in the file); entities on the gateway without
//! them are left as they are; a file entity named like one of those is
//! refused, as are gateway-wide `policies` and `trusted_proxies` (they carry
//! no tags). The file's entities come first in each list of the merged
//! document, so the control plane's errors (`services[1].…`) index the file.

use std::collections::HashSet;

use clap::Args;
use portico_shared::GatewayConfig;
use portico_shared::model::Entity;
use serde_json::Value;

#[derive(Debug, Clone, Default, Args)]
pub struct Selection {
    /// Only entities carrying this tag (repeat for several: an entity needs all); others are left untouched.
    #[arg(long = "select-tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    fn holds<E: Entity>(&self, entity: &E) -> bool {
        self.tags.iter().all(|tag| entity.tags().contains(tag))
    }

    /// The selected entities of `config`, without the gateway-wide settings.
    pub fn filter(&self, config: GatewayConfig) -> GatewayConfig {
        fn keep<E: Entity>(selection: &Selection, entities: Vec<E>) -> Vec<E> {
            entities.into_iter().filter(|e| selection.holds(e)).collect()
        }
        GatewayConfig {
            services: keep(self, config.services),
            routes: keep(self, config.routes),
            consumers: keep(self, config.consumers),
            credentials: keep(self, config.credentials),
            certificates: keep(self, config.certificates),
            protos: keep(self, config.protos),
            policies: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }

    /// The whole config to publish: `file`'s entities, tagged, in place of
    /// `current`'s selected ones; every reason it cannot be, one per line.
    pub fn scope(&self, current: &GatewayConfig, file: GatewayConfig) -> Result<GatewayConfig, Vec<String>> {
        let mut problems = Vec::new();
        for (field, set) in [("policies", !file.policies.is_empty()), ("trusted_proxies", !file.trusted_proxies.is_empty())] {
            if set {
                problems.push(format!("{field}: gateway-wide settings carry no tags; apply them without --select-tag"));
            }
        }
        let merged = GatewayConfig {
            services: self.scope_entities(&current.services, file.services, &mut problems),
            routes: self.scope_entities(&current.routes, file.routes, &mut problems),
            consumers: self.scope_entities(&current.consumers, file.consumers, &mut problems),
            credentials: self.scope_entities(&current.credentials, file.credentials, &mut problems),
            certificates: self.scope_entities(&current.certificates, file.certificates, &mut problems),
            protos: self.scope_entities(&current.protos, file.protos, &mut problems),
            policies: current.policies.clone(),
            trusted_proxies: current.trusted_proxies.clone(),
        };
        if problems.is_empty() { Ok(merged) } else { Err(problems) }
    }

    fn scope_entities<E: Entity>(&self, current: &[E], file: Vec<E>, problems: &mut Vec<String>) -> Vec<E> {
        let outside: Vec<&E> = current.iter().filter(|e| !self.holds(*e)).collect();
        let outside_names: HashSet<&str> = outside.iter().map(|e| e.name()).collect();
        let mut merged = Vec::with_capacity(file.len() + outside.len());
        for (index, mut entity) in file.into_iter().enumerate() {
            for tag in &self.tags {
                if !entity.tags().contains(tag) {
                    entity.tags_mut().push(tag.clone());
                }
            }
            if outside_names.contains(entity.name()) {
                problems.push(format!(
                    "{}[{index}]: {} '{}' exists on the gateway without the tag(s) {}; it is outside the selection",
                    E::COLLECTION,
                    E::KIND.as_str(),
                    entity.name(),
                    self.tags.join(", ")
                ));
            }
            merged.push(entity);
        }
        merged.extend(outside.into_iter().cloned());
        merged
    }

    /// Counts in a diff's `summary` for the selection only: `unchanged` is
    /// what the file holds that does not change (the entities outside the
    /// selection, also unchanged, are not counted).
    pub fn rescope_summary(&self, diff: &mut Value, in_file: usize) {
        let summary = &mut diff["summary"];
        let changed = summary["create"].as_u64().unwrap_or(0) + summary["update"].as_u64().unwrap_or(0);
        summary["unchanged"] = Value::from((in_file as u64).saturating_sub(changed));
    }
}

/// How many entities a config holds.
pub(crate) fn entity_count(config: &GatewayConfig) -> usize {
    config.services.len()
        + config.routes.len()
        + config.consumers.len()
        + config.credentials.len()
        + config.certificates.len()
        + config.protos.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_shared::parse::from_yaml;

    fn config(yaml: &str) -> GatewayConfig {
        from_yaml(yaml.as_bytes()).unwrap()
    }

    fn selection(tags: &[&str]) -> Selection {
        Selection { tags: tags.iter().map(|t| (*t).to_owned()).collect() }
    }

    const CURRENT: &str = "
services:
  - {name: a, targets: [{url: 'http://a:1'}], tags: [team-a]}
  - {name: b, targets: [{url: 'http://b:1'}], tags: [team-b]}
  - {name: ab, targets: [{url: 'http://ab:1'}], tags: [team-a, shared]}
policies: [{type: cors, origins: ['*']}]
";

    #[test]
    fn export_keeps_entities_with_every_selected_tag_and_no_gateway_settings() {
        let names = |c: GatewayConfig| c.services.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(selection(&["team-a"]).filter(config(CURRENT))), ["a", "ab"]);
        assert_eq!(names(selection(&["team-a", "shared"]).filter(config(CURRENT))), ["ab"]);
        assert!(selection(&["team-a"]).filter(config(CURRENT)).policies.is_empty());
    }

    #[test]
    fn the_file_replaces_the_selection_tagged_and_leaves_the_rest() {
        let file = config("services:\n  - {name: c, targets: [{url: 'http://c:1'}]}\n");
        let merged = selection(&["team-a"]).scope(&config(CURRENT), file).unwrap();
        let services: Vec<(&str, &[String])> = merged.services.iter().map(|s| (s.name.as_str(), s.tags.as_slice())).collect();
        assert_eq!(services, [("c", &["team-a".to_owned()][..]), ("b", &["team-b".to_owned()][..])]);
        assert_eq!(merged.policies.len(), 1, "gateway settings stay as they are");
    }

    #[test]
    fn refuses_entities_outside_the_selection_and_gateway_settings() {
        let file = config(
            "services:\n  - {name: a, targets: [{url: 'http://a:2'}]}\n  - {name: b, targets: [{url: 'http://b:2'}]}\ntrusted_proxies: [10.0.0.0/8]\n",
        );
        let problems = selection(&["team-a"]).scope(&config(CURRENT), file).unwrap_err();
        assert_eq!(
            problems,
            [
                "trusted_proxies: gateway-wide settings carry no tags; apply them without --select-tag",
                "services[1]: service 'b' exists on the gateway without the tag(s) team-a; it is outside the selection",
            ]
        );
    }
}
