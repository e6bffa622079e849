//! Where binaries, scripts, images and charts come from: a pinned public URL
//! (online) or an air-gap bundle directory. Either way every file is checked
//! against a sha256 before anything uses it, and a missing or corrupt file is
//! an error that names the file before any host is touched.
//!
//! Bundle layout: files under the bundle root plus `checksums.sha256` in
//! `sha256sum` format (`<hex>  <relative path>` per line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::sha256_file;

pub const CHECKSUMS_FILE: &str = "checksums.sha256";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("bundle {bundle}: {CHECKSUMS_FILE} is missing or unreadable: {source}")]
    NoChecksums { bundle: PathBuf, source: std::io::Error },
    #[error("bundle {bundle}: {CHECKSUMS_FILE} line {line} is not `<sha256>  <path>`")]
    BadChecksumLine { bundle: PathBuf, line: usize },
    #[error("bundle {bundle}: `{name}` is not listed in {CHECKSUMS_FILE}")]
    NotListed { bundle: PathBuf, name: String },
    #[error("bundle {bundle}: `{name}` is missing")]
    Missing { bundle: PathBuf, name: String },
    #[error("bundle {bundle}: `{name}` is corrupt: sha256 {actual}, expected {expected}")]
    Corrupt {
        bundle: PathBuf,
        name: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// An air-gap bundle directory with its checksums.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
    pub checksums: BTreeMap<String, String>,
}

/// A file taken from the bundle, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Bundle {
    pub fn open(root: &Path) -> Result<Bundle, ArtifactError> {
        let list = root.join(CHECKSUMS_FILE);
        let text = std::fs::read_to_string(&list).map_err(|source| ArtifactError::NoChecksums {
            bundle: root.to_path_buf(),
            source,
        })?;
        let mut checksums = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (sum, name) = parse_checksum_line(line).ok_or(ArtifactError::BadChecksumLine {
                bundle: root.to_path_buf(),
                line: i + 1,
            })?;
            checksums.insert(name.to_string(), sum.to_ascii_lowercase());
        }
        Ok(Bundle {
            root: root.to_path_buf(),
            checksums,
        })
    }

    /// The file `name` (relative to the bundle root), checked against its sum.
    pub fn get(&self, name: &str) -> Result<Verified, ArtifactError> {
        let expected = self.checksums.get(name).ok_or_else(|| ArtifactError::NotListed {
            bundle: self.root.clone(),
            name: name.to_string(),
        })?;
        let path = self.root.join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => {
                return Err(ArtifactError::Missing {
                    bundle: self.root.clone(),
                    name: name.to_string(),
                })
            }
        };
        let actual = sha256_file(&path).map_err(|source| ArtifactError::Io {
            path: path.clone(),
            source,
        })?;
        if &actual != expected {
            return Err(ArtifactError::Corrupt {
                bundle: self.root.clone(),
                name: name.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(Verified {
            path,
            sha256: actual,
            size: meta.len(),
        })
    }

    /// Check every listed file; returns every problem, not just the first.
    pub fn verify_all(&self) -> Vec<ArtifactError> {
        self.checksums.keys().filter_map(|name| self.get(name).err()).collect()
    }

    /// Files in the bundle that `checksums.sha256` does not list: nothing
    /// vouches for them, and a run would refuse them.
    pub fn unlisted(&self) -> std::io::Result<Vec<String>> {
        let mut files = Vec::new();
        collect_files(&self.root, &self.root, &mut files)?;
        files.retain(|f| !self.checksums.contains_key(f));
        files.sort();
        Ok(files)
    }
}

fn parse_checksum_line(line: &str) -> Option<(&str, &str)> {
    let (sum, rest) = line.split_once(char::is_whitespace)?;
    // sha256sum writes two spaces, or " *" for binary mode.
    let name = rest.trim_start().trim_start_matches('*');
    let ok = sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()) && !name.is_empty();
    ok.then_some((sum, name))
}

/// (Re)write `checksums.sha256` for every file under `root`, so a bundle
/// assembled by hand can be sealed before it is carried across the air gap.
pub fn write_checksums(root: &Path) -> Result<usize, ArtifactError> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files).map_err(|source| ArtifactError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    files.sort();
    let mut out = String::new();
    for rel in &files {
        let sum = sha256_file(&root.join(rel)).map_err(|source| ArtifactError::Io {
            path: root.join(rel),
            source,
        })?;
        out.push_str(&format!("{sum}  {rel}\n"));
    }
    let list = root.join(CHECKSUMS_FILE);
    crate::util::write_atomic(&list, out.as_bytes(), 0o644)
        .map_err(|source| ArtifactError::Io { path: list, source })?;
    Ok(files.len())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            collect_files(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            if rel != CHECKSUMS_FILE && !rel.starts_with(&format!(".{CHECKSUMS_FILE}")) {
                out.push(rel);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_files_and_names_missing_and_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("k3s/v1")).unwrap();
        std::fs::write(root.join("k3s/v1/k3s"), b"binary").unwrap();
        std::fs::write(root.join("k3s/v1/install.sh"), b"#!/bin/sh").unwrap();
        assert_eq!(write_checksums(root).unwrap(), 2);
        let b = Bundle::open(root).unwrap();
        let v = b.get("k3s/v1/k3s").unwrap();
        assert_eq!(v.size, 6);
        assert_eq!(v.sha256, crate::util::sha256_hex(b"binary"));
        std::fs::write(root.join("k3s/v1/k3s"), b"tampered").unwrap();
        std::fs::remove_file(root.join("k3s/v1/install.sh")).unwrap();
        let problems: Vec<String> = b.verify_all().iter().map(|e| e.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("`k3s/v1/install.sh` is missing")));
        assert!(problems.iter().any(|p| p.contains("`k3s/v1/k3s` is corrupt")));
        assert!(matches!(b.get("nope"), Err(ArtifactError::NotListed { .. })));
    }

    #[test]
    fn rejects_malformed_checksum_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Bundle::open(dir.path()),
            Err(ArtifactError::NoChecksums { .. })
        ));
        std::fs::write(dir.path().join(CHECKSUMS_FILE), "abc  file\n").unwrap();
        assert!(matches!(
            Bundle::open(dir.path()),
            Err(ArtifactError::BadChecksumLine { line: 1, .. })
        ));
    }
}
