//! What a file given for a secret (`--admin-token-file`,
//! `--cluster-token-file`) may hold: the secret on one line, as `echo` or a
//! Kubernetes Secret writes it. A trailing line break is not part of the
//! secret; an empty file or a second line is refused rather than guessed
//! at. The one place outside the binaries' `main` where this crate touches
//! the file system, so both planes read secret files alike.

use std::path::{Path, PathBuf};

/// A secret file that cannot be used, naming the flag that gave it.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {problem}", path.display())]
pub struct SecretFileError {
    pub flag: &'static str,
    pub path: PathBuf,
    pub problem: String,
}

/// Reads the secret in the file at `path`, given by `flag`.
pub fn read(flag: &'static str, path: &Path) -> Result<String, SecretFileError> {
    let error = |problem: String| SecretFileError { flag, path: path.to_owned(), problem };
    let contents = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
    secret(&contents).map(str::to_owned).map_err(|e| error(e.to_owned()))
}

/// The secret in a secret file's `contents`, or why there is none.
pub fn secret(contents: &str) -> Result<&str, &'static str> {
    let secret = contents.strip_suffix('\n').map_or(contents, |s| s.strip_suffix('\r').unwrap_or(s));
    if secret.is_empty() {
        Err("the file is empty")
    } else if secret.contains(['\n', '\r']) {
        Err("the file holds more than one line; it must hold the secret alone")
    } else {
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::secret;

    #[test]
    fn one_trailing_line_break_is_dropped_and_nothing_else() {
        assert_eq!(secret("s3cr3t-token\n"), Ok("s3cr3t-token"));
        assert_eq!(secret("s3cr3t-token\r\n"), Ok("s3cr3t-token"));
        assert_eq!(secret("s3cr3t-token"), Ok("s3cr3t-token"));
        assert_eq!(secret(" spaced "), Ok(" spaced "), "spaces may be part of a secret");
        assert!(secret("").is_err());
        assert!(secret("\n").is_err());
        assert!(secret("a\nb\n").is_err());
        assert!(secret("a\n\n").is_err());
    }
}
