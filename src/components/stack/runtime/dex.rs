//! Dex, the sign-in every other component trusts: Kubernetes (CRD) storage,
//! the GitLab connector with the OAuth application the GitLab step made, and
//! its static clients — Argo CD, and oauth2-proxy when it is installed. The
//! client secret Argo CD shares with Dex is made here, once, and kept 0600.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::oauth2_proxy::{OAUTH2_PROXY_CLIENT, OAUTH2_PROXY_SECRET};
use super::{b64, ca_pem, gitlab_outputs, ingress, kept_secret};
use crate::components::endpoints;
use crate::components::gitlab::{self, credentials::field};
use crate::components::vault::VaultTarget;
use crate::engine::{StepContext, StepError};
use crate::secret::Secret;

pub(super) const ARGOCD_CLIENT: &str = "argocd";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DexSpec {
    pub domain: String,
    pub version: String,
    pub vault: Option<VaultTarget>,
    /// oauth2-proxy is installed and signs in through Dex.
    #[serde(default)]
    pub oauth2_proxy: bool,
}

/// The secret Argo CD and Dex share for Argo CD's login: made once, kept 0600.
pub(super) fn argocd_client_secret(ctx: &StepContext) -> Result<Secret, StepError> {
    kept_secret(ctx, "argocd/dex-client-secret")
}

/// Dex's clients: Argo CD, and oauth2-proxy when it is installed.
fn static_clients(ctx: &StepContext, spec: &DexSpec) -> Result<Value, StepError> {
    let domain = &spec.domain;
    let mut clients = vec![
        json!({"id": ARGOCD_CLIENT, "name": "Argo CD", "secret": argocd_client_secret(ctx)?.expose(),
        "redirectURIs": [format!("{}/auth/callback", endpoints::ARGOCD.url(domain))]}),
    ];
    if spec.oauth2_proxy {
        clients.push(json!({"id": OAUTH2_PROXY_CLIENT, "name": "oauth2-proxy",
            "secret": kept_secret(ctx, OAUTH2_PROXY_SECRET)?.expose(),
            "redirectURIs": [format!("{}/oauth2/callback", endpoints::OAUTH2_PROXY.url(domain))]}));
    }
    Ok(Value::Array(clients))
}

pub(super) async fn dex(ctx: &StepContext, spec: &DexSpec) -> Result<Vec<Value>, StepError> {
    let gitlab_url = gitlab_outputs(ctx)?["url"].as_str().unwrap_or_default().to_string();
    let app = gitlab::stored_credential(ctx, spec.vault.as_ref(), gitlab::OAUTH_APP).await?;
    let client_id = field(&app, gitlab::OAUTH_APP, "clientId")?;
    let client_secret = field(&app, gitlab::OAUTH_APP, "clientSecret")?;
    let domain = &spec.domain;
    let config = json!({
        "issuer": endpoints::dex_issuer(domain),
        "storage": {"type": "kubernetes", "config": {"inCluster": true}},
        "web": {"http": "0.0.0.0:5556"},
        "oauth2": {"skipApprovalScreen": true},
        "connectors": [{"type": "gitlab", "id": "gitlab", "name": "GitLab", "config": {
            "baseURL": gitlab_url, "clientID": client_id.expose(), "clientSecret": client_secret.expose(),
            "redirectURI": format!("{}/callback", endpoints::dex_issuer(domain))}}],
        "staticClients": static_clients(ctx, spec)?,
    });
    let config_yaml = Secret::new(serde_yaml::to_string(&config).map_err(|e| StepError::new(e.to_string()))?);
    let ns = "dex";
    let labels = json!({"app.kubernetes.io/name": "dex"});
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dex", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "dex"},
               "rules": [{"apiGroups": ["dex.coreos.com"], "resources": ["*"], "verbs": ["*"]},
                         {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "dex"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "dex"},
               "subjects": [{"kind": "ServiceAccount", "name": "dex", "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dex-config", "namespace": ns},
               "data": {"config.yaml": b64(config_yaml.expose())}}),
        // Dex reaches GitLab over TLS signed by our CA: Go reads every file in /etc/ssl/certs.
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nautes-ca", "namespace": ns},
               "data": {"nautes-ca.crt": ca_pem(ctx)?}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dex", "namespace": ns, "labels": labels},
               "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                   "metadata": {"labels": labels},
                   "spec": {"serviceAccountName": "dex", "containers": [{
                       "name": "dex", "image": format!("ghcr.io/dexidp/dex:{}", spec.version),
                       "args": ["dex", "serve", "/etc/dex/cfg/config.yaml"],
                       "ports": [{"name": "http", "containerPort": 5556}],
                       "readinessProbe": {"httpGet": {"path": "/healthz", "port": 5556}},
                       "volumeMounts": [{"name": "config", "mountPath": "/etc/dex/cfg"},
                                        {"name": "ca", "mountPath": "/etc/ssl/certs/nautes-ca.crt", "subPath": "nautes-ca.crt"}]}],
                       "volumes": [{"name": "config", "secret": {"secretName": "dex-config"}},
                                   {"name": "ca", "configMap": {"name": "nautes-ca"}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dex", "namespace": ns},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 5556, "targetPort": 5556}]}}),
        ingress("dex", ns, &endpoints::DEX.host(domain), "dex", 5556),
    ])
}
