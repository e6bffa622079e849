//! K3s clusters in the inventory -> steps.

use serde_json::json;

use super::render::{self, NodeInput};
use super::{KubeconfigSpec, NodeSpec, Role, TokenSpec};
use crate::components::{certificates, infrastructure, kube_oidc, preflight};
use crate::inventory::spans::{push_index, push_key};
use crate::inventory::{ClusterType, Diagnostic, Loaded};
use crate::plan::Step;
use crate::steps::kube_target::k3s_kubeconfig_step_id;
use crate::steps::{hosts, release_files};

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let mut problems = Vec::new();
    for (ci, cluster) in loaded.inventory.clusters.iter().enumerate() {
        let (ClusterType::K3s, Some(k3s)) = (cluster.cluster_type, &cluster.k3s) else {
            continue;
        };
        let base = push_key(&push_index("clusters", ci), "k3s");
        let c = &cluster.name;
        let Some(first) = k3s.servers.first() else {
            continue;
        };
        let Some(first_conn) = hosts::connection(loaded, first) else {
            continue;
        };

        let artifact = match release_files::k3s_step(loaded, &k3s.version, &push_key(&base, "version")) {
            Ok(a) => a,
            Err(d) => {
                problems.push(d);
                continue;
            }
        };
        let artifact_id = artifact.id.clone();
        let pins: std::collections::BTreeMap<String, String> = artifact.spec["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["name"].as_str()?.to_string(), f["sha256"].as_str()?.to_string())))
            .collect();
        if !steps.iter().any(|s| s.id == artifact_id) {
            steps.push(artifact);
        }

        let token_id = token_step_id(c);
        steps.push(Step::of(
            &token_id,
            format!("join token of cluster {c}"),
            &TokenSpec {
                cluster: c.clone(),
                source: k3s.token.clone(),
            },
        ));

        let members: Vec<(&String, Role)> = k3s
            .servers
            .iter()
            .map(|h| (h, Role::Server))
            .chain(k3s.agents.iter().map(|h| (h, Role::Agent)))
            .collect();
        let preflight_id = preflight::plan_cluster(loaded, c, &members, steps);

        let join_url = format!("https://{}:6443", first_conn.internal_address);
        // Harbor installed in a cluster, as a registry the nodes pull from
        // (`components.harbor.values.mirror`), trusted through our CA.
        let harbor = crate::components::registries::install::harbor_mirror(loaded);
        let own = harbor.as_ref().map(|h| render::OwnMirror {
            registry: &h.registry,
            endpoints: std::slice::from_ref(&h.endpoint),
            ca_file: super::REMOTE_OIDC_CA_FILE,
        });
        let registries = match render::registries(&loaded.inventory.artifacts, None, own.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Diagnostic::error("artifacts.mirrors", e));
                None
            }
        };
        // Servers sign users in through Dex when it is installed.
        let oidc = kube_oidc::for_inventory(&loaded.inventory, super::REMOTE_OIDC_CA_FILE);
        let mut previous: Option<String> = None;
        let mut node_ids = Vec::new();
        for (host, role) in &members {
            let Some(conn) = hosts::connection(loaded, host) else {
                continue;
            };
            let init = *role == Role::Server && *host == first;
            let inv_host = hosts::find(loaded, host);
            let labels = inv_host
                .map(|h| h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            let mut extra_sans = Vec::new();
            if let Some(ep) = &k3s.api_endpoint {
                extra_sans.push(endpoint_host(ep));
            }
            if *role == Role::Server {
                extra_sans.push(conn.address.clone());
            }
            let input = NodeInput {
                cluster,
                k3s,
                node_name: host,
                node_ip: &conn.internal_address,
                role: *role,
                join_url: (!init).then(|| join_url.clone()),
                init,
                labels,
                extra_sans,
                oidc: oidc.as_ref().filter(|_| *role == Role::Server),
            };
            let config = match render::config(&input) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(Diagnostic::error(&base, e));
                    continue;
                }
            };
            let spec = NodeSpec {
                cluster: c.clone(),
                node: host.to_string(),
                role: *role,
                init,
                version: k3s.version.clone(),
                artifacts: artifact_id.clone(),
                pins: pins.clone(),
                config,
                registries: registries.clone(),
                drain_on_upgrade: k3s.drain_on_upgrade,
                // Our CA on the node: for the apiserver's sign-in, or for Harbor's pulls.
                oidc_ca_file: input
                    .oidc
                    .map(|o| o.ca_file.clone())
                    .or_else(|| own.as_ref().map(|o| o.ca_file.to_string())),
            };
            let id = node_step_id(c, *role, host);
            let mut step = Step::of(&id, format!("K3s {} {host} ({})", role.as_str(), k3s.version), &spec)
                .needs([artifact_id.clone(), token_id.clone(), preflight_id.clone()])
                .needs(infrastructure::provider_step(loaded, host))
                .needs(spec.oidc_ca_file.as_ref().map(|_| certificates::STEP_ID.to_string()))
                .with_settings(json!({
                    "conn": conn,
                    "control": first_conn,
                    "kubeconfig": format!("{c}/kubeconfig"),
                    "token": super::token_file_name(c),
                }));
            // Joiners wait for the cluster to exist; rolling order otherwise.
            if let Some(prev) = &previous {
                step = step.after([prev.clone()]);
            }
            previous = Some(id.clone());
            node_ids.push(id);
            steps.push(step);
        }

        let endpoint = match &k3s.api_endpoint {
            Some(ep) if ep.contains("://") => ep.clone(),
            Some(ep) => format!("https://{ep}:6443"),
            None => format!("https://{}:6443", first_conn.address),
        };
        let kubeconfig_id = k3s_kubeconfig_step_id(c);
        steps.push(
            Step::of(
                &kubeconfig_id,
                format!("kubeconfig of cluster {c}"),
                &KubeconfigSpec {
                    cluster: c.clone(),
                    endpoint,
                    nodes: members
                        .iter()
                        .map(|(h, _)| (h.to_string(), k3s.version.clone()))
                        .collect(),
                    remote_path: super::REMOTE_KUBECONFIG.to_string(),
                    oidc: oidc.clone(),
                },
            )
            .needs([node_step_id(c, Role::Server, first)])
            .after(node_ids.clone())
            .with_settings(json!({ "conn": first_conn })),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// `lb.example.com`, `10.0.0.5:6443` or `https://lb:6443` -> the host part, for tls-san.
fn endpoint_host(ep: &str) -> String {
    let no_scheme = ep.split("://").nth(1).unwrap_or(ep);
    let host_port = no_scheme.split('/').next().unwrap_or(no_scheme);
    match host_port.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => {
            h.trim_matches(['[', ']']).to_string()
        }
        _ => host_port.to_string(),
    }
}

/// The step of a cluster's join token.
pub fn token_step_id(cluster: &str) -> String {
    format!("k3s/{cluster}/token")
}

/// The step of one node: `k3s/<cluster>/<server|agent>/<host>`.
pub fn node_step_id(cluster: &str, role: Role, host: &str) -> String {
    format!("k3s/{cluster}/{}/{host}", role.as_str())
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_hosts() {
        assert_eq!(super::endpoint_host("https://lb.example.com:6443"), "lb.example.com");
        assert_eq!(super::endpoint_host("10.0.0.5:6443"), "10.0.0.5");
        assert_eq!(super::endpoint_host("lb"), "lb");
        assert_eq!(super::endpoint_host("http://127.0.0.1:40000/"), "127.0.0.1");
    }
}
