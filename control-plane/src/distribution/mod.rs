//! Distribution of published versions and cache purges to data planes: the
//! gRPC stream service (`stream`), the in-process fan-out (`hub`) and, on
//! Postgres, the `LISTEN/NOTIFY` follower that lets every control-plane
//! replica see every other replica's publishes and purges (`listener`); the
//! removal of nodes silent for a day from the fleet view and of day-old
//! purges (`retention`); and the rate-limited log of nodes refused for a
//! wrong cluster token (`refusals`).

mod hub;
mod listener;
mod refusals;
mod retention;
mod stream;

pub use hub::Hub;
pub use listener::follow_store;
pub use retention::{NODE_RETENTION, PURGE_RETENTION, forget_old_records};
pub use stream::{ConfigStreams, NODE_STALE_AFTER_HEARTBEATS};
