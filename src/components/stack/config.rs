//! Objects that can only be built when the step runs, because they hold
//! what earlier steps produced: our certificates and CA key (never a key in
//! a template), Dex's GitLab OAuth secret, Argo CD's repository token. They
//! are merged over the upstream manifest's objects of the same name (Argo
//! CD's argocd-cm, argocd-secret) or added beside them.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::gitlab::{self, credentials::field};
use super::super::pki;
use super::super::vault::VaultTarget;
use crate::engine::{StepContext, StepError};
use crate::inventory::SecretRef;
use crate::secret::{random_token, resolve, write_private, Secret};

pub const INGRESS_TLS_SECRET: &str = "nautes-ingress-tls";
pub const CA_SECRET: &str = "nautes-ca";
pub const CLUSTER_ISSUER: &str = "nautes-ca";
const ARGOCD_CLIENT: &str = "argocd";

/// What a step builds at run time, besides its upstream manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Runtime {
    /// Traefik's default certificate: our ingress wildcard certificate.
    IngressTls { namespace: String },
    /// A cert-manager ClusterIssuer backed by our CA.
    CaIssuer { user_ca_key: Option<SecretRef> },
    /// Dex with Kubernetes (CRD) storage and the GitLab connector.
    Dex(DexSpec),
    /// Argo CD's OIDC through Dex, our CA, the tenant repository.
    Argocd(ArgocdSpec),
    /// The AppProject and Application that deliver Nautes from the tenant repo.
    Nautes(NautesSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DexSpec {
    pub domain: String,
    pub version: String,
    pub vault: Option<VaultTarget>,
}

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

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn read(path: &str, what: &str) -> Result<String, StepError> {
    std::fs::read_to_string(path).map_err(|e| StepError::new(format!("cannot read {what} at {path}: {e}")))
}

fn pki_outputs(ctx: &StepContext) -> Result<&Value, StepError> {
    ctx.needs_outputs
        .get(pki::STEP_ID)
        .ok_or_else(|| StepError::new("the PKI step has not run (internal error: missing need)"))
}

fn ca_pem(ctx: &StepContext) -> Result<String, StepError> {
    read(
        pki_outputs(ctx)?["ca"]["cert"].as_str().unwrap_or_default(),
        "our CA certificate",
    )
}

fn gitlab_outputs(ctx: &StepContext) -> Result<&Value, StepError> {
    ctx.needs_outputs
        .get(gitlab::STEP_ID)
        .ok_or_else(|| StepError::new("the GitLab step has not run (internal error: missing need)"))
}

/// Build the step's run-time objects.
pub async fn objects(ctx: &StepContext, runtime: &Runtime) -> Result<Vec<Value>, StepError> {
    match runtime {
        Runtime::IngressTls { namespace } => ingress_tls(ctx, namespace),
        Runtime::CaIssuer { user_ca_key } => ca_issuer(ctx, user_ca_key.as_ref()),
        Runtime::Dex(spec) => dex(ctx, spec).await,
        Runtime::Argocd(spec) => argocd(ctx, spec).await,
        Runtime::Nautes(spec) => nautes(ctx, spec),
    }
}

fn tls_secret(name: &str, namespace: &str, cert: &str, key: &Secret) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": namespace},
           "data": {"tls.crt": b64(cert), "tls.key": b64(key.expose())}})
}

fn ingress_tls(ctx: &StepContext, namespace: &str) -> Result<Vec<Value>, StepError> {
    let cert = &pki_outputs(ctx)?["certs"][pki::INGRESS];
    let pem = read(cert["cert"].as_str().unwrap_or_default(), "the ingress certificate")?;
    let key = Secret::new(read(cert["key"].as_str().unwrap_or_default(), "the ingress key")?);
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        tls_secret(INGRESS_TLS_SECRET, namespace, &pem, &key),
    ])
}

fn ca_issuer(ctx: &StepContext, user_ca_key: Option<&SecretRef>) -> Result<Vec<Value>, StepError> {
    let ca = &pki_outputs(ctx)?["ca"];
    let key = match (user_ca_key, ca["key"].as_str()) {
        (Some(r), _) => resolve(r, &ctx.base_dir).map_err(|e| StepError::new(format!("pki.ca.key: {e}")))?,
        (None, Some(path)) => Secret::new(read(path, "our CA key")?),
        (None, None) => return Err(StepError::new("the PKI step recorded no CA key")),
    };
    Ok(vec![
        tls_secret(CA_SECRET, "cert-manager", &ca_pem(ctx)?, &key),
        json!({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
               "metadata": {"name": CLUSTER_ISSUER, "annotations": {"install.nautes.io/wait-for": "Ready"}},
               "spec": {"ca": {"secretName": CA_SECRET}}}),
    ])
}

/// The secret Argo CD and Dex share for Argo CD's login: made once, kept 0600.
fn argocd_client_secret(ctx: &StepContext) -> Result<Secret, StepError> {
    let path = ctx.outputs_dir.join("argocd/dex-client-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Secret::new(s.trim())),
        Err(_) => {
            let s = random_token().map_err(|e| StepError::new(format!("cannot make a random secret: {e}")))?;
            write_private(&path, &s).map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
            Ok(s)
        }
    }
}

async fn dex(ctx: &StepContext, spec: &DexSpec) -> Result<Vec<Value>, StepError> {
    let gitlab_url = gitlab_outputs(ctx)?["url"].as_str().unwrap_or_default().to_string();
    let store = gitlab::credential_store(ctx, spec.vault.as_ref())?;
    let app = store
        .get(gitlab::OAUTH_APP)
        .await?
        .ok_or_else(|| StepError::new("Dex's GitLab OAuth application has no stored credentials"))?;
    let client_id = field(&app, gitlab::OAUTH_APP, "clientId")?;
    let client_secret = field(&app, gitlab::OAUTH_APP, "clientSecret")?;
    let domain = &spec.domain;
    let config = json!({
        "issuer": format!("https://dex.{domain}"),
        "storage": {"type": "kubernetes", "config": {"inCluster": true}},
        "web": {"http": "0.0.0.0:5556"},
        "oauth2": {"skipApprovalScreen": true},
        "connectors": [{"type": "gitlab", "id": "gitlab", "name": "GitLab", "config": {
            "baseURL": gitlab_url, "clientID": client_id.expose(), "clientSecret": client_secret.expose(),
            "redirectURI": format!("https://dex.{domain}/callback")}}],
        "staticClients": [{"id": ARGOCD_CLIENT, "name": "Argo CD", "secret": argocd_client_secret(ctx)?.expose(),
            "redirectURIs": [format!("https://argocd.{domain}/auth/callback")]}],
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
        ingress("dex", ns, &format!("dex.{domain}"), "dex", 5556),
    ])
}

/// An Ingress served by Traefik with its default (our wildcard) certificate.
fn ingress(name: &str, namespace: &str, host: &str, service: &str, port: u16) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": namespace,
                        "annotations": {"traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
                                        "traefik.ingress.kubernetes.io/router.tls": "true"}},
           "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
               "backend": {"service": {"name": service, "port": {"number": port}}}}]}}],
                    "tls": [{"hosts": [host]}]}})
}

async fn argocd(ctx: &StepContext, spec: &ArgocdSpec) -> Result<Vec<Value>, StepError> {
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
    let store = gitlab::credential_store(ctx, spec.vault.as_ref())?;
    let reader = store
        .get(gitlab::BASE_OPERATOR_TOKEN)
        .await?
        .ok_or_else(|| StepError::new("the tenant repository's read token is not stored"))?;
    let token = field(&reader, gitlab::BASE_OPERATOR_TOKEN, "token")?;
    let oidc = format!(
        "name: GitLab\nissuer: https://dex.{domain}\nclientID: {ARGOCD_CLIENT}\nclientSecret: $oidc.dex.clientSecret\nrequestedScopes: [openid, profile, email, groups]\nrootCA: |\n{}",
        ca.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let mut tls_certs = BTreeMap::new();
    if !gitlab_host.is_empty() {
        tls_certs.insert(gitlab_host, ca.clone());
    }
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "namespace": ns},
               "data": {"url": format!("https://argocd.{domain}"), "oidc.config": oidc, "admin.enabled": "false"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "argocd-secret", "namespace": ns},
               "data": {"oidc.dex.clientSecret": b64(argocd_client_secret(ctx)?.expose())}}),
        // TLS ends at Traefik, which has our certificate.
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cmd-params-cm", "namespace": ns},
               "data": {"server.insecure": "true"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-tls-certs-cm", "namespace": ns},
               "data": tls_certs}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nautes-tenant-repo", "namespace": ns,
                   "labels": {"argocd.argoproj.io/secret-type": "repository"}},
               "data": {"type": b64("git"), "url": b64(&repo), "username": b64("nautes-base-operator"),
                        "password": b64(token.expose())}}),
        ingress("argocd-server", ns, &format!("argocd.{domain}"), "argocd-server", 80),
    ])
}

fn nautes(ctx: &StepContext, spec: &NautesSpec) -> Result<Vec<Value>, StepError> {
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

/// Merge `overlay` into `base`: maps recursively, anything else replaced.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_merge_maps_and_replace_the_rest() {
        let mut base = json!({"data": {"a": "1", "b": "2"}, "list": [1, 2], "keep": true});
        merge(&mut base, &json!({"data": {"b": "3", "c": "4"}, "list": [9]}));
        assert_eq!(
            base,
            json!({"data": {"a": "1", "b": "3", "c": "4"}, "list": [9], "keep": true})
        );
    }
}
