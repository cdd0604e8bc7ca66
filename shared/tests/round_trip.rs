//! Property tests of config round trips: any valid config compiles to a
//! snapshot that decodes to itself, survives JSON and YAML exports, and
//! re-applying its declarative form changes nothing.

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use chrono::DateTime;
use portico_shared::diff::{diff, merge};
use portico_shared::parse::{from_json, from_yaml};
use portico_shared::{GatewayConfig, Snapshot};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A valid config as JSON: unique names, routes pointing at existing
/// services, paths that never shadow each other (one distinct path each).
fn config() -> impl Strategy<Value = Value> {
    let services = proptest::collection::btree_set("[a-z][a-z0-9-]{0,8}", 1..5);
    let routes = proptest::collection::btree_set("[a-z][a-z0-9]{0,8}", 0..8);
    let consumers = proptest::collection::btree_set("[A-Za-z0-9][A-Za-z0-9._@+-]{0,10}", 0..4);
    (services, routes, consumers, proptest::collection::vec((1u32..=1000, 1u16..=65535, any::<bool>(), 0usize..3), 8))
        .prop_map(|(services, routes, consumers, knobs)| {
            let names: Vec<&String> = services.iter().collect();
            let services: Vec<Value> = services
                .iter()
                .zip(knobs.iter().cycle())
                .map(|(name, (weight, port, _, _))| json!({"name": name, "targets": [{"url": format!("http://{name}.internal:{port}"), "weight": weight}]}))
                .collect();
            let routes: Vec<Value> = routes
                .iter()
                .zip(knobs.iter().cycle())
                .map(|(name, (_, _, strip, methods))| {
                    let methods = [json!(["GET"]), json!(["get", "POST"]), json!([])][*methods].clone();
                    json!({
                        "name": name,
                        "service": names[name.len() % names.len()],
                        "paths": [format!("/{name}/")],
                        "methods": methods,
                        "strip_path": strip,
                    })
                })
                .collect();
            let consumers: Vec<Value> = consumers.iter().map(|u| json!({"username": u})).collect();
            json!({"services": services, "routes": routes, "consumers": consumers})
        })
}

fn compile(value: &Value) -> Snapshot {
    Snapshot::compile(from_json::<GatewayConfig>(value.to_string().as_bytes()).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn snapshots_decode_to_themselves(value in config()) {
        let snapshot = compile(&value);
        prop_assert_eq!(Snapshot::decode(&snapshot.bytes, &snapshot.hash).unwrap(), snapshot);
    }

    #[test]
    fn exports_round_trip_through_json_and_yaml(value in config()) {
        let stored = Snapshot::compile(merge(&GatewayConfig::default(), compile(&value).config, DateTime::from_timestamp(1, 0).unwrap())).unwrap();
        let export = stored.config.declarative();
        let from_yaml: GatewayConfig = from_yaml(serde_yaml_ng::to_string(&export).unwrap().as_bytes()).unwrap();
        let from_json: GatewayConfig = from_json(&serde_json::to_vec(&export).unwrap()).unwrap();
        for reimported in [from_yaml, from_json] {
            let normalized = Snapshot::compile(reimported).unwrap().config;
            let reapplied = Snapshot::compile(merge(&stored.config, normalized, DateTime::from_timestamp(2, 0).unwrap())).unwrap();
            prop_assert_eq!(&reapplied.hash, &stored.hash, "re-applying an export changes nothing");
            prop_assert!(diff(&stored.config, &reapplied.config).is_empty());
        }
    }
}
