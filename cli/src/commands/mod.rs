//! The admin commands, one module per family: the declarative config
//! (`apply`, `diff`, `export`), version history, and consumers with their
//! API keys. Each prints its result and says how the process should end.

pub(crate) mod config;
pub(crate) mod entities;
pub(crate) mod versions;
