//! What components need from a host, independent of how we reach it: run a
//! command, send a file (skipped when the host already has it), read a file.
//! The SSH driver provides it; keeping the seam small keeps components
//! testable and the driver free of Nautes.

use std::path::Path;

use async_trait::async_trait;

use crate::engine::StepError;

#[derive(Debug, Clone)]
pub struct RemoteOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// How much an upload sent: 0 bytes when the host already had the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
}

impl Sent {
    pub fn changed(self) -> bool {
        self.bytes > 0
    }
}

#[async_trait]
pub trait Remote: Send + Sync {
    /// The inventory name of the host (for messages).
    fn host(&self) -> &str;

    /// Run `command` with `sh -c` (with sudo when the host is configured for
    /// it). Err only when the command could not be run at all.
    async fn run(&self, command: &str) -> Result<RemoteOutput, StepError>;

    /// Place `local` at `remote` with `mode`, atomically, unless the host
    /// already has identical content (sha256), which sends nothing.
    async fn upload(&self, local: &Path, remote: &str, mode: u32) -> Result<Sent, StepError>;

    /// Same as [`Remote::upload`] for content held in memory (configs, tokens).
    async fn upload_bytes(&self, content: &[u8], remote: &str, mode: u32) -> Result<Sent, StepError>;

    async fn read(&self, remote: &str) -> Result<Vec<u8>, StepError>;
}

/// Run and require exit status 0; the error names host, command, status and
/// the end of stderr.
pub async fn run_checked(remote: &dyn Remote, command: &str) -> Result<RemoteOutput, StepError> {
    let out = remote.run(command).await?;
    if out.status == 0 {
        return Ok(out);
    }
    let tail: Vec<&str> = out.stderr.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
    Err(StepError::new(format!(
        "{}: `{}` exited with status {}{}",
        remote.host(),
        short(command),
        out.status,
        if tail.is_empty() { String::new() } else { format!(":\n  {}", tail.join("\n  ")) }
    )))
}

/// Long scripts are shown by their first line.
fn short(command: &str) -> String {
    let first = command.lines().next().unwrap_or("");
    if first.len() > 120 || command.contains('\n') {
        format!("{}…", &first[..first.len().min(120)])
    } else {
        first.to_string()
    }
}

pub use crate::drivers::ssh::sh_quote;

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(super::sh_quote("a'b"), r"'a'\''b'");
    }
}
