//! Parsing config documents (JSON or YAML) into the model, turning serde's
//! errors into [`ConfigError`]s that name the field (`targets[0].weight`).

use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// Parses a JSON document.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        located(path, e.into_inner().to_string())
    })?;
    deserializer.end().map_err(|e| ConfigError::invalid("", format!("trailing characters after the JSON document: {e}")))?;
    Ok(value)
}

/// Parses a YAML document.
pub fn from_yaml<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let deserializer = serde_yaml_ng::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        located(path, e.into_inner().to_string())
    })
}

/// Builds the error, naming the exact field for unknown, missing or
/// duplicated fields, which serde reports against their parent.
fn located(path: String, message: String) -> ConfigError {
    let path = if path == "." || path == "?" { String::new() } else { path };
    let named = ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match named {
        Some(name) if path.is_empty() => name.to_owned(),
        Some(name) if path != name && !path.ends_with(&format!(".{name}")) => {
            format!("{path}.{name}")
        }
        _ => path,
    };
    ConfigError::invalid(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GatewayConfig, Route, Service};

    #[test]
    fn names_the_field_of_a_type_error() {
        let err = from_json::<Service>(br#"{"name":"s","targets":[{"url":"http://a:1","weight":"heavy"}]}"#).unwrap_err();
        assert_eq!(err.field(), "targets[0].weight");
    }

    #[test]
    fn names_unknown_and_missing_fields() {
        let err = from_json::<Route>(br#"{"name":"r","service":"s","strip_paht":true}"#).unwrap_err();
        assert_eq!(err.field(), "strip_paht");
        let err = from_json::<Route>(br#"{"name":"r"}"#).unwrap_err();
        assert_eq!(err.field(), "service");
        let err = from_json::<GatewayConfig>(br#"{"services":[{"name":"s"}]}"#).unwrap_err();
        assert_eq!(err.field(), "services[0].targets");
        let err = from_json::<GatewayConfig>(br#"{"services":[],"services":[]}"#).unwrap_err();
        assert_eq!(err.field(), "services", "a duplicated field is named too");
    }

    #[test]
    fn names_unknown_policy_types() {
        let err = from_json::<Route>(br#"{"name":"r","service":"s","policies":[{"type":"teleport"}]}"#).unwrap_err();
        assert_eq!(err.field(), "policies[0].type");
        assert!(err.message().contains("teleport"), "{}", err.message());
    }

    #[test]
    fn rejects_malformed_json_and_trailing_garbage() {
        assert!(from_json::<Service>(b"{\"name\":").is_err());
        assert!(from_json::<GatewayConfig>(b"{} {}").is_err());
    }

    #[test]
    fn reads_yaml_with_field_paths() {
        let config: GatewayConfig = from_yaml(b"services:\n  - name: s\n    targets:\n      - url: http://a:1\n").unwrap();
        assert_eq!(config.services[0].name, "s");
        let err = from_yaml::<GatewayConfig>(b"services:\n  - name: s\n    targets:\n      - url: 5\n        weight: x\n").unwrap_err();
        assert_eq!(err.field(), "services[0].targets[0].weight");
    }
}
