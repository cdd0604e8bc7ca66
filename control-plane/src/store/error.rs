//! Store errors, sorted by what the caller can do about them.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The gateway moved on since the caller read it; re-read and retry.
    #[error("the gateway's config changed concurrently")]
    Stale,
    /// A unique key is already taken.
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database refused a value (e.g. a NUL byte in text).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    pub(crate) fn from_sqlx(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(db.message().to_owned()),
            // Postgres: class 08 (connection exception), 57P0x (shutting down), 53 (resources).
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")) => {
                Self::Unavailable(error.to_string())
            }
            // Postgres class 22: data exception (e.g. a NUL byte in text).
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => Self::InvalidValue(db.message().to_owned()),
            // SQLite: busy or locked (primary codes 5 and 6, extended codes
            // carry them in the low byte) for longer than the busy timeout.
            sqlx::Error::Database(db) if db.code().and_then(|c| c.parse::<u32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6)) => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Protocol(_) => Self::Unavailable(error.to_string()),
            _ => Self::Database(error.to_string()),
        }
    }
}
