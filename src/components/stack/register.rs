//! Runtime clusters registered with Nautes, as its users do: through the
//! Nautes API server's cluster endpoint (`/api/v1/clusters/<name>`), with
//! our GitLab admin token as the bearer. The saved cluster is read first and
//! saved again only when it differs (the kubeconfig, which the API never
//! shows back, is compared by the sha256 we recorded). Teardown
//! unregisters it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::super::gitlab::{self, credentials::field};
use super::super::vault::VaultTarget;
use super::health::{http_client, Endpoint};
use crate::engine::{Handler, StepContext, StepError};
use crate::plan::StepSpec;
use crate::steps::kube_target::{self, KubeTarget};
use crate::util::hex;

pub const KIND: &str = "nautes-cluster";

pub fn step_id(cluster: &str) -> String {
    format!("nautes/cluster/{cluster}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterSpec {
    pub cluster: String,
    pub target: KubeTarget,
    /// `physical` or `virtual`.
    pub cluster_type: String,
    pub host_cluster: Option<String>,
    /// The Nautes API server (base URL in `url`).
    pub api: Endpoint,
    pub vault: Option<VaultTarget>,
}

impl StepSpec for RegisterSpec {
    const KIND: &'static str = KIND;
}

fn cluster_url(spec: &RegisterSpec) -> String {
    format!(
        "{}/api/v1/clusters/{}",
        spec.api.url.trim_end_matches('/'),
        spec.cluster
    )
}

async fn admin_token(ctx: &StepContext, spec: &RegisterSpec) -> Result<crate::secret::Secret, StepError> {
    let stored = gitlab::stored_credential(ctx, spec.vault.as_ref(), gitlab::ADMIN_TOKEN).await?;
    Ok(field(&stored, gitlab::ADMIN_TOKEN, "token")?.clone())
}

fn failed(what: &str, url: &str, e: impl std::fmt::Display) -> StepError {
    StepError::new(format!("{what} ({url}): {e}"))
}

pub struct RegisterHandler;

#[async_trait]
impl Handler for RegisterHandler {
    type Spec = RegisterSpec;

    async fn apply(&self, ctx: &StepContext, spec: &RegisterSpec) -> Result<Value, StepError> {
        let kube = kube_target::client(ctx, &spec.target).await?;
        let mut body = json!({
            "api_server": kube.server,
            "cluster_kind": "kubernetes",
            "cluster_type": spec.cluster_type,
            "usage": "worker",
        });
        if let Some(h) = &spec.host_cluster {
            body["host_cluster"] = json!(h);
        }
        // A physical cluster is reached with its kubeconfig; it is sent, never recorded.
        let kubeconfig = if spec.cluster_type == "physical" {
            let (path, _) = kube_target::kubeconfig_path(ctx, &spec.target)?;
            Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| StepError::new(format!("cannot read {}: {e}", path.display())))?,
            )
        } else {
            None
        };
        let kubeconfig_sha = kubeconfig.as_deref().map(|k| hex(&Sha256::digest(k.as_bytes())));
        let http = http_client(ctx, &spec.api).await?;
        let url = cluster_url(spec);
        let token = admin_token(ctx, spec).await?;
        let live = http
            .get(&url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| failed("reading the cluster from the Nautes API server", &url, e))?;
        let saved: Option<Value> = match live.status().as_u16() {
            200 => live.json().await.ok(),
            404 => None,
            s => {
                return Err(failed(
                    "reading the cluster from the Nautes API server",
                    &url,
                    format!("HTTP {s}"),
                ))
            }
        };
        let same = saved
            .as_ref()
            .is_some_and(|v| body.as_object().into_iter().flatten().all(|(k, want)| &v[k] == want))
            && ctx.previous_outputs["kubeconfigSha256"].as_str() == kubeconfig_sha.as_deref();
        let mut written = false;
        if !same {
            if let Some(k) = &kubeconfig {
                body["kubeconfig"] = json!(k);
            }
            let resp = http
                .post(&url)
                .bearer_auth(token.expose())
                .json(&body)
                .send()
                .await
                .map_err(|e| failed("registering the cluster with Nautes", &url, e))?;
            if !resp.status().is_success() {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                return Err(failed(
                    "registering the cluster with Nautes",
                    &url,
                    format!("HTTP {status}: {}", text.chars().take(300).collect::<String>()),
                ));
            }
            written = true;
            ctx.progress(format!("registered {} with Nautes", spec.cluster));
        }
        Ok(json!({
            "cluster": spec.cluster,
            "apiServer": kube.server,
            "kubeconfigSha256": kubeconfig_sha,
            "written": written,
        }))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &RegisterSpec, _outputs: &Value) -> Result<(), StepError> {
        let url = cluster_url(spec);
        let result = async {
            let http = http_client(ctx, &spec.api).await?;
            let token = admin_token(ctx, spec).await?;
            let resp = http
                .delete(&url)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|e| failed("unregistering the cluster", &url, e))?;
            match resp.status().as_u16() {
                s if (200..300).contains(&s) || s == 404 => Ok(()),
                s => Err(failed("unregistering the cluster", &url, format!("HTTP {s}"))),
            }
        };
        match result.await {
            // On a full teardown Nautes goes too; a gone API server is not an error.
            Err(e) if ctx.full_teardown => {
                tracing::warn!("{e}");
                Ok(())
            }
            other => other,
        }
    }
}
