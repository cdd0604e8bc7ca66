//! The last good snapshot on disk, so a node restarted while the control
//! plane is down still serves. One file per gateway in `--cache-dir`:
//! a header line (`portico-snapshot/1 <gateway> <version> <sha256>`) then
//! the canonical snapshot bytes. Written atomically (temp file, fsync,
//! rename, fsync of the directory); on load the sha256 must match, and a
//! file that does not is reported as corrupt and never served.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &str = "portico-snapshot/1";

/// A snapshot read back from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub gateway: String,
    pub version: u64,
    pub hash: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read or write the snapshot cache {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the snapshot cache {path} is corrupt ({reason}); it will not be served")]
    Corrupt { path: PathBuf, reason: String },
}

/// The cache file of one gateway.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    path: PathBuf,
}

impl SnapshotCache {
    pub fn new(dir: &Path, gateway: &str) -> Self {
        Self { path: dir.join(format!("{gateway}.snapshot")) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached snapshot; `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Cached>, CacheError> {
        let data = match std::fs::read(&self.path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path: self.path.clone(), source }),
        };
        let corrupt = |reason: &str| CacheError::Corrupt { path: self.path.clone(), reason: reason.to_owned() };
        let newline = data.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt("no header line"))?;
        let header = std::str::from_utf8(&data[..newline]).map_err(|_| corrupt("header is not UTF-8"))?;
        let fields: Vec<&str> = header.split(' ').collect();
        let [magic, gateway, version, hash] = fields[..] else { return Err(corrupt("malformed header")) };
        if magic != MAGIC {
            return Err(corrupt("unknown format"));
        }
        let version = version.parse().map_err(|_| corrupt("bad version"))?;
        let bytes = data[newline + 1..].to_vec();
        if hex::encode(Sha256::digest(&bytes)) != hash {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(Some(Cached { gateway: gateway.to_owned(), version, hash: hash.to_owned(), bytes }))
    }

    /// Replaces the cached snapshot atomically.
    pub fn store(&self, gateway: &str, version: u64, hash: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let io = |source| CacheError::Io { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // Snapshots hold private keys (certificates, upstream client
        // certificates): only this user may read the cache.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let temp = self.path.with_extension(format!("tmp-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp).map_err(io)?;
        file.write_all(format!("{MAGIC} {gateway} {version} {hash}\n").as_bytes()).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(io)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path(), "default");
        assert!(cache.load().unwrap().is_none());
        let bytes = br#"{"services":[],"routes":[],"consumers":[]}"#;
        let hash = hex::encode(Sha256::digest(bytes));
        cache.store("default", 7, &hash, bytes).unwrap();
        let cached = cache.load().unwrap().unwrap();
        assert_eq!((cached.version, cached.hash.as_str(), cached.bytes.as_slice()), (7, hash.as_str(), &bytes[..]));

        let mut data = std::fs::read(cache.path()).unwrap();
        let last = data.len() - 2;
        data[last] ^= 1;
        std::fs::write(cache.path(), &data).unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Corrupt { .. })));
        std::fs::write(cache.path(), b"garbage").unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Corrupt { .. })));
    }
}
