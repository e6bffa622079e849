//! Starts the Vault API stand-in (tests/support/vault_standin.py) on a free
//! loopback port for one test, and reads its request log and store.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

pub struct VaultStandin {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl VaultStandin {
    pub fn start() -> VaultStandin {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/vault_standin.py");
        let child = Command::new("python3")
            .args([script, "--port-file", port_file.to_str().unwrap()])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the Vault stand-in (python3)");
        let port = crate::port_file::wait_for_port(&port_file, "Vault stand-in");
        VaultStandin { child, port, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn call(&self, method: &str, path: &str) -> serde_json::Value {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys,urllib.request\nr=urllib.request.Request(sys.argv[1],data=b'{}' if sys.argv[2]=='POST' else None,method=sys.argv[2],headers={'Content-Type':'application/json'})\nprint(urllib.request.urlopen(r).read().decode() or 'null')",
                &format!("{}{path}", self.url()),
                method,
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Every request since the start or the last reset: method, path, status.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.call("GET", "/_standin/requests")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Requests that change something (not GET/LIST, and not health/status reads).
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
        self.call("POST", "/_standin/reset-log");
    }

    /// What a restart does: Vault comes back sealed.
    pub fn seal(&self) {
        self.call("POST", "/_standin/seal");
    }

    pub fn dump(&self) -> serde_json::Value {
        self.call("GET", "/_standin/dump")
    }
}

impl Drop for VaultStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
