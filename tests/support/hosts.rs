//! Real SSH test hosts: one `sshd` per host on its own loopback address,
//! each inside its own mount + UTS namespace, so every host has its own
//! /usr/local/bin, /etc/rancher, /var/lib/rancher, /etc/systemd/system,
//! /opt/nautes and hostname. Needs root, `unshare` and OpenSSH (`.ci/run`
//! installs it). Addresses are leased with lock directories so concurrent
//! tests (and test binaries) never collide.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PORT: u16 = 2222;
/// What each host sees as its own (host path -> directory in the test).
pub const PRIVATE_DIRS: &[(&str, &str)] = &[
    ("/usr/local/bin", "usr-local-bin"),
    ("/etc/rancher", "etc-rancher"),
    ("/var/lib/rancher", "var-lib-rancher"),
    ("/etc/systemd/system", "etc-systemd-system"),
    ("/opt/nautes", "opt-nautes"),
];
const LEASES: &str = "/tmp/nautes-test-addresses";

pub struct TestHost {
    pub name: String,
    pub hostname: String,
    pub address: String,
    pub dir: PathBuf,
    lease: PathBuf,
    child: Option<Child>,
}

pub struct TestHosts {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<TestHost>,
    /// PRIVATE_DIRS plus what the test asked for (`start_named_with_dirs`).
    private: Vec<(String, String)>,
    /// Private files (host path, file name in the host's directory).
    files: Vec<(String, String)>,
    /// All test hosts share one network namespace, so a test that occupies a
    /// Kubernetes port would fail every other test's preflight: such a test
    /// holds this lock exclusively, the others hold it shared.
    _ports: std::fs::File,
}

fn ports_lock(exclusive: bool) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/nautes-test-ports.lock")
        .expect("ports lock");
    if exclusive {
        f.lock().expect("lock ports");
    } else {
        f.lock_shared().expect("lock ports");
    }
    f
}

/// Why the harness cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("SSH test hosts need root (mount namespaces)".into());
    }
    for tool in [
        "/usr/sbin/sshd",
        "/usr/bin/unshare",
        "/usr/bin/ssh-keygen",
        "/usr/bin/ssh",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (install openssh-server; `.ci/run` does)"));
        }
    }
    None
}

/// Skip (outside CI) or fail (in CI) when hosts cannot run. Returns true to skip.
pub fn skip_unless_available() -> bool {
    match unavailable() {
        None => false,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "nautes-test", "-f"])
        .arg(path));
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Lease a free 127.0.0.X: a directory per address, with the owner's pid
/// inside; a lease whose owner died is taken over.
pub fn lease_address() -> (String, PathBuf) {
    std::fs::create_dir_all(LEASES).expect("lease dir");
    for x in 2..=254u32 {
        let dir = Path::new(LEASES).join(x.to_string());
        let take = match std::fs::create_dir(&dir) {
            Ok(()) => true,
            Err(_) => {
                let pid: i32 = std::fs::read_to_string(dir.join("pid"))
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(0);
                // A lease without a pid may be mid-creation: leave it unless it is old.
                let old = std::fs::metadata(&dir)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(30))
                    .unwrap_or(false);
                if (pid != 0 && !alive(pid)) || (pid == 0 && old) {
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir(&dir).is_ok()
                } else {
                    false
                }
            }
        };
        if take {
            std::fs::write(dir.join("pid"), std::process::id().to_string()).expect("lease pid");
            return (format!("127.0.0.{x}"), dir);
        }
    }
    panic!("no free loopback address for a test host");
}

impl TestHosts {
    /// `n` hosts named node-1..node-n (hostnames the same).
    pub fn start(n: usize) -> TestHosts {
        let names: Vec<(String, String)> = (1..=n).map(|i| (format!("node-{i}"), format!("node-{i}"))).collect();
        Self::start_named(&names)
    }

    /// Hosts with (inventory name, hostname) pairs, so tests can clash hostnames.
    pub fn start_named(names: &[(String, String)]) -> TestHosts {
        Self::start_with(names, false)
    }

    /// Hosts for a test that will occupy ports every host sees (see `_ports`).
    pub fn start_named_owning_ports(names: &[(String, String)]) -> TestHosts {
        Self::start_with(names, true)
    }

    /// Hosts that also get `extra` (host path, directory name) as private
    /// directories, for a test whose software writes elsewhere (an empty
    /// directory is created at each host path on this machine as the mount point).
    pub fn start_named_with_dirs(names: &[(String, String)], extra: &[(&str, &str)]) -> TestHosts {
        Self::start_full(names, false, extra)
    }

    /// Hosts with extra private directories and private files (host path,
    /// file name in the host's directory): a file an installer writes
    /// directly under /etc (an empty file is created at each host path on
    /// this machine as the mount point).
    pub fn start_named_with_files(
        names: &[(String, String)],
        dirs: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> TestHosts {
        let mut hosts = Self::start_prepared(names, false, dirs, files);
        for i in 0..hosts.hosts.len() {
            hosts.start_host(i);
        }
        hosts
    }

    /// Both: extra private directories, for a test whose server occupies
    /// ports every host sees (a real server listening on 0.0.0.0).
    pub fn start_named_with_dirs_owning_ports(names: &[(String, String)], extra: &[(&str, &str)]) -> TestHosts {
        Self::start_full(names, true, extra)
    }

    fn start_with(names: &[(String, String)], own_ports: bool) -> TestHosts {
        Self::start_full(names, own_ports, &[])
    }

    fn start_full(names: &[(String, String)], own_ports: bool, extra: &[(&str, &str)]) -> TestHosts {
        let mut me = Self::start_prepared(names, own_ports, extra, &[]);
        for i in 0..me.hosts.len() {
            me.start_host(i);
        }
        me
    }

    fn start_prepared(
        names: &[(String, String)],
        own_ports: bool,
        extra: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> TestHosts {
        let ports = ports_lock(own_ports);
        let dir = tempfile::Builder::new().prefix("nh").tempdir().expect("tempdir");
        let private: Vec<(String, String)> = PRIVATE_DIRS
            .iter()
            .chain(extra)
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        for (real, _) in &private {
            std::fs::create_dir_all(real).expect("mount point");
        }
        for (real, _) in files {
            if !Path::new(real).exists() {
                std::fs::write(real, "").expect("file mount point");
            }
        }
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        keygen(&dir.path().join("client_key"));
        let mut hosts = Vec::new();
        for (name, hostname) in names {
            let (address, lease) = lease_address();
            let hdir = dir.path().join(name);
            for (_, sub) in &private {
                std::fs::create_dir_all(hdir.join(sub)).unwrap();
            }
            for (_, file) in files {
                std::fs::write(hdir.join(file), "").unwrap();
            }
            keygen(&hdir.join("host_key"));
            std::fs::copy(dir.path().join("client_key.pub"), hdir.join("authorized_keys")).unwrap();
            std::fs::write(
                hdir.join("sshd_config"),
                format!(
                    "ListenAddress {address}:{PORT}\nHostKey {h}/host_key\nPidFile {h}/sshd.pid\nAuthorizedKeysFile {h}/authorized_keys\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
                     MaxSessions 100\nMaxStartups 100\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
                    h = hdir.display()
                ),
            )
            .unwrap();
            hosts.push(TestHost {
                name: name.clone(),
                hostname: hostname.clone(),
                address,
                dir: hdir,
                lease,
                child: None,
            });
        }
        TestHosts {
            dir,
            hosts,
            private,
            files: files.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            _ports: ports,
        }
    }

    pub fn start_host(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let mut script = String::new();
        for (real, sub) in self.private.iter().chain(&self.files) {
            script.push_str(&format!("mount --bind {}/{sub} {real} && ", h.dir.display()));
        }
        script.push_str(&format!(
            "hostname {} && exec /usr/sbin/sshd -D -f {}/sshd_config -E {}/sshd.log",
            h.hostname,
            h.dir.display(),
            h.dir.display()
        ));
        let child = Command::new("unshare")
            .args(["--mount", "--uts", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        h.child = Some(child);
        let addr = format!("{}:{PORT}", h.address);
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(h.dir.join("sshd.log")).unwrap_or_default();
                panic!("sshd for {} did not come up on {addr}: {log}", h.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Take a host down (its sshd stops); `start_host` brings it back.
    pub fn stop_host(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Give a host a new host key (as a reinstall would) and restart it.
    pub fn regenerate_host_key(&mut self, i: usize) {
        self.stop_host(i);
        let key = self.hosts[i].dir.join("host_key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        keygen(&key);
        self.start_host(i);
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// known_hosts lines trusting every host's current key.
    pub fn known_hosts(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                let pubkey = std::fs::read_to_string(h.dir.join("host_key.pub")).unwrap();
                let mut parts = pubkey.split_whitespace();
                format!(
                    "[{}]:{PORT} {} {}\n",
                    h.address,
                    parts.next().unwrap(),
                    parts.next().unwrap()
                )
            })
            .collect()
    }

    /// A file as host `i` sees it at `path` (one of the private dirs).
    pub fn host_path(&self, i: usize, path: &str) -> PathBuf {
        if let Some((_, file)) = self.files.iter().find(|(real, _)| real == path) {
            return self.hosts[i].dir.join(file);
        }
        for (real, sub) in &self.private {
            if let Some(rest) = path.strip_prefix(real.as_str()) {
                return self.hosts[i].dir.join(sub).join(rest.trim_start_matches('/'));
            }
        }
        panic!("{path} is not private to a test host");
    }

    /// How the SSH driver reaches host `i` (root with the client key).
    pub fn ssh_target(&self, i: usize) -> nautes_install::drivers::ssh::SshTarget {
        let h = &self.hosts[i];
        nautes_install::drivers::ssh::SshTarget {
            name: h.name.clone(),
            address: h.address.clone(),
            port: PORT,
            user: "root".into(),
            identity_file: Some(self.client_key()),
            sudo: nautes_install::drivers::ssh::Sudo::None,
            jump_hosts: vec![],
            config_file: None,
        }
    }

    /// `hosts:` entries for an inventory (root login with the client key).
    /// Test hosts run no systemd, so that preflight rule is waived.
    pub fn inventory_hosts(&self) -> String {
        let mut s = String::from("hosts:\n");
        for h in &self.hosts {
            s.push_str(&format!(
                "  - name: {}\n    address: {}\n    port: {PORT}\n    user: root\n    waive: [systemd]\n",
                h.name, h.address
            ));
        }
        s
    }

    /// Lines of the sshd log mentioning accepted connections (one per master).
    pub fn accepted_connections(&self, i: usize) -> usize {
        std::fs::read_to_string(self.hosts[i].dir.join("sshd.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Accepted publickey"))
            .count()
    }
}

impl TestHosts {
    /// Services the `systemctl` stand-in started on a host run detached and
    /// outlive its sshd: stop them. A pid file can outlive its process, and
    /// its number may since belong to another test's process: only a
    /// process inside a test host (a mount namespace other than ours) is killed.
    fn stop_detached_services(&self, i: usize) {
        let Ok(dir) = std::fs::read_dir(self.host_path(i, "/opt/nautes/standin/systemd")) else {
            return;
        };
        let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
        for entry in dir.flatten() {
            if entry.path().extension().is_none_or(|e| e != "pid") {
                continue;
            }
            let Ok(pid) = std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .trim()
                .parse::<i32>()
            else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() != ours {
                // SAFETY: plain kill(2) of a stand-in service this test started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.stop_detached_services(i);
            self.stop_host(i);
            let _ = std::fs::remove_dir_all(&self.hosts[i].lease);
        }
    }
}
