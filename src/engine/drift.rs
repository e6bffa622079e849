//! Drift: every step the state records as done is asked, through its
//! handler, what differs between the live systems and what its `apply`
//! would make of the current inventory. Handlers only read; nothing here
//! writes the state either, so drift can run beside nothing but a reader's
//! rights.

use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::executor::{Engine, EngineRef};
use super::handler::Difference;
use crate::plan::Plan;
use crate::state::StepStatus;

/// What one step's check found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Outcome {
    /// Read and compared; empty when the live systems hold what apply makes.
    Checked { differences: Vec<Difference> },
    /// This kind of step has no drift check (or cannot check without writing).
    NotChecked,
    /// The state does not record the step as done: apply would run it.
    NotApplied,
    /// The live systems could not be read or compared.
    Failed { error: String },
    /// Recorded as done but no longer in the inventory: apply tears it down.
    Removed,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepDrift {
    pub id: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl StepDrift {
    /// Whether apply would change something for this step.
    pub fn differs(&self) -> bool {
        match &self.outcome {
            Outcome::Checked { differences } => !differences.is_empty(),
            Outcome::NotApplied | Outcome::Removed => true,
            Outcome::NotChecked | Outcome::Failed { .. } => false,
        }
    }
}

impl Engine {
    /// Check every step of `plan`, `concurrency` at a time, in plan order.
    pub async fn drift(&self, plan: &Plan) -> Vec<StepDrift> {
        let engine = EngineRef::from(self);
        let engine = &engine;
        // Every step says what it will read before anyone reads, so what
        // several steps read of one host is read once.
        for step in &plan.steps {
            let done = engine
                .store
                .read(|st| st.steps.get(&step.id).map(|r| r.status == StepStatus::Done));
            if let (Some(true), Some(handler)) = (done, engine.registry.get(&step.kind)) {
                let ctx = engine.context(&step.id, &step.needs, step.settings.clone());
                handler.declare_drift(&ctx, &step.spec);
            }
        }
        let mut checked = stream::iter(plan.steps.iter())
            .map(|step| async move {
                let done = engine
                    .store
                    .read(|st| st.steps.get(&step.id).map(|r| r.status == StepStatus::Done));
                let outcome = match (done, engine.registry.get(&step.kind)) {
                    (Some(true), Some(handler)) => {
                        let ctx = engine.context(&step.id, &step.needs, step.settings.clone());
                        match handler.drift(&ctx, &step.spec).await {
                            Ok(Some(differences)) => Outcome::Checked { differences },
                            Ok(None) => Outcome::NotChecked,
                            Err(e) => Outcome::Failed { error: e.message },
                        }
                    }
                    (Some(true), None) => Outcome::Failed {
                        error: format!("no handler for steps of kind {}", step.kind),
                    },
                    _ => Outcome::NotApplied,
                };
                StepDrift {
                    id: step.id.clone(),
                    outcome,
                }
            })
            .buffered(self.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let removed: Vec<String> = engine.store.read(|st| {
            st.steps
                .keys()
                .filter(|id| !plan.steps.iter().any(|s| &s.id == *id))
                .cloned()
                .collect()
        });
        checked.extend(removed.into_iter().map(|id| StepDrift {
            id,
            outcome: Outcome::Removed,
        }));
        checked
    }
}
