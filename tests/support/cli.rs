//! Running the real `nautes-install` binary in a scratch directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const HEADER: &str = "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: test\n";

/// A scratch directory holding an inventory and a workdir.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn inventory(&self) -> PathBuf {
        self.path().join("inventory.yaml")
    }

    pub fn workdir(&self) -> PathBuf {
        self.path().join(".nautes")
    }

    /// Write the inventory: the standard header followed by `body`.
    pub fn write_inventory(&self, body: &str) {
        std::fs::write(self.inventory(), format!("{HEADER}{body}")).expect("write inventory");
    }

    /// Write the built inventory as `inventory.yaml`.
    pub fn write(&self, inventory: &super::inventory::InventoryBuilder) {
        std::fs::write(self.inventory(), inventory.yaml()).expect("write inventory");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nautes-install"));
        c.current_dir(self.path())
            .arg("--workdir")
            .arg(self.workdir())
            .args(args)
            .env_remove("NAUTES_WORKDIR")
            .stdin(Stdio::null());
        c
    }

    /// Run with `-i inventory.yaml` appended after the subcommand.
    pub fn run(&self, sub: &str, extra: &[&str]) -> Output {
        let mut args = vec![sub, "-i", "inventory.yaml"];
        args.extend_from_slice(extra);
        self.command(&args).output().expect("run nautes-install")
    }

    pub fn spawn(&self, sub: &str, extra: &[&str]) -> Child {
        let mut args = vec![sub, "-i", "inventory.yaml"];
        args.extend_from_slice(extra);
        self.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nautes-install")
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// The state as recorded: `state.json` with its journal's lines
    /// replayed (what a run killed mid-way left), read as the binary reads it.
    pub fn state(&self) -> serde_json::Value {
        let path = self.workdir().join("state.json");
        assert!(path.exists(), "state.json exists");
        let state = nautes_install::state::State::load(&path).expect("state.json is valid JSON");
        serde_json::to_value(state).unwrap()
    }

    pub fn step_status(&self, id: &str) -> Option<String> {
        self.state()["steps"][id]["status"].as_str().map(str::to_string)
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `cond` holds, polling; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn sigkill(pid: u32) {
    // SAFETY: plain kill(2) on a child we spawned.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// A hook entry for an inventory. `cmd` runs with `sh -c` in the scratch dir.
pub fn hook(name: &str, cmd: &str, after: &[&str], destroy: Option<&str>) -> String {
    let mut s = format!("  - name: {name}\n    run: {}\n", yaml_str(cmd));
    if !after.is_empty() {
        let list: Vec<String> = after.iter().map(|a| format!("hook/{a}")).collect();
        s.push_str(&format!("    after: [{}]\n", list.join(", ")));
    }
    if let Some(d) = destroy {
        s.push_str(&format!("    destroy: {}\n", yaml_str(d)));
    }
    s
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

/// Processes (other than `pid` itself) whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str, pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().ok().is_none_or(|p| p == pid) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a child we spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Wait for the child to exit, at most `limit`; kills it after that.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A run of the binary in a process group of its own, with `--output json`,
/// its events (JSON lines on stdout) and stderr collected as they come, so
/// a test can pick the moment to kill it from what the run itself says.
pub struct Watched {
    child: Child,
    events: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Scratch {
    /// Start `args` (after the global `--output json`) as a watched run.
    pub fn watch(&self, args: &[&str]) -> Watched {
        use std::io::{BufRead, Read};
        use std::os::unix::process::CommandExt;
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nautes-install");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let into = events.clone();
        let on_stdout = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str(&line) {
                    into.lock().unwrap().push(event);
                }
            }
        });
        let into = stderr.clone();
        let on_stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::BufReader::new(err).read_to_string(&mut text);
            into.lock().unwrap().push_str(&text);
        });
        Watched {
            child,
            events,
            stderr,
            readers: vec![on_stdout, on_stderr],
        }
    }
}

impl Watched {
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    /// Whether the run has said step `id` started.
    pub fn started(&self, id: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "step_started" && e["id"] == id)
    }

    /// The steps the run has said failed, with their errors.
    pub fn failures(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "step_failed")
            .map(|e| {
                format!(
                    "{}: {}",
                    e["id"].as_str().unwrap_or(""),
                    e["error"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Wait until `cond` holds; panics with what the run printed if it
    /// ends first or `limit` passes.
    pub fn wait_until(&mut self, what: &str, limit: Duration, mut cond: impl FnMut(&Watched) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                let (events, err) = self.finish();
                panic!("the run ended ({status}) before {what}:\n{err}\nevents: {events:?}");
            }
            if start.elapsed() > limit {
                self.kill_group();
                let (events, err) = self.finish();
                panic!("timed out waiting for {what}:\n{err}\nevents: {events:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL the run's whole process group and reap it.
    pub fn kill_group(&mut self) {
        // SAFETY: kill(2) on the process group of a child we spawned.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// Wait for the run to end (after a kill: at once); its events and stderr.
    pub fn finish(&mut self) -> (Vec<serde_json::Value>, String) {
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (self.events(), self.stderr.lock().unwrap().clone())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill_group();
        }
    }
}

/// Every file under `dir`, as text (for scanning what a run left for secrets).
pub fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()));
        }
    }
    out
}
