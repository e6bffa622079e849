//! `ansible-playbook`: run a playbook against an inventory, stream its output
//! to a callback (for the run log and the progress line), count plays and
//! tasks, and turn failures into "host X failed task Y: message".
//! Knows nothing of Nautes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub host: String,
    pub task: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AnsibleError {
    #[error("`ansible-playbook` is not on PATH (hint: install ansible-core, e.g. `apt-get install ansible-core` or `pip install ansible-core`)")]
    NotFound,
    #[error("cannot run ansible-playbook: {0}")]
    Spawn(String),
    #[error("{playbook} failed: {}", describe(.failures, .tail))]
    Failed {
        playbook: String,
        failures: Vec<TaskFailure>,
        tail: String,
    },
    #[error("{playbook} did not finish within {after:?}")]
    Timeout { playbook: String, after: Duration },
}

fn describe(failures: &[TaskFailure], tail: &str) -> String {
    if failures.is_empty() {
        return tail.to_string();
    }
    failures
        .iter()
        .map(|f| format!("host {} failed task `{}`: {}", f.host, f.task, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a playbook run reported, for progress and for the outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub plays: usize,
    pub tasks: usize,
    pub current: String,
}

pub struct Playbook {
    pub binary: PathBuf,
    /// Directory holding the playbooks (the Kubespray checkout).
    pub dir: PathBuf,
    pub inventory: PathBuf,
    pub extra_args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

pub fn locate() -> Result<PathBuf, AnsibleError> {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("ansible-playbook");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(AnsibleError::NotFound)
}

/// Reads ansible-playbook's default output line by line.
#[derive(Default)]
struct Parser {
    progress: Progress,
    failures: Vec<TaskFailure>,
    tail: Vec<String>,
}

impl Parser {
    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("PLAY [") {
            if !line.starts_with("PLAY RECAP") {
                self.progress.plays += 1;
                self.progress.current = format!("play {}", rest.split(']').next().unwrap_or(""));
            }
        } else if let Some(rest) = line.strip_prefix("TASK [") {
            self.progress.tasks += 1;
            self.progress.current = rest.split(']').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix("fatal: [").or_else(|| line.strip_prefix("failed: [")) {
            let host = rest.split(']').next().unwrap_or("").to_string();
            let message = extract_msg(rest).unwrap_or_else(|| rest.to_string());
            self.failures.push(TaskFailure {
                host,
                task: self.progress.current.clone(),
                message,
            });
        }
        if !line.trim().is_empty() {
            self.tail.push(line.to_string());
            if self.tail.len() > 15 {
                self.tail.remove(0);
            }
        }
    }
}

/// The `"msg": "..."` of a failure's JSON result, when there is one.
fn extract_msg(rest: &str) -> Option<String> {
    let json = &rest[rest.find('{')?..];
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let msg = v.get("msg").and_then(|m| m.as_str()).map(str::to_string);
    let stderr = v
        .get("stderr")
        .and_then(|m| m.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    match (msg, stderr) {
        (Some(m), Some(e)) => Some(format!("{m}: {e}")),
        (m, e) => m.or(e),
    }
}

impl Playbook {
    pub async fn run(&self, playbook: &str, log: &(dyn Fn(&str, &Progress) + Sync)) -> Result<Progress, AnsibleError> {
        let path: PathBuf = if Path::new(playbook).is_absolute() {
            playbook.into()
        } else {
            self.dir.join(playbook)
        };
        let mut child = tokio::process::Command::new(&self.binary)
            .arg("-i")
            .arg(&self.inventory)
            .args(&self.extra_args)
            .arg(&path)
            .current_dir(&self.dir)
            .envs(&self.env)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_STDOUT_CALLBACK", "default")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AnsibleError::Spawn(e.to_string()))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let mut parser = Parser::default();
            if let Some(out) = stdout {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    parser.line(&line);
                    log(&line, &parser.progress);
                }
            }
            let mut err_text = String::new();
            if let Some(err) = stderr {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log(&line, &parser.progress);
                    err_text.push_str(&line);
                    err_text.push('\n');
                }
            }
            let ok = child.wait().await.map(|s| s.success()).unwrap_or(false);
            (ok, parser, err_text)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok((true, parser, _)) => Ok(parser.progress),
            Ok((false, parser, err)) => {
                let mut tail = parser.tail.join("\n");
                if !err.trim().is_empty() {
                    tail = format!("{tail}\n{}", err.trim());
                }
                Err(AnsibleError::Failed {
                    playbook: playbook.to_string(),
                    failures: parser.failures,
                    tail,
                })
            }
            Err(_) => Err(AnsibleError::Timeout {
                playbook: playbook.to_string(),
                after: self.timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_plays_and_tasks_and_maps_failures_to_host_and_task() {
        let mut p = Parser::default();
        for l in [
            "PLAY [Prepare hosts] ****",
            "TASK [Gathering Facts] ****",
            "ok: [node-1]",
            "TASK [kubernetes/preinstall : Stop if swap enabled] ****",
            r#"fatal: [node-2]: FAILED! => {"changed": false, "msg": "Swap is enabled"}"#,
            "PLAY RECAP ****",
        ] {
            p.line(l);
        }
        assert_eq!((p.progress.plays, p.progress.tasks), (1, 2));
        assert_eq!(
            p.failures,
            vec![TaskFailure {
                host: "node-2".into(),
                task: "kubernetes/preinstall : Stop if swap enabled".into(),
                message: "Swap is enabled".into()
            }]
        );
    }
}
