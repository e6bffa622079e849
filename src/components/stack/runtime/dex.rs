//! Dex, the sign-in every other component trusts: Kubernetes (CRD) storage,
//! the GitLab connector with the OAuth application the GitLab step made, and
//! its static clients — those of [`sign_in`](crate::components::stack::sign_in)
//! whose components are installed. Each client secret is made once by
//! whichever of Dex and its component runs first, and kept 0600.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{b64, ca_pem, gitlab_outputs, ingress, kept_secret};
use crate::components::endpoints;
use crate::components::gitlab::{self, credentials::field};
use crate::components::stack::sign_in;
use crate::components::vault::VaultTarget;
use crate::engine::{StepContext, StepError};
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DexSpec {
    pub domain: String,
    pub version: String,
    pub vault: Option<VaultTarget>,
    /// The ids of the clients Dex knows (see `sign_in`), derived when
    /// planning from the components the inventory installs.
    #[serde(default)]
    pub clients: Vec<String>,
}

/// The secret a component and Dex share for the component's login: made
/// once, kept 0600.
pub(super) fn client_secret(ctx: &StepContext, client: &sign_in::OidcClient) -> Result<Secret, StepError> {
    kept_secret(ctx, client.secret_file)
}

/// Dex's static clients, as planned.
fn static_clients(ctx: &StepContext, spec: &DexSpec) -> Result<Value, StepError> {
    let mut clients = Vec::new();
    for id in &spec.clients {
        let client = &sign_in::by_id(id)
            .ok_or_else(|| StepError::new(format!("Dex has no client `{id}` in this version of nautes-install")))?;
        clients.push(
            json!({"id": client.id, "name": client.name, "secret": client_secret(ctx, client)?.expose(),
            "redirectURIs": [client.redirect_uri(&spec.domain)]}),
        );
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
