//! The declarative config's parser and validation, as the control plane
//! runs them for `PUT /api/v1/gateways/{gw}/config` (a JSON or YAML
//! `GatewayConfig`, then `validate::config`). Every input goes through both
//! parsers. The control plane seals credential keys between the two
//! steps; that needs its key material and is left out.
//!
//! Properties: nothing panics; every validation error (of all those
//! reported) names a field; a
//! parse error names a field whenever the document is a well-formed
//! mapping (a syntax error or a non-mapping root is about the whole
//! document, and `ConfigError` documents an empty field for that); and a
//! validated config survives a JSON round trip and validates again
//! unchanged (normalisation is idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_shared::{ConfigError, GatewayConfig, parse, validate};

fuzz_target!(|data: &[u8]| {
    let json_mapping = serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|v| v.is_object());
    check(parse::from_json(data), json_mapping, "JSON", data);
    let yaml_mapping = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(data).is_ok_and(|v| v.is_mapping());
    check(parse::from_yaml(data), yaml_mapping, "YAML", data);
});

fn check(parsed: Result<GatewayConfig, ConfigError>, mapping: bool, format: &str, data: &[u8]) {
    let mut config = match parsed {
        Ok(config) => config,
        Err(error) => {
            // A key that names no field (empty, `"": 1` or YAML's bare `?`;
            // not a string, YAML's `{[]: 1}`) is reported at the root.
            let empty_key = error.message().starts_with("unknown field ``") || error.message().contains("expected field identifier");
            assert!(
                !mapping || empty_key || !error.field().is_empty(),
                "a {format} parse error of a mapping names no field: {error:?}\ninput: {:?}",
                String::from_utf8_lossy(data)
            );
            return;
        }
    };
    if let Err(errors) = validate::config(&mut config) {
        for error in &errors {
            assert!(!error.field().is_empty(), "a validation error names no field: {error:?}");
        }
        return;
    }
    let json = serde_json::to_vec(&config).expect("a validated config serialises");
    let mut again: GatewayConfig = parse::from_json(&json)
        .unwrap_or_else(|e| panic!("a validated config does not parse back: {e}\n{}", String::from_utf8_lossy(&json)));
    validate::config(&mut again).unwrap_or_else(|e| panic!("a validated config does not validate again: {e}"));
    assert_eq!(again, config, "validating a validated config changed it");
}
