//! The tokens `portico dev` keeps in its data dir, so that a restart keeps
//! what worked: the cluster token (API keys are stored as HMACs under a key
//! derived from it, so a new one would invalidate every key) and the admin
//! token (reused until `--rotate-admin-token`). Each is a file that only its
//! owner may read (mode 0600), holding the token and nothing else.

use std::io::Write;
use std::path::{Path, PathBuf};

use portico_cp::settings::MIN_TOKEN_LEN;

use crate::client::CliError;

/// Where a token came from this start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The data dir had none: made and saved.
    Created,
    /// Read back from the data dir.
    Reused,
    /// Replaced on request: the previous one no longer works.
    Rotated,
}

/// A token and the file that keeps it.
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) path: PathBuf,
    pub(crate) origin: Origin,
}

/// The token kept in `path`, or a new random one saved there (also when
/// `rotate` asks for a new one).
pub(crate) fn load_or_create(path: &Path, rotate: bool) -> Result<Token, CliError> {
    let unusable = |problem: &dyn std::fmt::Display| CliError::Usage(format!("{}: {problem}; delete it to get a new one", path.display()));
    // Read as `portico-dp --cluster-token-file` reads it (the join line
    // passes this file), so both see the same token.
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(portico_shared::secret_file::secret(&text).map(str::to_owned).map_err(|e| unusable(&e))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CliError::Usage(format!("cannot read {}: {e}", path.display()))),
    };
    let origin = match existing {
        Some(value) if !rotate => {
            // A file copied or edited since may have lost its mode.
            #[cfg(unix)]
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(|e| unusable(&e))?;
            if value.len() < MIN_TOKEN_LEN {
                return Err(unusable(&format!("does not hold a token of at least {MIN_TOKEN_LEN} characters")));
            }
            return Ok(Token { value, path: path.to_owned(), origin: Origin::Reused });
        }
        Some(_) => Origin::Rotated,
        None => Origin::Created,
    };
    let value = portico_cp::api::auth::generate_token();
    write_private(path, &value).map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    Ok(Token { value, path: path.to_owned(), origin })
}

/// Writes `value` to `path`, readable and writable by its owner only.
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // The mode applies when the file is created; a rotated file is brought back to it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_until_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let created = load_or_create(&path, false).unwrap();
        assert_eq!(created.origin, Origin::Created);
        let reused = load_or_create(&path, false).unwrap();
        assert_eq!((reused.origin, &reused.value), (Origin::Reused, &created.value));
        let rotated = load_or_create(&path, true).unwrap();
        assert_eq!(rotated.origin, Origin::Rotated);
        assert_ne!(rotated.value, created.value);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), rotated.value);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn a_short_token_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster-token");
        std::fs::write(&path, "short\n").unwrap();
        let error = load_or_create(&path, false).unwrap_err().to_string();
        assert!(error.contains("cluster-token") && error.contains("at least 16"), "{error}");
    }
}
