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

use openssh::Session;
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
        let sha = crate::util::sha256_file(path)?;
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
            let (session, master) = open(target, &self.options).await?;
            Ok(Arc::new(SshHost {
                target: target.clone(),
                session,
                master: Mutex::new(Some(master)),
                command_timeout: self.options.command_timeout,
                digests: self.digests.clone(),
                prefetched: Default::default(),
                abandoned: Default::default(),
            }))
        })
        .await
        .cloned()
    }

    /// Stop every master connection (at the end of a run, and when it is
    /// interrupted: steps still holding a host do not keep its master alive).
    pub async fn close_all(&self) {
        let cells: Vec<_> = self.hosts.lock().await.drain().map(|(_, c)| c).collect();
        let hosts: Vec<Arc<SshHost>> = cells.iter().filter_map(|c| c.get().cloned()).collect();
        // Commands a cancelled step left running are stopped while their
        // host's master can still carry the kill, all hosts at once.
        futures::future::join_all(hosts.iter().map(|h| h.stop_abandoned())).await;
        for host in hosts {
            host.shutdown().await;
        }
        self.stop_foreign_masters().await;
    }

    /// Tools we run (Ansible) keep their own `ControlPersist` masters under
    /// our control directory; they would outlive the run by their persist
    /// time, so each socket found there is asked to exit.
    async fn stop_foreign_masters(&self) {
        use std::os::unix::fs::FileTypeExt;
        let mut sockets = Vec::new();
        let mut dirs = vec![self.options.control_dir.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                match entry.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(entry.path()),
                    Ok(t) if t.is_socket() => sockets.push(entry.path()),
                    _ => {}
                }
            }
        }
        for socket in sockets {
            let exit = tokio::process::Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", socket.display()))
                .args(["-O", "exit", "nautes-control"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            let _ = tokio::time::timeout(Duration::from_secs(2), exit).await;
        }
    }
}

impl Drop for SshPool {
    fn drop(&mut self) {
        // The masters' sockets and logs live here; nothing else does.
        let _ = std::fs::remove_dir_all(&self.options.control_dir);
    }
}

/// A running `ssh -M -N` master: our own child (not daemonised with `-f`),
/// so it can be killed when a connect is abandoned, and dies with us.
struct Master {
    child: tokio::process::Child,
    control: PathBuf,
    log: PathBuf,
}

/// Unique socket names within a pool's control directory.
static MASTER_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

enum Attempt {
    Connected(Box<Master>),
    /// ssh gave up (or we stopped it at the deadline); its log says why.
    Failed {
        log: String,
        timed_out: bool,
    },
}

/// Connect with retries, all within `options.connect_timeout`: the timeout is
/// what the user waits at most, not a per-attempt figure to be multiplied.
async fn open(target: &SshTarget, options: &SshOptions) -> Result<(Session, Master), SshError> {
    let _ = std::fs::create_dir_all(&options.control_dir);
    let address = format!("{}:{}", target.address, target.port);
    let budget = options.connect_timeout;
    let deadline = tokio::time::Instant::now() + budget;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (log, timed_out) = match launch_master(target, options, remaining).await {
            Ok(Attempt::Connected(master)) => {
                let session = Session::resume_mux(
                    master.control.clone().into_boxed_path(),
                    Some(master.log.clone().into_boxed_path()),
                );
                return Ok((session, *master));
            }
            Ok(Attempt::Failed { log, timed_out }) => (log, timed_out),
            Err(e) => {
                return Err(SshError::Connect {
                    host: target.name.clone(),
                    address,
                    message: format!("cannot run ssh: {e}"),
                })
            }
        };
        if log.contains("IDENTIFICATION HAS CHANGED")
            || log.contains("Host key verification failed")
            || log.contains("host key")
        {
            return Err(host_key_error(target, options).await.unwrap_or(SshError::Connect {
                host: target.name.clone(),
                address,
                message: tidy(&log),
            }));
        }
        let transient = timed_out
            || ["refused", "timed out", "reset", "Connection closed", "No route"]
                .iter()
                .any(|t| log.contains(t));
        let backoff = Duration::from_millis(500 * 2u64.pow(attempt - 1));
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !transient || attempt >= options.connect_attempts.max(1) || left <= backoff {
            let tries = if attempt == 1 {
                "1 attempt".to_string()
            } else {
                format!("{attempt} attempts")
            };
            let why = if timed_out || log.contains("timed out") {
                format!(
                    "no SSH answer within {} ({tries}; the limit is settings.timeouts.sshConnect)",
                    humantime::format_duration(budget)
                )
            } else {
                format!("{} ({tries})", tidy(&log))
            };
            let hint_text = if timed_out { hint("timed out") } else { hint(&log) };
            return Err(SshError::Connect {
                host: target.name.clone(),
                address,
                message: format!("{why}{hint_text}"),
            });
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One attempt: start the master and wait, at most `limit`, for its control
/// socket (ssh creates it only once the login succeeded).
async fn launch_master(target: &SshTarget, options: &SshOptions, limit: Duration) -> std::io::Result<Attempt> {
    let n = MASTER_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let control = options.control_dir.join(format!("m{n}"));
    let log = options.control_dir.join(format!("m{n}.log"));
    let _ = std::fs::remove_file(&control);
    let _ = std::fs::remove_file(&log);
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .arg("-E")
        .arg(&log)
        .arg("-S")
        .arg(&control)
        .args(["-M", "-N", "-T"])
        // ControlPersist would make ssh fork into the background, out of our reach.
        .args(["-o", "ControlPersist=no", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(match options.policy {
            HostKeyPolicy::Strict => "StrictHostKeyChecking=yes",
            HostKeyPolicy::AcceptNew => "StrictHostKeyChecking=accept-new",
        })
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", options.known_hosts.display()))
        // ssh counts whole seconds; the deadline below is exact.
        .arg("-o")
        .arg(format!("ConnectTimeout={}", limit.as_secs_f64().ceil().max(1.0) as u64))
        .args(["-o", "ServerAliveInterval=15"])
        .arg("-p")
        .arg(target.port.to_string())
        .arg("-l")
        .arg(&target.user);
    if let Some(k) = &target.identity_file {
        cmd.args(["-o", "IdentitiesOnly=yes"]).arg("-i").arg(k);
    }
    if let Some(c) = &target.config_file {
        cmd.arg("-F").arg(c);
    }
    if !target.jump_hosts.is_empty() {
        cmd.arg("-J").arg(target.jump_hosts.join(","));
    }
    cmd.arg(&target.address)
        .kill_on_drop(true)
        // Out of the terminal's process group: Ctrl-C reaches us, and we
        // close the masters after recording what was interrupted.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
    // SIGTERM to this child when we exit, so no path (even SIGKILL of us)
    // leaves a master behind.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            status = child.wait() => {
                let _ = status?;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = std::fs::remove_file(&log);
                return Ok(Attempt::Failed { log: text, timed_out: false });
            }
            _ = tokio::time::sleep(Duration::from_millis(25)) => {
                if control.exists() {
                    return Ok(Attempt::Connected(Box::new(Master { child, control, log })));
                }
                if tokio::time::Instant::now() >= deadline {
                    let _ = child.kill().await;
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let _ = std::fs::remove_file(&log);
                    let _ = std::fs::remove_file(&control);
                    return Ok(Attempt::Failed { log: text, timed_out: true });
                }
            }
        }
    }
}

impl Master {
    /// Ask the master to exit (it removes its socket), then make sure.
    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_file(&self.control);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// ssh's log as one readable line: no carriage returns, no noise about keys
/// being added, and not pages long.
fn tidy(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.trim_matches(|c: char| c == '\r' || c.is_whitespace()))
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    let text = if lines.is_empty() {
        "ssh exited without saying why".to_string()
    } else {
        lines.join("; ")
    };
    shorten(&text, 300)
}

/// At most `max` characters, marked when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

fn hint(message: &str) -> &'static str {
    if message.contains("Permission denied") {
        " (hint: check `user` and `identityFile`, or that ssh-agent holds the key)"
    } else if message.contains("refused") {
        " (hint: is sshd running and is the port right?)"
    } else if message.contains("timed out") {
        " (hint: is the address reachable from here, and is it an SSH server? a bastion may be needed)"
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
    master: Mutex<Option<Master>>,
    command_timeout: Duration,
    digests: Arc<DigestCache>,
    /// Remote file states read ahead in one command ([`SshHost::prefetch`]),
    /// each used once by the upload that follows.
    prefetched: std::sync::Mutex<HashMap<String, Option<(String, u32)>>>,
    /// Tags of commands whose caller stopped waiting (cancelled or timed
    /// out) before they finished: sshd keeps a command without a terminal
    /// running when its channel closes, so these are killed on the host.
    abandoned: std::sync::Mutex<Vec<String>>,
}

/// How long stopping abandoned commands may take: a Ctrl-C must end the
/// run within seconds even when a host no longer answers.
const STOP_ABANDONED_LIMIT: Duration = Duration::from_secs(5);

/// Given the run files as arguments: TERM each recorded process group, then
/// KILL what still runs a second later. A group counts as gone when only
/// zombies are left (sshd reaps the command's shell only when the channel
/// closes, and `kill -0` succeeds on zombies). `kill -SIG -GROUP` without
/// `--`: dash, Debian's sh, refuses `--`.
const STOP_GROUPS: &str = r#"groups=
for f in "$@"; do
  [ -f "$f" ] || continue
  g=$(cat "$f"); rm -f "$f"
  kill -TERM "-$g" 2>/dev/null && groups="$groups $g "
done
[ -n "$groups" ] || exit 0
running() {
  for s in /proc/[0-9]*/stat; do
    read -r l <"$s" 2>/dev/null || continue
    l=${l##*") "}; set -- $l
    [ "$1" = Z ] && continue
    case "$groups" in *" $3 "*) return 0 ;; esac
  done
  return 1
}
for _ in 1 2 3 4 5 6 7 8 9 10; do running || exit 0; sleep 0.1; done
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
exit 0
"#;

/// A unique tag per remote command of this process, naming the file on the
/// host that holds the command's process group.
fn next_run_tag() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn run_file(tag: &str) -> String {
    format!("/tmp/nautes-run-{tag}")
}

/// The lines put before every remote command: record its process group
/// (sshd makes each command without a terminal a session of its own, so the
/// group is the command and everything it starts) where a kill can find it,
/// and forget it when the command ends by itself.
fn record_group(tag: &str) -> String {
    let file = run_file(tag);
    format!(
        "read -r _ _ _ _ nautes_group _ </proc/$$/stat && echo \"$nautes_group\" >{file}\ntrap 'rm -f {file}' EXIT\n"
    )
}

/// A remote command in flight: when dropped before [`Running::finished`],
/// its tag goes to the host's abandoned list.
struct Running<'a> {
    host: &'a SshHost,
    tag: String,
    finished: bool,
}

impl Running<'_> {
    fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.host
                .abandoned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(std::mem::take(&mut self.tag));
        }
    }
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

    /// Kill, on the host, the process groups of commands nobody waits for
    /// any more ([`STOP_GROUPS`]).
    /// Best effort within [`STOP_ABANDONED_LIMIT`]: the host may be gone.
    async fn stop_abandoned(&self) {
        let tags: Vec<String> = std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()));
        if tags.is_empty() {
            return;
        }
        let files: Vec<String> = tags.iter().map(|t| run_file(t)).collect();
        let script = format!("set -- {}\n{STOP_GROUPS}", files.join(" "));
        let mut stop = self.session.raw_command(self.wrap(&script));
        match tokio::time::timeout(STOP_ABANDONED_LIMIT, stop.output()).await {
            Ok(Ok(_)) => {
                tracing::info!(host = %self.target.name, commands = tags.len(), "stopped commands a cancelled step left running")
            }
            Ok(Err(e)) => {
                tracing::warn!(host = %self.target.name, "could not stop the commands a cancelled step left running: {e}")
            }
            Err(_) => {
                tracing::warn!(host = %self.target.name, "the host did not answer the stop of commands a cancelled step left running")
            }
        }
    }

    async fn shutdown(&self) {
        if let Some(mut master) = self.master.lock().await.take() {
            master.stop().await;
        }
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
        let running = Running {
            host: self,
            tag: next_run_tag(),
            finished: false,
        };
        let mut cmd = self
            .session
            .raw_command(self.wrap(&format!("{}{command}", record_group(&running.tag))));
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
            Ok(r) => {
                running.finished();
                r
            }
            Err(_) => {
                drop(running);
                self.stop_abandoned().await;
                Err(SshError::Timeout {
                    host: self.target.name.clone(),
                    command: first_line(command),
                    after: self.command_timeout,
                })
            }
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
        let sha = crate::util::hex(&sha2::Sha256::digest(content));
        self.place(remote, mode, &sha, content.len() as u64, Input::Bytes(content))
            .await
    }

    pub async fn read(&self, remote: &str) -> Result<Vec<u8>, SshError> {
        let out = self.checked(&format!("cat {}", sh_quote(remote))).await?;
        Ok(out.stdout)
    }

    /// Stream a remote file into `out` (a snapshot may be larger than
    /// memory), returning its length. Fails when `cat` does, naming the file.
    pub async fn download(&self, remote: &str, out: &mut dyn std::io::Write) -> Result<u64, SshError> {
        use tokio::io::AsyncReadExt;
        let command = format!("cat {}", sh_quote(remote));
        let err = |message: String| SshError::Command {
            host: self.target.name.clone(),
            command: command.clone(),
            message,
        };
        let mut cmd = self.session.raw_command(self.wrap(&command));
        cmd.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let work = async {
            let mut child = cmd.spawn().await.map_err(|e| err(e.to_string()))?;
            if let Some(mut stdin) = child.stdin().take() {
                if let (Sudo::Password(p), false) = (&self.target.sudo, self.target.user == "root") {
                    stdin
                        .write_all(format!("{}\n", p.expose()).as_bytes())
                        .await
                        .map_err(|e| err(e.to_string()))?;
                }
                stdin.shutdown().await.map_err(|e| err(e.to_string()))?;
            }
            let mut stdout = child.stdout().take().ok_or_else(|| err("no output stream".into()))?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = stdout.read(&mut buf).await.map_err(|e| err(e.to_string()))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .map_err(|e| err(format!("writing what was read: {e}")))?;
                total += n as u64;
            }
            let done = child.wait_with_output().await.map_err(|e| err(e.to_string()))?;
            if !done.status.success() {
                return Err(err(format!(
                    "exit status {}: {}",
                    done.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&done.stderr).trim()
                )));
            }
            Ok(total)
        };
        match tokio::time::timeout(self.command_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                host: self.target.name.clone(),
                command,
                after: self.command_timeout,
            }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_logs_become_one_readable_line() {
        let log = "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\r\nConnection timed out during banner exchange\r\nConnection to 127.0.0.1 port 2222 timed out\r\n";
        let line = tidy(log);
        assert_eq!(
            line,
            "Connection timed out during banner exchange; Connection to 127.0.0.1 port 2222 timed out"
        );
        assert!(!line.contains('\r') && !line.contains('\n'));
        assert_eq!(tidy(&"x".repeat(1000)).chars().count(), 301, "shortened, marked with …");
        assert_eq!(tidy(""), "ssh exited without saying why");
    }
}
