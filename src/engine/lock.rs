//! One run at a time per workdir. The lock is an OS file lock (released by
//! the kernel when the holder dies, so a crash never leaves a lock that
//! needs cleaning by hand) plus a note of who holds it, for the error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_at: String,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} since {} (`{}`)",
            self.pid, self.host, self.started_at, self.command
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another nautes-install is running in this workdir: {holder}")]
    Held { holder: String, path: PathBuf },
    #[error("cannot open lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held for the life of the run; dropping it releases the lock.
pub struct RunLock {
    file: File,
    /// A holder note left by a process that died holding the lock.
    pub stale: Option<Holder>,
}

impl RunLock {
    pub fn acquire(workdir: &Path, command: &str) -> Result<RunLock, LockError> {
        let path = workdir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut note = String::new();
        file.read_to_string(&mut note).map_err(io)?;
        let previous: Option<Holder> = serde_json::from_str(&note).ok();
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = previous
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "holder unknown (lock note not yet written)".to_string());
                return Err(LockError::Held { holder, path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let me = Holder {
            pid: std::process::id(),
            host: hostname(),
            started_at: crate::util::now_rfc3339(),
            command: command.to_string(),
        };
        let bytes = serde_json::to_vec(&me).unwrap_or_default();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(RunLock { file, stale: previous })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty note tells the next run we left cleanly.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Who holds the workdir's lock right now, if anyone: a shared lock cannot
/// be had while a run holds its exclusive one. Takes nothing from the holder.
pub fn current_holder(workdir: &Path) -> Option<Holder> {
    let mut file = File::open(workdir.join("lock")).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut note = String::new();
            let _ = file.read_to_string(&mut note);
            Some(serde_json::from_str(&note).unwrap_or(Holder {
                pid: 0,
                host: "unknown".into(),
                started_at: "unknown".into(),
                command: "unknown".into(),
            }))
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "apply").unwrap();
        assert!(first.stale.is_none());
        match RunLock::acquire(dir.path(), "apply") {
            Err(LockError::Held { holder, .. }) => {
                assert!(holder.contains(&format!("pid {}", std::process::id())), "{holder}");
            }
            other => panic!("expected Held, got {:?}", other.err()),
        }
        drop(first);
        let again = RunLock::acquire(dir.path(), "apply").unwrap();
        assert!(again.stale.is_none(), "a clean release leaves no stale note");
    }

    #[test]
    fn a_note_left_by_a_dead_holder_is_reported_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let note = Holder {
            pid: 999_999,
            host: "h".into(),
            started_at: "t".into(),
            command: "apply".into(),
        };
        std::fs::write(dir.path().join("lock"), serde_json::to_vec(&note).unwrap()).unwrap();
        let lock = RunLock::acquire(dir.path(), "apply").unwrap();
        assert_eq!(lock.stale, Some(note));
    }
}
