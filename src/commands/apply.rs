//! `apply` and `destroy`: the commands that change the world. Both hold the
//! workdir lock, log to a file per run, and stop cleanly on Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::backend::{self, Held};
use super::inspect::destroy_order;
use super::{confirm, load_and_plan, logging};
use crate::cli::{GlobalArgs, Output};
use crate::components;
use crate::components::infrastructure;
use crate::drivers::ssh::{HostKeyPolicy, SshOptions, SshPool};
use crate::engine::events::{Event, OutputMode, Reporter, Skipped};
use crate::engine::executor::ABORT;
use crate::engine::{Engine, RunEnv, RunSummary, Services};
use crate::exit;
use crate::inventory::Loaded;
use crate::plan::diff::{self, Decision, Diff, Reason, Selection};
use crate::state::{RunRecord, StateStore};
use crate::util::now_rfc3339;

const DEFAULT_CONCURRENCY: usize = 8;

/// With `settings.backupBeforeUpgrade`, a backup of everything the run is
/// about to change, taken under this run's lock before any step starts:
/// when a step that was done will run again because its inputs or what it
/// needs changed, or a removed step will be torn down. A first install has
/// nothing to lose and takes none. `Some(exit code)` stops the run.
fn backup_before_upgrade(
    g: &GlobalArgs,
    loaded: &Loaded,
    plan: &crate::plan::Plan,
    state: &crate::state::State,
    d: &Diff,
) -> Option<u8> {
    let settings = loaded.inventory.settings.backup_before_upgrade.as_ref()?;
    let done_before = |id: &str| {
        state
            .steps
            .get(id)
            .is_some_and(|r| r.status == crate::state::StepStatus::Done)
    };
    let changes: Vec<&str> = d
        .decisions
        .iter()
        .filter(|x| {
            matches!(
                x.reason,
                Reason::InputsChanged { .. } | Reason::DependencyChanged { .. }
            )
        })
        .filter(|x| done_before(&x.id))
        .map(|x| x.id.as_str())
        .chain(d.removals.iter().map(|x| x.id.as_str()))
        .collect();
    if changes.is_empty() {
        return None;
    }
    let passphrase = match settings.passphrase.resolve(&loaded.base_dir) {
        Ok(p) if !p.expose().is_empty() => p,
        Ok(_) => {
            eprintln!("error: settings.backupBeforeUpgrade.passphrase is empty");
            return Some(exit::USAGE);
        }
        Err(e) => {
            eprintln!("error: settings.backupBeforeUpgrade.passphrase: {e}");
            eprintln!("hint: the backup before this upgrade needs its passphrase; nothing was changed");
            return Some(exit::USAGE);
        }
    };
    let dir = g.workdir.join("backups");
    if let Err(e) = create_private_dir(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return Some(exit::STATE_ERROR);
    }
    let out = dir.join(super::backup::archive_name("before-apply"));
    if g.output == Output::Text && !g.quiet {
        println!(
            "Backing up before changing what is installed ({}{}):",
            changes.iter().take(5).copied().collect::<Vec<_>>().join(", "),
            if changes.len() > 5 { ", …" } else { "" }
        );
    }
    match super::backup::write_backup(g, loaded, plan, state, &passphrase, &out, std::time::Instant::now()) {
        exit::OK => None,
        code => {
            eprintln!("hint: the backup before this upgrade failed, so nothing was changed; fix it, or remove settings.backupBeforeUpgrade");
            Some(code)
        }
    }
}

pub fn apply(g: &GlobalArgs, file: &Path, only: &[String], from: Option<&str>) -> u8 {
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let session = match Session::open(g, &loaded, "apply") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let state = session.store.read(Clone::clone);
    let selection = Selection {
        only: only.to_vec(),
        from: from.map(str::to_string),
    };
    let d = match diff::diff(&plan, &state, &selection) {
        Ok(d) => d,
        Err(unknown) => {
            eprintln!("error: no such step: {}", super::unknown_steps(&unknown.0, &plan));
            eprintln!("hint: `nautes-install plan -i {}` lists step ids", file.display());
            return exit::USAGE;
        }
    };
    if !d.removals.is_empty() {
        let names: Vec<&str> = d.removals.iter().map(|x| x.id.as_str()).collect();
        if let Err(code) = confirm(
            g,
            &format!(
                "Steps removed from the inventory will be torn down: {}.",
                names.join(", ")
            ),
        ) {
            return code;
        }
    }
    if let Some(code) = backup_before_upgrade(g, &loaded, &plan, &state, &d) {
        return code;
    }
    let total = plan.steps.len();
    let to_run = d.to_run().len() + d.removals.len();
    let limited = !only.is_empty() || from.is_some();
    session.run(g, "apply", total, to_run, move |engine| async move {
        let mut loaded = loaded;
        let mut plan = plan;
        let mut d = d;
        let mut done = RunSummary::default();
        // Hosts from Terraform must exist before the steps that use them can be
        // planned: run the modules that need it first, then plan again.
        let infra_runs = d
            .decisions
            .iter()
            .any(|x| x.reason.runs() && x.id.starts_with("terraform/"));
        if infra_runs && !limited {
            let first = Diff {
                decisions: d
                    .decisions
                    .iter()
                    .map(|x| {
                        if x.id.starts_with("terraform/") {
                            x.clone()
                        } else {
                            Decision {
                                reason: Reason::NotSelected,
                                ..x.clone()
                            }
                        }
                    })
                    .collect(),
                removals: Vec::new(),
            };
            done = engine.apply(&plan, &first).await?;
            if !done.ok() {
                return Ok(done);
            }
            let state = engine.store.read(Clone::clone);
            infrastructure::merge_hosts(&mut loaded, &state);
            plan = match crate::components::plan(&loaded) {
                Ok(p) => p,
                Err(e) => {
                    done.failed
                        .push(("plan".into(), format!("planning with the hosts Terraform made: {e}")));
                    return Ok(done);
                }
            };
            d = match diff::diff(&plan, &state, &Selection::default()) {
                Ok(d) => d,
                Err(e) => {
                    done.failed
                        .push(("plan".into(), format!("unknown steps: {}", e.0.join(", "))));
                    return Ok(done);
                }
            };
        }
        let rest = engine.apply(&plan, &d).await?;
        Ok(RunSummary {
            applied: done.applied + rest.applied,
            destroyed: done.destroyed + rest.destroyed,
            ..rest
        })
    })
}

pub fn destroy(g: &GlobalArgs, file: &Path) -> u8 {
    let (loaded, _) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let session = match Session::open(g, &loaded, "destroy") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let order = session.store.read(destroy_order);
    if order.is_empty() {
        if !g.quiet {
            eprintln!("Nothing recorded in {}: nothing to destroy.", g.workdir.display());
        }
        return exit::OK;
    }
    if let Err(code) = confirm(g, &format!("This tears down {} recorded steps.", order.len())) {
        return code;
    }
    let n = order.len();
    session.run(g, "destroy", n, n, |engine| async move { engine.destroy(&order).await })
}

/// A locked workdir with state, log and reporter, ready to run an engine.
struct Session {
    runtime: tokio::runtime::Runtime,
    lock: Held,
    store: StateStore,
    reporter: Arc<Reporter>,
    run_id: String,
    env: RunEnv,
    concurrency: usize,
}

impl Session {
    fn open(g: &GlobalArgs, loaded: &Loaded, command: &str) -> Result<Session, u8> {
        if let Err(e) = create_private_dir(&g.workdir) {
            eprintln!("error: cannot create workdir {}: {e}", g.workdir.display());
            return Err(exit::STATE_ERROR);
        }
        // The runtime comes first: a kubernetes backend's lock is renewed
        // by a task on it for as long as the run lives.
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return Err(exit::STATE_ERROR);
            }
        };
        let place = backend::from_inventory(g, loaded);
        let (lock, state_backend) = runtime.block_on(backend::lock_and_open(g, &place, command))?;
        backend::remember(g, &place);
        match Self::prepare(g, loaded, command, &runtime, &lock, state_backend) {
            Ok(p) => Ok(Session {
                runtime,
                lock,
                store: p.store,
                reporter: p.reporter,
                run_id: p.run_id,
                env: p.env,
                concurrency: p.concurrency,
            }),
            Err(code) => {
                runtime.block_on(lock.release());
                Err(code)
            }
        }
    }

    fn prepare(
        g: &GlobalArgs,
        loaded: &Loaded,
        command: &str,
        runtime: &tokio::runtime::Runtime,
        lock: &Held,
        state_backend: Arc<dyn crate::state::StateBackend>,
    ) -> Result<Prepared, u8> {
        let run_id = logging::run_id();
        let log = logging::init(&g.workdir, &run_id, g.verbose);
        let reporter = Arc::new(Reporter::new(
            if g.output == Output::Json {
                OutputMode::Json
            } else {
                OutputMode::Text
            },
            g.quiet,
        ));
        if let Some(stale) = lock.stale() {
            reporter.emit(Event::Notice {
                message: format!(
                    "a previous run ({stale}) ended without releasing the {}; resuming from its state",
                    match lock {
                        Held::File(_) => "workdir",
                        Held::Lease(_) => "state lock (its Lease expired)",
                    }
                ),
            });
        }
        match &log {
            Ok(path) => tracing::info!(run = %run_id, log = %path.display(), "{command} started"),
            Err(e) => eprintln!("warning: no run log ({e})"),
        }
        let state = match runtime.block_on(state_backend.load()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Err(exit::STATE_ERROR);
            }
        };
        // A shared backend that is still empty while this workdir holds a
        // state: starting afresh would forget everything that file records.
        let local_file = super::state_path(&g.workdir);
        if matches!(lock, Held::Lease(_)) && state.steps.is_empty() && local_file.exists() {
            eprintln!(
                "error: {} is empty but this workdir has a state file ({})",
                state_backend.describe(),
                local_file.display()
            );
            eprintln!("hint: move it there first: `nautes-install migrate-state --to kubernetes -i INVENTORY`");
            return Err(exit::STATE_ERROR);
        }
        let inv = &loaded.inventory;
        let outputs_dir = super::outputs_dir(g, loaded);
        if let Err(e) = create_private_dir(&outputs_dir) {
            eprintln!("error: cannot create outputs directory {}: {e}", outputs_dir.display());
            return Err(exit::STATE_ERROR);
        }
        let services = Arc::new(Services::default());
        services.insert(ssh_pool(g, loaded));
        let env = RunEnv {
            base_dir: absolute(&loaded.base_dir),
            workdir: absolute(&g.workdir),
            outputs_dir: absolute(&outputs_dir),
            limits: super::limits(&inv.settings.timeouts),
            services,
            full_teardown: command == "destroy",
        };
        let concurrency = g
            .concurrency
            .or(inv.settings.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);
        Ok(Prepared {
            store: StateStore::with_backend(state_backend, state),
            reporter,
            run_id,
            env,
            concurrency,
        })
    }

    fn run<F, Fut>(self, g: &GlobalArgs, command: &str, total: usize, to_run: usize, body: F) -> u8
    where
        F: FnOnce(Engine) -> Fut,
        Fut: std::future::Future<Output = Result<RunSummary, crate::engine::executor::EngineError>>,
    {
        let Session {
            runtime,
            lock,
            store,
            reporter,
            run_id,
            env,
            concurrency,
        } = self;
        let text_output = g.output == Output::Text && !g.quiet;
        let code = runtime.block_on(async move {
            let (stop_tx, stop_rx) = watch::channel(0u8);
            tokio::spawn(watch_signals(stop_tx, reporter.clone()));
            let run_record = RunRecord {
                id: run_id.clone(),
                command: command.to_string(),
                started_at: now_rfc3339(),
                finished_at: None,
                result: None,
            };
            if let Err(e) = store.update(|st| st.push_run(run_record)).await {
                eprintln!("error: {e}");
                return exit::STATE_ERROR;
            }
            reporter.emit(Event::RunStarted {
                run_id: run_id.clone(),
                command: command.to_string(),
                total,
                to_run,
            });
            let engine = Engine {
                registry: components::registry(),
                store: store.clone(),
                reporter: reporter.clone(),
                concurrency,
                stop: stop_rx,
                env: env.clone(),
            };
            let outcome = body(engine).await;
            if let Some(pool) = env.services.get::<SshPool>() {
                pool.close_all().await;
                let _ = std::fs::remove_dir_all(&pool.options().control_dir);
            }
            let (code, result_text) = match &outcome {
                Ok(s) if s.interrupted => (exit::INTERRUPTED, "interrupted".to_string()),
                Ok(s) if s.ok() => (exit::OK, "ok".to_string()),
                Ok(s) => (exit::STEP_FAILED, format!("{} failed", s.failed.len())),
                Err(e) => (exit::STATE_ERROR, e.to_string()),
            };
            let run_id = run_id.clone();
            store.stage(|st| {
                if let Some(r) = st.runs.iter_mut().rev().find(|r| r.id == run_id) {
                    r.finished_at = Some(now_rfc3339());
                    r.result = Some(result_text.clone());
                }
            });
            // The run's record with everything else, as one full state file.
            let _ = store.compact().await;
            match outcome {
                Ok(s) => {
                    reporter.emit(Event::RunFinished {
                        ok: s.ok(),
                        applied: s.applied,
                        destroyed: s.destroyed,
                        failed: s.failed.len(),
                        blocked: s.blocked.len(),
                        unchanged: s.unchanged,
                        not_started: s.not_started,
                        not_selected: s.not_selected,
                        aborted: s.aborted.len(),
                        skipped: s
                            .blocked
                            .iter()
                            .map(|(id, because)| Skipped {
                                id: id.clone(),
                                because: because.clone(),
                            })
                            .collect(),
                        interrupted: s.interrupted,
                        elapsed_ms: reporter.elapsed().as_millis() as u64,
                    });
                    if !s.failed.is_empty() && text_output {
                        eprintln!("\nFailed steps:");
                        for (id, msg) in &s.failed {
                            eprintln!("  {id}: {msg}");
                        }
                        eprintln!("Fix the cause and run the same command again: finished steps are not redone.");
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
            code
        });
        // Cleared at once so the next run need not wait for it to expire.
        runtime.block_on(lock.release());
        code
    }
}

/// What a session needs besides its runtime and lock.
struct Prepared {
    store: StateStore,
    reporter: Arc<Reporter>,
    run_id: String,
    env: RunEnv,
    concurrency: usize,
}

/// Ctrl-C (or SIGTERM) stops the run now: running steps are cancelled
/// (their child processes killed, remote commands dropped) and recorded as
/// interrupted, nothing new starts, and the SSH masters are closed. A second
/// signal, while that cleanup runs, exits at once.
pub(crate) async fn watch_signals(stop: watch::Sender<u8>, reporter: Arc<Reporter>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut count = 0u8;
    loop {
        let got = match term.as_mut() {
            Some(t) => tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = t.recv() => r.is_some(),
            },
            None => tokio::signal::ctrl_c().await.is_ok(),
        };
        if !got {
            return;
        }
        count += 1;
        if count == 1 {
            reporter.emit(Event::Notice {
                message:
                    "stopping: cancelling running steps (they run again next time); interrupt again to quit at once"
                        .into(),
            });
            let _ = stop.send(ABORT);
        } else {
            // Masters die with us (see the SSH driver); their sockets live here.
            let _ = std::fs::remove_dir_all(control_dir());
            eprintln!("quitting");
            std::process::exit(exit::INTERRUPTED.into());
        }
    }
}

/// Where this process's SSH master sockets live: short (sockets have a ~100
/// byte path limit) and per process, removed on every exit we control.
pub(crate) fn control_dir() -> PathBuf {
    std::env::temp_dir().join(format!("nautes-ssh-{}", std::process::id()))
}

/// SSH connections for the run: host keys checked against the inventory's
/// known_hosts or `<workdir>/known_hosts`.
pub(crate) fn ssh_pool(g: &GlobalArgs, loaded: &Loaded) -> SshPool {
    let inv = &loaded.inventory;
    let known_hosts = match &inv.ssh.known_hosts {
        Some(k) => absolute(&loaded.resolve(k)),
        None => absolute(&g.workdir.join("known_hosts")),
    };
    let limits = super::limits(&inv.settings.timeouts);
    SshPool::new(SshOptions {
        known_hosts,
        policy: if g.accept_new_host_keys {
            HostKeyPolicy::AcceptNew
        } else {
            HostKeyPolicy::Strict
        },
        control_dir: control_dir(),
        connect_timeout: limits.ssh_connect,
        command_timeout: limits.command,
        connect_attempts: 3,
    })
}

pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
