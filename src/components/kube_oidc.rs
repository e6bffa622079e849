//! Signing in to the Kubernetes API through Dex, the same on every kind of
//! cluster: the apiserver trusts Dex's id_tokens issued to the public
//! client `kubernetes` (`kubectl oidc-login`), takes the user's name from
//! the `email` claim and their groups from the `groups` claim, and checks
//! Dex's TLS against our CA (the file laid down on each server). Only when
//! Dex is installed.
//!
//! The groups claim carries GitLab group paths unprefixed, so a tenant's
//! RoleBinding names `Group acme-dev` as the inventory writes it. That is
//! safe only because a GitLab path cannot hold `:`: no GitLab group can
//! pose as `system:masters` or any other `system:` group. The username is
//! the email (Dex marks it verified; the apiserver refuses an email claim
//! that is not), which Kubernetes leaves unprefixed.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::components::endpoints;
use crate::components::stack::sign_in;
use crate::inventory::Inventory;

pub const USERNAME_CLAIM: &str = "email";
pub const GROUPS_CLAIM: &str = "groups";

/// The apiserver's OIDC settings for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiserverOidc {
    pub issuer_url: String,
    pub client_id: String,
    /// Our CA, where the apiserver reads it.
    pub ca_file: String,
}

/// The OIDC settings of the inventory's clusters, with the CA at `ca_file`
/// on their servers; None without Dex.
pub fn for_inventory(inv: &Inventory, ca_file: &str) -> Option<ApiserverOidc> {
    let domain = inv.settings.domain.as_deref()?;
    (inv.components.enabled("dex") && inv.components.enabled("gitlab")).then(|| ApiserverOidc {
        issuer_url: endpoints::dex_issuer(domain),
        client_id: sign_in::KUBERNETES.id.to_string(),
        ca_file: ca_file.to_string(),
    })
}

impl ApiserverOidc {
    /// Each flag as `name=value`: K3s's `kube-apiserver-arg` entries, and
    /// with `--` in front, kube-apiserver's own command line.
    pub fn apiserver_args(&self) -> Vec<String> {
        vec![
            format!("oidc-issuer-url={}", self.issuer_url),
            format!("oidc-client-id={}", self.client_id),
            format!("oidc-username-claim={USERNAME_CLAIM}"),
            format!("oidc-groups-claim={GROUPS_CLAIM}"),
            format!("oidc-ca-file={}", self.ca_file),
        ]
    }

    /// The same as Kubespray's `kube_oidc_*` group variables.
    pub fn kubespray_vars(&self) -> Map<String, Value> {
        let vars = json!({
            "kube_oidc_auth": true,
            "kube_oidc_url": self.issuer_url,
            "kube_oidc_client_id": self.client_id,
            "kube_oidc_ca_file": self.ca_file,
            "kube_oidc_username_claim": USERNAME_CLAIM,
            "kube_oidc_groups_claim": GROUPS_CLAIM,
        });
        vars.as_object().cloned().unwrap_or_default()
    }
}

/// A kubeconfig for a user of the cluster at `server` (whose CA is
/// `cluster_ca_pem`): its credential comes from `kubectl oidc-login
/// get-token`, which signs the user in through Dex in a browser and caches
/// the id_token; Dex's TLS is checked against `dex_ca_pem`. No secret in it.
pub fn user_kubeconfig(cluster: &str, server: &str, cluster_ca_b64: &str, oidc: &LoginSettings) -> String {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": cluster_ca_b64}}],
        "users": [{"name": format!("oidc@{cluster}"), "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubectl",
            "args": [
                "oidc-login", "get-token",
                format!("--oidc-issuer-url={}", oidc.issuer_url),
                format!("--oidc-client-id={}", oidc.client_id),
                format!("--oidc-extra-scope={USERNAME_CLAIM}"),
                format!("--oidc-extra-scope={GROUPS_CLAIM}"),
                format!("--certificate-authority-data={}", oidc.ca_b64),
            ],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": false,
        }}}],
        "contexts": [{"name": format!("oidc@{cluster}"), "context": {"cluster": cluster, "user": format!("oidc@{cluster}")}}],
        "current-context": format!("oidc@{cluster}"),
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// What a user's `kubectl oidc-login` needs to reach Dex.
pub struct LoginSettings {
    pub issuer_url: String,
    pub client_id: String,
    /// Our CA (base64 of its PEM), which Dex's certificate chains to.
    pub ca_b64: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_dex_the_kubernetes_client_and_the_claims() {
        let oidc = ApiserverOidc {
            issuer_url: "https://dex.example.com".into(),
            client_id: "kubernetes".into(),
            ca_file: "/etc/rancher/k3s/nautes-ca.crt".into(),
        };
        assert_eq!(
            oidc.apiserver_args(),
            [
                "oidc-issuer-url=https://dex.example.com",
                "oidc-client-id=kubernetes",
                "oidc-username-claim=email",
                "oidc-groups-claim=groups",
                "oidc-ca-file=/etc/rancher/k3s/nautes-ca.crt"
            ]
        );
        let vars = oidc.kubespray_vars();
        assert_eq!(vars["kube_oidc_url"], json!("https://dex.example.com"));
        assert_eq!(vars["kube_oidc_groups_claim"], json!("groups"));
    }
}
