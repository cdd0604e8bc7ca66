//! `portico-cp`, the control plane: keeps each gateway's config and its
//! version history in a store (Postgres or SQLite), serves the admin REST
//! API, and streams every published version to data planes over gRPC.
//! It never proxies traffic. Its Prometheus metrics are served on the
//! admin listener's `/metrics` (`metrics`, `api::metrics`).

pub mod api;
pub mod distribution;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod settings;
pub mod store;
pub mod telemetry;

pub use server::{StartError, open_store, run};
pub use settings::{Cli, Command, Settings};
