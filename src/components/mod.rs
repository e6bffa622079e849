//! One module per thing we install. Each turns its inventory section into
//! steps (with explicit needs) and provides the handlers that run them.

pub mod hooks;

use std::sync::Arc;

use crate::engine::Registry;
use crate::inventory::{Diagnostic, Loaded};
use crate::plan::Step;

/// Every step the inventory asks for, unordered; the plan orders them.
pub fn plan_steps(loaded: &Loaded) -> Result<Vec<Step>, Vec<Diagnostic>> {
    let mut steps = Vec::new();
    hooks::plan(loaded, &mut steps)?;
    Ok(steps)
}

/// Handlers for every step kind this binary knows.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register(Arc::new(hooks::HookHandler));
    r
}
