//! gRPC descriptors: what the gateway knows of the services behind a
//! `grpc` route. `.proto` sources are compiled here ([`compile`]), on the
//! control plane when a `protos` entity is written; the data planes decode
//! the compiled `FileDescriptorSet` once per config version. The
//! `google.api.http` path grammar ([`http_rule`]) and the HTTP bindings
//! read from the descriptors ([`bindings`]) are shared by both: the
//! control plane refuses bad or colliding rules, the data planes match
//! requests with them.

pub mod bindings;
pub mod compile;
pub mod http_rule;
