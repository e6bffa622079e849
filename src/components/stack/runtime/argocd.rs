//! Argo CD as the stack configures it, merged over the upstream manifest's
//! objects of the same name: OIDC through Dex, our CA for GitLab's
//! certificate, TLS ended at Traefik, and the tenant repository with the
//! base operator's read token. Also the Nautes AppProject and Application,
//! through which Argo CD delivers Nautes from the tenant repository.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dex::client_secret;
use super::{b64, ca_pem, gitlab_outputs, ingress};
use crate::components::endpoints;
use crate::components::gitlab::{self, credentials::field};
use crate::components::stack::sign_in;
use crate::components::vault::VaultTarget;
use crate::engine::{StepContext, StepError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgocdSpec {
    pub domain: String,
    pub vault: Option<VaultTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NautesSpec {
    /// Path of the Nautes release in the tenant repository.
    pub path: String,
}

pub(super) async fn argocd(ctx: &StepContext, spec: &ArgocdSpec) -> Result<Vec<Value>, StepError> {
    let ns = "argocd";
    let domain = &spec.domain;
    let ca = ca_pem(ctx)?;
    let gitlab = gitlab_outputs(ctx)?;
    let gitlab_url = gitlab["url"].as_str().unwrap_or_default();
    let repo = format!(
        "{}/{}.git",
        gitlab_url.trim_end_matches('/'),
        gitlab["project"]["path"].as_str().unwrap_or_default()
    );
    let gitlab_host = gitlab_url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_string();
    let reader = gitlab::stored_credential(ctx, spec.vault.as_ref(), gitlab::BASE_OPERATOR_TOKEN).await?;
    let token = field(&reader, gitlab::BASE_OPERATOR_TOKEN, "token")?;
    let oidc = format!(
        "name: GitLab\nissuer: {}\nclientID: {}\nclientSecret: $oidc.dex.clientSecret\nrequestedScopes: [openid, profile, email, groups]\nrootCA: |\n{}",
        endpoints::dex_issuer(domain),
        sign_in::ARGOCD.id,
        ca.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let mut tls_certs = BTreeMap::new();
    if !gitlab_host.is_empty() {
        tls_certs.insert(gitlab_host, ca.clone());
    }
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "namespace": ns},
               "data": {"url": endpoints::ARGOCD.url(domain), "oidc.config": oidc, "admin.enabled": "false"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "argocd-secret", "namespace": ns},
               "data": {"oidc.dex.clientSecret": b64(client_secret(ctx, &sign_in::ARGOCD)?.expose())}}),
        // TLS ends at Traefik, which has our certificate.
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cmd-params-cm", "namespace": ns},
               "data": {"server.insecure": "true"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-tls-certs-cm", "namespace": ns},
               "data": tls_certs}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nautes-tenant-repo", "namespace": ns,
                   "labels": {"argocd.argoproj.io/secret-type": "repository"}},
               "data": {"type": b64("git"), "url": b64(&repo), "username": b64("nautes-base-operator"),
                        "password": b64(token.expose())}}),
        ingress(
            "argocd-server",
            ns,
            &endpoints::ARGOCD.host(domain),
            "argocd-server",
            80,
        ),
    ])
}

pub(super) fn nautes(ctx: &StepContext, spec: &NautesSpec) -> Result<Vec<Value>, StepError> {
    let gitlab = gitlab_outputs(ctx)?;
    let repo = format!(
        "{}/{}.git",
        gitlab["url"].as_str().unwrap_or_default().trim_end_matches('/'),
        gitlab["project"]["path"].as_str().unwrap_or_default()
    );
    let branch = gitlab["defaultBranch"].as_str().unwrap_or("main");
    Ok(vec![
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
               "metadata": {"name": "nautes", "namespace": "argocd"},
               "spec": {"sourceRepos": [repo], "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "*"}],
                        "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}),
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": "nautes", "namespace": "argocd"},
               "spec": {"project": "nautes",
                        "source": {"repoURL": repo, "targetRevision": branch, "path": spec.path},
                        "destination": {"server": "https://kubernetes.default.svc", "namespace": "nautes"},
                        "syncPolicy": {"automated": {"prune": true, "selfHeal": true}, "syncOptions": ["CreateNamespace=true"]}}}),
    ])
}
