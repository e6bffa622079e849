//! User hooks: shell commands attached before or after chosen steps, run as
//! steps of their own so they get ordering, state and resume for free.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::Instrument;

use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::spans::{push_index, push_key};
use crate::inventory::{Diagnostic, Loaded};
use crate::plan::{pattern_matches, Step, StepSpec};

pub const KIND: &str = "hook";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Lines of stderr quoted in an error: enough to see why, short enough to read.
const STDERR_TAIL_LINES: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookSpec {
    name: String,
    run: String,
    destroy: Option<String>,
    env: BTreeMap<String, String>,
}

pub fn step_id(name: &str) -> String {
    format!("hook/{name}")
}

/// Add one step per hook and wire `before`/`after` into the other steps.
pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let inv = &loaded.inventory;
    let mut problems = Vec::new();
    let hook_ids: Vec<String> = inv.hooks.iter().map(|h| step_id(&h.name)).collect();
    let mut new_steps = Vec::new();
    for (i, hook) in inv.hooks.iter().enumerate() {
        let base = push_index("hooks", i);
        if hook.on.as_deref().is_some_and(|on| on != "local") {
            problems.push(
                Diagnostic::error(
                    push_key(&base, "on"),
                    "hooks on hosts are not available in this release",
                )
                .with_hint("run the command locally with `ssh` inside it, or omit `on`")
                .at(loaded.spans.value(&push_key(&base, "on"))),
            );
            continue;
        }
        let spec = HookSpec {
            name: hook.name.clone(),
            run: hook.run.clone(),
            destroy: hook.destroy.clone(),
            env: hook.env.clone(),
        };
        let timeout = hook
            .timeout
            .or(inv.settings.timeouts.hook)
            .map(|d| d.get())
            .unwrap_or(DEFAULT_TIMEOUT);
        let id = step_id(&hook.name);
        let mut step = Step::of(&id, format!("hook {}", hook.name), &spec).with_settings(json!(HookSettings {
            timeout_ms: Some(timeout.as_millis() as u64)
        }));
        let all_ids: Vec<String> = steps
            .iter()
            .map(|s| s.id.clone())
            .chain(hook_ids.iter().cloned())
            .filter(|s| *s != id)
            .collect();
        for (j, pattern) in hook.after.iter().enumerate() {
            let matched: Vec<&String> = all_ids.iter().filter(|s| pattern_matches(pattern, s)).collect();
            if matched.is_empty() {
                problems.push(no_match(
                    loaded,
                    &push_index(&push_key(&base, "after"), j),
                    pattern,
                    &all_ids,
                ));
            }
            step = step.needs(matched.into_iter().cloned());
        }
        for (j, pattern) in hook.before.iter().enumerate() {
            let matched: Vec<String> = all_ids
                .iter()
                .filter(|s| pattern_matches(pattern, s))
                .map(|s| s.to_string())
                .collect();
            if matched.is_empty() {
                problems.push(no_match(
                    loaded,
                    &push_index(&push_key(&base, "before"), j),
                    pattern,
                    &all_ids,
                ));
            }
            for target in matched {
                if let Some(s) = steps.iter_mut().find(|s| s.id == target) {
                    s.needs.push(id.clone());
                } else {
                    // A hook before another hook: recorded on the other hook's step once built.
                    new_steps.push((target, id.clone()));
                }
            }
        }
        steps.push(step);
    }
    for (target, need) in new_steps {
        if let Some(s) = steps.iter_mut().find(|s| s.id == target) {
            if !s.needs.contains(&need) {
                s.needs.push(need);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn no_match(loaded: &Loaded, path: &str, pattern: &str, ids: &[String]) -> Diagnostic {
    let mut sample: Vec<&str> = ids.iter().map(String::as_str).collect();
    sample.truncate(8);
    let hint = if sample.is_empty() {
        "there are no other steps; see `nautes-install plan` for step ids".to_string()
    } else {
        format!("step ids look like: {}", sample.join(", "))
    };
    Diagnostic::error(path, format!("`{pattern}` matches no step"))
        .with_hint(hint)
        .at(loaded.spans.value(path))
}

impl StepSpec for HookSpec {
    const KIND: &'static str = KIND;
}

/// How long a hook may run: a setting, so changing it does not re-run the hook.
#[derive(Debug, Default, Serialize, Deserialize)]
struct HookSettings {
    timeout_ms: Option<u64>,
}

pub struct HookHandler;

#[async_trait]
impl Handler for HookHandler {
    type Spec = HookSpec;

    async fn apply(&self, ctx: &StepContext, spec: &HookSpec) -> Result<Value, StepError> {
        run_command(ctx, spec, &spec.run, "apply").await?;
        Ok(json!({}))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &HookSpec, _outputs: &Value) -> Result<(), StepError> {
        match &spec.destroy {
            Some(cmd) => run_command(ctx, spec, cmd, "destroy").await,
            None => Ok(()),
        }
    }
}

async fn run_command(ctx: &StepContext, spec: &HookSpec, command: &str, phase: &str) -> Result<(), StepError> {
    let timeout = ctx
        .settings::<HookSettings>()?
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TIMEOUT);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&ctx.base_dir)
        .envs(&spec.env)
        .env("NAUTES_STEP", &ctx.step_id)
        .env("NAUTES_PHASE", phase)
        .env("NAUTES_WORKDIR", &ctx.workdir)
        .env("NAUTES_OUTPUTS_DIR", &ctx.outputs_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(|e| StepError::new(format!("hook `{}`: cannot start `sh`: {e}", spec.name)))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let name = spec.name.clone();
    // Spawned readers log under this step's span, as the step itself does.
    let out_task = tokio::spawn(
        async move {
            if let Some(out) = stdout {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "nautes_install::hook", hook = %name, stream = "stdout", "{line}");
                }
            }
        }
        .in_current_span(),
    );
    let name = spec.name.clone();
    let err_task = tokio::spawn(
        async move {
            let mut tail: Vec<String> = Vec::new();
            if let Some(err) = stderr {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "nautes_install::hook", hook = %name, stream = "stderr", "{line}");
                    tail.push(line);
                    if tail.len() > STDERR_TAIL_LINES {
                        tail.remove(0);
                    }
                }
            }
            tail
        }
        .in_current_span(),
    );
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            return Err(StepError::new(format!(
                "hook `{}`: waiting for the command failed: {e}",
                spec.name
            )))
        }
        Err(_) => {
            kill_group(&child);
            let _ = child.kill().await;
            return Err(StepError::new(format!(
                "hook `{}` did not finish within {} (raise `timeout` on the hook or settings.timeouts.hook)",
                spec.name,
                humantime::format_duration(timeout)
            )));
        }
    };
    let _ = out_task.await;
    let tail = err_task.await.unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let code = status
        .code()
        .map(|c| format!("exit status {c}"))
        .unwrap_or_else(|| "a signal".to_string());
    let mut msg = format!("hook `{}` ({phase}) ended with {code}", spec.name);
    if !tail.is_empty() {
        msg.push_str(&format!("; last stderr lines:\n  {}", tail.join("\n  ")));
    }
    Err(StepError::new(msg))
}

/// A hook's shell may have started children; stop the whole group.
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals a process group we created.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}
