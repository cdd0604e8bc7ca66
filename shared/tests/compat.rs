//! Backward compatibility with what Portico 0.1 wrote and read: a snapshot
//! stored by 0.1 (in a version table or a data plane's cache file) still
//! decodes to the same canonical bytes and hash, and a declarative document
//! as users wrote it for 0.1 still loads and validates, to the config that
//! snapshot holds. The fixtures were produced by the 0.1 code and must never
//! be regenerated: a change that breaks this test breaks stored configs.

#![allow(clippy::unwrap_used)] // test bodies may unwrap

use portico_shared::parse::from_yaml;
use portico_shared::{GatewayConfig, Snapshot, validate};

const SNAPSHOT: &[u8] = include_bytes!("fixtures/snapshot-v0.1.json");
const SNAPSHOT_HASH: &str = include_str!("fixtures/snapshot-v0.1.json.sha256");
const DECLARATIVE: &[u8] = include_bytes!("fixtures/declarative-v0.1.yaml");

#[test]
fn a_stored_v0_1_snapshot_decodes_to_the_same_bytes_and_hash() {
    let hash = SNAPSHOT_HASH.trim();
    let decoded = Snapshot::decode(SNAPSHOT, hash).unwrap_or_else(|e| panic!("the 0.1 snapshot no longer decodes: {e}"));
    assert_eq!(decoded.hash, hash);
    assert_eq!(decoded.bytes, SNAPSHOT, "re-encoding the 0.1 snapshot changed its bytes");
    let config = &decoded.config;
    let counts = [config.services.len(), config.routes.len(), config.consumers.len(), config.credentials.len(), config.certificates.len()];
    assert_eq!(counts, [2, 2, 3, 5, 2], "every entity kind survives");
    assert_eq!(config.policies.len(), 4);
    assert_eq!(config.trusted_proxies.len(), 3);
}

#[test]
fn a_v0_1_declarative_document_loads_and_validates_to_the_snapshot_config() {
    let mut desired: GatewayConfig = from_yaml(DECLARATIVE).unwrap_or_else(|e| panic!("the 0.1 document no longer parses: {e}"));
    validate::config(&mut desired).unwrap_or_else(|e| panic!("the 0.1 document no longer validates: {e}"));
    let stored = Snapshot::decode(SNAPSHOT, SNAPSHOT_HASH.trim()).unwrap();
    assert_eq!(desired, stored.config.declarative(), "the document means what the snapshot made from it holds");
}
