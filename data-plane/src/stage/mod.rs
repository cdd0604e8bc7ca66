//! Request and response stages, each compiled once per config version:
//! `compile` turns a policy into plain data (sets, pre-built header values)
//! off the request path, and the per-request step only reads it. Where a
//! stage runs in the pipeline is `proxy`'s business, not the stage's.

pub mod cors;
