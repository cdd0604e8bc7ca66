//! End-to-end tests of Portico: they start the real binaries (build them
//! first: `cargo build --workspace --bins`) against real Postgres and drive
//! them over HTTP and gRPC. The tests live in `tests/`; this crate has no code.
