//! The errors every config check returns: what is wrong and where, one
//! ([`ConfigError`]) or every one found in a document ([`ConfigErrors`]).

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

/// Every error found in one document, in document order; never empty.
/// Validation reports all the mistakes it can tell apart at once, as a
/// compiler does, rather than stopping at the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// The list of `errors`, or `None` when there are none.
    pub fn from_vec(errors: Vec<ConfigError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self(errors))
    }

    /// The first error found.
    pub fn first(&self) -> &ConfigError {
        self.0.first().expect("a ConfigErrors is never empty")
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[ConfigError] {
        &self.0
    }

    /// Whether every error is a [`ConfigError::Conflict`] (a clash with the
    /// rest of the config rather than malformed input).
    pub fn all_conflicts(&self) -> bool {
        self.0.iter().all(|e| matches!(e, ConfigError::Conflict { .. }))
    }

    /// The same errors, each with its field placed under `prefix`.
    pub fn within(self, prefix: &str) -> Self {
        self.map(|e| e.within(prefix))
    }

    /// Each error changed by `f` (say, its field made relative).
    pub fn map(self, f: impl FnMut(ConfigError) -> ConfigError) -> Self {
        Self(self.0.into_iter().map(f).collect())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `field: message` of each error, joined by `; `.
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The errors gathered while checking a document: each check records its
/// error and the checking goes on; [`Errors::finish`] gives them all.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    /// Records `errors` (one [`ConfigError`] or several).
    pub(crate) fn add(&mut self, errors: impl Into<ConfigErrors>) {
        self.0.extend(errors.into());
    }

    /// Records the error of `result`, if any, and gives its value otherwise.
    pub(crate) fn check<T>(&mut self, result: Result<T, impl Into<ConfigErrors>>) -> Option<T> {
        result.map_err(|e| self.add(e)).ok()
    }

    /// [`Errors::check`], with the errors' fields placed under `prefix`.
    pub(crate) fn check_within<T>(&mut self, prefix: &str, result: Result<T, impl Into<ConfigErrors>>) -> Option<T> {
        result.map_err(|e| self.add(e.into().within(prefix))).ok()
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many errors were recorded, to tell whether a check added any.
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    /// `Ok` when nothing was recorded, else every error.
    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        ConfigErrors::from_vec(self.0).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_error_in_order_and_places_them_under_a_prefix() {
        let mut errors = Errors::default();
        assert_eq!(errors.check(Ok::<_, ConfigError>(7)), Some(7));
        assert!(errors.check(Err::<(), _>(ConfigError::invalid("name", "bad"))).is_none());
        errors.check_within("targets[1]", Err::<(), _>(ConfigError::invalid("url", "worse")));
        let all = errors.finish().unwrap_err().within("services[0]");
        let fields: Vec<&str> = all.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["services[0].name", "services[0].targets[1].url"]);
        assert_eq!(all.first().message(), "bad");
        assert_eq!(all.to_string(), "services[0].name: bad; services[0].targets[1].url: worse");
    }

    #[test]
    fn nothing_recorded_is_ok_and_conflicts_are_told_apart() {
        assert_eq!(Errors::default().finish(), Ok(()));
        assert_eq!(ConfigErrors::from_vec(Vec::new()), None);
        let conflicts = ConfigErrors::from_vec(vec![ConfigError::conflict("a", "x"), ConfigError::conflict("b", "y")]).unwrap();
        assert!(conflicts.all_conflicts());
        let mixed = ConfigErrors::from_vec(vec![ConfigError::conflict("a", "x"), ConfigError::invalid("b", "y")]).unwrap();
        assert!(!mixed.all_conflicts());
    }
}
