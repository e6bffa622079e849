//! Our certificates in the clusters: Traefik's default certificate (our
//! ingress wildcard, with the TLSStore that makes it the default) and the
//! cert-manager ClusterIssuer backed by our CA. The keys are read from what
//! the PKI step produced (or the user's own CA key), never from a template.

use serde_json::{json, Value};

use super::{ca_pem, pki_outputs, read, tls_secret};
use crate::components::certificates;
use crate::engine::{StepContext, StepError};
use crate::inventory::SecretRef;
use crate::secret::Secret;

pub const INGRESS_TLS_SECRET: &str = "nautes-ingress-tls";
pub const CA_SECRET: &str = "nautes-ca";
pub const CLUSTER_ISSUER: &str = "nautes-ca";

pub(super) fn ingress_tls(ctx: &StepContext, namespace: &str) -> Result<Vec<Value>, StepError> {
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

pub(super) fn ca_issuer(ctx: &StepContext, user_ca_key: Option<&SecretRef>) -> Result<Vec<Value>, StepError> {
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
