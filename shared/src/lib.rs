//! Portico's config model: one definition of every entity, used by the admin
//! API's JSON, the store and the snapshot sent to data planes; its
//! validation, reporting every mistake of a document with the field it
//! names; and the pure parts of publishing (canonical snapshot and hash,
//! declarative merge, diff).
//! No I/O happens here, but for reading a secret file (`secret_file`),
//! `command_line`, which exits on a bad flag, and `metrics`, the
//! Prometheus recorder both planes install.

pub mod command_line;
pub mod diff;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod parse;
pub mod route_path;
pub mod secret;
pub mod secret_file;
pub mod shape;
pub mod snapshot;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use model::{Consumer, Credential, Entity, EntityKind, GatewayConfig, Route, Service};
pub use snapshot::Snapshot;
