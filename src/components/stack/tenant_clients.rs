//! The tenants' own Dex clients (`tenants[].dexClients`) at run time: each
//! client's secret is made once and kept 0600 under
//! `outputs/tenants/<tenant>/dex/`, and — when Vault is installed — handed
//! to the tenant in its own Vault path (`tenant/<tenant>/dex/<name>`:
//! `clientId`, `clientSecret`, `issuer`), which only the tenant's policies
//! reach. The kept files are also the record of what was handed out: a
//! client no longer declared loses its file and its Vault secret.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::runtime::kept_secret;
use crate::components::vault::{self, VaultTarget};
use crate::components::vault_oidc::TENANT_ENGINE;
use crate::engine::{StepContext, StepError};
use crate::inventory::tenant_sign_in::client_id;
use crate::inventory::Inventory;
use crate::secret::Secret;

/// One tenant client as the Dex step's spec holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantClient {
    pub tenant: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
}

impl TenantClient {
    pub fn id(&self) -> String {
        client_id(&self.tenant, &self.name)
    }
}

/// Every tenant's declared clients, in inventory order.
pub fn planned(inv: &Inventory) -> Vec<TenantClient> {
    inv.tenants
        .iter()
        .flat_map(|t| {
            t.dex_clients.iter().map(|c| TenantClient {
                tenant: t.name.clone(),
                name: c.name.clone(),
                redirect_uris: c.redirect_uris.clone(),
            })
        })
        .collect()
}

const DIR: &str = "tenants";

fn secret_file(tenant: &str, name: &str) -> String {
    format!("{DIR}/{tenant}/dex/{name}-client-secret")
}

/// The client's secret, made on first use and kept.
pub fn secret(ctx: &StepContext, c: &TenantClient) -> Result<Secret, StepError> {
    kept_secret(ctx, &secret_file(&c.tenant, &c.name))
}

/// Where Vault holds a tenant client's credentials (KV v2 data path).
fn vault_path(tenant: &str, name: &str) -> String {
    format!("{TENANT_ENGINE}/data/{tenant}/dex/{name}")
}

/// Hand each client's credentials to its tenant in Vault (written only
/// when they differ), then remove what was handed out for clients no
/// longer declared. Returns the Vault paths written or deleted.
pub async fn hand_out(
    ctx: &StepContext,
    clients: &[(TenantClient, Secret)],
    vault_target: Option<&VaultTarget>,
    issuer: &str,
) -> Result<Vec<String>, StepError> {
    let mut changed = Vec::new();
    let vault = match vault_target {
        Some(t) => Some(vault::connect(ctx, t)?),
        None => None,
    };
    if let Some((vault, token)) = &vault {
        for (c, secret) in clients {
            let path = vault_path(&c.tenant, &c.name);
            let want = json!({"clientId": c.id(), "clientSecret": secret.expose(), "issuer": issuer});
            let live = vault
                .read(&path, token)
                .await
                .map_err(|e| StepError::new(format!("reading {path}: {e}")))?;
            if live.as_ref().map(|l| &l["data"]["data"]) != Some(&want) {
                vault
                    .write(&path, token, &json!({ "data": want }))
                    .await
                    .map_err(|e| StepError::new(format!("writing {path}: {e}")))?;
                changed.push(path);
            }
        }
    }
    for (tenant, name) in kept(ctx) {
        if clients.iter().any(|(c, _)| c.tenant == tenant && c.name == name) {
            continue;
        }
        if let Some((vault, token)) = &vault {
            // Metadata's DELETE removes every version (nothing there is fine).
            let path = format!("{TENANT_ENGINE}/metadata/{tenant}/dex/{name}");
            vault
                .delete(&path, token)
                .await
                .map_err(|e| StepError::new(format!("deleting {path}: {e}")))?;
            changed.push(format!("DELETE {path}"));
        }
        let file = ctx.outputs_dir.join(secret_file(&tenant, &name));
        std::fs::remove_file(&file).map_err(|e| StepError::new(format!("cannot remove {}: {e}", file.display())))?;
    }
    Ok(changed)
}

/// The (tenant, client name) pairs whose secrets are kept.
fn kept(ctx: &StepContext) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(tenants) = std::fs::read_dir(ctx.outputs_dir.join(DIR)) else {
        return found;
    };
    for t in tenants.flatten() {
        let tenant = t.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(t.path().join("dex")) else {
            continue;
        };
        for f in files.flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix("-client-secret") {
                found.push((tenant.clone(), name.to_string()));
            }
        }
    }
    found.sort();
    found
}

/// Dex's static client entry for a tenant's application.
pub fn config_entry(c: &TenantClient, secret: &Secret) -> Value {
    json!({"id": c.id(), "name": format!("{} ({})", c.name, c.tenant), "secret": secret.expose(),
           "redirectURIs": c.redirect_uris})
}
