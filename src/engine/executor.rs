//! Runs steps: independent ones in parallel up to a bound, each only after
//! what it waits on has succeeded. A failure stops its dependents but lets
//! running siblings finish; a stop request lets running steps finish and
//! starts nothing new; an abort drops them (their children are killed).
//! What makes a re-run resume correctly is the order in which transitions
//! reach the state: a step's `running` (or `destroying`) record is written
//! before its work begins, and a step's end is written before anything that
//! waits on it begins. The end is staged in memory and written by the next
//! write, which is usually the `running` of the step that waited on it, so
//! a chain costs one state write per step, not two; when a finished step
//! starts nothing, the scheduler writes it at once on its own (`flushes`).
//! "Written" is in the journal's file, in order, which a killed process
//! cannot undo; the journal's `fdatasync` runs in the background (group
//! commit) and the full write at the end of a schedule makes all of it
//! durable. Nothing here waits for the disk: a power loss may take the last
//! records, and then the next run redoes those steps, which every step must
//! bear anyway (the crash can always fall between a step's work and its
//! record). What cannot be redone safely (a create in a system that does
//! not forget) is guarded by an intent, which `update` makes durable first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::events::{Action, Event, Reporter};
use super::handler::{Registry, Services, StepContext, StepError};
use super::limits::Limits;
use crate::plan::diff::{lasting, Diff, Reason};
use crate::plan::Plan;
use crate::state::{StateError, StateStore, StepRecord, StepStatus};
use crate::util::now_rfc3339;

/// 0 = keep going, 1 = start nothing new, 2 = abort running steps (their
/// work is dropped: child processes are killed, SSH commands cancelled).
pub type StopSignal = watch::Receiver<u8>;
pub const STOP_SCHEDULING: u8 = 1;
pub const ABORT: u8 = 2;

/// How a scheduled step runs, from why the plan runs it.
#[derive(Debug, Clone)]
enum RunMode {
    Always,
    /// Re-checked on its own (`Due`): runs, but its dependents need only
    /// re-run if its outputs changed.
    Recheck,
    /// Runs only if one of these needs changed its outputs in this run.
    IfChanged(Vec<String>),
}

/// Everything a step's context is made from.
#[derive(Clone)]
pub struct RunEnv {
    pub base_dir: PathBuf,
    pub workdir: PathBuf,
    pub outputs_dir: PathBuf,
    pub limits: Limits,
    pub services: Arc<Services>,
    pub full_teardown: bool,
}

pub struct Engine {
    pub registry: Registry,
    pub store: StateStore,
    pub reporter: Arc<Reporter>,
    pub concurrency: usize,
    pub stop: StopSignal,
    pub env: RunEnv,
}

#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub applied: usize,
    pub destroyed: usize,
    pub unchanged: usize,
    pub failed: Vec<(String, String)>,
    /// Steps that could not start, with the failed step that stopped them.
    pub blocked: Vec<(String, String)>,
    /// Steps that were running when the run was stopped.
    pub aborted: Vec<String>,
    /// Steps the run was to do that it never started (it was stopped).
    pub not_started: usize,
    /// Steps left out by --only / --from that were never applied.
    pub not_selected: usize,
    pub interrupted: bool,
}

impl RunSummary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.blocked.is_empty() && !self.interrupted
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
}

struct Job {
    id: String,
    waits_on: Vec<String>,
}

enum JobResult {
    Ok,
    /// A re-check found nothing changed: treated as done, counted unchanged.
    Unchanged,
    Failed(String),
    StateFailed(StateError),
}

impl Engine {
    /// Tear down removed steps, then apply what the diff says must run.
    pub async fn apply(&self, plan: &Plan, diff: &Diff) -> Result<RunSummary, EngineError> {
        let mut summary = RunSummary::default();
        let planned: Vec<String> = plan.steps.iter().map(|s| s.id.clone()).collect();
        self.store.update(|st| st.planned = planned).await?;
        if !diff.removals.is_empty() {
            let ids: Vec<String> = diff.removals.iter().map(|d| d.id.clone()).collect();
            self.destroy_steps(&ids, &mut summary).await?;
            if summary.interrupted {
                return Ok(summary);
            }
        }
        let to_run = diff.to_run();
        for d in &diff.decisions {
            if !d.reason.runs() {
                // A step left out by --only/--from is unchanged only if it
                // was ever applied; otherwise it simply has not run yet.
                let done = self
                    .store
                    .read(|st| st.steps.get(&d.id).is_some_and(|r| r.status == StepStatus::Done));
                if d.reason == Reason::NotSelected && !done {
                    summary.not_selected += 1;
                } else {
                    summary.unchanged += 1;
                }
                self.reporter.emit(Event::StepSkipped {
                    id: d.id.clone(),
                    reason: d.reason.describe(),
                });
            }
        }
        let steps: HashMap<&str, &crate::plan::Step> = plan.index();
        let jobs: Vec<Job> = plan
            .steps
            .iter()
            .filter(|s| to_run.contains(&s.id))
            .map(|s| Job {
                id: s.id.clone(),
                waits_on: s.ordering().filter(|n| to_run.contains(*n)).cloned().collect(),
            })
            .collect();
        let owned: Arc<HashMap<String, crate::plan::Step>> =
            Arc::new(steps.iter().map(|(k, v)| (k.to_string(), (*v).clone())).collect());
        let modes: Arc<HashMap<String, RunMode>> = Arc::new(
            diff.decisions
                .iter()
                .map(|d| {
                    let mode = match &d.reason {
                        Reason::Due => RunMode::Recheck,
                        Reason::Recheck { needs } => RunMode::IfChanged(needs.clone()),
                        _ => RunMode::Always,
                    };
                    (d.id.clone(), mode)
                })
                .collect(),
        );
        self.schedule(jobs, Action::Apply, &mut summary, move |engine, id| {
            let step = owned.get(&id).cloned();
            let mode = modes.get(&id).cloned().unwrap_or(RunMode::Always);
            async move {
                match step {
                    Some(step) => engine.apply_one(step, mode).await,
                    None => JobResult::Failed(format!("step `{id}` vanished from the plan")),
                }
            }
        })
        .await?;
        Ok(summary)
    }

    /// Tear down the given recorded steps, dependents before what they need.
    pub async fn destroy(&self, ids: &[String]) -> Result<RunSummary, EngineError> {
        let mut summary = RunSummary::default();
        self.destroy_steps(ids, &mut summary).await?;
        Ok(summary)
    }

    async fn destroy_steps(&self, ids: &[String], summary: &mut RunSummary) -> Result<(), EngineError> {
        let set: BTreeSet<&String> = ids.iter().collect();
        let needs: BTreeMap<String, Vec<String>> = self.store.read(|st| {
            ids.iter()
                .map(|id| (id.clone(), st.steps.get(id).map(|r| r.ordering()).unwrap_or_default()))
                .collect()
        });
        // A step can go once everything in the set that needs it is gone.
        let mut waits: BTreeMap<String, Vec<String>> = ids.iter().map(|id| (id.clone(), Vec::new())).collect();
        for (id, ns) in &needs {
            for n in ns {
                if set.contains(n) {
                    if let Some(w) = waits.get_mut(n) {
                        w.push(id.clone());
                    }
                }
            }
        }
        let jobs = ids
            .iter()
            .map(|id| Job {
                id: id.clone(),
                waits_on: waits.remove(id).unwrap_or_default(),
            })
            .collect();
        self.schedule(jobs, Action::Destroy, summary, |engine, id| async move {
            engine.destroy_one(id).await
        })
        .await
    }

    async fn schedule<F, Fut>(
        &self,
        jobs: Vec<Job>,
        action: Action,
        summary: &mut RunSummary,
        run: F,
    ) -> Result<(), EngineError>
    where
        F: Fn(Arc<EngineRef>, String) -> Fut,
        Fut: std::future::Future<Output = JobResult> + Send + 'static,
    {
        let engine = Arc::new(EngineRef::from(self));
        let order: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let position: HashMap<String, usize> = order.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        let mut waiting: HashMap<String, BTreeSet<String>> = jobs
            .into_iter()
            .map(|j| (j.id, j.waits_on.into_iter().collect()))
            .collect();
        // Jobs whose waits are over and that have not started, by their
        // place in `order`: the first is the next to start. Kept as jobs
        // finish, so starting one costs a lookup, not a scan of the plan.
        let mut ready: BTreeSet<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, id)| waiting.get(*id).is_some_and(BTreeSet::is_empty))
            .map(|(i, _)| i)
            .collect();
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for (id, ws) in &waiting {
            for w in ws {
                dependents.entry(w.clone()).or_default().push(id.clone());
            }
        }
        let mut started: BTreeSet<String> = BTreeSet::new();
        let mut running: JoinSet<(String, JobResult)> = JoinSet::new();
        let mut in_flight: BTreeSet<String> = BTreeSet::new();
        let mut task_ids: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut stop = self.stop.clone();
        let mut state_error: Option<StateError> = None;
        // Writes of staged step ends that no starting step carried.
        let mut flushes: JoinSet<Result<(), StateError>> = JoinSet::new();
        let mut end_staged = false;

        loop {
            let stopping = *stop.borrow() >= STOP_SCHEDULING || state_error.is_some();
            let mut spawned = false;
            if !stopping {
                while running.len() < self.concurrency.max(1) {
                    let Some(next) = ready.pop_first() else { break };
                    let id = &order[next];
                    if started.contains(id) {
                        continue; // blocked by a failure meanwhile
                    }
                    started.insert(id.clone());
                    in_flight.insert(id.clone());
                    let fut = run(engine.clone(), id.clone());
                    let id2 = id.clone();
                    let handle = running.spawn(async move { (id2, fut.await) });
                    task_ids.insert(handle.id(), id.clone());
                    spawned = true;
                }
            }
            // A started step writes the staged ends with its own record
            // before its work; with none started they are written now.
            if end_staged && !spawned {
                let store = engine.store.clone();
                flushes.spawn(async move { store.flush().await });
            }
            end_staged = false;
            if running.is_empty() {
                break;
            }
            tokio::select! {
                joined = running.join_next_with_id() => {
                    let Some(joined) = joined else { continue };
                    let (id, result) = match joined {
                        Ok((_, r)) => r,
                        // A panicking step is a bug: it fails alone, recorded
                        // as failed, and everything else carries on.
                        Err(e) => {
                            let id = task_ids.get(&e.id()).cloned().unwrap_or_default();
                            let message = format!("internal error in step {id}: {}", panic_message(e));
                            let result = engine
                                .record_failure(&id, action, StepError::new(message), 0)
                                .await;
                            (id, result)
                        }
                    };
                    in_flight.remove(&id);
                    waiting.remove(&id);
                    match result {
                        JobResult::Ok | JobResult::Unchanged => {
                            end_staged = true;
                            match (&result, action) {
                                (JobResult::Unchanged, _) => summary.unchanged += 1,
                                (_, Action::Apply) => summary.applied += 1,
                                (_, Action::Destroy) => summary.destroyed += 1,
                            }
                            for d in dependents.get(&id).into_iter().flatten() {
                                if let Some(w) = waiting.get_mut(d) {
                                    w.remove(&id);
                                    if w.is_empty() && !started.contains(d) {
                                        ready.extend(position.get(d));
                                    }
                                }
                            }
                        }
                        JobResult::Failed(msg) => {
                            summary.failed.push((id.clone(), msg));
                            self.block_dependents(&id, &dependents, &mut waiting, &mut started, summary);
                        }
                        JobResult::StateFailed(e) => {
                            summary.failed.push((id.clone(), e.to_string()));
                            state_error = Some(e);
                        }
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        // The signal's sender is gone: nobody can ask to stop any more.
                        continue;
                    }
                    if *stop.borrow() >= ABORT {
                        running.abort_all();
                        while running.join_next().await.is_some() {}
                        summary.interrupted = true;
                        if let Err(e) = engine.record_interrupted(&in_flight, action).await {
                            state_error = Some(e);
                        }
                        for id in &in_flight {
                            summary.aborted.push(id.clone());
                            self.reporter.emit(Event::StepInterrupted { id: id.clone(), action });
                        }
                        break;
                    }
                }
            }
        }
        while let Some(flushed) = flushes.join_next().await {
            if let Ok(Err(e)) = flushed {
                state_error.get_or_insert(e);
            }
        }
        // The run's end: everything durable as one full state file, its
        // journal folded in.
        if let Err(e) = engine.store.compact().await {
            state_error.get_or_insert(e);
        }
        if *stop.borrow() >= STOP_SCHEDULING {
            summary.interrupted = true;
        }
        summary.not_started += order.iter().filter(|id| !started.contains(*id)).count();
        if let Some(e) = state_error {
            return Err(e.into());
        }
        Ok(())
    }

    fn block_dependents(
        &self,
        failed: &str,
        dependents: &HashMap<String, Vec<String>>,
        waiting: &mut HashMap<String, BTreeSet<String>>,
        started: &mut BTreeSet<String>,
        summary: &mut RunSummary,
    ) {
        let mut queue = vec![failed.to_string()];
        while let Some(cur) = queue.pop() {
            for d in dependents.get(&cur).into_iter().flatten() {
                if started.insert(d.clone()) {
                    waiting.remove(d);
                    summary.blocked.push((d.clone(), failed.to_string()));
                    self.reporter.emit(Event::StepBlocked {
                        id: d.clone(),
                        blocked_by: failed.to_string(),
                    });
                    queue.push(d.clone());
                }
            }
        }
    }
}

/// The parts of the engine a running step needs, shareable across tasks.
pub struct EngineRef {
    pub(super) registry: Registry,
    pub(super) store: StateStore,
    reporter: Arc<Reporter>,
    env: RunEnv,
}

impl From<&Engine> for EngineRef {
    fn from(e: &Engine) -> Self {
        EngineRef {
            registry: e.registry.clone(),
            store: e.store.clone(),
            reporter: e.reporter.clone(),
            env: e.env.clone(),
        }
    }
}

impl EngineRef {
    pub(super) fn context(&self, id: &str, needs: &[String], settings: Value) -> StepContext {
        let needs_outputs = self.store.read(|st| {
            needs
                .iter()
                .filter_map(|n| st.steps.get(n).map(|r| (n.clone(), r.outputs.clone())))
                .collect()
        });
        let previous_outputs = self
            .store
            .read(|st| st.steps.get(id).map(|r| r.outputs.clone()).unwrap_or(Value::Null));
        StepContext {
            step_id: id.to_string(),
            previous_outputs,
            base_dir: self.env.base_dir.clone(),
            workdir: self.env.workdir.clone(),
            outputs_dir: self.env.outputs_dir.clone(),
            limits: self.env.limits.clone(),
            needs_outputs,
            settings,
            reporter: self.reporter.clone(),
            services: self.env.services.clone(),
            full_teardown: self.env.full_teardown,
            intents: super::intents::Intents::new(self.store.clone(), id),
        }
    }

    /// Whether every need in `needs` still has the revision this step saw
    /// when it last ran (their re-checks changed nothing).
    fn needs_unchanged(&self, id: &str, needs: &[String]) -> bool {
        self.store.read(|st| {
            let Some(rec) = st.steps.get(id) else { return false };
            needs.iter().all(|n| {
                st.steps
                    .get(n)
                    .is_some_and(|now| rec.needs_revisions.get(n) == Some(&now.revision))
            })
        })
    }

    async fn apply_one(self: Arc<Self>, step: crate::plan::Step, mode: RunMode) -> JobResult {
        if let RunMode::IfChanged(needs) = &mode {
            if self.needs_unchanged(&step.id, needs) {
                self.reporter.emit(Event::StepSkipped {
                    id: step.id.clone(),
                    reason: format!("re-checked {} and found no change", needs.join(", ")),
                });
                return JobResult::Unchanged;
            }
        }
        let begun = Instant::now();
        let recorded = self
            .store
            .record(|st| {
                let prev = st.steps.remove(&step.id);
                let rec = StepRecord {
                    kind: step.kind.clone(),
                    description: step.description.clone(),
                    needs: step.needs.clone(),
                    after: step.after.clone(),
                    spec: step.spec.clone(),
                    settings: step.settings.clone(),
                    fingerprint: step.fingerprint.clone(),
                    status: StepStatus::Running,
                    revision: prev.as_ref().map(|p| p.revision).unwrap_or(0),
                    needs_revisions: prev.as_ref().map(|p| p.needs_revisions.clone()).unwrap_or_default(),
                    outputs: prev.as_ref().map(|p| p.outputs.clone()).unwrap_or(Value::Null),
                    started_at: Some(now_rfc3339()),
                    finished_at: None,
                    attempts: prev.as_ref().map(|p| p.attempts).unwrap_or(0) + 1,
                    last_error: None,
                };
                st.steps.insert(step.id.clone(), rec);
            })
            .await;
        if let Err(e) = recorded {
            return JobResult::StateFailed(e);
        }
        self.reporter.emit(Event::StepStarted {
            id: step.id.clone(),
            description: step.description.clone(),
            action: Action::Apply,
        });
        // The span goes with the future, not the thread: a guard held across
        // an await would wrap whatever else that thread ran meanwhile.
        let span = tracing::info_span!(parent: None, "step", id = %step.id, action = "apply");
        let result = async {
            match self.registry.get(&step.kind) {
                Some(handler) => {
                    let ctx = self.context(&step.id, &step.needs, step.settings.clone());
                    handler.apply(&ctx, &step.spec).await
                }
                None => Err(StepError::new(format!("no handler for steps of kind `{}`", step.kind))),
            }
        }
        .instrument(span)
        .await;
        let elapsed_ms = begun.elapsed().as_millis() as u64;
        match result {
            Ok(outputs) => {
                // Staged, not written: the write that starts a dependent (or
                // the scheduler's follow-up flush) makes it durable with
                // that step's own `running`, one write where there were two.
                self.store.stage(|st| {
                    // A re-check that finds the same result keeps its
                    // revision, so what needs it has nothing to redo.
                    let same = !matches!(mode, RunMode::Always)
                        && st
                            .steps
                            .get(&step.id)
                            .is_some_and(|r| lasting(&r.outputs) == lasting(&outputs));
                    let revision = match st.steps.get(&step.id) {
                        Some(r) if same => r.revision,
                        _ => st.next_revision(),
                    };
                    let seen: BTreeMap<String, u64> = step
                        .needs
                        .iter()
                        .filter_map(|n| st.steps.get(n).map(|r| (n.clone(), r.revision)))
                        .collect();
                    if let Some(rec) = st.steps.get_mut(&step.id) {
                        rec.status = StepStatus::Done;
                        rec.revision = revision;
                        rec.needs_revisions = seen;
                        rec.outputs = outputs;
                        rec.finished_at = Some(now_rfc3339());
                    }
                });
                self.reporter.emit(Event::StepFinished {
                    id: step.id.clone(),
                    action: Action::Apply,
                    elapsed_ms,
                });
                JobResult::Ok
            }
            Err(err) => self.record_failure(&step.id, Action::Apply, err, elapsed_ms).await,
        }
    }

    async fn destroy_one(self: Arc<Self>, id: String) -> JobResult {
        let begun = Instant::now();
        let rec = self
            .store
            .record(|st| {
                st.steps.get_mut(&id).map(|r| {
                    r.status = StepStatus::Destroying;
                    r.started_at = Some(now_rfc3339());
                    r.clone()
                })
            })
            .await;
        let rec = match rec {
            Ok(Some(r)) => r,
            Ok(None) => return JobResult::Ok,
            Err(e) => return JobResult::StateFailed(e),
        };
        self.reporter.emit(Event::StepStarted {
            id: id.clone(),
            description: rec.description.clone(),
            action: Action::Destroy,
        });
        let span = tracing::info_span!(parent: None, "step", id = %id, action = "destroy");
        let result = async {
            match self.registry.get(&rec.kind) {
                Some(handler) => {
                    let ctx = self.context(&id, &rec.needs, rec.settings.clone());
                    handler.destroy(&ctx, &rec.spec, &rec.outputs).await
                }
                None => Err(StepError::new(format!(
                    "no handler for steps of kind `{}` (state written by another version?)",
                    rec.kind
                ))),
            }
        }
        .instrument(span)
        .await;
        let elapsed_ms = begun.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                // Staged like an apply's `done` (see `apply_one`).
                self.store.stage(|st| st.steps.remove(&id));
                self.reporter.emit(Event::StepFinished {
                    id,
                    action: Action::Destroy,
                    elapsed_ms,
                });
                JobResult::Ok
            }
            Err(err) => self.record_failure(&id, Action::Destroy, err, elapsed_ms).await,
        }
    }

    /// Steps cut short by a stop request: recorded as interrupted (a
    /// teardown stays `destroying`), so the next run redoes them.
    async fn record_interrupted(&self, ids: &BTreeSet<String>, action: Action) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        let at = now_rfc3339();
        self.store
            .update(|st| {
                for id in ids {
                    if let Some(rec) = st.steps.get_mut(id) {
                        if action == Action::Apply {
                            rec.status = StepStatus::Interrupted;
                        }
                        rec.last_error = Some("interrupted (Ctrl-C or SIGTERM) before it finished".into());
                        rec.finished_at = Some(at.clone());
                    }
                }
            })
            .await
    }

    async fn record_failure(&self, id: &str, action: Action, err: StepError, elapsed_ms: u64) -> JobResult {
        let message = err.message;
        let saved = self
            .store
            .record(|st| {
                if let Some(rec) = st.steps.get_mut(id) {
                    rec.status = StepStatus::Failed;
                    rec.last_error = Some(message.clone());
                    rec.finished_at = Some(now_rfc3339());
                }
            })
            .await;
        self.reporter.emit(Event::StepFailed {
            id: id.to_string(),
            action,
            error: message.clone(),
            elapsed_ms,
        });
        match saved {
            Ok(()) => JobResult::Failed(message),
            Err(e) => JobResult::StateFailed(e),
        }
    }
}

/// What a panicking step said, for its error message.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "it panicked".to_string()
    }
}
