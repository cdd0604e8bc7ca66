//! `portico-dp`, the data plane: receives config versions from the control
//! plane, compiles each into an immutable runtime and swaps it in
//! atomically, and proxies HTTP traffic by it. It stores nothing but a
//! cache of its last good config.

pub mod access_log;
pub mod auth;
pub mod backend;
pub mod body;
pub mod cache;
pub mod config_client;
pub mod error;
pub mod http1;
pub mod idle;
pub mod metrics;
pub mod openmetrics;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod stage;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod upstream;
