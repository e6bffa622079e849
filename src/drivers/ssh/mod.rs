//! SSH to hosts through the system OpenSSH client (the `openssh` crate), so
//! everything users already configured keeps working: ~/.ssh/config
//! aliases, ProxyJump, IdentityFile, ssh-agent, CA-signed host keys. One
//! master connection per host is opened once and shared by every command of
//! a run (native multiplexing). Host keys are verified; a changed key stops
//! with both fingerprints. Knows nothing of Nautes.

pub mod hostkeys;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, OnceCell};

use crate::secret::Secret;

#[derive(Debug, Clone)]
pub enum Sudo {
    /// Run as the login user (root, or no privilege needed).
    None,
    Passwordless,
    /// `sudo -S`: the password goes to sudo's stdin, never on a command line.
    Password(Secret),
}

#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Name for messages (the inventory host name).
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub identity_file: Option<PathBuf>,
    pub sudo: Sudo,
    /// Jump hosts as `user@host:port`, outermost first.
    pub jump_hosts: Vec<String>,
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only keys already in known_hosts are trusted.
    Strict,
    /// Trust and record a host's key on first contact; a changed key still stops.
    AcceptNew,
}

#[derive(Debug, Clone)]
pub struct SshOptions {
    pub known_hosts: PathBuf,
    pub policy: HostKeyPolicy,
    /// Where master sockets live (short path: sockets have a length limit).
    pub control_dir: PathBuf,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Attempts for transient connection failures (refused, timed out).
    pub connect_attempts: u32,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum SshError {
    #[error("{host} ({address}): cannot connect: {message}")]
    Connect {
        host: String,
        address: String,
        message: String,
    },
    #[error("{host} ({address}): the host key CHANGED since it was trusted. known: {known}; offered now: {offered}. If the host was reinstalled, remove its line from {known_hosts} and run again; otherwise treat this as an attack and stop.")]
    HostKeyChanged {
        host: String,
        address: String,
        known: String,
        offered: String,
        known_hosts: String,
    },
    #[error("{host} ({address}): host key not trusted yet (offered: {offered}). Check the fingerprint out of band, then run with --accept-new-host-keys, or add it to {known_hosts}.")]
    UnknownHostKey {
        host: String,
        address: String,
        offered: String,
        known_hosts: String,
    },
    #[error("{host}: `{command}` failed to run: {message}")]
    Command {
        host: String,
        command: String,
        message: String,
    },
    #[error("{host}: `{command}` did not finish within {after:?}")]
    Timeout {
        host: String,
        command: String,
        after: Duration,
    },
}

/// The result of a remote command.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One master connection per host name, opened on first use.
pub struct SshPool {
    options: SshOptions,
    hosts: Mutex<HashMap<String, Arc<OnceCell<Arc<SshHost>>>>>,
    digests: Arc<DigestCache>,
}

/// sha256 of local files by (path, size, mtime): one file sent to many
/// hosts is hashed once, not once per host.
#[derive(Default)]
struct DigestCache(
    std::sync::Mutex<HashMap<(PathBuf, u64, std::time::SystemTime), String>>,
    /// Held while hashing, so hosts asking at once wait for one hash.
    std::sync::Mutex<()>,
);

impl DigestCache {
    fn digest(&self, path: &Path) -> std::io::Result<(String, u64)> {
        let meta = std::fs::metadata(path)?;
        let key = (path.to_path_buf(), meta.len(), meta.modified()?);
        let _hashing = self.1.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sha) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok((sha.clone(), meta.len()));
        }
        let sha = crate::artifacts::sha256_file(path)?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, sha.clone());
        Ok((sha, meta.len()))
    }
}

impl SshPool {
    pub fn new(options: SshOptions) -> SshPool {
        SshPool {
            options,
            hosts: Mutex::new(HashMap::new()),
            digests: Arc::new(DigestCache::default()),
        }
    }

    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// The shared connection to `target`, connecting if needed. A failure is
    /// not cached: a later step tries again (the host may be back).
    pub async fn connect(&self, target: &SshTarget) -> Result<Arc<SshHost>, SshError> {
        let cell = {
            let mut hosts = self.hosts.lock().await;
            hosts.entry(target.name.clone()).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let session = open(target, &self.options).await?;
            Ok(Arc::new(SshHost {
                target: target.clone(),
                session,
                command_timeout: self.options.command_timeout,
                digests: self.digests.clone(),
                prefetched: Default::default(),
            }))
        })
        .await
        .cloned()
    }

    /// Close every master connection (at the end of a run).
    pub async fn close_all(&self) {
        let cells: Vec<_> = self.hosts.lock().await.drain().map(|(_, c)| c).collect();
        for cell in cells {
            if let Some(host) = Arc::into_inner(cell).and_then(|c| c.into_inner()) {
                if let Some(host) = Arc::into_inner(host) {
                    let _ = host.session.close().await;
                }
            }
        }
    }
}

async fn open(target: &SshTarget, options: &SshOptions) -> Result<Session, SshError> {
    let _ = std::fs::create_dir_all(&options.control_dir);
    let mut builder = SessionBuilder::default();
    builder
        .user(target.user.clone())
        .port(target.port)
        .known_hosts_check(match options.policy {
            HostKeyPolicy::Strict => KnownHosts::Strict,
            HostKeyPolicy::AcceptNew => KnownHosts::Add,
        })
        .user_known_hosts_file(&options.known_hosts)
        .connect_timeout(options.connect_timeout)
        .server_alive_interval(Duration::from_secs(15))
        .control_directory(&options.control_dir)
        // A killed run must not leave masters behind for long.
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(60).unwrap_or(std::num::NonZeroUsize::MIN),
        ));
    if let Some(k) = &target.identity_file {
        builder.keyfile(k);
    }
    if let Some(c) = &target.config_file {
        builder.config_file(c);
    }
    if !target.jump_hosts.is_empty() {
        builder.jump_hosts(&target.jump_hosts);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match builder.connect_mux(&target.address).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                let message = e.to_string();
                let full = format!("{message} {:?}", std::error::Error::source(&e).map(|s| s.to_string()));
                if full.contains("IDENTIFICATION HAS CHANGED")
                    || full.contains("Host key verification failed")
                    || full.contains("host key")
                {
                    return Err(host_key_error(target, options).await.unwrap_or(SshError::Connect {
                        host: target.name.clone(),
                        address: format!("{}:{}", target.address, target.port),
                        message: full,
                    }));
                }
                let transient = ["refused", "timed out", "reset", "Connection closed", "No route"]
                    .iter()
                    .any(|t| full.contains(t));
                if !transient || attempt >= options.connect_attempts.max(1) {
                    return Err(SshError::Connect {
                        host: target.name.clone(),
                        address: format!("{}:{}", target.address, target.port),
                        message: format!("{}{}", tidy(&full), hint(&full)),
                    });
                }
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt - 1))).await;
            }
        }
    }
}

fn tidy(message: &str) -> String {
    message
        .replace(" None", "")
        .replace("Some(\"", "")
        .replace("\")", "")
        .trim()
        .to_string()
}

fn hint(message: &str) -> &'static str {
    if message.contains("Permission denied") {
        " (hint: check `user` and `identityFile`, or that ssh-agent holds the key)"
    } else if message.contains("refused") {
        " (hint: is sshd running and is the port right?)"
    } else if message.contains("timed out") {
        " (hint: is the address reachable from here? a bastion may be needed)"
    } else {
        ""
    }
}

async fn host_key_error(target: &SshTarget, options: &SshOptions) -> Option<SshError> {
    let known = hostkeys::known_keys(&options.known_hosts, &target.address, target.port);
    let offered = hostkeys::offered_keys(&target.address, target.port).await;
    let show = |keys: &[(String, String)]| {
        keys.iter()
            .map(|(t, f)| format!("{t} {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let address = format!("{}:{}", target.address, target.port);
    let known_hosts = options.known_hosts.display().to_string();
    if known.is_empty() {
        return Some(SshError::UnknownHostKey {
            host: target.name.clone(),
            address,
            offered: show(&offered),
            known_hosts,
        });
    }
    Some(SshError::HostKeyChanged {
        host: target.name.clone(),
        address,
        known: show(&known),
        offered: show(&offered),
        known_hosts,
    })
}

/// A connected host.
pub struct SshHost {
    target: SshTarget,
    session: Session,
    command_timeout: Duration,
    digests: Arc<DigestCache>,
    /// Remote file states read ahead in one command ([`SshHost::prefetch`]),
    /// each used once by the upload that follows.
    prefetched: std::sync::Mutex<HashMap<String, Option<(String, u32)>>>,
}

/// Content to feed a command on stdin.
enum Input<'a> {
    None,
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl SshHost {
    pub fn name(&self) -> &str {
        &self.target.name
    }

    fn wrap(&self, command: &str) -> String {
        let quoted = sh_quote(command);
        match (&self.target.sudo, self.target.user == "root") {
            (_, true) | (Sudo::None, _) => format!("sh -c {quoted}"),
            (Sudo::Passwordless, _) => format!("sudo -n sh -c {quoted}"),
            (Sudo::Password(_), _) => format!("sudo -S -p '' sh -c {quoted}"),
        }
    }

    /// Run `command` with `sh -c` (under sudo when configured).
    pub async fn run(&self, command: &str) -> Result<Output, SshError> {
        self.exec(command, Input::None).await
    }

    async fn exec(&self, command: &str, input: Input<'_>) -> Result<Output, SshError> {
        let err = |message: String| SshError::Command {
            host: self.target.name.clone(),
            command: first_line(command),
            message,
        };
        let mut cmd = self.session.raw_command(self.wrap(command));
        cmd.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let work = async {
            let mut child = cmd.spawn().await.map_err(|e| err(e.to_string()))?;
            if let Some(mut stdin) = child.stdin().take() {
                if let Sudo::Password(p) = &self.target.sudo {
                    if self.target.user != "root" {
                        stdin
                            .write_all(format!("{}\n", p.expose()).as_bytes())
                            .await
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
                match input {
                    Input::None => {}
                    Input::Bytes(b) => stdin.write_all(b).await.map_err(|e| err(e.to_string()))?,
                    Input::File(path) => {
                        let mut f = tokio::fs::File::open(path)
                            .await
                            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                        tokio::io::copy(&mut f, &mut stdin)
                            .await
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
                stdin.shutdown().await.map_err(|e| err(e.to_string()))?;
            }
            let out = child.wait_with_output().await.map_err(|e| err(e.to_string()))?;
            Ok(Output {
                status: out.status.code().unwrap_or(-1),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        };
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.command_timeout, work).await;
        tracing::debug!(host = %self.target.name, elapsed_ms = started.elapsed().as_millis() as u64, "ssh: {}", first_line(command));
        match result {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                host: self.target.name.clone(),
                command: first_line(command),
                after: self.command_timeout,
            }),
        }
    }

    /// sha256 and mode of a remote file, if it exists.
    /// Read the sha256 and mode of several remote files in one round trip,
    /// so the uploads that follow need not ask one by one.
    pub async fn prefetch(&self, paths: &[&str]) -> Result<(), SshError> {
        let script: String = paths
            .iter()
            .map(|p| {
                let q = sh_quote(p);
                format!("if [ -f {q} ]; then echo \"$(sha256sum {q} | cut -d' ' -f1) $(stat -c %a {q})\"; else echo -; fi\n")
            })
            .collect();
        let out = self.run(&script).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        if out.status != 0 || lines.len() != paths.len() {
            // Nothing is cached: each upload asks for itself.
            return Ok(());
        }
        let mut map = self.prefetched.lock().unwrap_or_else(|p| p.into_inner());
        for (path, line) in paths.iter().zip(lines) {
            let state = line
                .split_once(' ')
                .map(|(sum, mode)| (sum.to_string(), u32::from_str_radix(mode.trim(), 8).unwrap_or(0)));
            map.insert(path.to_string(), state);
        }
        Ok(())
    }

    async fn remote_state(&self, remote: &str) -> Result<Option<(String, u32)>, SshError> {
        if let Some(known) = self.prefetched.lock().unwrap_or_else(|p| p.into_inner()).remove(remote) {
            return Ok(known);
        }
        let q = sh_quote(remote);
        let out = self
            .run(&format!(
                "if [ -f {q} ]; then sha256sum {q} | cut -d' ' -f1; stat -c %a {q}; fi"
            ))
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        match (lines.next(), lines.next()) {
            (Some(sum), Some(mode)) => Ok(Some((
                sum.trim().to_string(),
                u32::from_str_radix(mode.trim(), 8).unwrap_or(0),
            ))),
            _ => Ok(None),
        }
    }

    /// Place content at `remote` unless it is already there. Returns the
    /// bytes sent (0 when the host had identical content).
    async fn place(&self, remote: &str, mode: u32, sha256: &str, size: u64, input: Input<'_>) -> Result<u64, SshError> {
        let q = sh_quote(remote);
        if let Some((have, have_mode)) = self.remote_state(remote).await? {
            if have == sha256 {
                if have_mode != mode {
                    self.checked(&format!("chmod {mode:o} {q}")).await?;
                }
                return Ok(0);
            }
        }
        let tmp = sh_quote(&format!("{remote}.nautes-tmp-{}", std::process::id()));
        // Write beside the target, verify, then rename: a reader never sees half a file.
        let script = format!(
            "mkdir -p \"$(dirname {q})\" && cat > {tmp} && chmod {mode:o} {tmp} && \
             [ \"$(sha256sum {tmp} | cut -d' ' -f1)\" = {sha256} ] && mv -f {tmp} {q} || {{ rm -f {tmp}; echo 'upload verification failed' >&2; exit 1; }}"
        );
        let out = self.exec(&script, input).await?;
        if out.status != 0 {
            return Err(SshError::Command {
                host: self.target.name.clone(),
                command: format!("upload to {remote}"),
                message: format!(
                    "exit status {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(size)
    }

    pub async fn upload(&self, local: &Path, remote: &str, mode: u32) -> Result<u64, SshError> {
        let path = local.to_path_buf();
        let digests = self.digests.clone();
        let (sha, size) = tokio::task::spawn_blocking(move || digests.digest(&path))
            .await
            .map_err(|e| SshError::Command {
                host: self.target.name.clone(),
                command: "upload".into(),
                message: e.to_string(),
            })?
            .map_err(|e| SshError::Command {
                host: self.target.name.clone(),
                command: format!("upload {}", local.display()),
                message: e.to_string(),
            })?;
        self.place(remote, mode, &sha, size, Input::File(local)).await
    }

    pub async fn upload_bytes(&self, content: &[u8], remote: &str, mode: u32) -> Result<u64, SshError> {
        use sha2::Digest;
        let sha = crate::plan::fingerprint::hex(&sha2::Sha256::digest(content));
        self.place(remote, mode, &sha, content.len() as u64, Input::Bytes(content))
            .await
    }

    pub async fn read(&self, remote: &str) -> Result<Vec<u8>, SshError> {
        let out = self.checked(&format!("cat {}", sh_quote(remote))).await?;
        Ok(out.stdout)
    }

    async fn checked(&self, command: &str) -> Result<Output, SshError> {
        let out = self.run(command).await?;
        if out.status != 0 {
            return Err(SshError::Command {
                host: self.target.name.clone(),
                command: first_line(command),
                message: format!(
                    "exit status {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(out)
    }
}

/// Quote a string for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn first_line(command: &str) -> String {
    let line = command.lines().next().unwrap_or("");
    if line.len() > 100 {
        format!("{}…", &line[..100])
    } else {
        line.to_string()
    }
}
