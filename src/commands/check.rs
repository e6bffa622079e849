//! `check`: facts and preflight on every cluster's hosts, as `apply` would
//! run them first, without recording or changing anything.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::apply::{absolute, ssh_pool};
use super::load_and_plan;
use crate::cli::{GlobalArgs, Output};
use crate::components::preflight::{self, PreflightSpec};
use crate::engine::events::{OutputMode, Reporter};
use crate::engine::{Services, StepContext};
use crate::exit;

pub fn check(g: &GlobalArgs, file: &Path) -> u8 {
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let services = Arc::new(Services::default());
    services.insert(ssh_pool(g, &loaded));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::STEP_FAILED;
        }
    };
    // `check` records nothing, so a signal only has to take our SSH masters
    // and their directory with it.
    if let Some(pool) = services.get::<crate::drivers::ssh::SshPool>() {
        runtime.spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            match term.as_mut() {
                Some(t) => tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = t.recv() => {},
                },
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            eprintln!("interrupted");
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), pool.close_all()).await;
            let _ = std::fs::remove_dir_all(&pool.options().control_dir);
            std::process::exit(exit::INTERRUPTED.into());
        });
    }
    let mut failed = false;
    let mut report = serde_json::Map::new();
    for step in plan.steps.iter().filter(|s| s.kind == preflight::KIND) {
        let (Ok(spec), Ok(preflight::PreflightSettings { conns: Some(conns) })) = (
            crate::engine::decode::<PreflightSpec>(&step.spec),
            serde_json::from_value::<preflight::PreflightSettings>(step.settings.clone()),
        ) else {
            eprintln!("internal error: malformed preflight step {}", step.id);
            return exit::STEP_FAILED;
        };
        let ctx = StepContext {
            step_id: step.id.clone(),
            base_dir: absolute(&loaded.base_dir),
            workdir: absolute(&g.workdir),
            outputs_dir: absolute(&g.workdir.join("outputs")),
            limits: super::limits(&loaded.inventory.settings.timeouts),
            needs_outputs: Default::default(),
            settings: step.settings.clone(),
            previous_outputs: serde_json::Value::Null,
            reporter: Arc::new(Reporter::new(OutputMode::Text, true)),
            services: services.clone(),
            full_teardown: false,
            intents: crate::engine::Intents::none(&step.id),
        };
        let (facts, unreachable) = runtime.block_on(preflight::gather(&ctx, &conns));
        let findings = preflight::evaluate(&spec, &facts);
        failed |= !unreachable.is_empty() || findings.iter().any(|f| !f.ok && !f.waived);
        match g.output {
            Output::Json => {
                report.insert(
                    spec.cluster.clone(),
                    json!({ "findings": findings, "facts": facts, "unreachable": unreachable }),
                );
            }
            Output::Text => {
                println!("Cluster {}:", spec.cluster);
                print!("{}", preflight::table(&findings));
                for u in &unreachable {
                    println!("UNREACHABLE  {u}");
                }
                println!();
            }
        }
    }
    if let Some(pool) = services.get::<crate::drivers::ssh::SshPool>() {
        runtime.block_on(pool.close_all());
        let _ = std::fs::remove_dir_all(&pool.options().control_dir);
    }
    if g.output == Output::Json {
        println!("{}", serde_json::Value::Object(report));
    }
    if failed {
        if g.output == Output::Text {
            eprintln!("preflight failed: fix the hosts, or waive a rule per host with `waive: [rule]`");
        }
        exit::STEP_FAILED
    } else {
        exit::OK
    }
}
