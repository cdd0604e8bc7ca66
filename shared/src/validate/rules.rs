//! The rules every entity's validation shares: the [`Validate`] trait, and
//! checks of single values (names, list bounds, ranges, duplicates in a
//! list, tags, scopes, header tokens, host patterns). Checks of one entity
//! live beside its type in [`crate::model`]; checks across entities in
//! [`crate::validate`].

use std::collections::HashSet;

use crate::error::{ConfigError, ConfigErrors};

/// Longest entity or gateway name.
pub const MAX_NAME_LEN: usize = 64;
/// Most entries in a list of an entity (paths, hosts, policies, …).
pub(crate) const MAX_LIST: usize = 64;
/// Longest path (of a route, of a health check).
pub(crate) const MAX_PATH_LEN: usize = 1_024;
const MAX_TAGS: usize = 32;
const MAX_SCOPE_LEN: usize = 128;

/// The outcome of a check of one value: its one error.
pub(crate) type Result<T = (), E = ConfigError> = std::result::Result<T, E>;

/// Checks a gateway or entity name: 1 to 64 of `[a-z0-9._-]`, starting with
/// a letter or digit (so it is safe in a URL path and never `.` or `..`).
pub fn name(field: &str, value: &str) -> Result {
    let valid_chars = value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let starts_well = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if value.is_empty() || value.len() > MAX_NAME_LEN || !valid_chars || !starts_well {
        return Err(ConfigError::invalid(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// An entity (or a part of one) that can check itself, with fields relative
/// to it.
pub trait Validate {
    /// Puts the entity in canonical form, then checks every field, reporting
    /// every error found (a check that needs an earlier one's result runs
    /// only when that one passed).
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors>;
}

/// Checks a host name, exact or `*.example.com`.
pub(crate) fn host_pattern(field: &str, host: &str) -> Result {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || host.len() > 253 || !name.split('.').all(label_ok) {
        return Err(ConfigError::invalid(field, format!("'{host}' is not a host name or a '*.example.com' pattern")));
    }
    Ok(())
}

/// Checks a list of scopes: at most 64, each 1 to 128 visible ASCII
/// characters without quotes or backslashes, none twice.
pub(crate) fn scopes(field: &str, list: &[String]) -> Result {
    bounded(field, list.len(), MAX_LIST)?;
    for (i, scope) in list.iter().enumerate() {
        if scope.is_empty() || scope.len() > MAX_SCOPE_LEN || !scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            return Err(ConfigError::invalid(
                format!("{field}[{i}]"),
                "must be 1 to 128 visible ASCII characters, without quotes or backslashes",
            ));
        }
    }
    unique(field, list)
}

/// Checks an entity's `tags`: at most 32, each 1 to 128 of
/// `[A-Za-z0-9._:/=-]`, none twice.
pub(crate) fn tags(list: &[String]) -> Result {
    bounded("tags", list.len(), MAX_TAGS)?;
    for (i, tag) in list.iter().enumerate() {
        let valid = tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/=-".contains(&b));
        if tag.is_empty() || tag.len() > 128 || !valid {
            return Err(ConfigError::invalid(
                format!("tags[{i}]"),
                "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '/', '=', '-'",
            ));
        }
    }
    unique("tags", list)
}

/// Refuses an entry listed twice, naming the second.
pub(crate) fn unique(field: &str, list: &[String]) -> Result {
    let mut seen = HashSet::new();
    for (i, item) in list.iter().enumerate() {
        if !seen.insert(item) {
            return Err(ConfigError::invalid(format!("{field}[{i}]"), format!("'{item}' is listed twice")));
        }
    }
    Ok(())
}

/// Refuses a list longer than `max`.
pub(crate) fn bounded(field: &str, len: usize, max: usize) -> Result {
    if len > max {
        return Err(ConfigError::invalid(field, format!("at most {max} entries are allowed")));
    }
    Ok(())
}

/// Refuses a value outside `min..=max`.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(field: &str, value: T, min: T, max: T) -> Result {
    if value < min || value > max {
        return Err(ConfigError::invalid(field, format!("must be {min} to {max}, got {value}")));
    }
    Ok(())
}

/// Whether `b` may appear in an HTTP token (a header name).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_in_the_documented_alphabet() {
        for ok in ["default", "users-api", "a", "v1.2_beta", &"a".repeat(64)] {
            assert!(name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Users", "-x", ".", "..", "a b", "ü", "a/b", &"a".repeat(65)] {
            assert_eq!(name("name", bad).unwrap_err().field(), "name", "{bad}");
        }
    }
}
