//! gRPC descriptors: what the gateway knows of the services behind a
//! `grpc` route. `.proto` sources are compiled here ([`compile`]), on the
//! control plane when a `protos` entity is written; the data planes decode
//! the compiled `FileDescriptorSet` once per config version.

pub mod compile;
