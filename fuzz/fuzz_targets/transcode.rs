//! HTTP/JSON to gRPC transcoding of what a client sends: the method, path,
//! query and JSON body of a request, bound by the `google.api.http` rules
//! of a fixed proto (path variables with segments and `**`, custom verbs,
//! nested fields, repeated and enum query parameters, body selectors,
//! every well-known type in the messages) and mapped to the request
//! message, as `Transcoder::request` does before a call goes upstream.
//!
//! Input: `METHOD path[?query]`, a newline, then the body.
//!
//! Properties: nothing panics; a refusal is a client error (`4xx`), never
//! the upstream's; a message that maps is framed as one gRPC message of the
//! length it declares.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use portico_dp::backend::grpc::{JsonOptions, Limits, Transcoder};
use portico_shared::grpc::compile;

const PROTO: &str = r#"syntax = "proto3";
package fuzz.v1;
import "google/api/annotations.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
service Items {
  rpc Get(Query) returns (Query) {
    option (google.api.http) = {get: "/v1/{name=shelves/*/items/*}" additional_bindings {get: "/v1/items/{id}"}};
  }
  rpc File(Query) returns (Query) { option (google.api.http) = {get: "/v1/files/{path=**}:read"}; }
  rpc Update(Query) returns (Query) { option (google.api.http) = {patch: "/v1/items/{nested.id}" body: "nested"}; }
  rpc Create(Query) returns (Query) { option (google.api.http) = {post: "/v1/items" body: "*"}; }
  rpc Plain(Query) returns (Query);
}
enum Kind { KIND_UNSPECIFIED = 0; KIND_A = 1; }
message Nested { string id = 1; repeated int64 numbers = 2; Kind kind = 3; }
message Query {
  string name = 1;
  string id = 2;
  string path = 3;
  repeated string tags = 4;
  repeated Kind kinds = 5;
  int64 big = 6;
  uint32 small = 7;
  double ratio = 8;
  bool flag = 9;
  bytes blob = 10;
  Nested nested = 11;
  google.protobuf.Timestamp at = 12;
  google.protobuf.Duration took = 13;
  google.protobuf.FieldMask mask = 14;
  google.protobuf.Int32Value count = 15;
  google.protobuf.Struct extra = 16;
  map<string, Nested> by_name = 17;
  oneof choice { string text = 18; int32 number = 19; }
}
"#;

static TRANSCODER: LazyLock<Transcoder> = LazyLock::new(|| {
    let files = BTreeMap::from([("fuzz.proto".to_owned(), PROTO.to_owned())]);
    let pool = compile::decode(&compile::compile(&files).expect("the fuzz proto compiles")).expect("and decodes");
    Transcoder::new(
        &pool,
        &["fuzz.v1.Items"],
        JsonOptions::default(),
        Limits { max_request_message: 1 << 16, max_response_message: 1 << 16 },
    )
    .expect("its rules bind")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (line, body) = text.split_once('\n').unwrap_or((text, ""));
    let Some((method, target)) = line.split_once(' ') else { return };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    match TRANSCODER.request(&method, path, query, &HeaderMap::new(), body.as_bytes()) {
        Ok(call) => {
            if let Some(message) = call.message {
                assert!(message.len() >= 5 && message[0] == 0, "a gRPC frame, uncompressed");
                let declared = u32::from_be_bytes([message[1], message[2], message[3], message[4]]) as usize;
                assert_eq!(declared, message.len() - 5, "the frame declares its length");
            }
        }
        Err(error) => assert!(error.status().is_client_error(), "{method} {target}: {error} is not the client's"),
    }
});
