//! The snapshot compiler's pure part: a config is validated, put in
//! canonical form and encoded to the exact bytes data planes receive, with
//! the sha256 that names them. The control plane compiles every write with
//! it before publishing, and data planes decode with it, so a config that a
//! data plane would reject is never published.

use sha2::{Digest, Sha256};

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::model::GatewayConfig;
use crate::validate;

/// A validated config in canonical form, with its encoding and hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub config: GatewayConfig,
    /// Canonical JSON: the bytes that are stored, hashed and shipped.
    pub bytes: Vec<u8>,
    /// Lowercase hex sha256 of `bytes`.
    pub hash: String,
}

/// Why received snapshot bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("hash mismatch: announced {announced}, content hashes to {actual}")]
    HashMismatch { announced: String, actual: String },
    #[error("snapshot does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("snapshot is invalid: {0}")]
    Invalid(#[from] ConfigErrors),
}

impl Snapshot {
    /// Validates and normalizes `config`, then encodes it canonically.
    /// Every error of the config is reported.
    pub fn compile(mut config: GatewayConfig) -> Result<Self, ConfigErrors> {
        // Secrets a write may leave out (to keep the stored ones) must be
        // there in the end; fields index the lists as given, before sorting.
        let keyless = |s: &crate::model::Service| s.tls.as_ref().is_some_and(|t| t.client_cert.is_some() && t.client_key.is_none());
        let services = config.services.iter().enumerate().filter(|(_, s)| keyless(s));
        let passwordless = |s: &crate::model::Service| s.credentials.as_ref().is_some_and(|c| c.password.is_none());
        let brokers = config.services.iter().enumerate().filter(|(_, s)| passwordless(s));
        let missing_keys: Vec<ConfigError> = services
            .map(|(i, _)| ConfigError::invalid(format!("services[{i}].tls.client_key"), "client_cert needs its client_key"))
            .chain(brokers.map(|(i, _)| {
                ConfigError::invalid(
                    format!("services[{i}].credentials.password"),
                    "the broker password is needed: for a new service, a new username or a new target (exports leave it out; re-applying one keeps the stored password)",
                )
            }))
            .chain(config.certificates.iter().enumerate().filter(|(_, c)| c.key.is_none()).map(|(i, _)| {
                ConfigError::invalid(
                    format!("certificates[{i}].key"),
                    "a certificate new to this gateway needs its private key (exports leave keys out; re-applying one keeps the stored keys)",
                )
            }))
            .collect();
        let mut errors = Errors::default();
        errors.check(validate::config(&mut config));
        missing_keys.into_iter().for_each(|e| errors.add(e));
        errors.finish()?;
        let bytes = serde_json::to_vec(&config).expect("a config always serializes to JSON");
        let hash = hash(&bytes);
        Ok(Self { config, bytes, hash })
    }

    /// Checks received bytes against their announced hash, then compiles
    /// them (what a data plane does before applying a version).
    pub fn decode(bytes: &[u8], announced_hash: &str) -> Result<Self, DecodeError> {
        let actual = hash(bytes);
        if actual != announced_hash {
            return Err(DecodeError::HashMismatch { announced: announced_hash.to_owned(), actual });
        }
        let compiled = Self::compile(serde_json::from_slice(bytes)?)?;
        if compiled.hash != actual {
            return Err(ConfigErrors::from(ConfigError::invalid("", "snapshot is not in canonical form")).into());
        }
        Ok(compiled)
    }
}

/// Lowercase hex sha256.
pub fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    fn config(json: &str) -> GatewayConfig {
        from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn equal_meaning_gives_equal_hash() {
        let a = config(
            r#"{"services":[{"name":"b","targets":[{"url":"http://B:1/"}]},{"name":"a","targets":[{"url":"http://a:1"}]}],
                "routes":[{"name":"r","service":"a","paths":["/x/"],"methods":["get"]}]}"#,
        );
        let b = config(
            r#"{"routes":[{"service":"a","name":"r","methods":["GET"],"paths":["/x"],"strip_path":true}],
                "services":[{"name":"a","targets":[{"url":"http://a:1","weight":100}]},{"name":"b","targets":[{"url":"http://b:1"}]}]}"#,
        );
        assert_eq!(Snapshot::compile(a).unwrap().hash, Snapshot::compile(b).unwrap().hash);
    }

    #[test]
    fn decode_round_trips_and_checks_the_hash() {
        let snapshot = Snapshot::compile(config(r#"{"services":[{"name":"a","targets":[{"url":"http://a:1"}]}]}"#)).unwrap();
        let decoded = Snapshot::decode(&snapshot.bytes, &snapshot.hash).unwrap();
        assert_eq!(decoded, snapshot);
        let mut tampered = snapshot.bytes.clone();
        tampered[5] ^= 1;
        assert!(matches!(Snapshot::decode(&tampered, &snapshot.hash), Err(DecodeError::HashMismatch { .. })));
    }

    #[test]
    fn a_snapshot_carries_the_compiled_set_and_decodes_without_compiling() {
        let json = serde_json::json!({
            "services": [{"name": "orders-grpc", "protocol": "grpc", "targets": [{"url": "grpc://o:50051"}]}],
            "routes": [{"name": "r", "service": "orders-grpc", "paths": ["/v1"], "grpc": {"proto": "shop", "services": ["shop.Orders"]}}],
            "protos": [{"name": "shop", "files": {"shop/orders.proto": crate::model::proto::TEST_ORDERS_PROTO}}],
        });
        let snapshot = Snapshot::compile(config(&json.to_string())).unwrap();
        assert!(snapshot.config.protos[0].descriptor_set.is_some());
        assert_eq!(Snapshot::decode(&snapshot.bytes, &snapshot.hash).unwrap(), snapshot);
        // A data plane decodes the set it is given: sources that no longer
        // match it are not compiled again.
        let mut stale = snapshot.config.clone();
        stale.protos[0].files.insert("shop/orders.proto".to_owned(), "not a proto".to_owned());
        let bytes = serde_json::to_vec(&stale).unwrap();
        assert!(Snapshot::decode(&bytes, &hash(&bytes)).is_ok());
    }

    #[test]
    fn decode_refuses_an_invalid_config_with_a_correct_hash() {
        let bytes = br#"{"services":[],"routes":[{"name":"r","service":"gone","paths":["/"]}],"consumers":[]}"#;
        assert!(matches!(Snapshot::decode(bytes, &hash(bytes)), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn empty_config_has_a_stable_hash() {
        let snapshot = Snapshot::compile(GatewayConfig::default()).unwrap();
        assert_eq!(snapshot.bytes, br#"{"services":[],"routes":[],"consumers":[]}"#);
    }
}
