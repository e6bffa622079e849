//! Write-ahead records of what a step makes in systems that do not forget
//! (GitLab, Vault). A create's answer can be lost: the process may die after
//! the other side has acted and before anything here heard back. So before
//! the request, the step records durably what it is about to make and the
//! marker the object will carry (a name suffix, metadata, a description);
//! after the answer it records what was made. A later run (or a teardown)
//! reads these records to tell what is ours — from the record and the
//! marker, never from "it existed when I looked" — to adopt what it can
//! finish recording and to remove what it cannot use (a token whose value
//! was shown once and lost).
//!
//! The records live in the state file under `intents`, keyed by step id and
//! then by what the step names the object ("admin-token", "group", ...).
//! They hold no secret: markers and ids only.

use serde_json::Value;

use super::handler::StepError;
use crate::state::StateStore;
use crate::util::now_rfc3339;

pub use crate::state::{Intent, StepIntents};

/// A step's handle on its own records. Every change is on disk before the
/// call returns, which is the whole point.
#[derive(Clone)]
pub struct Intents {
    store: Option<StateStore>,
    step: String,
}

/// 12 hex characters from the OS: enough that two creates never share one.
fn new_marker() -> Result<String, StepError> {
    use std::io::Read;
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| StepError::new(format!("cannot read random bytes for an intent marker: {e}")))?;
    Ok(crate::util::hex(&bytes))
}

impl Intents {
    pub fn new(store: StateStore, step: &str) -> Intents {
        Intents {
            store: Some(store),
            step: step.to_string(),
        }
    }

    /// For commands that keep no state (`check`): nothing may be created.
    pub fn none(step: &str) -> Intents {
        Intents {
            store: None,
            step: step.to_string(),
        }
    }

    fn store(&self) -> Result<&StateStore, StepError> {
        self.store
            .as_ref()
            .ok_or_else(|| StepError::new(format!("internal error: {} cannot record a create here", self.step)))
    }

    /// The open records for `what`, oldest first.
    pub fn list(&self, what: &str) -> Vec<Intent> {
        match &self.store {
            Some(s) => s.read(|st| {
                st.intents
                    .get(&self.step)
                    .and_then(|m| m.get(what))
                    .cloned()
                    .unwrap_or_default()
            }),
            None => Vec::new(),
        }
    }

    async fn change(&self, what: &str, f: impl FnOnce(&mut Vec<Intent>)) -> Result<(), StepError> {
        let step = self.step.clone();
        let what = what.to_string();
        self.store()?
            .update(move |st| {
                let per_step = st.intents.entry(step.clone()).or_default();
                let list = per_step.entry(what.clone()).or_default();
                f(list);
                if list.is_empty() {
                    per_step.remove(&what);
                }
                if per_step.is_empty() {
                    st.intents.remove(&step);
                }
            })
            .await
            .map_err(|e| StepError::new(e.to_string()))
    }

    /// Record, durably, that `what` is about to be created; returns the
    /// record with the marker the object must carry.
    pub async fn begin(&self, what: &str, about: Value) -> Result<Intent, StepError> {
        let intent = Intent {
            marker: new_marker()?,
            about,
            made: None,
            at: now_rfc3339(),
        };
        let pushed = intent.clone();
        self.change(what, move |list| list.push(pushed)).await?;
        Ok(intent)
    }

    /// Record what the create with `marker` made.
    pub async fn settle(&self, what: &str, marker: &str, made: Value) -> Result<(), StepError> {
        self.change(what, |list| {
            if let Some(i) = list.iter_mut().find(|i| i.marker == marker) {
                i.made = Some(made);
            }
        })
        .await
    }

    /// Take ownership of something made before these records existed (or
    /// outside them) that is known to be ours, so a crash from here on
    /// cannot lose it.
    pub async fn adopt(&self, what: &str, made: Value, about: Value) -> Result<(), StepError> {
        let intent = Intent {
            marker: new_marker()?,
            about,
            made: Some(made),
            at: now_rfc3339(),
        };
        self.change(what, move |list| list.push(intent)).await
    }

    /// The create with `marker` made nothing, or what it made is gone.
    pub async fn forget(&self, what: &str, marker: &str) -> Result<(), StepError> {
        self.change(what, |list| list.retain(|i| i.marker != marker)).await
    }

    /// Everything this step recorded is gone (after a teardown).
    pub async fn forget_all(&self) -> Result<(), StepError> {
        let step = self.step.clone();
        self.store()?
            .update(move |st| st.intents.remove(&step))
            .await
            .map(|_| ())
            .map_err(|e| StepError::new(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    #[tokio::test]
    async fn records_are_on_disk_before_the_call_returns_and_vanish_when_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = StateStore::new(path.clone(), State::default());
        let intents = Intents::new(store, "gitlab/configure");
        let a = intents.begin("token", serde_json::json!({"userId": 1})).await.unwrap();
        let b = intents.begin("token", Value::Null).await.unwrap();
        assert_ne!(a.marker, b.marker);
        let on_disk = State::load(&path).unwrap();
        assert_eq!(on_disk.intents["gitlab/configure"]["token"].len(), 2);
        assert_eq!(on_disk.intents["gitlab/configure"]["token"][0].made, None);

        intents.settle("token", &a.marker, serde_json::json!(7)).await.unwrap();
        assert_eq!(
            State::load(&path).unwrap().intents["gitlab/configure"]["token"][0].made_id(),
            Some(7)
        );
        intents.forget("token", &a.marker).await.unwrap();
        intents.forget("token", &b.marker).await.unwrap();
        assert!(State::load(&path).unwrap().intents.is_empty());
        assert!(intents.list("token").is_empty());
    }
}
