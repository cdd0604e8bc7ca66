//! A request-smuggling corpus runner that can target any HTTP/1 proxy.
//!
//! * [`corpus`] loads the vectors of `tests/smuggling/requests/*.txt` (format
//!   in `tests/smuggling/README.md`).
//! * [`Recorder`] is the proxy's upstream: a raw TCP listener that logs the
//!   exact bytes of every connection and answers each request it can parse
//!   strictly ([`wire`]) with a fixed 200 naming the request.
//! * [`probe`] sends one vector to the proxy on a fresh connection, reads
//!   what comes back, sends a follow-up on the same connection if it is still
//!   open, and judges the exchange and the recorder's log: a [`Verdict`]
//!   with a reason.
//!
//! It does not start the proxy: the caller points the proxy at
//! [`Recorder::addr`] (Portico in `tests/tests/smuggling.rs`, nginx and
//! HAProxy in `bench/smuggling`). Hand-written rather than built on a parser
//! crate on purpose: the point is to see bytes a parser would normalise.

pub mod corpus;
pub mod probe;
pub mod recorder;
pub mod wire;

pub use corpus::{Expect, Vector, load_corpus};
pub use probe::{Timing, Verdict, VerdictKind, probe};
pub use recorder::Recorder;
