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

    /// Learn the state of several files the next uploads will send, in one
    /// round trip (an optimisation: uploads are correct without it).
    async fn prefetch(&self, _paths: &[&str]) -> Result<(), StepError> {
        Ok(())
    }
}

/// Run and require exit status 0; the error names host, command, status and
/// the end of stderr.
pub async fn run_checked(remote: &dyn Remote, command: &str) -> Result<RemoteOutput, StepError> {
    let out = remote.run(command).await?;
    if out.status == 0 {
        return Ok(out);
    }
    let tail: Vec<&str> = out
        .stderr
        .lines()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(StepError::new(format!(
        "{}: `{}` exited with status {}{}",
        remote.host(),
        short(command),
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(":\n  {}", tail.join("\n  "))
        }
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

/// The run's connection to `conn`, as a [`Remote`].
pub async fn connect(
    ctx: &crate::engine::StepContext,
    conn: &super::hosts::HostConn,
) -> Result<std::sync::Arc<dyn Remote>, StepError> {
    Connector::of(ctx)?.connect(conn).await
}

/// What it takes to open connections, detached from a step's context so
/// fan-out tasks can own it.
#[derive(Clone)]
pub struct Connector {
    pool: std::sync::Arc<crate::drivers::ssh::SshPool>,
    base_dir: std::path::PathBuf,
}

impl Connector {
    pub fn of(ctx: &crate::engine::StepContext) -> Result<Connector, StepError> {
        let pool = ctx
            .services
            .get::<crate::drivers::ssh::SshPool>()
            .ok_or_else(|| StepError::new("internal error: no SSH connection pool in this run"))?;
        Ok(Connector {
            pool,
            base_dir: ctx.base_dir.clone(),
        })
    }

    /// For commands outside a run (backup, restore): the same pool and the
    /// directory secret files are resolved against.
    pub fn new(pool: std::sync::Arc<crate::drivers::ssh::SshPool>, base_dir: std::path::PathBuf) -> Connector {
        Connector { pool, base_dir }
    }

    pub async fn connect(&self, conn: &super::hosts::HostConn) -> Result<std::sync::Arc<dyn Remote>, StepError> {
        let host = connect_host(&self.pool, &self.base_dir, conn).await?;
        Ok(std::sync::Arc::new(SshRemote(host)))
    }

    /// The SSH host itself, for what the [`Remote`] seam does not carry
    /// (streaming a large file down).
    pub async fn host(
        &self,
        conn: &super::hosts::HostConn,
    ) -> Result<std::sync::Arc<crate::drivers::ssh::SshHost>, StepError> {
        connect_host(&self.pool, &self.base_dir, conn).await
    }

    pub async fn close_all(&self) {
        self.pool.close_all().await
    }
}

async fn connect_host(
    pool: &crate::drivers::ssh::SshPool,
    base_dir: &std::path::Path,
    conn: &super::hosts::HostConn,
) -> Result<std::sync::Arc<crate::drivers::ssh::SshHost>, StepError> {
    use crate::drivers::ssh::{SshTarget, Sudo};
    let sudo = match conn.sudo {
        crate::inventory::SudoMode::None => Sudo::None,
        crate::inventory::SudoMode::Passwordless => Sudo::Passwordless,
        crate::inventory::SudoMode::Password => {
            let r = conn
                .sudo_password
                .as_ref()
                .ok_or_else(|| StepError::new(format!("{}: sudo mode `password` without `sudoPassword`", conn.name)))?;
            Sudo::Password(
                r.resolve(base_dir)
                    .map_err(|e| StepError::new(format!("{}: sudo password: {e}", conn.name)))?,
            )
        }
    };
    let mut jump_hosts = Vec::new();
    let mut b = conn.bastion.as_deref();
    while let Some(j) = b {
        jump_hosts.insert(0, format!("{}@{}:{}", j.user, j.address, j.port));
        b = j.bastion.as_deref();
    }
    let target = SshTarget {
        name: conn.name.clone(),
        address: conn.address.clone(),
        port: conn.port,
        user: conn.user.clone(),
        identity_file: conn.identity_file.clone(),
        sudo,
        jump_hosts,
        config_file: conn.config_file.clone(),
    };
    pool.connect(&target).await.map_err(|e| StepError::new(e.to_string()))
}

struct SshRemote(std::sync::Arc<crate::drivers::ssh::SshHost>);

#[async_trait]
impl Remote for SshRemote {
    fn host(&self) -> &str {
        self.0.name()
    }

    async fn run(&self, command: &str) -> Result<RemoteOutput, StepError> {
        let out = self.0.run(command).await.map_err(|e| StepError::new(e.to_string()))?;
        Ok(RemoteOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn upload(&self, local: &Path, remote: &str, mode: u32) -> Result<Sent, StepError> {
        let bytes = self
            .0
            .upload(local, remote, mode)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        Ok(Sent { bytes })
    }

    async fn upload_bytes(&self, content: &[u8], remote: &str, mode: u32) -> Result<Sent, StepError> {
        let bytes = self
            .0
            .upload_bytes(content, remote, mode)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        Ok(Sent { bytes })
    }

    async fn read(&self, remote: &str) -> Result<Vec<u8>, StepError> {
        self.0.read(remote).await.map_err(|e| StepError::new(e.to_string()))
    }

    async fn prefetch(&self, paths: &[&str]) -> Result<(), StepError> {
        self.0.prefetch(paths).await.map_err(|e| StepError::new(e.to_string()))
    }
}

/// How Ansible reaches hosts in this run: the known_hosts file our own
/// connections verified, and a directory for Ansible's SSH masters.
pub struct AnsibleSsh {
    pub known_hosts: String,
    /// Private to this run, beside our own masters (a short path: sockets
    /// have a length limit). In Ansible's shared default (`~/.ansible/cp`)
    /// a master left by an earlier run lives on for a minute after it, and
    /// a new host with the same address would be reached through it: the
    /// commands would run on the old machine.
    pub control_dir: std::path::PathBuf,
}

impl AnsibleSsh {
    pub fn of(ctx: &crate::engine::StepContext) -> Result<AnsibleSsh, StepError> {
        let pool = ctx.services.get::<crate::drivers::ssh::SshPool>();
        let known_hosts = pool
            .as_ref()
            .map(|p| p.options().known_hosts.display().to_string())
            .unwrap_or_else(|| ctx.workdir.join("known_hosts").display().to_string());
        let control_dir = pool
            .as_ref()
            .map(|p| p.options().control_dir.join("ansible"))
            .unwrap_or_else(|| std::env::temp_dir().join(format!("nautes-ansible-{}", std::process::id())));
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&control_dir)
            .map_err(|e| StepError::new(format!("cannot create {}: {e}", control_dir.display())))?;
        Ok(AnsibleSsh {
            known_hosts,
            control_dir,
        })
    }

    /// The environment that points Ansible at [`AnsibleSsh::control_dir`].
    pub fn env(&self) -> (String, String) {
        (
            "ANSIBLE_SSH_CONTROL_PATH_DIR".to_string(),
            self.control_dir.display().to_string(),
        )
    }
}
