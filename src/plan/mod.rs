//! From inventory to a DAG of steps. A step is a value: an id, the steps it
//! needs, the inputs it acts on (fingerprinted) and the kind of handler that
//! applies and destroys it. Nothing here touches the world.

pub mod dag;
pub mod diff;
pub mod fingerprint;

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inventory::Diagnostic;

/// The typed inputs of one kind of step: what a component plans and its
/// handler receives back. The kind names it in the state and the plan, so
/// the planner and the handler cannot disagree about which struct a step
/// holds.
pub trait StepSpec: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub id: String,
    pub kind: String,
    pub description: String,
    pub needs: Vec<String>,
    /// Steps that must finish first when both run in the same run, without
    /// making this step re-run when they change (rolling order of nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// What the step acts on. Changing it changes the fingerprint, which
    /// re-runs the step and everything after it.
    pub spec: Value,
    /// How the step runs (timeouts and the like): not part of the
    /// fingerprint, so tuning a timeout never re-runs finished work.
    #[serde(default)]
    pub settings: Value,
    pub fingerprint: String,
}

impl Step {
    pub fn new(id: impl Into<String>, kind: &str, description: impl Into<String>, spec: Value) -> Step {
        let fingerprint = fingerprint::fingerprint(kind, &spec);
        Step {
            id: id.into(),
            kind: kind.to_string(),
            description: description.into(),
            needs: Vec::new(),
            after: Vec::new(),
            spec,
            settings: Value::Null,
            fingerprint,
        }
    }

    /// A step of `S`'s kind holding `spec`.
    pub fn of<S: StepSpec>(id: impl Into<String>, description: impl Into<String>, spec: &S) -> Step {
        let value = serde_json::to_value(spec).expect("a step spec serializes: its fields are plain data");
        Step::new(id, S::KIND, description, value)
    }

    pub fn needs<I, S>(mut self, ids: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for id in ids {
            let id = id.into();
            if !self.needs.contains(&id) {
                self.needs.push(id);
            }
        }
        self
    }

    pub fn after<I, S>(mut self, ids: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for id in ids {
            let id = id.into();
            if !self.after.contains(&id) && id != self.id {
                self.after.push(id);
            }
        }
        self
    }

    /// Everything that must finish before this step in one run.
    pub fn ordering(&self) -> impl Iterator<Item = &String> {
        self.needs.iter().chain(self.after.iter())
    }

    pub fn with_settings(mut self, settings: Value) -> Step {
        self.settings = settings;
        self
    }
}

/// Steps in an order that respects every `needs` edge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
}

#[derive(Debug)]
pub enum PlanError {
    /// Problems the user can fix in the inventory (with positions).
    Invalid(Vec<Diagnostic>),
    /// Steps that need each other, as `a -> b -> a`.
    Cycle(Vec<String>),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Invalid(ds) => {
                for d in ds {
                    writeln!(f, "{}: {}", d.path, d.message)?;
                }
                Ok(())
            }
            PlanError::Cycle(c) => write!(f, "steps depend on each other in a cycle: {}", c.join(" -> ")),
        }
    }
}

impl Plan {
    /// Order steps, rejecting duplicate ids, dangling needs and cycles.
    pub fn from_steps(steps: Vec<Step>) -> Result<Plan, PlanError> {
        let mut seen = HashSet::with_capacity(steps.len());
        let mut problems = Vec::new();
        for s in &steps {
            if !seen.insert(s.id.as_str()) {
                problems.push(Diagnostic::error("", format!("two steps share the id `{}`", s.id)));
            }
        }
        for s in &steps {
            for n in &s.needs {
                if !seen.contains(n.as_str()) {
                    problems.push(Diagnostic::error(
                        "",
                        format!("step `{}` needs `{n}`, which is not planned", s.id),
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(PlanError::Invalid(problems));
        }
        // Borrowed ids: a plan of many tenants has a hundred thousand steps.
        let nodes: Vec<(&str, Vec<&str>)> = steps
            .iter()
            // An `after` on a step that is not planned (a removed node) is
            // moot: the ordering skips ids it does not know.
            .map(|s| (s.id.as_str(), s.ordering().map(String::as_str).collect()))
            .collect();
        let order = dag::topo_order(&nodes).map_err(PlanError::Cycle)?;
        drop(nodes);
        let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
        Ok(Plan {
            steps: order.into_iter().filter_map(|i| slots[i].take()).collect(),
        })
    }

    pub fn get(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Ordering edges: `needs` and `after`.
    pub fn graph(&self) -> Vec<(String, Vec<String>)> {
        graph(&self.steps)
    }

    /// Data edges only: `needs`.
    pub fn needs_graph(&self) -> Vec<(String, Vec<String>)> {
        self.steps.iter().map(|s| (s.id.clone(), s.needs.clone())).collect()
    }

    pub fn index(&self) -> HashMap<&str, &Step> {
        self.steps.iter().map(|s| (s.id.as_str(), s)).collect()
    }
}

fn graph(steps: &[Step]) -> Vec<(String, Vec<String>)> {
    let ids: BTreeSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    steps
        .iter()
        .map(|s| {
            // An `after` on a step that is not planned (a removed node) is moot.
            let edges = s.ordering().filter(|n| ids.contains(n.as_str())).cloned().collect();
            (s.id.clone(), edges)
        })
        .collect()
}

/// `*` matches any run of characters; everything else is literal.
pub fn pattern_matches(pattern: &str, id: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == id;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !id.starts_with(first) || !id[first.len()..].ends_with(last) || id.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &id[first.len()..id.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns() {
        assert!(pattern_matches("k3s/*", "k3s/main/server/a"));
        assert!(pattern_matches("*/server/*", "k3s/main/server/a"));
        assert!(!pattern_matches("k3s/*/agent/*", "k3s/main/server/a"));
        assert!(pattern_matches("hook/a", "hook/a"));
        assert!(!pattern_matches("hook/a", "hook/ab"));
        assert!(pattern_matches("a*a", "aa"));
        assert!(!pattern_matches("ab*ba", "aba"));
    }

    #[test]
    fn from_steps_rejects_dangling_needs_and_cycles() {
        let a = Step::new("a", "t", "", json!({})).needs(["b"]);
        let b = Step::new("b", "t", "", json!({})).needs(["a"]);
        assert!(matches!(Plan::from_steps(vec![a.clone(), b]), Err(PlanError::Cycle(_))));
        assert!(matches!(Plan::from_steps(vec![a]), Err(PlanError::Invalid(_))));
    }
}
