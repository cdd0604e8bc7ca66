//! `.proto` sources to a `FileDescriptorSet`, with protox (pure Rust, no
//! `protoc` on any node). Imports resolve to the uploaded files first, then
//! to the Google API files built in here (`shared/protos/`: `google/api`
//! and `google/rpc`, what `google.api.http` rules and rich errors need),
//! then to protox's own `google/protobuf/*.proto`. An error names the file
//! and the line it is on.

use std::collections::BTreeMap;
use std::fmt;

use miette::Diagnostic;
use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// The Google API files any upload may import, by import name.
const BUILT_IN: [(&str, &str); 11] = [
    ("google/api/annotations.proto", include_str!("../../protos/google/api/annotations.proto")),
    ("google/api/client.proto", include_str!("../../protos/google/api/client.proto")),
    ("google/api/field_behavior.proto", include_str!("../../protos/google/api/field_behavior.proto")),
    ("google/api/http.proto", include_str!("../../protos/google/api/http.proto")),
    ("google/api/httpbody.proto", include_str!("../../protos/google/api/httpbody.proto")),
    ("google/api/launch_stage.proto", include_str!("../../protos/google/api/launch_stage.proto")),
    ("google/api/resource.proto", include_str!("../../protos/google/api/resource.proto")),
    ("google/api/routing.proto", include_str!("../../protos/google/api/routing.proto")),
    ("google/rpc/code.proto", include_str!("../../protos/google/rpc/code.proto")),
    ("google/rpc/error_details.proto", include_str!("../../protos/google/rpc/error_details.proto")),
    ("google/rpc/status.proto", include_str!("../../protos/google/rpc/status.proto")),
];

/// Why sources did not compile: the file and line it happened at, when
/// the compiler knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub file: Option<String>,
    /// 1-based.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CompileError {}

/// Compiles every file of `files` (import name → source) into one encoded
/// `FileDescriptorSet` holding them and everything they import, built-in
/// files included, so the set decodes on its own.
pub fn compile(files: &BTreeMap<String, String>) -> Result<Vec<u8>, CompileError> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(files.clone()));
    resolver.add(BuiltIn);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(files.keys()).map_err(|error| compile_error(&error, files))?;
    Ok(compiler.encode_file_descriptor_set())
}

/// Decodes an encoded `FileDescriptorSet`: every file it names must be in
/// it, with everything that file imports.
pub fn decode(bytes: &[u8]) -> Result<DescriptorPool, CompileError> {
    // Not through `prost_types::FileDescriptorSet`, whose options drop
    // extensions such as `google.api.http`.
    DescriptorPool::decode(bytes).map_err(|error| CompileError {
        file: error.file().map(str::to_owned),
        line: None,
        message: format!("not a valid FileDescriptorSet: {error}"),
    })
}

/// The uploaded files, as protox resolves imports (a copy: protox keeps its
/// resolver as `'static`; sizes are bounded by the model's limits).
struct Sources(BTreeMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

struct BuiltIn;

impl FileResolver for BuiltIn {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match BUILT_IN.iter().find(|(built_in, _)| *built_in == name) {
            Some((_, source)) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The file, line and message of a protox error; the line is counted in
/// the source of the file the error's first label points into.
fn compile_error(error: &protox::Error, files: &BTreeMap<String, String>) -> CompileError {
    let file = error.file().map(str::to_owned);
    let source = file.as_deref().and_then(|name| {
        files.get(name).map(String::as_str).or_else(|| BUILT_IN.iter().find(|(built_in, _)| *built_in == name).map(|(_, s)| *s))
    });
    let offset = error.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
    let line = source.zip(offset).map(|(source, offset)| source.get(..offset).unwrap_or(source).matches('\n').count() + 1);
    let mut message = error.to_string();
    if let Some(help) = error.help() {
        message = format!("{message} ({help})");
    }
    CompileError { file, line, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(name, source)| ((*name).to_owned(), (*source).to_owned())).collect()
    }

    const SHOP: &str = r#"syntax = "proto3";
package shop;
import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";
import "shop/money.proto";
service Orders {
  rpc GetOrder(GetOrderRequest) returns (Order) {
    option (google.api.http) = { get: "/v1/orders/{id}" };
  }
}
message GetOrderRequest { string id = 1; }
message Order { string id = 1; google.protobuf.Timestamp created = 2; Money total = 3; }
"#;
    const MONEY: &str = "syntax = \"proto3\";\npackage shop;\nmessage Money { int64 units = 1; string currency = 2; }\n";

    #[test]
    fn sources_with_google_imports_compile_to_a_set_that_decodes_alone() {
        let bytes = compile(&files(&[("shop/orders.proto", SHOP), ("shop/money.proto", MONEY)])).unwrap();
        let pool = decode(&bytes).unwrap();
        let method = pool.get_service_by_name("shop.Orders").unwrap().methods().next().unwrap();
        assert_eq!(method.name(), "GetOrder");
        let http = pool.get_extension_by_name("google.api.http").unwrap();
        assert!(method.options().has_extension(&http), "the rule is kept in the method's options");
        assert!(pool.get_message_by_name("google.rpc.Status").is_none(), "only what is imported is in the set");
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let broken = "syntax = \"proto3\";\npackage shop;\n\nmessage Broken {\n  string id = ;\n}\n";
        let error = compile(&files(&[("shop/broken.proto", broken)])).unwrap_err();
        assert_eq!(error.file.as_deref(), Some("shop/broken.proto"));
        assert_eq!(error.line, Some(5), "{error}");
    }

    #[test]
    fn a_missing_import_names_the_importing_file_and_line() {
        let error = compile(&files(&[("shop/orders.proto", SHOP)])).unwrap_err();
        assert_eq!(error.file.as_deref(), Some("shop/orders.proto"));
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.message.contains("shop/money.proto"), "{error}");
    }

    #[test]
    fn an_unknown_type_is_an_error_of_its_file() {
        let source = "syntax = \"proto3\";\npackage a;\nmessage A {\n  Missing m = 1;\n}\n";
        let error = compile(&files(&[("a.proto", source)])).unwrap_err();
        assert_eq!((error.file.as_deref(), error.line), (Some("a.proto"), Some(4)), "{error}");
    }

    #[test]
    fn garbage_is_not_a_descriptor_set() {
        assert!(decode(b"\xff\xff\xff").unwrap_err().message.starts_with("not a valid FileDescriptorSet"));
    }
}
