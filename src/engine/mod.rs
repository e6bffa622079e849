//! Executor, lock, events and write-ahead intents. The state file itself
//! is `crate::state`, below both the planner and the engine.

pub mod drift;
pub mod events;
pub mod executor;
pub mod handler;
pub mod intents;
pub mod limits;
pub mod lock;

pub use executor::{Engine, RunEnv, RunSummary};
pub use handler::{
    decode, Change, Difference, Handler, Registry, Rendered, Services, StepContext, StepError, StepHandler,
};
pub use intents::{Intent, Intents};
pub use limits::Limits;
