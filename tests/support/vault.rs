//! A real OpenBao 2.7.2 server (the Vault API) for one test: `bao server`
//! with integrated raft storage on 127.0.0.1, uninitialised, behind a
//! request-logging relay (tests/support/vault_relay.py) that the installer is
//! pointed at. A restart is a real one: the process is stopped and started
//! on the same data, and OpenBao comes back sealed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::Call;
use super::port_file::free_port;

pub struct OpenBao {
    bao: Option<Child>,
    relay: Child,
    /// The relay's port: what the installer gets as Vault's address.
    pub port: u16,
    /// OpenBao's own listener.
    pub bao_port: u16,
    dir: tempfile::TempDir,
    /// The /etc/hosts OpenBao sees (in a mount namespace of its own), when
    /// it must find a name the machine does not know (Dex's issuer).
    hosts: Option<PathBuf>,
}

pub fn bao_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/opt/nautes-ci/bin".into());
    dirs.into_iter().map(|d| d.join("bao")).find(|p| p.is_file())
}

/// Skip (outside CI, with a message) or fail (in CI) without OpenBao.
pub fn skip_unless_available() -> bool {
    if bao_binary().is_some() {
        return false;
    }
    let why = "OpenBao's `bao` is not installed (bash .ci/run installs it)";
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// An inventory body (after the header) whose Vault is `url`, brought by
/// the user and initialised by the installer with 5 shares, threshold 3.
pub fn installer_inventory(url: &str) -> String {
    format!("components:\n  vault:\n    placement: external\n    external:\n      url: {url}\n    values:\n      keyShares: 5\n      keyThreshold: 3\n")
}

impl OpenBao {
    pub fn start() -> OpenBao {
        Self::start_seeing(None)
    }

    /// OpenBao whose /etc/hosts is `hosts` (see `dex::private_hosts`).
    pub fn start_with_hosts(hosts: &std::path::Path) -> OpenBao {
        Self::start_seeing(Some(hosts.to_path_buf()))
    }

    fn start_seeing(hosts: Option<PathBuf>) -> OpenBao {
        let dir = tempfile::tempdir().unwrap();
        let bao_port = free_port();
        let cluster_port = free_port();
        std::fs::create_dir(dir.path().join("raft")).unwrap();
        std::fs::write(
            dir.path().join("config.hcl"),
            format!(
                "storage \"raft\" {{\n  path = \"{raft}\"\n  node_id = \"test-node\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{bao_port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{bao_port}\"\ncluster_addr = \"http://127.0.0.1:{cluster_port}\"\n\
                 disable_mlock = true\n",
                raft = dir.path().join("raft").display()
            ),
        )
        .unwrap();
        let port_file = dir.path().join("relay.port");
        let relay = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/vault_relay.py"))
            .args(["--upstream", &format!("http://127.0.0.1:{bao_port}")])
            .args(["--port-file", port_file.to_str().unwrap()])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the OpenBao relay (python3)");
        let port = super::port_file::wait_for_port(&port_file, "OpenBao relay");
        let mut bao = OpenBao {
            bao: None,
            relay,
            port,
            bao_port,
            dir,
            hosts,
        };
        bao.start_server();
        bao
    }

    fn start_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bao.log"))
            .unwrap();
        let bin = bao_binary().expect("bao");
        let mut cmd = match &self.hosts {
            Some(hosts) => super::dex::private_hosts(&bin, hosts, &[]),
            None => Command::new(&bin),
        };
        let child = cmd
            .args(["server", "-config"])
            .arg(self.dir.path().join("config.hcl"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao server");
        self.bao = Some(child);
        let started = Instant::now();
        // Health answers (501 uninitialised, 503 sealed, 200 active) once it listens.
        while Call::new("GET", format!("http://127.0.0.1:{}/v1/sys/health", self.bao_port))
            .send()
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "OpenBao did not start: {}",
                std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.bao.take() {
            // SAFETY: plain signal to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Stop the process and start it again on the same data: it comes back sealed.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    /// Lose everything: stop, delete the raft storage, start on an empty
    /// one. OpenBao comes back uninitialised, as on a new machine.
    pub fn wipe(&mut self) {
        self.stop();
        let raft = self.dir.path().join("raft");
        std::fs::remove_dir_all(&raft).unwrap();
        std::fs::create_dir(&raft).unwrap();
        self.start_server();
    }

    /// A request to OpenBao itself (not through the relay) with `token`.
    pub fn api_as(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut call =
            Call::new(method, format!("http://127.0.0.1:{}{path}", self.bao_port)).header("X-Vault-Token", token);
        if let Some(b) = body {
            call = call.header("Content-Type", "application/json").body(b.to_string());
        }
        call.json()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn relay(&self, method: &str, path: &str) -> Value {
        Call::new(method, format!("{}/_relay/{path}", self.url())).json().1
    }

    /// Every request through the relay since the start or the last reset: method, path, status.
    pub fn requests(&self) -> Vec<Value> {
        self.relay("GET", "requests").as_array().cloned().unwrap_or_default()
    }

    /// Requests that change something (not GET/LIST), as "METHOD /path".
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| !matches!(r["method"].as_str(), Some("GET") | Some("LIST")))
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    pub fn reset_log(&self) {
        self.relay("POST", "reset-log");
    }

    /// Crash injection: the next `method` request whose path (without the
    /// query, e.g. `/v1/auth/approle/role/x/secret-id`) matches the regex
    /// `path` is forwarded and carried out by OpenBao, then its answer is
    /// held back until `release` or until the client is gone.
    pub fn hold_next(&self, method: &str, path: &str) {
        self.arm_hold(method, path, false);
    }

    /// Like `hold_next`, but the request itself is held before it reaches
    /// OpenBao: forwarded on `release`, never if the client is gone first.
    pub fn hold_next_request(&self, method: &str, path: &str) {
        self.arm_hold(method, path, true);
    }

    fn arm_hold(&self, method: &str, path: &str, before: bool) {
        let (status, reply) = Call::new("POST", format!("{}/_relay/hold", self.url()))
            .header("Content-Type", "application/json")
            .body(json!({"method": method, "path": path, "before": before}).to_string())
            .json();
        assert_eq!(status, 200, "arming the relay's hold failed: {reply}");
    }

    /// The requests held (answer or request): method, path, status (null
    /// while not forwarded), `forwarded`, and `client_gone` once the client
    /// closed its connection.
    pub fn held(&self) -> Vec<Value> {
        self.relay("GET", "held").as_array().cloned().unwrap_or_default()
    }

    /// Let held answers go (to a client that is usually dead by then).
    pub fn release(&self) {
        self.relay("POST", "release");
    }

    /// The root token the installer got from `sys/init` (empty before).
    pub fn root_token(&self) -> String {
        Call::new("GET", format!("{}/_relay/root-token", self.url()))
            .send()
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    /// A request to OpenBao itself (not logged) with the root token.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut call = Call::new(method, format!("http://127.0.0.1:{}{path}", self.bao_port))
            .header("X-Vault-Token", self.root_token());
        if let Some(b) = body {
            call = call.header("Content-Type", "application/json").body(b.to_string());
        }
        call.json()
    }

    /// What the installer made, read through the API: secret engines,
    /// auth methods, ACL policies (name -> text) and AppRole roles.
    pub fn dump(&self) -> Value {
        let data = |path: &str| self.api("GET", path, None).1["data"].clone();
        let mut policies = serde_json::Map::new();
        for name in data("/v1/sys/policies/acl?list=true")["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = name.as_str().unwrap_or("").to_string();
            let text = data(&format!("/v1/sys/policies/acl/{name}"))["policy"].clone();
            policies.insert(name, text);
        }
        let roles = data("/v1/auth/approle/role?list=true")["keys"].clone();
        json!({
            "mounts": data("/v1/sys/mounts"),
            "auth": data("/v1/sys/auth"),
            "policies": policies,
            "approle_roles": roles,
        })
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(mut c) = self.bao.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.relay.kill();
        let _ = self.relay.wait();
    }
}
