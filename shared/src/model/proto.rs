//! Protos: the protobuf descriptors of the services behind `grpc` routes,
//! managed like any other entity so that no node needs a file on disk.
//! A proto is given as `.proto` sources (`files`), which the control plane
//! compiles ([`crate::grpc::compile`]) into `descriptor_set`, or as a
//! `descriptor_set` alone (a base64 `FileDescriptorSet`, as `protoc
//! --include_imports --descriptor_set_out` writes it). Either way the
//! snapshot carries the compiled set: data planes decode it
//! ([`Proto::pool`]), they never compile. With `files`, `descriptor_set` is
//! the compiled output: the control plane's writes drop a given one
//! ([`crate::model::Entity::drop_derived`]) and compile again.
//! That the set decodes, and that routes name services it has, is checked
//! across the config in [`crate::validate`].

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use prost_reflect::DescriptorPool;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::grpc::compile;
use crate::validate::rules::{Result, Validate, bounded, name, tags};

/// Most `.proto` files of one proto.
pub const MAX_FILES: usize = 64;
/// Most bytes of all the sources of one proto together.
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of one proto's descriptor set (decoded from base64).
pub const MAX_DESCRIPTOR_SET_BYTES: usize = 8 * 1024 * 1024;
/// Most protos of one gateway.
pub const MAX_PROTOS: usize = 64;
/// Longest name of a `.proto` file.
const MAX_FILE_NAME_LEN: usize = 256;
/// Directories of the files built into the compiler, which uploads may not shadow.
const BUILT_IN_DIRECTORIES: [&str; 3] = ["google/api/", "google/rpc/", "google/protobuf/"];

/// Protobuf descriptors for `grpc` routes; managed at
/// `/api/v1/gateways/{gw}/protos`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Proto {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub name: String,
    /// `.proto` sources by import name (`shop/orders.proto`), compiled by
    /// the control plane; `google/api/*.proto`, `google/rpc/*.proto` and
    /// `google/protobuf/*.proto` are built in. At most 64 files of 4 MiB
    /// together.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Standard base64 of an encoded `FileDescriptorSet` holding every file
    /// it needs (`protoc --include_imports`), at most 8 MiB decoded. With
    /// `files`, it is their compiled output and any given one is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_set: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

entity!(Proto, crate::model::EntityKind::Proto, protos, name, derived = drop_compiled_set);

/// With sources given, the descriptor set is theirs to make.
fn drop_compiled_set(proto: &mut Proto) {
    if !proto.files.is_empty() {
        proto.descriptor_set = None;
    }
}

impl Proto {
    /// The descriptors of the proto, decoded from its `descriptor_set`
    /// (errors name `descriptor_set`).
    pub fn pool(&self) -> Result<DescriptorPool> {
        let Some(encoded) = &self.descriptor_set else {
            return Err(ConfigError::invalid("descriptor_set", "the proto has no compiled descriptor set"));
        };
        let bytes = descriptor_set_bytes(encoded)?;
        compile::decode(&bytes).map_err(|error| ConfigError::invalid("descriptor_set", error.to_string()))
    }
}

impl Validate for Proto {
    fn normalize_and_validate(&mut self) -> std::result::Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        errors.check(name("name", &self.name));
        if self.files.is_empty() && self.descriptor_set.is_none() {
            errors.add(ConfigError::invalid("files", "a proto needs .proto sources in `files`, or a base64 `descriptor_set`"));
        }
        let before = errors.count();
        if !self.files.is_empty() && errors.check(bounded("files", self.files.len(), MAX_FILES)).is_some() {
            for file in self.files.keys() {
                errors.check(file_name(file));
            }
            let total: usize = self.files.values().map(String::len).sum();
            if total > MAX_SOURCE_BYTES {
                errors
                    .add(ConfigError::invalid("files", format!("the sources hold {total} bytes; at most {MAX_SOURCE_BYTES} are allowed")));
            }
        }
        if errors.count() == before && self.descriptor_set.is_none() && !self.files.is_empty() {
            match compile::compile(&self.files) {
                Ok(bytes) => self.descriptor_set = Some(STANDARD.encode(bytes)),
                Err(error) => errors.add(compile_error(error, &self.files)),
            }
        }
        if let Some(encoded) = &self.descriptor_set {
            errors.check(descriptor_set_bytes(encoded));
        }
        errors.check(tags(&self.tags));
        errors.finish()
    }
}

/// The bytes of a base64 descriptor set, within the size limit.
fn descriptor_set_bytes(encoded: &str) -> Result<Vec<u8>> {
    // Checked before decoding, so an oversized value is never held twice.
    if encoded.len() > MAX_DESCRIPTOR_SET_BYTES.div_ceil(3) * 4 {
        return Err(ConfigError::invalid("descriptor_set", format!("is larger than {MAX_DESCRIPTOR_SET_BYTES} bytes decoded")));
    }
    STANDARD
        .decode(encoded)
        .map_err(|error| ConfigError::invalid("descriptor_set", format!("is not standard base64 (with padding): {error}")))
}

/// A file name as imports name it: relative, of `[A-Za-z0-9_./-]`, without
/// empty, `.` or `..` segments, ending in `.proto`, outside the built-in
/// directories.
fn file_name(file: &str) -> Result {
    let field = format!("files.{file}");
    let valid_chars = file.bytes().all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b));
    let valid_segments = file.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if file.len() > MAX_FILE_NAME_LEN || !valid_chars || !valid_segments || !file.ends_with(".proto") {
        return Err(ConfigError::invalid(
            field,
            format!(
                "must be a relative path of at most {MAX_FILE_NAME_LEN} characters of A-Z, a-z, 0-9, '_', '.', '/', '-', \
                 without empty, '.' or '..' segments, ending in .proto"
            ),
        ));
    }
    if let Some(directory) = BUILT_IN_DIRECTORIES.iter().find(|directory| file.starts_with(*directory)) {
        return Err(ConfigError::invalid(
            field,
            format!("{directory} is built in (google/api, google/rpc and google/protobuf); leave it out"),
        ));
    }
    Ok(())
}

/// A compile error on the field of the file it is in (`files.shop/orders.proto`),
/// its message starting with the file and line.
fn compile_error(error: compile::CompileError, files: &BTreeMap<String, String>) -> ConfigError {
    let field = match &error.file {
        Some(file) if files.contains_key(file) => format!("files.{file}"),
        _ => "files".to_owned(),
    };
    ConfigError::invalid(field, error.to_string())
}

/// A small proto with a `google.api.http` rule, for tests here and across the config.
#[cfg(test)]
pub(crate) const TEST_ORDERS_PROTO: &str = r#"syntax = "proto3";
package shop;
import "google/api/annotations.proto";
service Orders {
  rpc GetOrder(GetOrderRequest) returns (Order) {
    option (google.api.http) = { get: "/v1/orders/{id}" };
  }
}
message GetOrderRequest { string id = 1; }
message Order { string id = 1; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_json;

    const ORDERS: &str = TEST_ORDERS_PROTO;

    fn proto(files: &[(&str, &str)]) -> Proto {
        let files: serde_json::Map<String, serde_json::Value> =
            files.iter().map(|(name, source)| ((*name).to_owned(), serde_json::Value::from(*source))).collect();
        from_json(serde_json::json!({"name": "shop", "files": files}).to_string().as_bytes()).unwrap()
    }

    fn errors_of(mut proto: Proto) -> Vec<(String, String)> {
        let errors = proto.normalize_and_validate().unwrap_err();
        errors.iter().map(|e| (e.field().to_owned(), e.message().to_owned())).collect()
    }

    #[test]
    fn sources_compile_into_a_descriptor_set_that_decodes() {
        let mut shop = proto(&[("shop/orders.proto", ORDERS)]);
        shop.normalize_and_validate().unwrap();
        let pool = shop.pool().unwrap();
        assert!(pool.get_service_by_name("shop.Orders").is_some());
        let compiled = shop.descriptor_set.clone();
        shop.normalize_and_validate().unwrap();
        assert_eq!(shop.descriptor_set, compiled, "with both, the set is kept as it is (data planes never compile)");
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let broken = "syntax = \"proto3\";\npackage shop;\nmessage Broken {\n  string id = ;\n}\n";
        let errors = errors_of(proto(&[("shop/orders.proto", ORDERS), ("shop/broken.proto", broken)]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "files.shop/broken.proto");
        assert!(errors[0].1.starts_with("shop/broken.proto:4: "), "{errors:?}");
    }

    #[test]
    fn a_missing_import_names_the_importing_file_and_line() {
        let importing = "syntax = \"proto3\";\npackage shop;\n\nimport \"shop/money.proto\";\n";
        let errors = errors_of(proto(&[("shop/cart.proto", importing)]));
        assert_eq!(errors[0].0, "files.shop/cart.proto");
        assert!(errors[0].1.starts_with("shop/cart.proto:4: ") && errors[0].1.contains("shop/money.proto"), "{errors:?}");
    }

    #[test]
    fn a_base64_descriptor_set_alone_is_a_proto() {
        let bytes = compile::compile(&BTreeMap::from([("shop/orders.proto".to_owned(), ORDERS.to_owned())])).unwrap();
        let json = serde_json::json!({"name": "shop", "descriptor_set": STANDARD.encode(bytes)}).to_string();
        let mut shop: Proto = from_json(json.as_bytes()).unwrap();
        shop.normalize_and_validate().unwrap();
        assert!(shop.pool().unwrap().get_service_by_name("shop.Orders").is_some());
        assert!(shop.files.is_empty());
    }

    #[test]
    fn a_descriptor_set_that_is_not_base64_or_not_a_set_is_refused() {
        let mut bad: Proto = from_json(br#"{"name":"shop","descriptor_set":"not base64!"}"#).unwrap();
        let errors = bad.normalize_and_validate().unwrap_err();
        assert_eq!(errors.first().field(), "descriptor_set");
        assert!(errors.first().message().starts_with("is not standard base64"), "{errors}");
        let garbage: Proto =
            from_json(format!(r#"{{"name":"shop","descriptor_set":"{}"}}"#, STANDARD.encode(b"\xff\xff\xff")).as_bytes()).unwrap();
        let error = garbage.pool().unwrap_err();
        assert_eq!(error.field(), "descriptor_set");
        assert!(error.message().starts_with("not a valid FileDescriptorSet"), "{error}");
    }

    #[test]
    fn a_proto_needs_files_or_a_descriptor_set() {
        let errors = errors_of(from_json(br#"{"name":"shop"}"#).unwrap());
        assert_eq!(errors[0].0, "files");
    }

    #[test]
    fn refuses_file_names_that_are_not_relative_proto_paths() {
        for bad in [
            "/shop/orders.proto",
            "../orders.proto",
            "shop/../orders.proto",
            "shop//orders.proto",
            "shop/orders.txt",
            "shop orders.proto",
            "./a.proto",
        ] {
            let errors = errors_of(proto(&[(bad, ORDERS)]));
            assert_eq!(errors, [(format!("files.{bad}"), errors[0].1.clone())], "{bad}");
            assert!(errors[0].1.starts_with("must be a relative path"), "{bad}: {errors:?}");
        }
        let errors = errors_of(proto(&[("google/api/annotations.proto", ORDERS)]));
        assert_eq!(errors[0].0, "files.google/api/annotations.proto");
        assert!(errors[0].1.contains("built in"), "{errors:?}");
    }

    #[test]
    fn refuses_too_many_files_and_too_large_sources() {
        let names: Vec<String> = (0..=MAX_FILES).map(|i| format!("f{i}.proto")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "syntax = \"proto3\";")).collect();
        assert_eq!(errors_of(proto(&many)), [("files".to_owned(), format!("at most {MAX_FILES} entries are allowed"))]);
        let comment = format!("// {}\n", "x".repeat(MAX_SOURCE_BYTES));
        let errors = errors_of(proto(&[("big.proto", &comment)]));
        assert_eq!(errors[0].0, "files");
        assert!(errors[0].1.contains("at most 4194304"), "{errors:?}");
        let oversized = "A".repeat(MAX_DESCRIPTOR_SET_BYTES / 3 * 4 + 8);
        let json = serde_json::json!({"name": "shop", "descriptor_set": oversized}).to_string();
        let errors = errors_of(from_json(json.as_bytes()).unwrap());
        assert_eq!(errors[0].0, "descriptor_set");
        assert!(errors[0].1.starts_with("is larger than"), "{errors:?}");
    }

    #[test]
    fn given_files_the_descriptor_set_is_dropped_before_a_write() {
        let mut shop = proto(&[("shop/orders.proto", ORDERS)]);
        shop.descriptor_set = Some("stale".to_owned());
        crate::model::Entity::drop_derived(&mut shop);
        assert_eq!(shop.descriptor_set, None);
        let mut set_only: Proto = from_json(br#"{"name":"shop","descriptor_set":"AAAA"}"#).unwrap();
        crate::model::Entity::drop_derived(&mut set_only);
        assert_eq!(set_only.descriptor_set.as_deref(), Some("AAAA"), "a set without sources is what was given");
    }
}
