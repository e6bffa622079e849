//! K3s host clusters: one step per node, ordered so the first server
//! initialises the cluster, further servers join it one at a time, then
//! agents join one at a time. Ordering edges between nodes are soft
//! (`after`), so a config change re-runs only the nodes it touches while an
//! upgrade still rolls servers first, one by one, then agents.

mod kubeconfig_step;
mod node;
mod plan;
pub mod render;
mod token;

pub use kubeconfig_step::KubeconfigHandler;
pub use node::NodeHandler;
pub use plan::{node_step_id, plan};
pub use token::TokenHandler;

use serde::{Deserialize, Serialize};

use crate::plan::StepSpec;

pub const NODE_KIND: &str = "k3s-node";
pub const TOKEN_KIND: &str = "k3s-token";
pub const KUBECONFIG_KIND: &str = "k3s-kubeconfig";

/// Where the installer keeps a cluster's files in the outputs directory.
pub fn token_file_name(cluster: &str) -> String {
    format!("{cluster}/k3s-token")
}

pub fn kubeconfig_file_name(cluster: &str) -> String {
    format!("{cluster}/kubeconfig")
}

/// Paths on the node.
pub const REMOTE_TOKEN_FILE: &str = "/etc/rancher/k3s/nautes-token";
pub const REMOTE_CONFIG_FILE: &str = "/etc/rancher/k3s/config.yaml";
pub const REMOTE_REGISTRIES_FILE: &str = "/etc/rancher/k3s/registries.yaml";
pub const REMOTE_BINARY: &str = "/usr/local/bin/k3s";
pub const REMOTE_INSTALL_SCRIPT: &str = "/opt/nautes/k3s/install.sh";
pub const REMOTE_IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
pub const REMOTE_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// Our CA on a server, for the apiserver to check Dex's TLS (`oidc-ca-file`).
pub const REMOTE_OIDC_CA_FILE: &str = "/etc/rancher/k3s/nautes-ca.crt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// What a K3s node step acts on; all of it is fingerprinted, so a new
/// version (new binary sha) or a new config re-runs exactly this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub cluster: String,
    pub node: String,
    pub role: Role,
    /// The first server, which creates the cluster.
    pub init: bool,
    pub version: String,
    /// The artifacts step that provides the binary, install script and images.
    pub artifacts: String,
    /// sha256 of those files when known at plan time (air-gap bundle), so a
    /// rebuilt bundle re-runs the nodes it changes.
    pub pins: std::collections::BTreeMap<String, String>,
    /// Rendered /etc/rancher/k3s/config.yaml (holds no secret: the token is a file).
    pub config: String,
    pub registries: Option<String>,
    pub drain_on_upgrade: bool,
    /// Where our CA goes on the node (the PKI step's CA, read when the step
    /// runs): on a server whose apiserver signs users in through Dex, and on
    /// every node that pulls from the Harbor installed here; None elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_ca_file: Option<String>,
}

impl StepSpec for NodeSpec {
    const KIND: &'static str = NODE_KIND;
}

/// The join token's source; the value itself is never in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    pub cluster: String,
    pub source: Option<crate::inventory::SecretRef>,
}

impl StepSpec for TokenSpec {
    const KIND: &'static str = TOKEN_KIND;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeconfigSpec {
    pub cluster: String,
    /// Server URL written into the kubeconfig the user gets.
    pub endpoint: String,
    /// (node, version) the cluster must report Ready through that endpoint.
    pub nodes: Vec<(String, String)>,
    /// Where the admin kubeconfig is on the first server.
    pub remote_path: String,
    /// How users sign in to this cluster's API through Dex, if they do:
    /// `outputs` writes them a kubeconfig for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<crate::components::kube_oidc::ApiserverOidc>,
}

impl StepSpec for KubeconfigSpec {
    const KIND: &'static str = KUBECONFIG_KIND;
}

/// K3s host clusters. The kubeconfig handler also serves Kubespray's
/// kubeconfig steps (one kind for both: fetch admin.conf, rewrite, check).
pub struct K3s;

impl super::Component for K3s {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(TokenHandler);
        registry.add(NodeHandler);
        registry.add(KubeconfigHandler);
    }
}
