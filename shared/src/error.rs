//! The error every config check returns: what is wrong and where.

/// A config that cannot be accepted. `field` is a path into the submitted
/// document (`targets[0].url`, `routes[3].paths[1]`), empty when the
/// problem is the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Malformed or out-of-range input.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Well-formed input that clashes with the rest of the config: a
    /// duplicate name, a reference to a missing entity, an entity still in use.
    #[error("{field}: {message}")]
    Conflict { field: String, message: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Conflict { field: field.into(), message: message.into() }
    }

    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } | Self::Conflict { field, .. } => field,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Invalid { message, .. } | Self::Conflict { message, .. } => message,
        }
    }

    /// The same error, with its field placed under `prefix`
    /// (`targets[0].url` under `services[2]` becomes `services[2].targets[0].url`).
    pub fn within(self, prefix: &str) -> Self {
        let join = |field: String| match (prefix.is_empty(), field.is_empty()) {
            (true, _) => field,
            (false, true) => prefix.to_owned(),
            (false, false) if field.starts_with('[') => format!("{prefix}{field}"),
            (false, false) => format!("{prefix}.{field}"),
        };
        match self {
            Self::Invalid { field, message } => Self::Invalid { field: join(field), message },
            Self::Conflict { field, message } => Self::Conflict { field: join(field), message },
        }
    }
}
