//! The admin commands, one module per family: the declarative config
//! (`apply`, `diff`, `export`), version history, consumers with their
//! API keys, and cache purges. Each prints its result and says how the process should end.

pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod entities;
pub(crate) mod versions;
