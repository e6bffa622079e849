//! Commands that only look: validate, plan, status.

use std::path::Path;

use serde_json::json;

use super::{backend, load_and_plan};
use crate::cli::{GlobalArgs, Output};
use crate::engine::drift::Outcome;
use crate::exit;
use crate::plan::dag;
use crate::plan::diff::{self, Reason, Selection};
use crate::state::{State, StepStatus};

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

/// The state where the workdir's last run kept it (see `backend::recorded`).
pub(super) fn load_state(g: &GlobalArgs) -> Result<State, u8> {
    backend::load_blocking(&backend::recorded(g))
}

pub fn plan(g: &GlobalArgs, file: &Path, destroy: bool, refresh: bool, detailed_exitcode: bool) -> u8 {
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let state = match backend::load_blocking(&backend::from_inventory(g, &loaded)) {
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
    let mut d = match diff::diff(&plan, &state, &Selection::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: unknown steps: {}", super::unknown_steps(&e.0, &plan));
            return exit::USAGE;
        }
    };
    // With --refresh, what the live systems say overrides "unchanged".
    let mut unreadable = Vec::new();
    let mut host_reads = None;
    if refresh {
        let live = match super::drift::read_live(g, &loaded, &plan, state.clone()) {
            Ok(l) => l,
            Err(code) => return code,
        };
        for step in &live.steps {
            match &step.outcome {
                Outcome::Checked { differences } if !differences.is_empty() => {
                    if let Some(x) = d.decisions.iter_mut().find(|x| {
                        x.id == step.id && matches!(x.reason, Reason::Unchanged | Reason::Recheck { .. } | Reason::Due)
                    }) {
                        x.reason = Reason::Drifted {
                            objects: differences
                                .iter()
                                .map(|d| format!("{} {}", d.change.label(), d.object))
                                .collect(),
                        };
                    }
                }
                Outcome::Failed { error } => unreadable.push((step.id.clone(), error.clone())),
                _ => {}
            }
        }
        host_reads = Some(live.host_reads);
    }
    let terraform = match terraform_previews(g, &loaded, &plan, &d) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match g.output {
        Output::Json => {
            let mut v = serde_json::to_value(&d).unwrap_or_default();
            v["terraform"] = json!(terraform);
            if let Some(reads) = &host_reads {
                v["hostRoundTrips"] = json!(reads);
                v["unreadable"] = json!(unreadable
                    .iter()
                    .map(|(id, error)| json!({"id": id, "error": error}))
                    .collect::<Vec<_>>());
            }
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
                    Reason::Drifted { .. } => '!',
                    _ => '~',
                };
                println!("  {sign} {:width$}  {}", x.id, x.reason.describe());
                if g.verbose > 0 && !x.needs.is_empty() {
                    println!("    {:width$}  needs: {}", "", x.needs.join(", "));
                }
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
            for (id, error) in &unreadable {
                eprintln!("error: {id}: cannot read its live state: {error}");
            }
            // apply trusts the state for steps whose inputs did not change.
            let drifted: Vec<&str> = d
                .decisions
                .iter()
                .filter(|x| matches!(x.reason, Reason::Drifted { .. }))
                .map(|x| x.id.as_str())
                .collect();
            if !drifted.is_empty() && !g.quiet {
                eprintln!(
                    "hint: `nautes-install apply -i {} --only {}` puts back what changed outside nautes-install",
                    file.display(),
                    drifted.join(" ")
                );
            }
        }
    }
    if !unreadable.is_empty() {
        return exit::STEP_FAILED;
    }
    // Re-checks (`Due`, and what runs only if they change something) may
    // well find nothing to do: only certain changes count, as Terraform's do.
    let changes = !d.removals.is_empty()
        || d.decisions
            .iter()
            .any(|x| x.reason.runs_for_sure() && x.reason != Reason::Due);
    if detailed_exitcode && changes {
        return super::drift::DIFFERS;
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
    let state = match load_state(g) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let holder = crate::engine::lock::current_holder(&g.workdir);
    let lease = match backend::recorded(g) {
        backend::Where::Kube(k) => Some(lease_info(&k)),
        backend::Where::Local(_) => None,
    };
    // A run on another machine holds the shared state's Lease, not our lock.
    let leased = matches!(&lease, Some(Ok(l)) if l.holder.is_some() && !l.expired);
    let rows = status_rows(&state, holder.is_some() || leased);
    if g.output == Output::Json {
        let lease = match &lease {
            Some(Ok(l)) => json!(l),
            Some(Err(e)) => json!({ "error": e }),
            None => serde_json::Value::Null,
        };
        let steps: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, status, rec)| json!({ "id": id, "status": status, "record": rec }))
            .collect();
        println!(
            "{}",
            json!({ "workdir": g.workdir, "steps": steps, "runs": state.runs, "lock": holder, "lease": lease })
        );
        return exit::OK;
    }
    if let Some(h) = &holder {
        println!("Running now: {h}");
    }
    match &lease {
        Some(Ok(l)) => println!("{}", describe_lease(l)),
        Some(Err(e)) => println!("State lock: cannot be read: {e}"),
        None => {}
    }
    if rows.is_empty() {
        println!("No steps recorded in {}.", g.workdir.display());
    }
    let width = rows.iter().map(|(id, _, _)| id.len()).max().unwrap_or(0);
    for (id, status, rec) in &rows {
        let Some(r) = rec else {
            println!("  {id:width$}  {status}");
            continue;
        };
        let when = r.finished_at.as_deref().or(r.started_at.as_deref()).unwrap_or("-");
        let status = match (status.as_str(), &holder) {
            ("running", Some(h)) => format!("running (pid {})", h.pid),
            (s, _) => s.to_string(),
        };
        println!("  {id:width$}  {status:16}  attempts {}  {when}", r.attempts);
        if let Some(e) = &r.last_error {
            println!("  {:width$}  last error: {}", "", e.lines().next().unwrap_or(""));
        }
    }
    if let Some(run) = state.runs.last() {
        let result = match (&run.result, &holder) {
            (Some(r), _) => r.clone(),
            (None, Some(h)) => format!("running (pid {})", h.pid),
            (None, None) => "did not finish (the process ended without recording a result)".into(),
        };
        println!(
            "Last run: {} `{}` started {} -> {result}",
            run.id, run.command, run.started_at
        );
    }
    exit::OK
}

fn lease_info(k: &crate::state::kubernetes::KubeStateConfig) -> Result<crate::state::kubernetes::LeaseInfo, String> {
    let rt = backend::small_runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    rt.block_on(async {
        let client = k.client().await?;
        crate::state::kubernetes::lease_info(&client, k).await
    })
}

fn describe_lease(l: &crate::state::kubernetes::LeaseInfo) -> String {
    let place = format!("State lock (Lease {}/{})", l.namespace, l.name);
    let or = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
    match &l.holder {
        None => format!("{place}: nobody holds it"),
        Some(h) if l.expired => format!(
            "{place}: held by {h}, acquired {}, last renewed {}, EXPIRED at {}: that run is gone, the next run takes the lock over",
            or(&l.acquired),
            or(&l.renewed),
            or(&l.expires)
        ),
        Some(h) => format!(
            "{place}: held by {h}, acquired {}, renewed {}, expires {} unless renewed",
            or(&l.acquired),
            or(&l.renewed),
            or(&l.expires)
        ),
    }
}

/// Every step in the order of the last plan (then recorded steps that plan
/// no longer has), each with a status word. A step recorded as running is
/// running only while a run holds the lock; otherwise that run died.
fn status_rows(state: &State, held: bool) -> Vec<(String, String, Option<&crate::state::StepRecord>)> {
    let mut order: Vec<String> = state.planned.clone();
    if order.is_empty() {
        order = destroy_order(state).into_iter().rev().collect();
    }
    for id in state.steps.keys() {
        if !order.contains(id) {
            order.push(id.clone());
        }
    }
    order
        .into_iter()
        .map(|id| {
            let rec = state.steps.get(&id);
            let word = match rec.map(|r| r.status) {
                None => "pending",
                Some(StepStatus::Done) => "done",
                Some(StepStatus::Failed) => "FAILED",
                Some(StepStatus::Running) if held => "running",
                Some(StepStatus::Destroying) if held => "destroying",
                Some(StepStatus::Running) | Some(StepStatus::Interrupted) => "interrupted",
                Some(StepStatus::Destroying) => "interrupted (destroying)",
            };
            (id, word.to_string(), rec)
        })
        .collect()
}
