//! The fast tier: everything that needs no control plane, SSH host or
//! stand-in service — the CLI, inventory validation, planning, the engine,
//! state and locks, hooks, signals, bundles, the example inventories and
//! the layering rule. One binary, so its tests share one build and run in
//! parallel with each other: `cargo test --lib --test fast` runs in well
//! under two minutes after a build. The end-to-end tier is the other
//! binary, `tests/e2e`; `cargo test --all-targets` runs both.

#[path = "../support/mod.rs"]
mod support;

mod backup;
mod bundle;
mod commands;
mod engine;
mod engine_panic;
mod examples;
mod layering;
mod pki;
mod signals;
mod validate;
mod validate_fuzz;
