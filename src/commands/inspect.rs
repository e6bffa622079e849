//! Commands that only look: validate, plan, status.

use std::path::Path;

use serde_json::json;

use super::{load_and_plan, state_path};
use crate::cli::{GlobalArgs, Output};
use crate::engine::state::{State, StepStatus};
use crate::exit;
use crate::plan::dag;
use crate::plan::diff::{self, Reason, Selection};

pub fn validate(g: &GlobalArgs, file: &Path) -> u8 {
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match g.output {
        Output::Json => println!(
            "{}",
            json!({"file": loaded.file, "valid": true, "steps": plan.steps.len()})
        ),
        Output::Text if !g.quiet => {
            eprintln!("{}: valid ({} steps planned)", loaded.file.display(), plan.steps.len())
        }
        Output::Text => {}
    }
    exit::OK
}

pub(super) fn load_state(workdir: &Path) -> Result<State, u8> {
    State::load(&state_path(workdir)).map_err(|e| {
        eprintln!("error: {e}");
        eprintln!("hint: the state file records what was installed: repair or restore it; deleting it makes nautes-install forget what it created");
        exit::STATE_ERROR
    })
}

pub fn plan(g: &GlobalArgs, file: &Path, destroy: bool) -> u8 {
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let state = match load_state(&g.workdir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if destroy {
        let order = destroy_order(&state);
        match g.output {
            Output::Json => println!("{}", json!({ "destroy": order })),
            Output::Text => {
                if order.is_empty() {
                    println!("Nothing recorded in {}: nothing to destroy.", g.workdir.display());
                }
                for id in &order {
                    println!("  - {id}");
                }
                if !order.is_empty() {
                    println!("{} steps would be torn down, in this order.", order.len());
                }
            }
        }
        return exit::OK;
    }
    let d = match diff::diff(&plan, &state, &Selection::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: unknown steps: {}", e.0.join(", "));
            return exit::USAGE;
        }
    };
    let terraform = match terraform_previews(g, &loaded, &plan, &d) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match g.output {
        Output::Json => {
            let mut v = serde_json::to_value(&d).unwrap_or_default();
            v["terraform"] = json!(terraform);
            println!("{v}");
        }
        Output::Text => {
            let width = d
                .decisions
                .iter()
                .chain(&d.removals)
                .map(|x| x.id.len())
                .max()
                .unwrap_or(0);
            for x in d.removals.iter().chain(&d.decisions) {
                let sign = match &x.reason {
                    Reason::New => '+',
                    Reason::Removed => '-',
                    Reason::Unchanged | Reason::NotSelected => '=',
                    Reason::Recheck { .. } => '?',
                    _ => '~',
                };
                println!("  {sign} {:width$}  {}", x.id, x.reason.describe());
                if let Some(t) = terraform.get(&x.id) {
                    println!(
                        "    {:width$}  Terraform: {} to add, {} to change, {} to destroy",
                        "", t.add, t.change, t.destroy
                    );
                }
            }
            for m in &loaded.inventory.infrastructure.modules {
                let pending: Vec<&str> = m
                    .provides
                    .iter()
                    .filter(|h| !loaded.inventory.hosts.iter().any(|x| &x.name == *h))
                    .map(String::as_str)
                    .collect();
                if !pending.is_empty() {
                    println!(
                        "  note: {} come from terraform/{}; the steps that use them are planned once it has run",
                        pending.join(", "),
                        m.name
                    );
                }
            }
            let apply = d.to_run().len();
            let unchanged = d.decisions.len() - apply;
            let maybe = d
                .decisions
                .iter()
                .filter(|x| matches!(x.reason, Reason::Recheck { .. }))
                .count();
            let maybe = if maybe > 0 {
                format!(" ({maybe} only if a re-check finds a change)")
            } else {
                String::new()
            };
            println!(
                "Plan: {apply} to apply{maybe}, {} to destroy, {unchanged} unchanged.",
                d.removals.len()
            );
        }
    }
    exit::OK
}

/// For each Terraform module that would run: what Terraform itself plans
/// (init + plan in the module's working directory; nothing is applied).
fn terraform_previews(
    g: &GlobalArgs,
    loaded: &crate::inventory::Loaded,
    plan: &crate::plan::Plan,
    d: &diff::Diff,
) -> Result<std::collections::BTreeMap<String, crate::drivers::terraform::PlanSummary>, u8> {
    use crate::components::infrastructure;
    let runs: Vec<&crate::plan::Step> = plan
        .steps
        .iter()
        .filter(|s| s.kind == infrastructure::KIND)
        .filter(|s| d.decisions.iter().any(|x| x.id == s.id && x.reason.runs()))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    if runs.is_empty() {
        return Ok(out);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::STEP_FAILED
        })?;
    let workdir = std::path::absolute(&g.workdir).unwrap_or_else(|_| g.workdir.clone());
    let base = std::path::absolute(&loaded.base_dir).unwrap_or_else(|_| loaded.base_dir.clone());
    for step in runs {
        match runtime.block_on(infrastructure::preview(&workdir, &base, step)) {
            Ok(summary) => {
                out.insert(step.id.clone(), summary);
            }
            // The step's own plan stands; Terraform's detail is a bonus that
            // may need credentials or providers only `apply` time has.
            Err(e) => eprintln!("note: {}: Terraform could not plan here: {e}", step.id),
        }
    }
    Ok(out)
}

/// Every recorded step, dependents before what they need.
pub(crate) fn destroy_order(state: &State) -> Vec<String> {
    let nodes: Vec<(String, Vec<String>)> = state.steps.iter().map(|(id, r)| (id.clone(), r.ordering())).collect();
    let order = dag::topo_order(&nodes).unwrap_or_else(|_| (0..nodes.len()).collect());
    order.into_iter().rev().map(|i| nodes[i].0.clone()).collect()
}

pub fn status(g: &GlobalArgs) -> u8 {
    let state = match load_state(&g.workdir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let lock_note = std::fs::read_to_string(g.workdir.join("lock")).unwrap_or_default();
    if g.output == Output::Json {
        println!(
            "{}",
            json!({ "workdir": g.workdir, "steps": state.steps, "runs": state.runs, "lock": serde_json::from_str::<serde_json::Value>(&lock_note).ok() })
        );
        return exit::OK;
    }
    if !lock_note.trim().is_empty() {
        println!(
            "Lock: {} (a run is in progress, or one died; the next run checks which)",
            lock_note.trim()
        );
    }
    if state.steps.is_empty() {
        println!("No steps recorded in {}.", g.workdir.display());
    }
    let width = state.steps.keys().map(String::len).max().unwrap_or(0);
    for (id, r) in &state.steps {
        let status = match r.status {
            StepStatus::Done => "done",
            StepStatus::Failed => "FAILED",
            StepStatus::Running => "interrupted",
            StepStatus::Destroying => "interrupted (destroying)",
        };
        let when = r.finished_at.as_deref().or(r.started_at.as_deref()).unwrap_or("-");
        println!("  {id:width$}  {status:11}  attempts {}  {when}", r.attempts);
        if let Some(e) = &r.last_error {
            println!("  {:width$}  last error: {}", "", e.lines().next().unwrap_or(""));
        }
    }
    if let Some(run) = state.runs.last() {
        println!(
            "Last run: {} `{}` started {} -> {}",
            run.id,
            run.command,
            run.started_at,
            run.result.as_deref().unwrap_or("did not finish")
        );
    }
    exit::OK
}
