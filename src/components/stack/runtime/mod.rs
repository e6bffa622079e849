//! Objects that can only be built when the step runs, because they hold
//! what earlier steps produced: our certificates and CA key (never a key in
//! a template), Dex's GitLab OAuth secret, Argo CD's repository token. They
//! are merged over the upstream manifest's objects of the same name (Argo
//! CD's argocd-cm, argocd-secret) or added beside them.
//!
//! This module holds the `Runtime` enum a stack step records, the dispatch
//! to the builder of each concept (one file each), the small helpers they
//! share, and the merge of our objects over upstream ones.

mod argocd;
mod certs;
mod dex;
mod oauth2_proxy;
mod vault_proxy;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::components::{certificates, gitlab};
use crate::engine::{StepContext, StepError};
use crate::inventory::SecretRef;
use crate::secret::{random_token, write_private, Secret};

pub use self::argocd::{rbac_config as argocd_rbac_config, ArgocdSpec, NautesSpec};
pub use self::certs::{CA_SECRET, CLUSTER_ISSUER, INGRESS_TLS_SECRET};
pub use self::dex::{
    identity_objects as dex_identity_objects, render_config as render_dex_config, DexConfig, DexSpec,
    StaticClient as DexStaticClient, NAMESPACE as DEX_NAMESPACE,
};
pub use self::oauth2_proxy::{tekton_dashboard_route, Oauth2ProxySpec, OAUTH2_PROXY_MIDDLEWARE, TEKTON_DASHBOARD_HOST};
pub use self::vault_proxy::VaultProxySpec;

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
    /// Harbor's, Nexus' or SonarQube's Secrets, merged over its chart's.
    Registry(crate::components::registries::install::InstallSpec),
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn read(path: &str, what: &str) -> Result<String, StepError> {
    std::fs::read_to_string(path).map_err(|e| StepError::new(format!("cannot read {what} at {path}: {e}")))
}

fn pki_outputs(ctx: &StepContext) -> Result<&Value, StepError> {
    ctx.needs_outputs
        .get(certificates::STEP_ID)
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
        Runtime::IngressTls { namespace } => certs::ingress_tls(ctx, namespace),
        Runtime::CaIssuer { user_ca_key } => certs::ca_issuer(ctx, user_ca_key.as_ref()),
        Runtime::Dex(spec) => dex::dex(ctx, spec).await,
        Runtime::Argocd(spec) => argocd::argocd(ctx, spec).await,
        Runtime::Nautes(spec) => argocd::nautes(ctx, spec),
        Runtime::VaultProxy(spec) => vault_proxy::vault_proxy(ctx, spec, client).await,
        Runtime::Oauth2Proxy(spec) => oauth2_proxy::oauth2_proxy(ctx, spec),
        Runtime::Registry(spec) => crate::components::registries::install::objects(ctx, spec).await,
    }
}

/// What a step's teardown undoes outside the cluster, after its objects
/// are deleted: the credentials its run-time objects carried.
pub async fn destroy(ctx: &StepContext, runtime: &Runtime) -> Result<(), StepError> {
    match runtime {
        Runtime::VaultProxy(spec) => vault_proxy::destroy(ctx, spec).await,
        Runtime::IngressTls { .. }
        | Runtime::CaIssuer { .. }
        | Runtime::Dex(_)
        | Runtime::Argocd(_)
        | Runtime::Nautes(_)
        | Runtime::Oauth2Proxy(_)
        | Runtime::Registry(_) => Ok(()),
    }
}

fn tls_secret(name: &str, namespace: &str, cert: &str, key: &Secret) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": namespace},
           "data": {"tls.crt": b64(cert), "tls.key": b64(key.expose())}})
}

/// A random secret made on first use and kept 0600 under the outputs.
pub(crate) fn kept_secret(ctx: &StepContext, name: &str) -> Result<Secret, StepError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_merge_maps_and_replace_the_rest() {
        let mut base = json!({"data": {"a": "1", "b": "2"}, "list": [1, 2], "keep": true});
        crate::steps::manifests::merge_values(&mut base, &json!({"data": {"b": "3", "c": "4"}, "list": [9]}));
        assert_eq!(
            base,
            json!({"data": {"a": "1", "b": "3", "c": "4"}, "list": [9], "keep": true})
        );
    }
}
