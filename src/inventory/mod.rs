//! The user's file: types, loading with source positions, validation, schema.

pub mod diagnostics;
pub mod duration;
pub mod load;
pub mod registries;
pub mod spans;
pub mod tenant_sign_in;
pub mod types;
pub mod validate;

pub use diagnostics::{Diagnostic, Report, Severity};
pub use load::{load_bytes, load_file, load_str, Loaded};
pub use types::*;

/// JSON Schema of the inventory, generated from the types so it never drifts.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Inventory)).unwrap_or_default()
}
