//! The test service of the transcoding tests: every well-known type,
//! 64-bit integers, enums, maps, oneofs, repeated and nested messages,
//! bytes, and rules using each part of the `google.api.http` grammar.
//! Compiled once for all tests, with the gateway's own compiler.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::StreamBody;
use hyper::body::Frame;
use prost_reflect::prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

pub(crate) const SHOP_PROTO: &str = r#"syntax = "proto3";
package shop.v1;
import "google/api/annotations.proto";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum State { STATE_UNSPECIFIED = 0; PENDING = 1; SHIPPED = 2; }

message Money { string currency = 1; int64 units = 2; }
message Address { string city = 1; string zip_code = 2; }

message Order {
  string name = 1;
  int64 id = 2;
  uint64 big = 3;
  State state = 4;
  repeated string tags = 5;
  map<string, int32> counts = 6;
  oneof payment { string card = 7; Money cash = 8; }
  Address address = 9;
  bytes blob = 10;
  google.protobuf.Timestamp created = 11;
  google.protobuf.Duration ttl = 12;
  google.protobuf.FieldMask mask = 13;
  google.protobuf.Int64Value limit = 14;
  google.protobuf.BoolValue flag = 15;
  google.protobuf.StringValue note = 16;
  google.protobuf.Struct attrs = 17;
  google.protobuf.Value extra = 18;
  google.protobuf.ListValue items = 19;
  google.protobuf.Any detail = 20;
  double price = 21;
  bool gift = 22;
  repeated State history = 23;
  repeated int64 ids = 24;
  string display_name = 25;
  sint32 delta = 26;
  float ratio = 27;
}

message GetOrderRequest {
  string name = 1;
  State state = 2;
  repeated string tags = 3;
  Address address = 4;
  bool full = 5;
  int64 min_id = 6;
  google.protobuf.Timestamp since = 7;
  google.protobuf.Duration within = 8;
  google.protobuf.FieldMask read_mask = 9;
  google.protobuf.Int32Value page = 10;
  bytes token = 11;
  repeated State states = 12;
  map<string, string> labels = 13;
  Order order = 14;
  uint64 max_big = 15;
  google.protobuf.BoolValue strict = 16;
  google.protobuf.Struct filter = 17;
  double price = 18;
}
message UpdateOrderRequest { Order order = 1; google.protobuf.FieldMask update_mask = 2; }
message ListOrdersRequest { string parent = 1; int32 page_size = 2; }
message ListOrdersResponse { repeated Order orders = 1; string next_page_token = 2; int64 total = 3; }
message CancelRequest { string name = 1; string reason = 2; }

service Orders {
  rpc GetOrder(GetOrderRequest) returns (Order) {
    option (google.api.http) = {
      get: "/v1/{name=shelves/*/orders/*}"
      additional_bindings { get: "/v1/cities/{address.city}/orders/{name}" }
    };
  }
  rpc GetSpecial(GetOrderRequest) returns (Order) { option (google.api.http) = { get: "/v1/shelves/special/orders/{name}" }; }
  rpc GetFile(GetOrderRequest) returns (Order) { option (google.api.http) = { get: "/v1/files/{name=**}" }; }
  rpc CreateOrder(Order) returns (Order) { option (google.api.http) = { post: "/v1/orders" body: "*" }; }
  rpc UpdateOrder(UpdateOrderRequest) returns (Order) {
    option (google.api.http) = { patch: "/v1/{order.name=shelves/*/orders/*}" body: "order" };
  }
  rpc CancelOrder(CancelRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = { post: "/v1/{name=shelves/*/orders/*}:cancel" body: "*" };
  }
  rpc ListOrders(ListOrdersRequest) returns (ListOrdersResponse) {
    option (google.api.http) = { get: "/v1/{parent=shelves/*}/orders" response_body: "orders" };
  }
  rpc CountOrders(ListOrdersRequest) returns (ListOrdersResponse) {
    option (google.api.http) = { get: "/v1/{parent=shelves/*}/orders:count" response_body: "total" };
  }
  rpc WatchOrders(ListOrdersRequest) returns (stream Order) { option (google.api.http) = { get: "/v1/{parent=shelves/*}/orders:watch" }; }
  rpc ImportOrders(stream Order) returns (ListOrdersResponse) { option (google.api.http) = { post: "/v1/{name=shelves/*}/orders:import" body: "*" }; }
  rpc Chat(stream CancelRequest) returns (stream Order) { option (google.api.http) = { post: "/v1/chat" body: "*" }; }
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty);
}
"#;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    let files = BTreeMap::from([("shop/v1/orders.proto".to_owned(), SHOP_PROTO.to_owned())]);
    let set = portico_shared::grpc::compile::compile(&files).unwrap_or_else(|error| panic!("{error}"));
    portico_shared::grpc::compile::decode(&set).unwrap()
});

pub(crate) fn pool() -> DescriptorPool {
    POOL.clone()
}

/// A message of `name` from its JSON.
pub(crate) fn message(name: &str, json: serde_json::Value) -> DynamicMessage {
    DynamicMessage::deserialize(pool().get_message_by_name(name).unwrap(), json).unwrap()
}

/// The JSON (proto names) of a framed message of type `name`.
pub(crate) fn unframe(name: &str, framed: &[u8]) -> serde_json::Value {
    assert_eq!(framed[0], 0, "not compressed");
    let len = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
    assert_eq!(framed.len(), 5 + len, "one whole message");
    let message = DynamicMessage::decode(pool().get_message_by_name(name).unwrap(), &framed[5..]).unwrap();
    message.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new().use_proto_field_name(true)).unwrap()
}

pub(crate) fn framed(name: &str, json: serde_json::Value) -> Bytes {
    super::frame::encode(&message(name, json).encode_to_vec())
}

pub(crate) type TestBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

pub(crate) fn headers(entries: &[(&'static str, &str)]) -> HeaderMap {
    entries.iter().map(|(name, value)| (http::HeaderName::from_static(name), HeaderValue::from_str(value).unwrap())).collect()
}

pub(crate) fn trailers(entries: &[(&'static str, &str)]) -> Frame<Bytes> {
    Frame::trailers(headers(entries))
}

/// An upstream response: `headers` (with `content-type: application/grpc` unless given) and `frames`.
pub(crate) fn upstream(extra_headers: &[(&'static str, &str)], frames: Vec<Frame<Bytes>>) -> Response<TestBody> {
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames.into_iter().map(Ok).collect::<Vec<_>>())));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    for (name, value) in headers(extra_headers) {
        if let Some(name) = name {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

pub(crate) fn ok_trailers() -> Frame<Bytes> {
    trailers(&[("grpc-status", "0")])
}
