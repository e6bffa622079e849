//! Vault's Kubernetes auth, one mount per tenant, against the cluster (in
//! practice the vcluster) that holds the tenant. In that cluster: the
//! `vault-auth` service account (in kube-system) with the `system:auth-delegator` binding
//! (so Vault may ask the cluster's TokenReview API about tokens presented
//! to it) and a long-lived token Secret for it. In Vault: the mount, its
//! config (API address, the cluster CA, the reviewer token) and a role per
//! Nautes component, bound to that component's service account and policy.
//!
//! The reviewer token is write-only in Vault, so we remember the sha256 of
//! the one we wrote and write again only when the token changes.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::vault::{self as vault_component, VaultTarget, Writer};
use crate::drivers::kube::objects::ObjectRef;
use crate::drivers::kube::KubeClient;
use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::Loaded;
use crate::plan::{Step, StepSpec};
use crate::secret::Secret;
use crate::steps::kube_target::{self, KubeTarget};
use crate::steps::manifests::{apply_objects, delete_recorded, previous_objects, report_outputs, rollout_timeout};
use crate::wait::{Poll, Wait};

pub const KIND: &str = "vault-kubernetes-auth";
/// Namespace of the Nautes components in a tenant cluster.
pub const NAUTES_NAMESPACE: &str = "nautes";
/// Where the reviewer account lives: a namespace every cluster has, so this
/// step owns no namespace another step (vault-proxy, Nautes) also needs.
const REVIEWER_NAMESPACE: &str = "kube-system";
const REVIEWER: &str = "vault-auth";
const REVIEWER_SECRET: &str = "vault-auth-token";
/// Nautes components that log in to Vault with their service account; each
/// has a policy of the same name (templates/vault/policies.yaml.tera).
pub const ROLES: [&str; 6] = [
    "api-server",
    "argo-operator",
    "base-operator",
    "cluster-operator",
    "repo-operator",
    "runtime-operator",
];

pub fn step_id(tenant: &str) -> String {
    format!("vault/kubernetes-auth/{tenant}")
}

pub fn mount(tenant: &str) -> String {
    format!("kubernetes-{tenant}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesAuthSpec {
    pub tenant: String,
    pub mount: String,
    pub target: KubeTarget,
    pub vault: VaultTarget,
    pub token_ttl: u64,
}

impl StepSpec for KubernetesAuthSpec {
    const KIND: &'static str = KIND;
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) {
    let Some(vault) = vault_component::target(loaded) else {
        return;
    };
    for tenant in &loaded.inventory.tenants {
        let Some(target) = kube_target::target(loaded, &tenant.cluster) else {
            continue;
        };
        let spec = KubernetesAuthSpec {
            tenant: tenant.name.clone(),
            mount: mount(&tenant.name),
            target: target.clone(),
            vault: vault.clone(),
            token_ttl: 3600,
        };
        let mut needs = target.needs();
        needs.push(vault_component::STEP_ID.to_string());
        if vault.host_step.is_some() {
            needs.push(crate::components::certificates::STEP_ID.to_string());
        }
        steps.push(
            Step::of(
                step_id(&tenant.name),
                format!("Vault Kubernetes auth for tenant {} ({})", tenant.name, tenant.cluster),
                &spec,
            )
            .needs(needs),
        );
    }
}

/// The reviewer's service account and its delegator binding.
fn reviewer_objects(tenant: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": REVIEWER, "namespace": REVIEWER_NAMESPACE}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": format!("{REVIEWER}-delegator-{tenant}")},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
               "subjects": [{"kind": "ServiceAccount", "name": REVIEWER, "namespace": REVIEWER_NAMESPACE}]}),
    ]
}

/// The reviewer's token Secret. Applied only once its service account
/// exists: the token controller deletes a token Secret whose account it
/// cannot find.
fn token_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
           "metadata": {"name": REVIEWER_SECRET, "namespace": REVIEWER_NAMESPACE,
                        "annotations": {"kubernetes.io/service-account.name": REVIEWER}}})
}

/// The reviewer token and cluster CA, once the token controller has filled them in.
async fn reviewer_token(
    ctx: &StepContext,
    client: &KubeClient,
    spec: &KubernetesAuthSpec,
) -> Result<(Secret, String, Value), StepError> {
    let secret_ref = ObjectRef {
        api_version: "v1".into(),
        kind: "Secret".into(),
        namespace: Some(REVIEWER_NAMESPACE.into()),
        name: REVIEWER_SECRET.into(),
    };
    let served = client
        .served("v1", "Secret")
        .await
        .map_err(|e| StepError::new(e.to_string()))?
        .ok_or_else(|| StepError::new(format!("{} does not serve Secrets", client.server)))?;
    let decode = |data: &Value, key: &str| -> Option<String> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(data[key].as_str()?)
            .ok()?;
        String::from_utf8(b).ok().filter(|s| !s.is_empty())
    };
    let token_set = format!("{}-token", set_name(spec));
    // What the last apply of the token Secret recorded (Null if none yet).
    let report = std::sync::Mutex::new(Value::Null);
    let (served, secret_ref, token_set, report, decode) = (&served, &secret_ref, &token_set, &report, &decode);
    let (token, ca) = Wait::for_(
        format!(
            "the token of {REVIEWER_NAMESPACE}/{REVIEWER_SECRET} on {}",
            client.server
        ),
        rollout_timeout(ctx),
    )
    .every(Duration::from_millis(200))
    .hint("the cluster's token controller fills it in; check kube-controller-manager")
    .until(move || async move {
        let live = client
            .get(served, secret_ref)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        let seen = match live {
            Some(obj) => {
                let data = obj.data.get("data").cloned().unwrap_or_default();
                match (decode(&data, "token"), decode(&data, "ca.crt")) {
                    (Some(token), Some(ca)) => return Ok(Poll::Done((token, ca))),
                    (token, _) => format!(
                        "{REVIEWER_NAMESPACE}/{REVIEWER_SECRET} has no {} yet",
                        if token.is_none() { "token" } else { "ca.crt" }
                    ),
                }
            }
            // Missing, or deleted by the token controller: (re)create it.
            None => {
                let applied = apply_token_secret(ctx, client, token_set).await?;
                *report.lock().unwrap_or_else(|p| p.into_inner()) = applied;
                format!("no {REVIEWER_NAMESPACE}/{REVIEWER_SECRET}; created it")
            }
        };
        Ok::<_, StepError>(Poll::Pending(seen))
    })
    .await?;
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()));
    if report.is_null() {
        // Already there: still record it as ours (a no-op apply).
        report = apply_token_secret(ctx, client, token_set).await?;
    }
    Ok((Secret::new(token), ca, report))
}

async fn apply_token_secret(ctx: &StepContext, client: &KubeClient, set: &str) -> Result<Value, StepError> {
    let report = apply_objects(
        ctx,
        client,
        set,
        None,
        false,
        vec![token_secret()],
        previous_objects(&ctx.previous_outputs["token"]),
    )
    .await?;
    Ok(report_outputs(&report))
}

async fn configure_vault(
    w: &mut Writer<'_>,
    spec: &KubernetesAuthSpec,
    host: &str,
    ca: &str,
    reviewer: &Secret,
    reviewer_written_before: Option<&str>,
) -> Result<String, StepError> {
    let auths = w.read("sys/auth").await?.unwrap_or_default();
    let live = &auths["data"][format!("{}/", spec.mount)];
    if live.is_null() {
        w.write(&format!("sys/auth/{}", spec.mount), json!({"type": "kubernetes"}))
            .await?;
    } else if live["type"] != "kubernetes" {
        return Err(StepError::new(format!(
            "Vault auth path {}/ is already used by a {} method",
            spec.mount, live["type"]
        )));
    }
    let reviewer_sha = crate::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(reviewer.expose().as_bytes()));
    let config_path = format!("auth/{}/config", spec.mount);
    let config = w.read(&config_path).await?.unwrap_or_default();
    let same = config["data"]["kubernetes_host"].as_str() == Some(host)
        && config["data"]["kubernetes_ca_cert"].as_str().map(str::trim) == Some(ca.trim())
        && reviewer_written_before == Some(reviewer_sha.as_str());
    if !same {
        w.write(
            &config_path,
            json!({"kubernetes_host": host, "kubernetes_ca_cert": ca, "token_reviewer_jwt": reviewer.expose()}),
        )
        .await?;
    }
    for role in ROLES {
        let path = format!("auth/{}/role/{role}", spec.mount);
        let wanted = json!({
            "bound_service_account_names": [role],
            "bound_service_account_namespaces": [NAUTES_NAMESPACE],
            "token_policies": [role],
            "token_ttl": spec.token_ttl,
        });
        w.ensure_fields(&path, wanted).await?;
    }
    Ok(reviewer_sha)
}

fn set_name(spec: &KubernetesAuthSpec) -> String {
    format!("vault-auth-{}", spec.tenant)
}

pub struct KubernetesAuthHandler;

#[async_trait]
impl Handler for KubernetesAuthHandler {
    type Spec = KubernetesAuthSpec;

    async fn apply(&self, ctx: &StepContext, spec: &KubernetesAuthSpec) -> Result<Value, StepError> {
        let client = kube_target::client(ctx, &spec.target).await?;
        let report = apply_objects(
            ctx,
            &client,
            &set_name(spec),
            None,
            false,
            reviewer_objects(&spec.tenant),
            previous_objects(&ctx.previous_outputs),
        )
        .await?;
        let (reviewer, ca, token_report) = reviewer_token(ctx, &client, spec).await?;
        let (vault, token) = vault_component::connect(ctx, &spec.vault)?;
        let mut w = Writer::new(&vault, &token);
        let before = ctx.previous_outputs["reviewerSha256"].as_str();
        let reviewer_sha = configure_vault(&mut w, spec, &client.server, &ca, &reviewer, before).await?;
        if !w.writes.is_empty() {
            ctx.progress(format!("Vault auth {}: {} changes", spec.mount, w.writes.len()));
        }
        let mut out = report_outputs(&report);
        out["token"] = token_report;
        out["mount"] = json!(spec.mount);
        out["kubernetesHost"] = json!(client.server);
        out["reviewerSha256"] = json!(reviewer_sha);
        out["vaultWritten"] = json!(w.writes);
        Ok(out)
    }

    async fn destroy(&self, ctx: &StepContext, spec: &KubernetesAuthSpec, outputs: &Value) -> Result<(), StepError> {
        let (vault, token) = vault_component::connect(ctx, &spec.vault)?;
        vault
            .delete(&format!("sys/auth/{}", spec.mount), &token)
            .await
            .map_err(StepError::new)?;
        let removed = async {
            let client = kube_target::client(ctx, &spec.target).await?;
            delete_recorded(ctx, &client, &format!("{}-token", set_name(spec)), &outputs["token"]).await?;
            delete_recorded(ctx, &client, &set_name(spec), outputs).await
        };
        match removed.await {
            // On a full teardown the cluster may already be gone with everything in it.
            Err(e) if ctx.full_teardown => {
                tracing::warn!("vault-auth objects of tenant {}: {e}", spec.tenant);
                Ok(())
            }
            other => other,
        }
    }
}

/// Vault's Kubernetes auth, one mount per tenant cluster.
pub struct VaultKubernetes;

impl super::Component for VaultKubernetes {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps);
        Ok(())
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(KubernetesAuthHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_a_policy_of_its_name() {
        let rendered = crate::templates::render("vault/policies.yaml", &json!({})).unwrap();
        let policies: std::collections::BTreeMap<String, String> = serde_yaml::from_str(&rendered).unwrap();
        for role in ROLES {
            assert!(policies.contains_key(role), "no policy for {role}");
        }
    }
}
