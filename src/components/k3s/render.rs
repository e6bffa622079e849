//! The files a K3s node receives, rendered from the inventory.

use serde::Serialize;

use super::Role;
use crate::inventory::validate::{DEFAULT_POD_CIDR, DEFAULT_SERVICE_CIDR};
use crate::inventory::{Artifacts, Cluster, K3sCluster};

#[derive(Serialize)]
struct ConfigContext<'a> {
    cluster: &'a str,
    node_name: &'a str,
    role: &'a str,
    token_file: &'a str,
    node_ip: &'a str,
    join_url: Option<String>,
    cluster_init: bool,
    pod_cidr: &'a str,
    service_cidr: &'a str,
    cluster_dns: Option<&'a str>,
    tls_san: Vec<String>,
    flannel_backend: Option<&'a str>,
    disable: &'a [String],
    labels: Vec<String>,
    kube_apiserver_args: Vec<String>,
}

pub struct NodeInput<'a> {
    pub cluster: &'a Cluster,
    pub k3s: &'a K3sCluster,
    pub node_name: &'a str,
    pub node_ip: &'a str,
    pub role: Role,
    /// Set for every node but the first server.
    pub join_url: Option<String>,
    pub init: bool,
    pub labels: Vec<String>,
    pub extra_sans: Vec<String>,
    /// A server's apiserver signs users in through Dex.
    pub oidc: Option<&'a crate::components::kube_oidc::ApiserverOidc>,
}

pub fn config(input: &NodeInput) -> Result<String, String> {
    let net = &input.cluster.networking;
    let mut tls_san = input.k3s.tls_san.clone();
    for san in &input.extra_sans {
        if !tls_san.contains(san) {
            tls_san.push(san.clone());
        }
    }
    let ctx = ConfigContext {
        cluster: &input.cluster.name,
        node_name: input.node_name,
        role: input.role.as_str(),
        token_file: super::REMOTE_TOKEN_FILE,
        node_ip: input.node_ip,
        join_url: input.join_url.clone(),
        // Embedded etcd (HA) only with several servers; a lone server keeps sqlite.
        cluster_init: input.init && input.k3s.servers.len() > 1,
        pod_cidr: net.pod_cidr.as_deref().unwrap_or(DEFAULT_POD_CIDR),
        service_cidr: net.service_cidr.as_deref().unwrap_or(DEFAULT_SERVICE_CIDR),
        cluster_dns: net.cluster_dns.as_deref(),
        tls_san,
        flannel_backend: input.k3s.flannel_backend.as_deref(),
        disable: &input.k3s.disable,
        labels: input.labels.clone(),
        kube_apiserver_args: input.oidc.map(|o| o.apiserver_args()).unwrap_or_default(),
    };
    crate::templates::render("k3s/config.yaml", &ctx)
}

#[derive(Serialize)]
struct Mirror<'a> {
    registry: &'a str,
    endpoints: &'a [String],
    hosts: Vec<String>,
    /// The CA containerd trusts for these endpoints (on the node).
    ca_file: Option<&'a str>,
}

/// A registry of ours the nodes pull from (Harbor installed in a cluster),
/// trusted through the CA at `ca_file` on the node.
pub struct OwnMirror<'a> {
    pub registry: &'a str,
    pub endpoints: &'a [String],
    pub ca_file: &'a str,
}

fn hosts_of(endpoints: &[String]) -> Vec<String> {
    endpoints
        .iter()
        .map(|e| e.split("://").nth(1).unwrap_or(e).trim_end_matches('/').to_string())
        .collect()
}

/// registries.yaml when private mirrors are configured (`artifacts.mirrors`,
/// each trusted through `ca_file_on_node` if given, else the system
/// roots) or a registry of ours is.
pub fn registries(
    artifacts: &Artifacts,
    ca_file_on_node: Option<&str>,
    ours: Option<&OwnMirror>,
) -> Result<Option<String>, String> {
    if artifacts.mirrors.is_empty() && ours.is_none() {
        return Ok(None);
    }
    let mut mirrors: Vec<Mirror> = artifacts
        .mirrors
        .iter()
        .map(|(registry, endpoints)| Mirror {
            registry,
            endpoints,
            hosts: hosts_of(endpoints),
            ca_file: ca_file_on_node,
        })
        .collect();
    if let Some(o) = ours {
        mirrors.push(Mirror {
            registry: o.registry,
            endpoints: o.endpoints,
            hosts: hosts_of(o.endpoints),
            ca_file: Some(o.ca_file),
        });
    }
    #[derive(Serialize)]
    struct Ctx<'a> {
        mirrors: Vec<Mirror<'a>>,
        any_ca: bool,
    }
    let any_ca = mirrors.iter().any(|m| m.ca_file.is_some());
    crate::templates::render("k3s/registries.yaml", &Ctx { mirrors, any_ca }).map(Some)
}
