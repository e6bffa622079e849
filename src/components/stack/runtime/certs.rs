//! Our certificates in the clusters: Traefik's default certificate (our
//! ingress wildcard, with the TLSStore that makes it the default) and the
//! cert-manager ClusterIssuer backed by our CA. The keys are read from what
//! the PKI step produced (or the user's own CA key), never from a template.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ca_pem, pki_outputs, read, tls_secret, Configure, Ours, Planner, Runtime, StackStep};
use crate::catalog;
use crate::components::certificates;
use crate::components::stack::plan::{traefik_value_problems, traefik_values};
use crate::drivers::kube::KubeClient;
use crate::engine::{StepContext, StepError};
use crate::inventory::SecretRef;
use crate::secret::Secret;

pub const INGRESS_TLS_SECRET: &str = "nautes-ingress-tls";
pub const CA_SECRET: &str = "nautes-ca";
pub const CLUSTER_ISSUER: &str = "nautes-ca";

/// Traefik's release: its NodePorts from our own keys among its values,
/// our ingress certificate as its default (so the PKI's step first).
pub(super) struct IngressTls;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTlsSpec {
    pub namespace: String,
}

#[async_trait]
impl Configure for IngressTls {
    const TYPE: &'static str = "ingressTls";
    type Spec = IngressTlsSpec;
    const RELEASE: Option<&'static str> = Some(catalog::TRAEFIK_RELEASE.slug);

    fn release(&self, p: &mut Planner) -> Ours {
        p.problems.extend(traefik_value_problems(p.loaded));
        let spec = IngressTlsSpec {
            namespace: catalog::TRAEFIK_RELEASE.namespace.into(),
        };
        Ours {
            values: traefik_values(p.loaded),
            runtime: Some(Runtime::of::<Self>(&spec)),
            needs: vec![certificates::STEP_ID.into()],
        }
    }

    async fn objects(&self, ctx: &StepContext, spec: &IngressTlsSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        ingress_tls(ctx, &spec.namespace)
    }
}

/// A cert-manager ClusterIssuer on our CA, beside cert-manager.
pub(super) struct CaIssuer;

/// (`user_ca_key` as it was recorded before the configurations were typed.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaIssuerSpec {
    pub user_ca_key: Option<SecretRef>,
}

#[async_trait]
impl Configure for CaIssuer {
    const TYPE: &'static str = "caIssuer";
    type Spec = CaIssuerSpec;
    const NEEDS: &'static [&'static str] = &[catalog::CERT_MANAGER.key];

    fn plan(&self, p: &mut Planner, mgmt: &str) {
        let Some(cert_manager) = p.planned_step(catalog::CERT_MANAGER.key) else {
            return;
        };
        let user_ca_key = p.loaded.inventory.pki.ca.as_ref().map(|c| c.key.clone());
        let cluster = p.cluster_of(catalog::CERT_MANAGER.key, mgmt);
        let step = StackStep::ours(
            "ca-issuer",
            None,
            Runtime::of::<Self>(&CaIssuerSpec { user_ca_key }),
            catalog::CERT_MANAGER_RELEASE.namespace,
        )
        .needing([cert_manager, certificates::STEP_ID.into()]);
        p.add(&cluster, step);
    }

    async fn objects(&self, ctx: &StepContext, spec: &CaIssuerSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        ca_issuer(ctx, spec.user_ca_key.as_ref())
    }
}

fn ingress_tls(ctx: &StepContext, namespace: &str) -> Result<Vec<Value>, StepError> {
    let cert = &pki_outputs(ctx)?["certs"][certificates::INGRESS];
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
        (Some(r), _) => r
            .resolve(&ctx.base_dir)
            .map_err(|e| StepError::new(format!("pki.ca.key: {e}")))?,
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
