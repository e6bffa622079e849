//! Starts what stands for Harbor, Nexus and SonarQube in a test: the
//! Harbor and Nexus API stand-ins (tests/support/{harbor,nexus}_standin.py)
//! and a real SonarQube (the distribution `.ci/install.d/58-sonarqube.sh`
//! caches), each on free loopback ports, with what a test needs to count
//! the writes they received.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::Call;
use super::port_file::{free_port, wait_for_port};

/// A Python API stand-in and its control endpoints.
pub struct Standin {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch(dir: tempfile::TempDir, script: &str, extra: &[&str], what: &str) -> Standin {
    let port_file = dir.path().join("port");
    let script = format!("{}/tests/support/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("python3")
        .arg(&script)
        .arg("--port-file")
        .arg(&port_file)
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {what} (python3): {e}"));
    let port = wait_for_port(&port_file, what);
    Standin { child, port, dir }
}

impl Standin {
    /// Harbor with its admin password.
    pub fn harbor(admin_password: &str) -> Standin {
        launch(
            tempfile::tempdir().unwrap(),
            "harbor_standin.py",
            &["--admin-password", admin_password],
            "Harbor stand-in",
        )
    }

    /// Nexus writing its first-run password to `<dir>/nexus-data/admin.password`.
    pub fn nexus() -> Standin {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nexus-data");
        std::fs::create_dir(&data).unwrap();
        launch(
            dir,
            "nexus_standin.py",
            &["--data-dir", data.to_str().unwrap()],
            "Nexus stand-in",
        )
    }

    /// Harbor as the chart installs it: admin's password read, once, from
    /// `password_file` (what core's pod gets from Secret harbor-core),
    /// 503 until that exists.
    pub fn harbor_installed(password_file: &Path) -> Standin {
        launch(
            tempfile::tempdir().unwrap(),
            "harbor_standin.py",
            &["--admin-password-file", password_file.to_str().unwrap()],
            "Harbor stand-in",
        )
    }

    /// Nexus as the chart installs it: started with the container env in
    /// `env_file`, 503 until that exists.
    pub fn nexus_installed(env_file: &Path) -> Standin {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nexus-data");
        std::fs::create_dir(&data).unwrap();
        launch(
            dir,
            "nexus_standin.py",
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--env-file",
                env_file.to_str().unwrap(),
            ],
            "Nexus stand-in",
        )
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Nexus only: where it wrote its first-run password.
    pub fn admin_password_file(&self) -> PathBuf {
        self.dir.path().join("nexus-data/admin.password")
    }

    /// Every API request so far, as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        let (status, body) = Call::new("GET", format!("{}/_standin/requests", self.url()))
            .send()
            .unwrap();
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
            .collect()
    }

    /// The requests that change something.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .filter(|(m, _)| m != "GET" && m != "HEAD")
            .collect()
    }

    pub fn state(&self) -> Value {
        let (status, body) = Call::new("GET", format!("{}/_standin/state", self.url()))
            .send()
            .unwrap();
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    pub fn control(&self, method: &str, what: &str, body: &str) -> u16 {
        Call::new(method, format!("{}/_standin/{what}", self.url()))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .unwrap()
            .0
    }

    /// One API call: `(status, body as JSON or a JSON string)`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        basic: Option<(&str, &str)>,
        body: Option<(&str, &str)>,
    ) -> (u16, Value) {
        call(&self.url(), method, path, basic, body, &[])
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        basic: Option<(&str, &str)>,
        body: Option<(&str, &str)>,
        headers: &[(&'static str, &str)],
    ) -> (u16, Value) {
        call(&self.url(), method, path, basic, body, headers)
    }
}

/// `basic`: user and password; `body`: content type and text.
pub fn call(
    base: &str,
    method: &str,
    path: &str,
    basic: Option<(&str, &str)>,
    body: Option<(&str, &str)>,
    headers: &[(&'static str, &str)],
) -> (u16, Value) {
    use base64::Engine;
    let mut c = Call::new(method, format!("{base}{path}"));
    if let Some((u, p)) = basic {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        c = c.header("Authorization", format!("Basic {token}"));
    }
    for (k, v) in headers {
        c = c.header(k, *v);
    }
    if let Some((ctype, text)) = body {
        c = c.header("Content-Type", ctype).body(text);
    }
    let (status, text) = c.send().unwrap_or_else(|e| panic!("no answer to {method} {path}: {e}"));
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The SonarQube distribution CI caches.
pub fn sonarqube_home() -> Option<PathBuf> {
    let home = PathBuf::from("/opt/nautes-ci/cache/sonarqube/sonarqube-9.9.0.65466");
    home.join("lib/sonar-application-9.9.0.65466.jar")
        .is_file()
        .then_some(home)
}

/// Skip (outside CI, with a message) or fail (in CI) without SonarQube.
pub fn sonarqube_missing() -> bool {
    if sonarqube_home().is_some() {
        return false;
    }
    let why = "SonarQube 9.9 is not installed (bash .ci/install.d/58-sonarqube.sh installs it)";
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// A real SonarQube 9.9.0 (embedded H2 and Elasticsearch), fresh: admin/admin.
pub struct Sonarqube {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Sonarqube {
    fn drop(&mut self) {
        // The launcher stops Elasticsearch, the web server and the compute
        // engine when it gets TERM.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Sonarqube {
    pub fn start() -> Sonarqube {
        let home = sonarqube_home().expect("SonarQube installed");
        let dir = tempfile::Builder::new().prefix("sonarqube-").tempdir().unwrap().keep();
        for sub in ["data", "temp", "logs"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        let owned = Command::new("chown")
            .args(["-R", "sonarqube"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(owned.success(), "chown to sonarqube (needs root)");
        let port = free_port();
        let search_port = free_port();
        // Its embedded H2 listens too (9092 by default): two SonarQubes at
        // once (tests in parallel) would collide there.
        let h2_port = free_port();
        let jar = home.join("lib/sonar-application-9.9.0.65466.jar");
        let p = |k: &str, v: &Path| format!("-D{k}={}", v.display());
        use std::os::unix::process::CommandExt;
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "sonarqube"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("user sonarqube")
        };
        // As `sonarqube` itself (Elasticsearch refuses root), so TERM
        // reaches the launcher, which then stops Elasticsearch too.
        let child = Command::new("java")
            .uid(id("-u"))
            .gid(id("-g"))
            .env("HOME", &dir)
            .arg("-jar")
            .arg(&jar)
            .arg("-Dsonar.web.host=127.0.0.1")
            .arg(format!("-Dsonar.web.port={port}"))
            .arg(format!("-Dsonar.search.port={search_port}"))
            .arg(format!("-Dsonar.embeddedDatabase.port={h2_port}"))
            .arg(p("sonar.path.data", &dir.join("data")))
            .arg(p("sonar.path.temp", &dir.join("temp")))
            .arg(p("sonar.path.logs", &dir.join("logs")))
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start SonarQube");
        let mut s = Sonarqube { child, port, dir };
        // ~2 minutes on two shared cores (Elasticsearch, then the web server's migrations).
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok((200, body)) = Call::new("GET", format!("{}/api/system/status", s.url())).send() {
                if body.contains("\"UP\"") {
                    return s;
                }
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                let log = std::fs::read_to_string(s.dir.join("logs/web.log")).unwrap_or_default();
                panic!("SonarQube exited ({status}); web.log ends:\n{}", tail(&log, 30));
            }
            assert!(Instant::now() < deadline, "SonarQube not UP within 10 minutes");
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its web server's access log: one line per request (`"METHOD /path ...`).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/access.log")).unwrap_or_default()
    }

    /// Write calls (POSTs to /api) the access log shows so far.
    pub fn writes(&self) -> Vec<String> {
        self.access_log()
            .lines()
            .filter_map(|l| {
                let req = l.split('"').nth(1)?;
                let mut it = req.split_whitespace();
                let (method, path) = (it.next()?, it.next()?);
                (method == "POST" && path.starts_with("/api/")).then(|| path.to_string())
            })
            .collect()
    }

    pub fn call(&self, method: &str, path: &str, basic: Option<(&str, &str)>, form: Option<&str>) -> (u16, Value) {
        call(
            &self.url(),
            method,
            path,
            basic,
            form.map(|f| ("application/x-www-form-urlencoded", f)),
            &[],
        )
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
