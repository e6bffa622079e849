//! Dex, the sign-in every other component trusts: Kubernetes (CRD) storage,
//! the GitLab connector with the OAuth application the GitLab step made, and
//! its static clients — those of [`sign_in`](crate::components::stack::sign_in)
//! whose components are installed. Each client secret is made once by
//! whichever of Dex and its component runs first, and kept 0600.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{b64, ca_pem, gitlab_outputs, ingress, kept_secret, Configure, Planner, Runtime, StackStep};
use crate::catalog;
use crate::components::certificates;
use crate::components::endpoints;
use crate::components::gitlab::{self, credentials::field};
use crate::components::stack::sign_in;
use crate::components::stack::tenant_clients::{self, TenantClient};
use crate::components::vault::VaultTarget;
use crate::components::{registries, vault_oidc};
use crate::drivers::kube::KubeClient;
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
    /// The redirect URIs of clients whose components answer at URLs of
    /// their own rather than at their subdomain (each Harbor instance's
    /// callback), by client id, planned from the inventory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redirect_uris: BTreeMap<String, Vec<String>>,
    /// The tenants' own applications' clients (`tenants[].dexClients`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenant_clients: Vec<TenantClient>,
}

/// The secret a component and Dex share for the component's login: made
/// once, kept 0600.
pub(super) fn client_secret(ctx: &StepContext, client: &sign_in::OidcClient) -> Result<Secret, StepError> {
    kept_secret(ctx, client.secret_file)
}

/// Dex's static clients, as planned, each with its secret (none for a
/// public client).
fn static_clients(ctx: &StepContext, spec: &DexSpec) -> Result<Vec<StaticClient>, StepError> {
    let mut clients = Vec::new();
    for id in &spec.clients {
        if let Some(public) = sign_in::public_by_id(id) {
            clients.push(StaticClient::Public(public));
            continue;
        }
        if id == vault_oidc::CLIENT_ID {
            let vault = spec
                .vault
                .as_ref()
                .ok_or_else(|| StepError::new("Dex has a client for Vault but no Vault to send users back to"))?;
            clients.push(StaticClient::Vault {
                secret: kept_secret(ctx, vault_oidc::CLIENT_SECRET_FILE)?,
                redirect_uris: vault_oidc::redirect_uris(&vault.url),
            });
            continue;
        }
        let client = sign_in::by_id(id)
            .ok_or_else(|| StepError::new(format!("Dex has no client `{id}` in this version of nautes-install")))?;
        let secret = client_secret(ctx, &client)?;
        match spec.redirect_uris.get(id) {
            Some(uris) => clients.push(StaticClient::AtUrls(client, secret, uris.clone())),
            None => clients.push(StaticClient::Confidential(client, secret)),
        }
    }
    for c in &spec.tenant_clients {
        let secret = tenant_clients::secret(ctx, c)?;
        clients.push(StaticClient::Tenant(c.clone(), secret));
    }
    Ok(clients)
}

/// One of Dex's static clients as its config names it.
pub enum StaticClient {
    /// A component's web login: its secret and callback.
    Confidential(sign_in::OidcClient, Secret),
    /// A component's web login at URLs of its own (each Harbor instance's
    /// callback) instead of its subdomain's.
    AtUrls(sign_in::OidcClient, Secret, Vec<String>),
    /// A command-line login on the user's machine (no secret; Dex accepts
    /// any `http://localhost:<port>` redirect and the out-of-band one).
    Public(&'static sign_in::PublicClient),
    /// Vault's sign-in (see `vault_oidc`): confidential, sending users back
    /// to Vault's own address (its UI) or to `vault login`'s listener, not
    /// to a name under the domain.
    Vault { secret: Secret, redirect_uris: Vec<String> },
    /// A tenant's application (`tenants[].dexClients`).
    Tenant(TenantClient, Secret),
}

/// What Dex's config is made of, all of it known before it is rendered.
pub struct DexConfig<'a> {
    pub domain: &'a str,
    /// GitLab's URL and the OAuth application the GitLab step made for Dex.
    pub gitlab_url: &'a str,
    pub gitlab_client_id: &'a Secret,
    pub gitlab_client_secret: &'a Secret,
    pub clients: &'a [StaticClient],
}

/// Dex's `config.yaml`, as a value: the issuer, Kubernetes (CRD) storage
/// in the cluster it runs in, plain HTTP behind the ingress, the GitLab
/// connector, and the static clients. A pure function, so the tests start
/// the real Dex on exactly this config (changing only what a process on a
/// test machine must: storage, listener, token lifetimes).
pub fn render_config(c: &DexConfig) -> Value {
    let issuer = endpoints::dex_issuer(c.domain);
    let clients: Vec<Value> = c
        .clients
        .iter()
        .map(|client| match client {
            StaticClient::Confidential(client, secret) => json!({
                "id": client.id, "name": client.name, "secret": secret.expose(),
                "redirectURIs": [client.redirect_uri(c.domain)]}),
            StaticClient::AtUrls(client, secret, uris) => json!({
                "id": client.id, "name": client.name, "secret": secret.expose(), "redirectURIs": uris}),
            StaticClient::Public(client) => json!({"id": client.id, "name": client.name, "public": true}),
            StaticClient::Vault { secret, redirect_uris } => json!({
                "id": vault_oidc::CLIENT_ID, "name": "Vault", "secret": secret.expose(),
                "redirectURIs": redirect_uris}),
            StaticClient::Tenant(client, secret) => tenant_clients::config_entry(client, secret),
        })
        .collect();
    json!({
        "issuer": issuer,
        "storage": {"type": "kubernetes", "config": {"inCluster": true}},
        "web": {"http": "0.0.0.0:5556"},
        "oauth2": {"skipApprovalScreen": true},
        "connectors": [{"type": "gitlab", "id": "gitlab", "name": "GitLab", "config": {
            "baseURL": c.gitlab_url, "clientID": c.gitlab_client_id.expose(),
            "clientSecret": c.gitlab_client_secret.expose(),
            "redirectURI": endpoints::dex_callback(c.domain)}}],
        "staticClients": clients,
    })
}

/// The namespace Dex runs in.
pub const NAMESPACE: &str = "dex";

/// Dex's namespace and its identity in the cluster: the ServiceAccount
/// `dex` and what its kubernetes storage needs — its own resources
/// (`dex.coreos.com`) and creating their CRDs at its first start.
pub fn identity_objects() -> Vec<Value> {
    let ns = NAMESPACE;
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dex", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "dex"},
               "rules": [{"apiGroups": ["dex.coreos.com"], "resources": ["*"], "verbs": ["*"]},
                         {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "dex"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "dex"},
               "subjects": [{"kind": "ServiceAccount", "name": "dex", "namespace": ns}]}),
    ]
}

/// Dex, configured with the GitLab connector the GitLab step made and the
/// Dex clients of the enabled components.
pub(super) struct Dex;

#[async_trait]
impl Configure for Dex {
    const TYPE: &'static str = "dex";
    type Spec = DexSpec;
    const PLANS: Option<&'static str> = Some(catalog::DEX.key);
    const NEEDS: &'static [&'static str] = catalog::DEX.needs;

    /// Without a GitLab step there is none: validation has said so (the
    /// catalog's `needs`), or GitLab failed to plan with its own error.
    fn plan(&self, p: &mut Planner, mgmt: &str) {
        let Some(c) = p.enabled(catalog::DEX.key) else { return };
        if !p.planned_before(gitlab::STEP_ID) {
            return;
        }
        let mut spec = DexSpec {
            domain: p.domain.clone(),
            version: c.version.clone().unwrap_or(catalog::DEX.default_version().into()),
            vault: p.vault_target.clone(),
            clients: sign_in::enabled(&p.loaded.inventory.components)
                .into_iter()
                .chain(vault_oidc::wanted(p.loaded).then(|| vault_oidc::CLIENT_ID.to_string()))
                .collect(),
            redirect_uris: Default::default(),
            tenant_clients: tenant_clients::planned(&p.loaded.inventory),
        };
        // Harbor answers at each instance's own URL (a tenant's own instance
        // too, which `components.harbor` does not enable).
        let harbor = registries::harbor_redirect_uris(p.loaded);
        if !harbor.is_empty() {
            if !spec.clients.iter().any(|c| c == sign_in::HARBOR.id) {
                spec.clients.push(sign_in::HARBOR.id.to_string());
            }
            spec.redirect_uris.insert(sign_in::HARBOR.id.to_string(), harbor);
        }
        let cluster = p.cluster_of(catalog::DEX.key, mgmt);
        let mut needs = p.catalog_needs(&catalog::DEX);
        needs.push(certificates::STEP_ID.into());
        let step = StackStep::ours(
            catalog::DEX.slug,
            Some(&catalog::DEX),
            Runtime::of::<Self>(&spec),
            NAMESPACE,
        )
        .needing(needs);
        if let Some(id) = p.add(&cluster, step) {
            p.planned.insert(catalog::DEX.key, id);
        }
    }

    async fn objects(&self, ctx: &StepContext, spec: &DexSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        dex(ctx, spec).await
    }
}

async fn dex(ctx: &StepContext, spec: &DexSpec) -> Result<Vec<Value>, StepError> {
    let gitlab_url = gitlab_outputs(ctx)?["url"].as_str().unwrap_or_default().to_string();
    let app = gitlab::stored_credential(ctx, spec.vault.as_ref(), gitlab::OAUTH_APP).await?;
    let client_id = field(&app, gitlab::OAUTH_APP, "clientId")?;
    let client_secret = field(&app, gitlab::OAUTH_APP, "clientSecret")?;
    let domain = &spec.domain;
    let clients = static_clients(ctx, spec)?;
    let tenants: Vec<(TenantClient, Secret)> = clients
        .iter()
        .filter_map(|c| match c {
            StaticClient::Tenant(t, s) => Some((t.clone(), s.clone())),
            _ => None,
        })
        .collect();
    let handed = tenant_clients::hand_out(ctx, &tenants, spec.vault.as_ref(), &endpoints::dex_issuer(domain)).await?;
    if !handed.is_empty() {
        ctx.progress(format!(
            "tenants' Dex client credentials in Vault: {} written or removed",
            handed.len()
        ));
    }
    let config = render_config(&DexConfig {
        domain,
        gitlab_url: &gitlab_url,
        gitlab_client_id: client_id,
        gitlab_client_secret: client_secret,
        clients: &clients,
    });
    let config_yaml = Secret::new(serde_yaml::to_string(&config).map_err(|e| StepError::new(e.to_string()))?);
    let ns = NAMESPACE;
    let labels = json!({"app.kubernetes.io/name": "dex"});
    let mut objects = identity_objects();
    objects.extend([
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
    ]);
    Ok(objects)
}
