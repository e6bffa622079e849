//! The cluster join token: taken from the user's secret reference, or
//! generated once and kept (0600) in the outputs so later runs and joining
//! nodes use the same one. Neither the value nor a hash of it enters the
//! state or the logs.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{token_file_name, TokenSpec};
use crate::engine::{Handler, StepContext, StepError};
use crate::secret;

pub struct TokenHandler;

#[async_trait]
impl Handler for TokenHandler {
    type Spec = TokenSpec;

    async fn apply(&self, ctx: &StepContext, spec: &TokenSpec) -> Result<Value, StepError> {
        let path = ctx.outputs_dir.join(token_file_name(&spec.cluster));
        let token = match &spec.source {
            Some(r) => r
                .resolve(&ctx.base_dir)
                .map_err(|e| StepError::new(format!("join token of cluster `{}`: {e}", spec.cluster)))?,
            None => match std::fs::read_to_string(&path) {
                Ok(existing) if !existing.trim().is_empty() => secret::Secret::new(existing.trim()),
                _ => {
                    secret::random_token().map_err(|e| StepError::new(format!("cannot generate a join token: {e}")))?
                }
            },
        };
        secret::write_private(&path, &token)
            .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(json!({ "token_file": path }))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TokenSpec, _outputs: &Value) -> Result<(), StepError> {
        match std::fs::remove_file(ctx.outputs_dir.join(token_file_name(&spec.cluster))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StepError::new(format!("cannot remove the join token: {e}")))
            }
            _ => Ok(()),
        }
    }
}
