//! The Vault agent injector: HashiCorp's chart with the injector alone,
//! pointed at the inventory's Vault (once it is configured). Only its
//! values are ours; it builds nothing when its step runs.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Configure, Ours, Planner};
use crate::catalog;
use crate::components::vault;
use crate::drivers::kube::KubeClient;
use crate::engine::{StepContext, StepError};

pub(super) struct VaultInjector;

#[async_trait]
impl Configure for VaultInjector {
    const TYPE: &'static str = "vaultInjector";
    type Spec = ();
    const RELEASE: Option<&'static str> = Some(catalog::VAULT_INJECTOR.slug);

    fn release(&self, p: &mut Planner) -> Ours {
        let vault = p.vault_target.as_ref();
        Ours {
            values: json!({"server": {"enabled": false}, "injector": {"enabled": true,
                           "externalVaultAddr": vault.map(|v| v.url.clone())}}),
            runtime: None,
            needs: vault.iter().map(|_| vault::STEP_ID.to_string()).collect(),
        }
    }

    async fn objects(&self, _: &StepContext, _: &(), _: &KubeClient) -> Result<Vec<Value>, StepError> {
        Ok(Vec::new())
    }
}
