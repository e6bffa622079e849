//! What a run would do: compare the plan with the recorded state, step by
//! step, and say why each step runs (or why not).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{dag, Plan};
use crate::state::{State, StepStatus};
use crate::util::unix_now;

/// Output keys that describe one run (what it wrote, counts) rather than
/// the result: ignored when deciding whether a re-checked step changed.
pub const PER_RUN_OUTPUTS: &[&str] = &[
    REFRESH_AFTER,
    "written",
    "vaultWritten",
    "initialisedNow",
    "issued",
    "lastCommit",
    "keptUserEdits",
    "unchanged",
    "pruned",
    "changed",
];

/// `outputs` without its per-run keys, at any depth.
pub fn lasting(outputs: &serde_json::Value) -> serde_json::Value {
    match outputs {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .filter(|(k, _)| !PER_RUN_OUTPUTS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), lasting(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Never applied.
    New,
    /// Its own inputs changed since it was applied: these fields of its
    /// spec (dotted paths; empty if the old spec was not recorded).
    InputsChanged { fields: Vec<String> },
    /// Something it needs runs in this plan or ran after it.
    DependencyChanged { needs: Vec<String> },
    /// A previous run was stopped while this step was running.
    Interrupted,
    /// It failed last time.
    PreviouslyFailed,
    /// Chosen with --only / --from.
    Forced,
    /// Done, but its outputs asked to run again after a time that has
    /// passed (a certificate or token near expiry).
    Due,
    /// Done, and everything it needs that runs now is only being re-checked
    /// (`Due`, or itself a re-check): it runs only if one of those changes
    /// its outputs, which the engine decides when it gets there.
    Recheck { needs: Vec<String> },
    /// Done, inputs and dependencies as recorded: nothing to do.
    Unchanged,
    /// Not chosen with --only / --from.
    NotSelected,
    /// In the state but no longer in the inventory: it will be torn down.
    Removed,
    /// Done and unchanged here, but the live systems differ from what it
    /// made (`plan --refresh`): these objects.
    Drifted { objects: Vec<String> },
}

impl Reason {
    pub fn runs(&self) -> bool {
        !matches!(self, Reason::Unchanged | Reason::NotSelected)
    }

    /// Runs whatever happens (as opposed to a conditional re-check).
    pub fn runs_for_sure(&self) -> bool {
        self.runs() && !matches!(self, Reason::Recheck { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Reason::New => "new".into(),
            Reason::InputsChanged { fields } if fields.is_empty() => "inputs changed".into(),
            Reason::InputsChanged { fields } => {
                const SHOWN: usize = 6;
                let mut text = format!(
                    "inputs changed: {}",
                    fields.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ")
                );
                if fields.len() > SHOWN {
                    text.push_str(&format!(" and {} more", fields.len() - SHOWN));
                }
                text
            }
            Reason::DependencyChanged { needs } => {
                format!("dependency changed: {}", needs.join(", "))
            }
            Reason::Interrupted => "interrupted in a previous run".into(),
            Reason::PreviouslyFailed => "failed in a previous run".into(),
            Reason::Forced => "selected".into(),
            Reason::Due => "due for renewal or re-check".into(),
            Reason::Recheck { needs } => format!("only if re-checking {} changes it", needs.join(", ")),
            Reason::Unchanged => "unchanged".into(),
            Reason::NotSelected => "not selected".into(),
            Reason::Removed => "removed from the inventory".into(),
            Reason::Drifted { objects } => {
                const SHOWN: usize = 3;
                let mut text = format!(
                    "changed outside nautes-install: {}",
                    objects.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ")
                );
                if objects.len() > SHOWN {
                    text.push_str(&format!(" and {} more", objects.len() - SHOWN));
                }
                text
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: String,
    pub description: String,
    /// The steps it needs (for `plan -v` and JSON).
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(flatten)]
    pub reason: Reason,
}

/// Which steps a run is limited to.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Run exactly these (and what they need, if not done).
    pub only: Vec<String>,
    /// Run this step and everything after it.
    pub from: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// In plan order.
    pub decisions: Vec<Decision>,
    /// Recorded steps no longer planned, in teardown order.
    pub removals: Vec<Decision>,
}

impl Diff {
    pub fn to_run(&self) -> BTreeSet<String> {
        self.decisions
            .iter()
            .filter(|d| d.reason.runs())
            .map(|d| d.id.clone())
            .collect()
    }
}

/// Unknown ids in a selection, named back to the user.
#[derive(Debug)]
pub struct UnknownSteps(pub Vec<String>);

pub fn diff(plan: &Plan, state: &State, selection: &Selection) -> Result<Diff, UnknownSteps> {
    let nodes = plan.graph();
    let needs_nodes = plan.needs_graph();
    let known: BTreeSet<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    let requested: Vec<&String> = selection.only.iter().chain(selection.from.iter()).collect();
    let unknown: Vec<String> = requested
        .iter()
        .filter(|id| !known.contains(id.as_str()))
        .map(|s| s.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(UnknownSteps(unknown));
    }

    let mut forced: BTreeSet<String> = selection.only.iter().cloned().collect();
    if let Some(from) = &selection.from {
        let root: BTreeSet<String> = [from.clone()].into();
        forced.extend(dag::dependents_of(&nodes, &root));
        forced.insert(from.clone());
    }
    let selected: Option<BTreeSet<String>> = if forced.is_empty() {
        None
    } else {
        let mut s = dag::needs_of(&needs_nodes, &forced);
        s.extend(forced.iter().cloned());
        Some(s)
    };

    let mut runs: BTreeSet<&str> = BTreeSet::new();
    let mut rechecks: BTreeSet<&str> = BTreeSet::new();
    let mut decisions = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let reason = if selected.as_ref().is_some_and(|s| !s.contains(&step.id)) {
            Reason::NotSelected
        } else {
            decide(step, state, &runs, &rechecks, forced.contains(&step.id))
        };
        match reason {
            Reason::Due | Reason::Recheck { .. } => {
                rechecks.insert(step.id.as_str());
            }
            ref r if r.runs() => {
                runs.insert(step.id.as_str());
            }
            _ => {}
        }
        decisions.push(Decision {
            id: step.id.clone(),
            description: step.description.clone(),
            needs: step.needs.clone(),
            reason,
        });
    }

    Ok(Diff {
        decisions,
        removals: removals(plan, state),
    })
}

fn decide(step: &super::Step, state: &State, runs: &BTreeSet<&str>, rechecks: &BTreeSet<&str>, forced: bool) -> Reason {
    let Some(rec) = state.steps.get(&step.id) else {
        return Reason::New;
    };
    match rec.status {
        StepStatus::Running | StepStatus::Destroying | StepStatus::Interrupted => return Reason::Interrupted,
        StepStatus::Failed => return Reason::PreviouslyFailed,
        StepStatus::Done => {}
    }
    if rec.fingerprint != step.fingerprint {
        let mut fields = Vec::new();
        changed_fields("", &rec.spec, &step.spec, &mut fields);
        if rec.kind != step.kind {
            fields.insert(0, "kind".into());
        }
        return Reason::InputsChanged { fields };
    }
    if forced {
        return Reason::Forced;
    }
    if rec
        .outputs
        .get(REFRESH_AFTER)
        .and_then(serde_json::Value::as_u64)
        .is_some_and(|at| at <= unix_now())
    {
        return Reason::Due;
    }
    // A need that runs now, or that was re-applied after this step was, or
    // that this step did not need when it was applied, invalidates it.
    let changed: Vec<String> = step
        .needs
        .iter()
        .filter(|n| {
            runs.contains(n.as_str())
                || match (rec.needs_revisions.get(*n), state.steps.get(*n)) {
                    (Some(seen), Some(now)) => *seen != now.revision,
                    _ => true,
                }
        })
        .cloned()
        .collect();
    if !changed.is_empty() {
        return Reason::DependencyChanged { needs: changed };
    }
    let rechecked: Vec<String> = step
        .needs
        .iter()
        .filter(|n| rechecks.contains(n.as_str()))
        .cloned()
        .collect();
    if !rechecked.is_empty() {
        return Reason::Recheck { needs: rechecked };
    }
    Reason::Unchanged
}

/// Dotted paths (`config.servers[1]`) at which two specs differ: the
/// deepest differing field, as `terraform plan` names attributes.
fn changed_fields(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => changed_fields(&at(k), x, y, out),
                    _ => out.push(at(k)),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                changed_fields(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(if path.is_empty() { "spec".into() } else { path.into() }),
        _ => {}
    }
}

/// Recorded steps missing from the plan, ordered so a step is torn down
/// before anything it needed.
fn removals(plan: &Plan, state: &State) -> Vec<Decision> {
    let planned: BTreeSet<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    let gone: BTreeMap<&String, _> = state
        .steps
        .iter()
        .filter(|(id, _)| !planned.contains(id.as_str()))
        .collect();
    let nodes: Vec<(String, Vec<String>)> = gone.iter().map(|(id, rec)| ((*id).clone(), rec.ordering())).collect();
    let order = dag::topo_order(&nodes).unwrap_or_else(|_| (0..nodes.len()).collect());
    order
        .into_iter()
        .rev()
        .map(|i| Decision {
            id: nodes[i].0.clone(),
            description: gone[&nodes[i].0].description.clone(),
            needs: gone[&nodes[i].0].needs.clone(),
            reason: Reason::Removed,
        })
        .collect()
}

/// The output key by which a step asks to run again after a time (seconds
/// since the Unix epoch) even when nothing else changed.
pub const REFRESH_AFTER: &str = "refreshAfter";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Step;
    use crate::state::StepRecord;
    use serde_json::json;

    fn done(step: &Step, revision: u64, needs_revisions: &[(&str, u64)]) -> StepRecord {
        StepRecord {
            kind: step.kind.clone(),
            description: String::new(),
            needs: step.needs.clone(),
            after: step.after.clone(),
            spec: step.spec.clone(),
            settings: json!(null),
            fingerprint: step.fingerprint.clone(),
            status: StepStatus::Done,
            revision,
            needs_revisions: needs_revisions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            outputs: json!(null),
            started_at: None,
            finished_at: None,
            attempts: 1,
            last_error: None,
        }
    }

    fn reason(d: &Diff, id: &str) -> Reason {
        d.decisions.iter().find(|x| x.id == id).unwrap().reason.clone()
    }

    #[test]
    fn after_orders_without_propagating_changes_but_needs_propagate() {
        let a = Step::new("a", "t", "", json!({"v": 1}));
        let b = Step::new("b", "t", "", json!({})).after(["a"]);
        let c = Step::new("c", "t", "", json!({})).needs(["a"]);
        let mut state = State::default();
        state.steps.insert("a".into(), done(&a, 1, &[]));
        state.steps.insert("b".into(), done(&b, 2, &[]));
        state.steps.insert("c".into(), done(&c, 3, &[("a", 1)]));
        let changed_a = Step::new("a", "t", "", json!({"v": 2}));
        let plan = Plan::from_steps(vec![b, c, changed_a]).unwrap();
        assert_eq!(plan.steps[0].id, "a", "after/needs order a first");
        let d = diff(&plan, &state, &Selection::default()).unwrap();
        assert_eq!(
            reason(&d, "a"),
            Reason::InputsChanged {
                fields: vec!["v".into()]
            }
        );
        assert_eq!(reason(&d, "b"), Reason::Unchanged);
        assert!(matches!(reason(&d, "c"), Reason::DependencyChanged { .. }));
    }

    #[test]
    fn a_step_whose_refresh_time_passed_runs_again_and_one_in_the_future_does_not() {
        let a = Step::new("a", "t", "", json!({}));
        let b = Step::new("b", "t", "", json!({}));
        let mut state = State::default();
        let mut rec = done(&a, 1, &[]);
        rec.outputs = json!({ REFRESH_AFTER: unix_now() - 1 });
        state.steps.insert("a".into(), rec);
        let mut rec = done(&b, 2, &[]);
        rec.outputs = json!({ REFRESH_AFTER: unix_now() + 3600 });
        state.steps.insert("b".into(), rec);
        let plan = Plan::from_steps(vec![a, b]).unwrap();
        let d = diff(&plan, &state, &Selection::default()).unwrap();
        assert_eq!(reason(&d, "a"), Reason::Due);
        assert_eq!(reason(&d, "b"), Reason::Unchanged);
    }

    #[test]
    fn what_needs_a_recheck_runs_only_conditionally_unless_something_else_changed() {
        let a = Step::new("a", "t", "", json!({}));
        let e = Step::new("e", "t", "", json!({"v": 2}));
        let b = Step::new("b", "t", "", json!({})).needs(["a"]);
        let c = Step::new("c", "t", "", json!({})).needs(["b"]);
        let d = Step::new("d", "t", "", json!({})).needs(["a", "e"]);
        let mut state = State::default();
        let mut rec = done(&a, 1, &[]);
        rec.outputs = json!({ REFRESH_AFTER: unix_now() - 1 });
        state.steps.insert("a".into(), rec);
        let mut old_e = done(&Step::new("e", "t", "", json!({"v": 1})), 2, &[]);
        old_e.outputs = json!({});
        state.steps.insert("e".into(), old_e);
        state.steps.insert("b".into(), done(&b, 3, &[("a", 1)]));
        state.steps.insert("c".into(), done(&c, 4, &[("b", 3)]));
        state.steps.insert("d".into(), done(&d, 5, &[("a", 1), ("e", 2)]));
        let plan = Plan::from_steps(vec![a, e, b, c, d]).unwrap();
        let diff = diff(&plan, &state, &Selection::default()).unwrap();
        assert_eq!(reason(&diff, "a"), Reason::Due);
        assert_eq!(
            reason(&diff, "b"),
            Reason::Recheck {
                needs: vec!["a".into()]
            }
        );
        assert_eq!(
            reason(&diff, "c"),
            Reason::Recheck {
                needs: vec!["b".into()]
            }
        );
        assert_eq!(
            reason(&diff, "d"),
            Reason::DependencyChanged {
                needs: vec!["e".into()]
            }
        );
        assert!(reason(&diff, "b").runs() && !reason(&diff, "b").runs_for_sure());
    }

    #[test]
    fn per_run_output_keys_do_not_count_as_a_change() {
        let a = json!({"url": "u", "written": ["x"], REFRESH_AFTER: 5, "nested": {"pruned": 1, "objects": [1]}});
        let b = json!({"url": "u", "written": [], REFRESH_AFTER: 9, "nested": {"pruned": 0, "objects": [1]}});
        assert_eq!(lasting(&a), lasting(&b));
        let c = json!({"url": "other", "written": []});
        assert_ne!(lasting(&a), lasting(&c));
    }

    #[test]
    fn a_need_reapplied_after_a_crash_still_reruns_its_dependent() {
        let a = Step::new("a", "t", "", json!({}));
        let c = Step::new("c", "t", "", json!({})).needs(["a"]);
        let mut state = State::default();
        // a was re-applied (revision 5) but c last saw revision 1.
        state.steps.insert("a".into(), done(&a, 5, &[]));
        state.steps.insert("c".into(), done(&c, 3, &[("a", 1)]));
        let plan = Plan::from_steps(vec![a, c]).unwrap();
        let d = diff(&plan, &state, &Selection::default()).unwrap();
        assert_eq!(reason(&d, "a"), Reason::Unchanged);
        assert!(matches!(reason(&d, "c"), Reason::DependencyChanged { .. }));
    }
}
