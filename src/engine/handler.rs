//! The contract between the engine and the components: a handler applies
//! and destroys steps of one kind. Components register handlers; the engine
//! only knows kinds, specs and outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::events::{Event, Reporter};
use super::limits::Limits;
use crate::plan::StepSpec;

/// What a step sees while it runs.
pub struct StepContext {
    pub step_id: String,
    /// The inventory file's directory: relative paths and hook commands start here.
    pub base_dir: PathBuf,
    pub workdir: PathBuf,
    pub outputs_dir: PathBuf,
    pub limits: Limits,
    /// Outputs recorded by the steps this one needs.
    pub needs_outputs: BTreeMap<String, Value>,
    /// The step's non-fingerprinted settings.
    pub settings: Value,
    /// What this step output when it last succeeded (Null if never): lets a
    /// handler tell an install from an upgrade, or see which nodes are new.
    pub previous_outputs: Value,
    pub reporter: Arc<Reporter>,
    pub services: Arc<Services>,
    /// Everything is being torn down (`destroy`), as opposed to one step
    /// removed from the inventory: a node need not be drained first.
    pub full_teardown: bool,
    /// Write-ahead records of this step's creates in other systems.
    pub intents: super::intents::Intents,
}

impl StepContext {
    /// Show a line of progress for this step (progress bar / JSON event).
    pub fn progress(&self, message: impl Into<String>) {
        self.reporter.emit(Event::StepProgress {
            id: self.step_id.clone(),
            message: message.into(),
        });
    }

    /// The step's settings as `T` (absent ones take `T`'s defaults).
    pub fn settings<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, StepError> {
        if self.settings.is_null() {
            return Ok(T::default());
        }
        serde_json::from_value(self.settings.clone())
            .map_err(|e| StepError::new(format!("the settings of step {} are malformed: {e}", self.step_id)))
    }

    /// Tell the user something that outlives the progress line (a token
    /// replaced, an edit left alone): printed, logged, and a JSON event.
    pub fn notice(&self, message: impl Into<String>) {
        let message = format!("{}: {}", self.step_id, message.into());
        tracing::warn!("{message}");
        self.reporter.emit(Event::Notice { message });
    }
}

/// Long-lived connections and clients shared by all steps of a run (SSH
/// masters, API clients); drivers put them here so each is opened once.
#[derive(Default)]
pub struct Services {
    pub extensions: std::sync::Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl Services {
    /// Make `value` the shared instance of its type.
    pub fn insert<T: Send + Sync + 'static>(&self, value: T) {
        let mut map = self.extensions.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(std::any::TypeId::of::<T>(), Arc::new(value));
    }

    /// The shared instance of `T`, made with `make` by the first caller.
    pub fn get_or_insert_with<T: Send + Sync + 'static>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self.extensions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Arc::new(make()) as Arc<dyn std::any::Any + Send + Sync>);
        entry
            .clone()
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("keyed by its own TypeId"))
    }

    /// The shared instance of `T`, if one was inserted.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let map = self.extensions.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }
}

/// A failed step: the message says what went wrong and where, and never
/// holds a secret.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
        }
    }
}

impl From<crate::wait::TimedOut> for StepError {
    fn from(t: crate::wait::TimedOut) -> Self {
        StepError::new(t.to_string())
    }
}

impl From<anyhow::Error> for StepError {
    fn from(e: anyhow::Error) -> Self {
        StepError::new(format!("{e:#}"))
    }
}

/// A file a handler renders for review (`nautes-install render`).
pub struct Rendered {
    pub path: String,
    pub contents: String,
}

/// One way the live world differs from what a step's `apply` would make
/// of it (`drift`). Names things, never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// What differs, as the user knows it: `Deployment argocd/argocd-server`,
    /// `Vault policy nautes-admin`.
    pub object: String,
    pub change: Change,
    /// Where in a changed object: the first field that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Difference {
    pub fn new(object: String, change: Change, field: Option<&str>) -> Difference {
        Difference {
            object,
            change,
            field: field.map(str::to_string),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Apply would create it.
    Missing,
    /// Apply would write it back.
    Changed,
    /// Apply would remove it: ours, but no longer rendered.
    Extra,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Missing => "missing",
            Change::Changed => "changed",
            Change::Extra => "not rendered any more",
        }
    }
}

/// What a component implements for one kind of step: it receives the
/// spec it planned, already decoded ([`Registry::add`] does that once for
/// every kind), so a malformed spec is one error message, not one per
/// handler.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    type Spec: StepSpec;

    /// Make the world match `spec`; must be safe to repeat. Returns outputs
    /// (no secrets) that dependents can read.
    async fn apply(&self, ctx: &StepContext, spec: &Self::Spec) -> Result<Value, StepError>;

    /// Undo what `apply` did; must succeed when there is nothing left to undo.
    async fn destroy(&self, ctx: &StepContext, spec: &Self::Spec, outputs: &Value) -> Result<(), StepError>;

    /// What differs between the live systems and what `apply` would make
    /// of `spec`, read without changing anything anywhere. `None`: this kind
    /// of step cannot tell (the default).
    async fn drift(&self, _ctx: &StepContext, _spec: &Self::Spec) -> Result<Option<Vec<Difference>>, StepError> {
        Ok(None)
    }

    /// Before any step's [`Handler::drift`]: say what it will read that
    /// other steps may read too (files on a host), so one read serves all.
    fn declare_drift(&self, _ctx: &StepContext, _spec: &Self::Spec) {}

    /// Files this step would write or send, for review.
    fn render(&self, _spec: &Self::Spec) -> Result<Vec<Rendered>, StepError> {
        Ok(Vec::new())
    }
}

/// Decode a recorded spec as `S`. A spec that does not decode was written by
/// another version of the installer or edited by hand.
pub fn decode<S: StepSpec>(spec: &Value) -> Result<S, StepError> {
    serde_json::from_value(spec.clone()).map_err(|e| {
        StepError::new(format!(
            "{} step is malformed (written by another version of nautes-install?): {e}",
            S::KIND
        ))
    })
}

/// The engine's view of a [`Handler`]: specs as JSON, decoded on the way in.
struct Typed<H>(H);

#[async_trait]
impl<H: Handler> StepHandler for Typed<H> {
    fn kind(&self) -> &'static str {
        H::Spec::KIND
    }

    async fn apply(&self, ctx: &StepContext, spec: &Value) -> Result<Value, StepError> {
        self.0.apply(ctx, &decode(spec)?).await
    }

    async fn destroy(&self, ctx: &StepContext, spec: &Value, outputs: &Value) -> Result<(), StepError> {
        self.0.destroy(ctx, &decode(spec)?, outputs).await
    }

    async fn drift(&self, ctx: &StepContext, spec: &Value) -> Result<Option<Vec<Difference>>, StepError> {
        self.0.drift(ctx, &decode(spec)?).await
    }

    fn declare_drift(&self, ctx: &StepContext, spec: &Value) {
        if let Ok(spec) = decode(spec) {
            self.0.declare_drift(ctx, &spec)
        }
    }

    fn render(&self, spec: &Value) -> Result<Vec<Rendered>, StepError> {
        self.0.render(&decode(spec)?)
    }
}

/// The engine-facing contract, by kind and with JSON specs. Components
/// implement [`Handler`] instead; this is for handlers that take any spec
/// (tests' stand-ins).
#[async_trait]
pub trait StepHandler: Send + Sync {
    /// The `kind` of the steps this handler runs.
    fn kind(&self) -> &'static str;

    /// Make the world match `spec`; must be safe to repeat. Returns outputs
    /// (no secrets) that dependents can read.
    async fn apply(&self, ctx: &StepContext, spec: &Value) -> Result<Value, StepError>;

    /// Undo what `apply` did; must succeed when there is nothing left to undo.
    async fn destroy(&self, ctx: &StepContext, spec: &Value, outputs: &Value) -> Result<(), StepError>;

    /// What differs from what `apply` would make; `None`: cannot tell.
    async fn drift(&self, _ctx: &StepContext, _spec: &Value) -> Result<Option<Vec<Difference>>, StepError> {
        Ok(None)
    }

    /// Say in advance what [`StepHandler::drift`] will read (see [`Handler::declare_drift`]).
    fn declare_drift(&self, _ctx: &StepContext, _spec: &Value) {}

    /// Files this step would write or send, for review.
    fn render(&self, _spec: &Value) -> Result<Vec<Rendered>, StepError> {
        Ok(Vec::new())
    }
}

#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn StepHandler>>,
}

impl Registry {
    /// Register a typed handler for its spec's kind.
    pub fn add<H: Handler>(&mut self, handler: H) {
        self.register(Arc::new(Typed(handler)));
    }

    pub fn register(&mut self, handler: Arc<dyn StepHandler>) {
        self.handlers.insert(handler.kind(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn StepHandler>> {
        self.handlers.get(kind).cloned()
    }
}
