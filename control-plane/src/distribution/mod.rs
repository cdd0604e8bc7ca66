//! Distribution of published versions to data planes: the gRPC stream
//! service (`stream`), the in-process fan-out (`hub`) and, on Postgres, the
//! `LISTEN/NOTIFY` follower that lets every control-plane replica see every
//! other replica's publishes (`listener`).

mod hub;
mod listener;
mod stream;

pub use hub::Hub;
pub use listener::follow_store;
pub use stream::{ConfigStreams, NODE_STALE_AFTER_HEARTBEATS};
