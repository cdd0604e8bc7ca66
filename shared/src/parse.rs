//! Parsing config documents (JSON or YAML) into the model, turning serde's
//! errors into [`ConfigError`]s that name the field (`targets[0].weight`).
//!
//! This is the one way a client's document becomes data: every admin API
//! body (entities, merge patches, settings, whole configs, tokens) goes
//! through [`from_json`] or [`from_yaml`], and both are strict: a key that
//! appears twice in one object, at any depth, is refused naming its path
//! (`policies`, `timeouts.connect_ms`, `routes[0].headers.x-a`), where
//! serde_json and serde_yaml_ng would let the last one win (serde's derived
//! structs refuse a repeated field, but maps, `serde_json::Value` and so JSON
//! merge patches do not). Neither crate has a switch for this, so the check
//! is a serde visitor run over their own deserializers before the typed
//! pass: one grammar per format, not a second hand-kept parser.

use std::collections::HashSet;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use crate::error::ConfigError;

/// Parses a JSON document, refusing duplicate keys at any depth.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut checker = serde_json::Deserializer::from_slice(bytes);
    let checked = check_unique_keys(&mut checker);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        located(path, e.into_inner().to_string())
    });
    let value = after_check(checked, value)?;
    deserializer.end().map_err(|e| ConfigError::invalid("", format!("trailing characters after the JSON document: {e}")))?;
    Ok(value)
}

/// Parses a YAML document, refusing duplicate keys at any depth.
pub fn from_yaml<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let checked = check_unique_keys(serde_yaml_ng::Deserializer::from_slice(bytes));
    let deserializer = serde_yaml_ng::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        located(path, e.into_inner().to_string())
    });
    after_check(checked, value)
}

/// The outcome of a check for duplicate keys: clean, a duplicate (the
/// error to report), or a document the check could not read.
enum Checked {
    Unique,
    Duplicate(ConfigError),
    Unreadable(String),
}

/// Combines the check with the typed parse: a duplicate wins; a document
/// the check could not read is reported by the typed parse, which names the
/// field (and if that one somehow succeeds, the check's reason still refuses it).
fn after_check<T>(checked: Checked, parsed: Result<T, ConfigError>) -> Result<T, ConfigError> {
    match checked {
        Checked::Duplicate(error) => Err(error),
        Checked::Unique => parsed,
        Checked::Unreadable(reason) => parsed.and_then(|_| Err(ConfigError::invalid("", reason))),
    }
}

fn check_unique_keys<'de, D: Deserializer<'de>>(deserializer: D) -> Checked {
    let mut duplicate = None;
    match (Unique { at: None, duplicate: &mut duplicate }).deserialize(deserializer) {
        Ok(()) => Checked::Unique,
        Err(e) => match duplicate {
            Some((path, key)) => {
                Checked::Duplicate(ConfigError::invalid(path, format!("duplicate key `{key}`: a key may appear only once in an object")))
            }
            None => Checked::Unreadable(e.to_string()),
        },
    }
}

/// Where a value sits in the document, as a chain to its parent, so that a
/// path is only formatted when a duplicate is found.
enum Segment<'a> {
    Key(&'a Segment<'a>, &'a str),
    Index(&'a Segment<'a>, usize),
    Root,
}

impl fmt::Display for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => Ok(()),
            Self::Key(Self::Root, key) => f.write_str(key),
            Self::Key(parent, key) => write!(f, "{parent}.{key}"),
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// Walks a value, failing at the first key that repeats within one map and
/// recording its path and the key.
struct Unique<'a, 'p> {
    at: Option<&'p Segment<'p>>,
    duplicate: &'a mut Option<(String, String)>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let parent = self.at.unwrap_or(&Segment::Root);
        let mut index = 0;
        loop {
            let at = Segment::Index(parent, index);
            if seq.next_element_seed(Unique { at: Some(&at), duplicate: &mut *self.duplicate })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let parent = self.at.unwrap_or(&Segment::Root);
        let mut seen = HashSet::new();
        while let Some(Key(key)) = map.next_key()? {
            let at = Segment::Key(parent, &key);
            if seen.contains(&key) {
                *self.duplicate = Some((at.to_string(), key.clone()));
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            map.next_value_seed(Unique { at: Some(&at), duplicate: &mut *self.duplicate })?;
            seen.insert(key);
        }
        Ok(())
    }

    /// A YAML tagged value (`!tag value`): the value is what is checked.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (IgnoredAny, variant) = data.variant()?;
        variant.newtype_variant_seed(self)
    }
}

/// A map key as text: JSON keys are strings; YAML's scalar keys (`1`,
/// `true`) are compared as written, so `1` and `"1"` count as the same key.
struct Key(String);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
        Ok(Key(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        Ok(Key("null".to_owned()))
    }
}

/// Builds the error, naming the exact field for unknown, missing,
/// duplicated or conflicting fields, which serde (or a `try_from` type,
/// for the last) reports against their parent.
/// The message is serde's text alone: serde_yaml_ng prefixes its messages
/// with its own path (`services[0].targets[0].weight: invalid type: …`),
/// which is the field's, so that prefix is dropped.
fn located(path: String, message: String) -> ConfigError {
    let path = if path == "." || path == "?" { String::new() } else { path };
    let message = match message.split_once(": ") {
        Some((prefix, rest))
            if prefix == path || (!prefix.is_empty() && !prefix.contains(char::is_whitespace) && !prefix.contains('`')) =>
        {
            rest.to_owned()
        }
        _ => message,
    };
    let named = ["unknown field `", "missing field `", "duplicate field `", "conflicting field `"]
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

    fn duplicate_at(result: Result<serde_json::Value, ConfigError>) -> String {
        let err = result.expect_err("a duplicate key must be refused");
        assert!(err.message().starts_with("duplicate key `"), "{}", err.message());
        err.field().to_owned()
    }

    #[test]
    fn refuses_duplicate_json_keys_at_any_depth_naming_the_path() {
        assert_eq!(duplicate_at(from_json(br#"{"policies":[{"type":"key-auth"}],"policies":[]}"#)), "policies");
        assert_eq!(duplicate_at(from_json(br#"{"timeouts":{"connect_ms":1,"connect_ms":2}}"#)), "timeouts.connect_ms");
        assert_eq!(duplicate_at(from_json(br#"{"policies":[{"type":"jwt"},{"type":"key-auth","type":"jwt"}]}"#)), "policies[1].type");
        assert_eq!(duplicate_at(from_json(br#"[[{"a":{"b":1,"b":1}}]]"#)), "[0][0].a.b");
        assert_eq!(duplicate_at(from_json(br#"{"a":1,"\u0061":2}"#)), "a", "keys compare after unescaping");
        let err = from_json::<Route>(br#"{"name":"r","service":"s","headers":{"x-a":["1"],"x-a":["2"]}}"#).unwrap_err();
        assert_eq!(err.field(), "headers.x-a", "maps in typed documents too");
        let err = from_json::<Service>(br#"{"name":"s","name":"t","targets":[{"url":"http://a:1"}]}"#).unwrap_err();
        assert_eq!(err.field(), "name");
    }

    #[test]
    fn refuses_duplicate_yaml_keys_at_any_depth_naming_the_path() {
        assert_eq!(duplicate_at(from_yaml(b"policies: [{type: key-auth}]\npolicies: []\n")), "policies");
        assert_eq!(
            duplicate_at(from_yaml(b"routes:\n  - name: r\n    headers:\n      x-a: [\"1\"]\n      x-a: [\"2\"]\n")),
            "routes[0].headers.x-a"
        );
        assert_eq!(duplicate_at(from_yaml(b"a:\n  1: x\n  \"1\": y\n")), "a.1", "a scalar key counts as written");
        let err = from_yaml::<GatewayConfig>(b"services: []\nservices:\n  - name: s\n    targets: [{url: \"http://a:1\"}]\n").unwrap_err();
        assert_eq!(err.field(), "services");
    }

    #[test]
    fn accepts_the_same_key_in_different_objects() {
        let value: serde_json::Value = from_json(br#"{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]}"#).unwrap();
        assert_eq!(value["c"][1]["k"], 2);
        let value: serde_json::Value = from_yaml(b"a: {k: 1}\nb: {k: 2}\n").unwrap();
        assert_eq!(value["b"]["k"], 2);
    }

    #[test]
    fn malformed_documents_keep_their_typed_errors() {
        let err = from_json::<Service>(br#"{"name":"s","targets":[{"url":"http://a:1","weight":"heavy"}]}"#).unwrap_err();
        assert_eq!(err.field(), "targets[0].weight");
        assert!(from_json::<serde_json::Value>(b"{\"a\":1,").is_err());
        assert!(from_yaml::<serde_json::Value>(b"a: [1,\n").is_err());
    }

    #[test]
    fn reads_yaml_with_field_paths() {
        let config: GatewayConfig = from_yaml(b"services:\n  - name: s\n    targets:\n      - url: http://a:1\n").unwrap();
        assert_eq!(config.services[0].name, "s");
        let err = from_yaml::<GatewayConfig>(b"services:\n  - name: s\n    targets:\n      - url: 5\n        weight: x\n").unwrap_err();
        assert_eq!(err.field(), "services[0].targets[0].weight");
    }

    #[test]
    fn messages_do_not_repeat_the_field() {
        let err = from_yaml::<GatewayConfig>(b"services:\n  - name: s\n    targets:\n      - url: 5\n        weight: x\n").unwrap_err();
        assert_eq!(err.field(), "services[0].targets[0].weight");
        assert!(err.message().starts_with("invalid type: string \"x\", expected u32"), "{}", err.message());
        let err = from_yaml::<GatewayConfig>(b"services:\n  - name: s\n    targts: []\n").unwrap_err();
        assert_eq!(err.field(), "services[0].targts");
        assert!(err.message().starts_with("unknown field `targts`"), "{}", err.message());
    }
}
