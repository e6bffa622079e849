//! Executor, state store + lock, events.

pub mod events;
pub mod executor;
pub mod handler;
pub mod intents;
pub mod lock;
pub mod state;

pub use executor::{Engine, RunEnv, RunSummary};
pub use handler::{Registry, Rendered, Services, StepContext, StepError, StepHandler};
pub use intents::{Intent, Intents};
