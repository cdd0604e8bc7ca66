//! Portico data plane.

pub mod router;
pub mod runtime;
pub mod upstream;
