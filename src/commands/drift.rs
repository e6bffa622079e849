//! `drift`: read the live systems instead of trusting the state, and say
//! per step what differs from what `apply` would make. Changes nothing —
//! not the systems, not the state — and takes no lock, so it can run while
//! nobody may apply. Exit codes follow `terraform plan -detailed-exitcode`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::apply::absolute;
use super::{count, load_and_plan, logging, state_path};
use crate::cli::{GlobalArgs, Output};
use crate::components;
use crate::drivers::ssh::SshPool;
use crate::engine::drift::{Outcome, StepDrift};
use crate::engine::events::{OutputMode, Reporter};
use crate::engine::{Engine, RunEnv, Services};
use crate::exit;
use crate::state::{State, StateStore};
use crate::steps::host_files::HostReads;

/// Something differs: apply would change the world.
pub const DIFFERS: u8 = 2;

/// What the live systems hold, step by step, and what reading them cost.
pub(super) struct LiveRead {
    pub steps: Vec<StepDrift>,
    /// Remote scripts run per host.
    pub host_reads: BTreeMap<String, usize>,
    pub elapsed: std::time::Duration,
}

pub fn drift(g: &GlobalArgs, file: &Path) -> u8 {
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let state = match super::backend::load_blocking(&super::backend::from_inventory(g, &loaded)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let LiveRead {
        steps,
        host_reads,
        elapsed,
    } = match read_live(g, &loaded, &plan, state) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let failed = steps.iter().any(|s| matches!(s.outcome, Outcome::Failed { .. }));
    let differs = steps.iter().any(StepDrift::differs);
    match g.output {
        Output::Json => println!(
            "{}",
            json!({
                "differs": differs,
                "failed": failed,
                "elapsedMs": elapsed.as_millis() as u64,
                "hostRoundTrips": host_reads,
                "steps": steps,
            })
        ),
        Output::Text => print_text(g, file, &steps),
    }
    if failed {
        exit::STEP_FAILED
    } else if differs {
        DIFFERS
    } else {
        exit::OK
    }
}

/// Ask every step the state records as done what differs between the live
/// systems and what its apply would make (see `Engine::drift`); changes
/// nothing and takes no lock. Shared by `drift` and `plan --refresh`.
pub(super) fn read_live(
    g: &GlobalArgs,
    loaded: &crate::inventory::Loaded,
    plan: &crate::plan::Plan,
    state: State,
) -> Result<LiveRead, u8> {
    let run_id = logging::run_id();
    if let Err(e) = logging::init(&g.workdir, &run_id, g.verbose) {
        eprintln!("warning: no run log ({e})");
    }
    tracing::info!(run = %run_id, "reading the live systems");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Err(exit::STEP_FAILED);
        }
    };
    let inv = &loaded.inventory;
    let outputs_dir = super::outputs_dir(g, loaded);
    // The steps' notices would break the one JSON document; they go to the log.
    let reporter = Arc::new(Reporter::new(OutputMode::Text, true));
    let (_stop_tx, stop) = tokio::sync::watch::channel(0u8);
    let engine = Engine {
        registry: components::registry(),
        // Read, never written: drift records nothing.
        store: StateStore::new(state_path(&g.workdir), state),
        reporter,
        concurrency: g.concurrency.or(inv.settings.concurrency).unwrap_or(8).max(1),
        stop,
        env: RunEnv {
            base_dir: absolute(&loaded.base_dir),
            workdir: absolute(&g.workdir),
            outputs_dir: absolute(&outputs_dir),
            limits: super::limits(&inv.settings.timeouts),
            services: {
                // Drift only reads: every set's objects of a kind come from
                // one LIST per cluster, shared by all the steps.
                let services = Services::default();
                services.insert(crate::drivers::kube::apply::LiveCache::default());
                services.insert(super::apply::ssh_pool(g, loaded));
                Arc::new(services)
            },
            full_teardown: false,
        },
    };
    let started = std::time::Instant::now();
    let services = engine.env.services.clone();
    let steps = runtime.block_on(async {
        let steps = engine.drift(plan).await;
        if let Some(pool) = services.get::<SshPool>() {
            pool.close_all().await;
            let _ = std::fs::remove_dir_all(&pool.options().control_dir);
        }
        steps
    });
    let elapsed = started.elapsed();
    // What it cost on hosts: remote scripts run per host (the aim is one).
    let host_reads = services.get::<HostReads>().map(|r| r.round_trips()).unwrap_or_default();
    tracing::info!(?host_reads, "read the live systems in {elapsed:?}");
    Ok(LiveRead {
        steps,
        host_reads,
        elapsed,
    })
}

fn print_text(g: &GlobalArgs, file: &Path, steps: &[StepDrift]) {
    let (mut differences, mut differing, mut checked) = (0, 0, 0);
    let mut unchecked = Vec::new();
    for s in steps {
        match &s.outcome {
            Outcome::Checked { differences: found } => {
                checked += 1;
                if found.is_empty() {
                    if g.verbose > 0 {
                        println!("{}: as applied", s.id);
                    }
                    continue;
                }
                differing += 1;
                differences += found.len();
                println!("{}: {}", s.id, count(found.len(), "difference", "differences"));
                for d in found {
                    match &d.field {
                        Some(field) => println!("  {:<9} {} (at {field})", d.change.label(), d.object),
                        None => println!("  {:<9} {}", d.change.label(), d.object),
                    }
                }
            }
            Outcome::NotChecked => unchecked.push(s.id.as_str()),
            Outcome::NotApplied => {
                differing += 1;
                println!("{}: not applied yet", s.id);
            }
            Outcome::Removed => {
                differing += 1;
                println!("{}: no longer in the inventory; apply tears it down", s.id);
            }
            Outcome::Failed { error } => println!("{}: cannot check: {error}", s.id),
        }
    }
    if !g.quiet {
        eprintln!(
            "Drift: {} in {} ({} checked); {} not checked{}",
            count(differences, "difference", "differences"),
            count(differing, "step", "steps"),
            checked,
            count(unchecked.len(), "step", "steps"),
            if unchecked.is_empty() {
                String::new()
            } else if g.verbose == 0 {
                " (-v names them)".to_string()
            } else {
                format!(": {}", unchecked.join(", "))
            }
        );
        // apply re-runs only steps whose inputs changed; drift is how it
        // learns that these must run although nothing in the inventory did.
        let again: Vec<&str> = steps
            .iter()
            .filter(|s| matches!(&s.outcome, Outcome::Checked { differences } if !differences.is_empty()))
            .map(|s| s.id.as_str())
            .collect();
        if !again.is_empty() {
            eprintln!(
                "hint: `nautes-install apply -i {} --only {}` makes them as the inventory says",
                file.display(),
                again.join(" ")
            );
        }
    }
}
