//! The gRPC service and snapshot envelope spoken between `portico-cp` and
//! `portico-dp` (`portico/v1/config.proto`), generated at build time.
//! Only generated code lives here; the behaviour is in the two planes.

#![allow(unreachable_pub, clippy::all)]

/// `portico.v1`: config distribution.
pub mod v1 {
    tonic::include_proto!("portico.v1");
}
