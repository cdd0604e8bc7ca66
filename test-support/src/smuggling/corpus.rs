//! The vector files: `=== name`, `source:`, `note:`, `expect:`, then
//! `bytes:` and escaped lines until the next `=== ` (see
//! `tests/smuggling/README.md`).

use std::path::{Path, PathBuf};

/// What a vector demands beyond being handled safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Reject, or forward one cleanly framed request: either is fine.
    Safe,
    /// The RFC (or the source's policy) requires a 4xx or a close.
    Reject,
}

/// One request-smuggling vector.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: String,
    pub source: String,
    pub notes: Vec<String>,
    pub expect: Expect,
    pub bytes: Vec<u8>,
}

/// The corpus directory of this repository: `tests/smuggling/requests`.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/smuggling/requests")
}

/// Every vector of every `*.txt` in `dir`, files in name order.
pub fn load_corpus(dir: &Path) -> Result<Vec<Vector>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut vectors = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        vectors.extend(parse(&text).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    let mut names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("duplicate vector name {}", w[0]));
    }
    Ok(vectors)
}

/// Parses one file.
pub fn parse(text: &str) -> Result<Vec<Vector>, String> {
    let mut vectors: Vec<Vector> = Vec::new();
    let mut in_bytes = false;
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}", i + 1);
        if let Some(name) = line.strip_prefix("=== ") {
            vectors.push(Vector {
                name: name.trim().to_owned(),
                source: String::new(),
                notes: Vec::new(),
                expect: Expect::Safe,
                bytes: Vec::new(),
            });
            in_bytes = false;
            continue;
        }
        let Some(vector) = vectors.last_mut() else {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            return Err(format!("{}: text before the first `=== name`", at()));
        };
        if in_bytes {
            vector.bytes.extend(unescape(line).map_err(|e| format!("{}: {e}", at()))?);
        } else if line == "bytes:" {
            in_bytes = true;
        } else if let Some(source) = line.strip_prefix("source: ") {
            vector.source = source.to_owned();
        } else if let Some(note) = line.strip_prefix("note: ") {
            vector.notes.push(note.to_owned());
        } else if let Some(expect) = line.strip_prefix("expect: ") {
            vector.expect = match expect.trim() {
                "reject" => Expect::Reject,
                "safe" => Expect::Safe,
                other => return Err(format!("{}: unknown expect {other:?}", at())),
            };
        } else if !(line.is_empty() || line.starts_with('#')) {
            return Err(format!("{}: unknown field line {line:?}", at()));
        }
    }
    for vector in &vectors {
        if vector.source.is_empty() || vector.bytes.is_empty() {
            return Err(format!("vector {} needs a source and bytes", vector.name));
        }
    }
    Ok(vectors)
}

/// `\r \n \t \\ \xNN`; every other character stands for itself (ASCII only).
pub fn unescape(line: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(line.len());
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = line.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x escape {hex:?}"))?);
                i += 2;
            }
            other => return Err(format!("unknown escape \\{}", other.map(|&c| c as char).unwrap_or(' '))),
        }
        i += 2;
    }
    Ok(out)
}

/// Bytes written back in the file's escape syntax (for reasons and tables).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_vector_with_exact_bytes() {
        let text = "# header\n\n=== a/b\nsource: here\nnote: n\nexpect: reject\nbytes:\nGET / HTTP/1.1\\r\\n\n\\x00\\t\\\\x\\x20\n";
        let vectors = parse(text).expect("valid");
        assert_eq!(vectors.len(), 1);
        assert_eq!(vectors[0].expect, Expect::Reject);
        assert_eq!(vectors[0].bytes, b"GET / HTTP/1.1\r\n\x00\t\\x ");
        assert_eq!(escape(&vectors[0].bytes), "GET / HTTP/1.1\\r\\n\\x00\\t\\\\x ");
    }

    #[test]
    fn the_repository_corpus_loads() {
        let vectors = load_corpus(&default_dir()).expect("corpus loads");
        assert!(vectors.len() >= 200, "{} vectors", vectors.len());
    }
}
