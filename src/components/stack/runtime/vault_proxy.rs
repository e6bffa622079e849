//! vault-proxy: Nautes' way into Vault. It serves mTLS against our CA (its
//! server certificate and the client certificate the Nautes API server
//! presents come from the PKI step) and logs in to Vault with an AppRole
//! whose secret id is kept in the cluster and reused.

use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{b64, ca_pem, pki_outputs, read, tls_secret, Configure, Planner, Runtime, StackStep};
use crate::catalog;
use crate::components::certificates;
use crate::components::vault::{self as vault_component, VaultTarget};
use crate::drivers::kube::KubeClient;
use crate::engine::{StepContext, StepError};
use crate::secret::Secret;

const NAUTES_NAMESPACE: &str = "nautes";
const VAULT_PROXY_APPROLE: &str = "vault-proxy-approle";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultProxySpec {
    pub image: String,
    pub vault: VaultTarget,
}

/// vault-proxy, Nautes' way into Vault, beside Nautes.
pub(super) struct VaultProxy;

/// Its step's name (`stack/vault-proxy/<cluster>`), and where Nautes'
/// configuration finds the step among those planned.
pub(super) const NAME: &str = "vault-proxy";

#[async_trait]
impl Configure for VaultProxy {
    const TYPE: &'static str = "vaultProxy";
    type Spec = VaultProxySpec;
    const PLANS: Option<&'static str> = Some(NAME);
    /// Its objects hold an AppRole secret id that building them may have to
    /// mint (a write to Vault), so its set is not checked for drift.
    const DRIFT: bool = false;

    fn plan(&self, p: &mut Planner, mgmt: &str) {
        let (Some(vault), Some(nautes)) = (p.vault_target.clone(), p.enabled(catalog::NAUTES.key)) else {
            return;
        };
        let version = nautes
            .version
            .clone()
            .unwrap_or(catalog::NAUTES.default_version().into());
        let spec = VaultProxySpec {
            image: format!("ghcr.io/nautes-labs/vault-proxy:{version}"),
            vault,
        };
        let cluster = p.cluster_of(catalog::NAUTES.key, mgmt);
        let step = StackStep::ours(NAME, None, Runtime::of::<Self>(&spec), NAUTES_NAMESPACE)
            .needing([vault_component::STEP_ID.into(), certificates::STEP_ID.into()]);
        if let Some(id) = p.add(&cluster, step) {
            p.planned.insert(NAME, id);
        }
    }

    async fn objects(
        &self,
        ctx: &StepContext,
        spec: &VaultProxySpec,
        client: &KubeClient,
    ) -> Result<Vec<Value>, StepError> {
        vault_proxy(ctx, spec, client).await
    }

    async fn destroy(&self, ctx: &StepContext, spec: &VaultProxySpec) -> Result<(), StepError> {
        destroy(ctx, spec).await
    }
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
fn role() -> String {
    format!(
        "auth/{}/role/{}",
        vault_component::APPROLE_MOUNT,
        vault_component::PROXY_ROLE
    )
}

async fn approle_secret_id(
    ctx: &StepContext,
    spec: &VaultProxySpec,
    client: &crate::drivers::kube::KubeClient,
) -> Result<(String, Secret), StepError> {
    use crate::drivers::kube::ObjectRef;
    let (vault, token) = vault_component::connect(ctx, &spec.vault)?;
    let role = role();
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
    let in_use = existing.and_then(|obj| {
        let data = obj.data.get("data").cloned().unwrap_or_default();
        (decode(&data["role_id"]).as_deref() == Some(role_id.as_str()))
            .then(|| decode(&data["secret_id"]).map(Secret::new))
            .flatten()
    });
    // Made with a write-ahead record, so one whose answer a crash lost is destroyed.
    let secret_id = crate::components::vault_approle::secret_id(&ctx.intents, &vault, &token, &role, in_use).await?;
    Ok((role_id, secret_id))
}

/// Teardown, once vault-proxy is gone from the cluster: the secret ids we
/// made for it never expire, so each is destroyed rather than left alive.
async fn destroy(ctx: &StepContext, spec: &VaultProxySpec) -> Result<(), StepError> {
    if ctx.intents.list(crate::components::vault_approle::RECORD).is_empty() {
        return Ok(());
    }
    let (vault, token) = vault_component::connect(ctx, &spec.vault)?;
    crate::components::vault_approle::destroy_ours(&ctx.intents, &vault, &token, &role()).await
}

async fn vault_proxy(
    ctx: &StepContext,
    spec: &VaultProxySpec,
    client: &crate::drivers::kube::KubeClient,
) -> Result<Vec<Value>, StepError> {
    let ns = NAUTES_NAMESPACE;
    let (role_id, secret_id) = approle_secret_id(ctx, spec, client).await?;
    let (server_cert, server_key) = cert_pair(ctx, certificates::VAULT_PROXY_SERVER)?;
    let (client_cert, client_key) = cert_pair(ctx, certificates::VAULT_PROXY_CLIENT)?;
    let ca = ca_pem(ctx)?;
    let labels = json!({"app.kubernetes.io/name": "vault-proxy"});
    let config = format!(
        "server:\n  addr: 0.0.0.0:8000\n  cert: /etc/vault-proxy/tls/tls.crt\n  key: /etc/vault-proxy/tls/tls.key\n  clientCA: /etc/vault-proxy/ca/ca.crt\nvault:\n  addr: {}\n  caCert: /etc/vault-proxy/ca/ca.crt\n  approle:\n    mount: {}\n    roleIDFile: /etc/vault-proxy/approle/role_id\n    secretIDFile: /etc/vault-proxy/approle/secret_id\n",
        spec.vault.url,
        vault_component::APPROLE_MOUNT
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
