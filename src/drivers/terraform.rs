//! The Terraform CLI (or OpenTofu) in a working directory: init, plan to a
//! file, apply exactly that plan, read outputs, destroy. Terraform's
//! machine-readable UI (`-json`) gives us progress lines for the log and
//! diagnostics that name the failing resource. Knows nothing of Nautes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    #[error("neither `terraform` nor `tofu` is on PATH (hint: install Terraform ≥ 1.0 or OpenTofu, or set infrastructure.terraform.binary)")]
    NotFound,
    #[error("cannot run {binary}: {message}")]
    Spawn { binary: String, message: String },
    #[error("terraform {command} in {dir} failed:\n{}", .diagnostics.join("\n"))]
    Failed {
        command: String,
        dir: String,
        diagnostics: Vec<String>,
    },
    #[error("terraform {command} in {dir} did not finish within {after:?}")]
    Timeout {
        command: String,
        dir: String,
        after: Duration,
    },
    #[error("terraform {command}: unexpected output: {message}")]
    Output { command: String, message: String },
}

/// What a saved plan would do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub add: u64,
    pub change: u64,
    pub destroy: u64,
}

impl PlanSummary {
    pub fn is_noop(&self) -> bool {
        self.add == 0 && self.change == 0 && self.destroy == 0
    }
}

pub struct Terraform {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
}

/// `configured` (a name or path), else `terraform`, else `tofu`, from PATH.
pub fn locate(configured: Option<&str>) -> Result<PathBuf, TerraformError> {
    let candidates: Vec<&str> = match configured {
        Some(c) => vec![c],
        None => vec!["terraform", "tofu"],
    };
    for c in candidates {
        if c.contains('/') {
            if Path::new(c).is_file() {
                return Ok(PathBuf::from(c));
            }
            continue;
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(c);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(TerraformError::NotFound)
}

struct Run {
    status: i32,
    /// Parsed `-json` lines (empty for commands without `-json`).
    events: Vec<Value>,
    stderr: String,
    stdout: String,
}

impl Terraform {
    async fn run(&self, args: &[&str], log: &(dyn Fn(&str) + Sync)) -> Result<Run, TerraformError> {
        let command = args.first().copied().unwrap_or("").to_string();
        let mut child = tokio::process::Command::new(&self.binary)
            .args(args)
            .current_dir(&self.dir)
            .envs(&self.env)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TerraformError::Spawn {
                binary: self.binary.display().to_string(),
                message: e.to_string(),
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let mut events = Vec::new();
            let mut plain = String::new();
            if let Some(out) = stdout {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) if v.get("@message").is_some() => {
                            log(v["@message"].as_str().unwrap_or(""));
                            events.push(v);
                        }
                        _ => {
                            log(&line);
                            plain.push_str(&line);
                            plain.push('\n');
                        }
                    }
                }
            }
            let mut err_text = String::new();
            if let Some(err) = stderr {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log(&line);
                    err_text.push_str(&line);
                    err_text.push('\n');
                }
            }
            let status = child.wait().await.map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
            (status, events, err_text, plain)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok((status, events, stderr, stdout)) => Ok(Run {
                status,
                events,
                stderr,
                stdout,
            }),
            Err(_) => Err(TerraformError::Timeout {
                command,
                dir: self.dir.display().to_string(),
                after: self.timeout,
            }),
        }
    }

    fn failure(&self, command: &str, run: &Run) -> TerraformError {
        let mut diagnostics: Vec<String> = run
            .events
            .iter()
            .filter(|e| e["type"] == "diagnostic" && e["@level"] == "error")
            .map(|e| {
                let d = &e["diagnostic"];
                let mut s = String::new();
                if let Some(addr) = d["address"].as_str() {
                    s.push_str(&format!("{addr}: "));
                }
                s.push_str(d["summary"].as_str().unwrap_or("error"));
                if let Some(detail) = d["detail"].as_str().filter(|t| !t.is_empty()) {
                    s.push_str(&format!(": {}", detail.trim()));
                }
                if let (Some(f), Some(l)) = (d["range"]["filename"].as_str(), d["range"]["start"]["line"].as_u64()) {
                    s.push_str(&format!(" ({f}:{l})"));
                }
                s
            })
            .collect();
        if diagnostics.is_empty() {
            let text = if run.stderr.trim().is_empty() {
                &run.stdout
            } else {
                &run.stderr
            };
            let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let start = tail.len().saturating_sub(12);
            diagnostics = tail[start..]
                .iter()
                .map(|l| {
                    l.trim_matches(|c| c == '│' || c == '╷' || c == '╵' || c == ' ')
                        .to_string()
                })
                .collect();
        }
        TerraformError::Failed {
            command: command.to_string(),
            dir: self.dir.display().to_string(),
            diagnostics,
        }
    }

    pub async fn init(&self, log: &(dyn Fn(&str) + Sync)) -> Result<(), TerraformError> {
        let run = self.run(&["init", "-input=false", "-no-color"], log).await?;
        if run.status != 0 {
            return Err(self.failure("init", &run));
        }
        Ok(())
    }

    /// Plan into `plan_file`; returns what it would do.
    pub async fn plan(
        &self,
        plan_file: &str,
        destroy: bool,
        log: &(dyn Fn(&str) + Sync),
    ) -> Result<PlanSummary, TerraformError> {
        let out = format!("-out={plan_file}");
        let mut args = vec!["plan", "-input=false", "-no-color", "-json", out.as_str()];
        if destroy {
            args.push("-destroy");
        }
        let run = self.run(&args, log).await?;
        if run.status != 0 {
            return Err(self.failure("plan", &run));
        }
        let summary = run
            .events
            .iter()
            .rev()
            .find(|e| e["type"] == "change_summary")
            .map(|e| &e["changes"])
            .ok_or_else(|| TerraformError::Output {
                command: "plan".into(),
                message: "no change summary".into(),
            })?;
        let n = |k: &str| summary[k].as_u64().unwrap_or(0);
        Ok(PlanSummary {
            add: n("add"),
            change: n("change"),
            destroy: n("remove"),
        })
    }

    /// Apply exactly the saved plan.
    pub async fn apply(&self, plan_file: &str, log: &(dyn Fn(&str) + Sync)) -> Result<(), TerraformError> {
        let run = self
            .run(&["apply", "-input=false", "-no-color", "-json", plan_file], log)
            .await?;
        if run.status != 0 {
            return Err(self.failure("apply", &run));
        }
        Ok(())
    }

    /// All outputs as `{name: value}` (sensitive values included: callers
    /// must keep them out of logs and state).
    pub async fn outputs(&self) -> Result<BTreeMap<String, Value>, TerraformError> {
        let run = self.run(&["output", "-json", "-no-color"], &|_| {}).await?;
        if run.status != 0 {
            return Err(self.failure("output", &run));
        }
        let text = if run.stdout.trim().is_empty() {
            // `output -json` prints one JSON document; the line reader treats it as plain text
            // unless it happened to be one line with "@message".
            run.events.first().map(|v| v.to_string()).unwrap_or_default()
        } else {
            run.stdout.clone()
        };
        let all: BTreeMap<String, Value> = serde_json::from_str(&text).map_err(|e| TerraformError::Output {
            command: "output".into(),
            message: e.to_string(),
        })?;
        Ok(all.into_iter().map(|(k, v)| (k, v["value"].clone())).collect())
    }
}
