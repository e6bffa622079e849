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
const OAUTH2_PROXY_CLIENT: &str = "oauth2-proxy";
const OAUTH2_PROXY_SECRET: &str = "oauth2-proxy/dex-client-secret";
/// The Traefik middleware an IngressRoute names to require a sign-in.
pub const OAUTH2_PROXY_MIDDLEWARE: &str = "oauth2-proxy";

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
    /// vault-proxy: Nautes' way into Vault, mTLS against our CA, AppRole to Vault.
    VaultProxy(VaultProxySpec),
    /// oauth2-proxy behind Traefik: sign-in through Dex for what has no login.
    Oauth2Proxy(Oauth2ProxySpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultProxySpec {
    pub image: String,
    pub vault: VaultTarget,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Oauth2ProxySpec {
    pub domain: String,
    pub version: String,
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

/// Build the step's run-time objects (`client`: the cluster they go to).
pub async fn objects(
    ctx: &StepContext,
    runtime: &Runtime,
    client: &crate::drivers::kube::KubeClient,
) -> Result<Vec<Value>, StepError> {
    match runtime {
        Runtime::IngressTls { namespace } => ingress_tls(ctx, namespace),
        Runtime::CaIssuer { user_ca_key } => ca_issuer(ctx, user_ca_key.as_ref()),
        Runtime::Dex(spec) => dex(ctx, spec).await,
        Runtime::Argocd(spec) => argocd(ctx, spec).await,
        Runtime::Nautes(spec) => nautes(ctx, spec),
        Runtime::VaultProxy(spec) => vault_proxy(ctx, spec, client).await,
        Runtime::Oauth2Proxy(spec) => oauth2_proxy(ctx, spec),
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
        // Set ourselves: chart 10.24 has no value for the default certificate.
        json!({"apiVersion": "traefik.containo.us/v1alpha1", "kind": "TLSStore",
               "metadata": {"name": "default", "namespace": namespace},
               "spec": {"defaultCertificate": {"secretName": INGRESS_TLS_SECRET}}}),
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
    kept_secret(ctx, "argocd/dex-client-secret")
}

/// A random secret made on first use and kept 0600 under the outputs.
fn kept_secret(ctx: &StepContext, name: &str) -> Result<Secret, StepError> {
    let path = ctx.outputs_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Secret::new(s.trim())),
        Err(_) => {
            let s = random_token().map_err(|e| StepError::new(format!("cannot make a random secret: {e}")))?;
            write_private(&path, &s).map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
            Ok(s)
        }
    }
}

/// Dex's clients: Argo CD, and oauth2-proxy when it is installed.
fn static_clients(ctx: &StepContext, spec: &DexSpec) -> Result<Value, StepError> {
    let domain = &spec.domain;
    let mut clients = vec![
        json!({"id": ARGOCD_CLIENT, "name": "Argo CD", "secret": argocd_client_secret(ctx)?.expose(),
        "redirectURIs": [format!("https://argocd.{domain}/auth/callback")]}),
    ];
    if spec.oauth2_proxy {
        clients.push(json!({"id": OAUTH2_PROXY_CLIENT, "name": "oauth2-proxy",
            "secret": kept_secret(ctx, OAUTH2_PROXY_SECRET)?.expose(),
            "redirectURIs": [format!("https://auth.{domain}/oauth2/callback")]}));
    }
    Ok(Value::Array(clients))
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

fn oauth2_proxy(ctx: &StepContext, spec: &Oauth2ProxySpec) -> Result<Vec<Value>, StepError> {
    let ns = "oauth2-proxy";
    let domain = &spec.domain;
    let cookie = kept_secret(ctx, "oauth2-proxy/cookie-secret")?;
    // oauth2-proxy wants a 16, 24 or 32 byte cookie secret: the first 32 hex characters.
    let cookie: String = cookie.expose().chars().take(32).collect();
    let client_secret = kept_secret(ctx, OAUTH2_PROXY_SECRET)?;
    let labels = json!({"app.kubernetes.io/name": "oauth2-proxy"});
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "oauth2-proxy", "namespace": ns},
               "data": {"client-secret": b64(client_secret.expose()), "cookie-secret": b64(&cookie)}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nautes-ca", "namespace": ns},
               "data": {"ca.crt": ca_pem(ctx)?}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "oauth2-proxy", "namespace": ns, "labels": labels},
               "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                   "metadata": {"labels": labels},
                   "spec": {"containers": [{
                       "name": "oauth2-proxy", "image": format!("quay.io/oauth2-proxy/oauth2-proxy:{}", spec.version),
                       "args": ["--provider=oidc", format!("--oidc-issuer-url=https://dex.{domain}"),
                                format!("--client-id={OAUTH2_PROXY_CLIENT}"), "--email-domain=*",
                                "--upstream=static://202", "--http-address=0.0.0.0:4180", "--reverse-proxy=true",
                                format!("--cookie-domain=.{domain}"), format!("--whitelist-domain=.{domain}"),
                                "--provider-ca-file=/etc/nautes-ca/ca.crt", "--set-xauthrequest=true"],
                       "env": [{"name": "OAUTH2_PROXY_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "oauth2-proxy", "key": "client-secret"}}},
                               {"name": "OAUTH2_PROXY_COOKIE_SECRET", "valueFrom": {"secretKeyRef": {"name": "oauth2-proxy", "key": "cookie-secret"}}}],
                       "ports": [{"name": "http", "containerPort": 4180}],
                       "readinessProbe": {"httpGet": {"path": "/ping", "port": 4180}},
                       "volumeMounts": [{"name": "ca", "mountPath": "/etc/nautes-ca", "readOnly": true}]}],
                       "volumes": [{"name": "ca", "configMap": {"name": "nautes-ca"}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "oauth2-proxy", "namespace": ns},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 4180, "targetPort": 4180}]}}),
        ingress("oauth2-proxy", ns, &format!("auth.{domain}"), "oauth2-proxy", 4180),
        // What a route adds to require a sign-in (Traefik's forwardAuth).
        json!({"apiVersion": "traefik.containo.us/v1alpha1", "kind": "Middleware",
               "metadata": {"name": OAUTH2_PROXY_MIDDLEWARE, "namespace": ns},
               "spec": {"forwardAuth": {"address": "http://oauth2-proxy.oauth2-proxy.svc:4180/oauth2/auth",
                                         "trustForwardHeader": true,
                                         "authResponseHeaders": ["X-Auth-Request-User", "X-Auth-Request-Email"]}}}),
    ])
}

fn cert_pair(ctx: &StepContext, name: &str) -> Result<(String, Secret), StepError> {
    let c = &pki_outputs(ctx)?["certs"][name];
    let pem = read(c["cert"].as_str().unwrap_or_default(), &format!("certificate {name}"))?;
    let key = Secret::new(read(c["key"].as_str().unwrap_or_default(), &format!("key {name}"))?);
    Ok((pem, key))
}

/// The AppRole secret id vault-proxy logs in with: the one already in the
/// cluster, else a new one. Secret ids of our role never expire (no
/// `secret_id_ttl`), so asking Vault for one on every run would only pile
/// them up.
async fn approle_secret_id(
    ctx: &StepContext,
    spec: &VaultProxySpec,
    client: &crate::drivers::kube::KubeClient,
) -> Result<(String, Secret), StepError> {
    use crate::drivers::kube::ObjectRef;
    let (vault, token) = super::super::vault::connect(ctx, &spec.vault)?;
    let role = format!(
        "auth/{}/role/{}",
        super::super::vault::APPROLE_MOUNT,
        super::super::vault::PROXY_ROLE
    );
    let role_id = vault
        .read(&format!("{role}/role-id"), &token)
        .await
        .map_err(StepError::new)?
        .and_then(|v| v["data"]["role_id"].as_str().map(str::to_string))
        .ok_or_else(|| StepError::new("Vault has no role id for vault-proxy (the vault/configure step makes it)"))?;
    let served = client
        .served("v1", "Secret")
        .await
        .map_err(|e| StepError::new(e.to_string()))?;
    let existing = match served {
        Some(served) => client
            .get(
                &served,
                &ObjectRef {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    namespace: Some(NAUTES_NAMESPACE.into()),
                    name: VAULT_PROXY_APPROLE.into(),
                },
            )
            .await
            .map_err(|e| StepError::new(e.to_string()))?,
        None => None,
    };
    let decode = |v: &Value| {
        v.as_str()
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    if let Some(obj) = existing {
        let data = obj.data.get("data").cloned().unwrap_or_default();
        if decode(&data["role_id"]).as_deref() == Some(role_id.as_str()) {
            if let Some(secret_id) = decode(&data["secret_id"]) {
                return Ok((role_id, Secret::new(secret_id)));
            }
        }
    }
    let made = vault
        .write(&format!("{role}/secret-id"), &token, &json!({}))
        .await
        .map_err(StepError::new)?
        .and_then(|v| v["data"]["secret_id"].as_str().map(str::to_string))
        .ok_or_else(|| StepError::new("Vault returned no secret id for vault-proxy"))?;
    Ok((role_id, Secret::new(made)))
}

const NAUTES_NAMESPACE: &str = "nautes";
const VAULT_PROXY_APPROLE: &str = "vault-proxy-approle";

async fn vault_proxy(
    ctx: &StepContext,
    spec: &VaultProxySpec,
    client: &crate::drivers::kube::KubeClient,
) -> Result<Vec<Value>, StepError> {
    let ns = NAUTES_NAMESPACE;
    let (role_id, secret_id) = approle_secret_id(ctx, spec, client).await?;
    let (server_cert, server_key) = cert_pair(ctx, pki::VAULT_PROXY_SERVER)?;
    let (client_cert, client_key) = cert_pair(ctx, pki::VAULT_PROXY_CLIENT)?;
    let ca = ca_pem(ctx)?;
    let labels = json!({"app.kubernetes.io/name": "vault-proxy"});
    let config = format!(
        "server:\n  addr: 0.0.0.0:8000\n  cert: /etc/vault-proxy/tls/tls.crt\n  key: /etc/vault-proxy/tls/tls.key\n  clientCA: /etc/vault-proxy/ca/ca.crt\nvault:\n  addr: {}\n  caCert: /etc/vault-proxy/ca/ca.crt\n  approle:\n    mount: {}\n    roleIDFile: /etc/vault-proxy/approle/role_id\n    secretIDFile: /etc/vault-proxy/approle/secret_id\n",
        spec.vault.url,
        super::super::vault::APPROLE_MOUNT
    );
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        tls_secret("vault-proxy-server-tls", ns, &server_cert, &server_key),
        // What the Nautes API server presents to vault-proxy.
        tls_secret("vault-proxy-client-tls", ns, &client_cert, &client_key),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vault-proxy-ca", "namespace": ns},
               "data": {"ca.crt": ca}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vault-proxy-config", "namespace": ns},
               "data": {"config.yaml": config}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": VAULT_PROXY_APPROLE, "namespace": ns},
               "data": {"role_id": b64(&role_id), "secret_id": b64(secret_id.expose())}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vault-proxy", "namespace": ns, "labels": labels},
               "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                   "metadata": {"labels": labels},
                   "spec": {"containers": [{
                       "name": "vault-proxy", "image": spec.image,
                       "args": ["--config", "/etc/vault-proxy/config/config.yaml"],
                       "ports": [{"name": "https", "containerPort": 8000}],
                       "volumeMounts": [
                           {"name": "tls", "mountPath": "/etc/vault-proxy/tls", "readOnly": true},
                           {"name": "ca", "mountPath": "/etc/vault-proxy/ca", "readOnly": true},
                           {"name": "config", "mountPath": "/etc/vault-proxy/config", "readOnly": true},
                           {"name": "approle", "mountPath": "/etc/vault-proxy/approle", "readOnly": true}]}],
                       "volumes": [
                           {"name": "tls", "secret": {"secretName": "vault-proxy-server-tls"}},
                           {"name": "ca", "configMap": {"name": "vault-proxy-ca"}},
                           {"name": "config", "configMap": {"name": "vault-proxy-config"}},
                           {"name": "approle", "secret": {"secretName": VAULT_PROXY_APPROLE}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vault-proxy", "namespace": ns},
               "spec": {"selector": labels, "ports": [{"name": "https", "port": 8000, "targetPort": 8000}]}}),
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
