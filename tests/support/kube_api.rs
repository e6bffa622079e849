//! Starts the Kubernetes API stand-in (tests/support/kubeapi_standin.py)
//! on a free loopback port for one test.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

pub struct KubeApiStandin {
    child: Child,
    pub port: u16,
    pub token: String,
    _dir: tempfile::TempDir,
}

impl KubeApiStandin {
    pub fn start() -> KubeApiStandin {
        Self::start_with(&[])
    }

    /// Start with extra flags (`--crd-delay`, `--ready-delay`, ...).
    pub fn start_with(extra: &[&str]) -> KubeApiStandin {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let token = format!("standin-token-{}", std::process::id());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kubeapi_standin.py");
        let child = Command::new("python3")
            .args([script, "--port-file", port_file.to_str().unwrap(), "--token", &token])
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the Kubernetes API stand-in (python3)");
        let port = crate::port_file::wait_for_port(&port_file, "API stand-in");
        KubeApiStandin {
            child,
            port,
            token,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The env file the K3s stand-in reads on a test host.
    pub fn env_file(&self) -> String {
        format!("API_URL={}\nAPI_TOKEN={}\n", self.url(), self.token)
    }

    /// GET a path with the token; the JSON body.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys,urllib.request,urllib.error\nr=urllib.request.Request(sys.argv[1],headers={'Authorization':'Bearer '+sys.argv[2]})\ntry:\n  print(urllib.request.urlopen(r).read().decode())\nexcept urllib.error.HTTPError as e:\n  print(e.read().decode())",
                &format!("{}{path}", self.url()),
                &self.token,
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Any request with the token: (HTTP status, JSON body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys,urllib.request,urllib.error\nr=urllib.request.Request(sys.argv[1],data=sys.argv[5].encode() if sys.argv[5]!='null' else None,method=sys.argv[3],headers={'Authorization':'Bearer '+sys.argv[2],'Content-Type':sys.argv[4]})\ntry:\n  x=urllib.request.urlopen(r); print(x.status); print(x.read().decode())\nexcept urllib.error.HTTPError as e:\n  print(e.code); print(e.read().decode())",
                &format!("{}{path}", self.url()),
                &self.token,
                method,
                content_type,
                &body.to_string(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, rest) = text.split_once('\n').unwrap_or((&text, ""));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(rest).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A kubeconfig for this API (token auth over plain HTTP).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: admin\ncurrent-context: standin\n",
            self.url(),
            self.token
        )
    }

    /// POST to one of the stand-in's control endpoints (`/_standin/...`).
    pub fn control(&self, path: &str, body: &serde_json::Value) {
        let (code, _) = self.request("POST", path, "application/json", body);
        assert_eq!(code, 200, "stand-in control {path} failed");
    }

    /// Every request logged since the start or the last `reset_log`.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.get("/_standin/requests").as_array().cloned().unwrap_or_default()
    }

    pub fn reset_log(&self) {
        self.control("/_standin/reset-log", &serde_json::json!({}));
    }

    /// Requests that change something (everything but GET).
    pub fn writes(&self) -> Vec<serde_json::Value> {
        self.requests().into_iter().filter(|r| r["method"] != "GET").collect()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.get("/api/v1/nodes")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for KubeApiStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
