//! Kubespray clusters: render Kubespray's inventory (hosts.yaml with the
//! kube_control_plane / kube_node / etcd / k8s_cluster groups, and
//! group_vars from the inventory), then run the right playbook of the
//! user's Kubespray checkout with the real `ansible-playbook`: cluster.yml to
//! install, upgrade-cluster.yml when the Kubernetes version changes,
//! scale.yml for added nodes, remove-node.yml for removed ones, reset.yml on
//! teardown. The admin kubeconfig is then fetched like the K3s path's.

mod node_trust;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::k3s::{KubeconfigSpec, Role};
use super::{infrastructure, preflight};
use crate::drivers::ansible::{self, Playbook};
use crate::engine::{Difference, Handler, Rendered, StepContext, StepError};
use crate::inventory::spans::{push_index, push_key};
use crate::inventory::validate::{DEFAULT_POD_CIDR, DEFAULT_SERVICE_CIDR};
use crate::inventory::{ArtifactMode, ClusterType, Diagnostic, Loaded};
use crate::plan::{Step, StepSpec};
use crate::steps::host_files::{Expect, HostReads};
use crate::steps::hosts::{self, HostConn};

pub const KIND: &str = "kubespray";
const DEFAULT_KUBE_CONFIG_DIR: &str = "/etc/kubernetes";
/// Kubespray's `kube_cert_dir` unless `extraVars` sets it: kubeadm mounts
/// it into the apiserver's pod, so our CA (`kube_oidc_ca_file`) goes there.
const DEFAULT_KUBE_CERT_DIR: &str = "/etc/kubernetes/ssl";
pub const OIDC_CA_NAME: &str = "nautes-ca.crt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterSpec {
    pub cluster: String,
    pub version: String,
    pub kube_version: String,
    pub hosts: Vec<HostConn>,
    pub control_plane: Vec<String>,
    pub nodes: Vec<String>,
    pub etcd: Vec<String>,
    pub network_plugin: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub api_host: Option<String>,
    pub mirrors: BTreeMap<String, Vec<String>>,
    pub extra_vars: serde_json::Map<String, Value>,
    /// The apiserver signs users in through Dex (`kube_oidc_*`), our CA
    /// laid down on the control plane first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<super::kube_oidc::ApiserverOidc>,
    /// The Harbor installed in a cluster, as a registry mirror every node
    /// pulls from (`components.harbor.values.mirror`), our CA in each
    /// node's trust store first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harbor_mirror: Option<crate::components::registries::install::HarborMirror>,
}

impl StepSpec for ClusterSpec {
    const KIND: &'static str = KIND;
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let mut problems = Vec::new();
    for (ci, cluster) in loaded.inventory.clusters.iter().enumerate() {
        let (ClusterType::Kubespray, Some(k)) = (cluster.cluster_type, &cluster.kubespray) else {
            continue;
        };
        let base = push_key(&push_index("clusters", ci), "kubespray");
        let c = &cluster.name;
        let Some(kube_version) = k.kube_version.clone() else {
            problems.push(
                Diagnostic::error(
                    push_key(&base, "kubeVersion"),
                    format!("cluster `{c}` needs the Kubernetes version Kubespray installs"),
                )
                .with_hint("add `kubeVersion: v1.27.7` (a version your Kubespray release supports)")
                .at(loaded.spans.value(&base)),
            );
            continue;
        };
        let path = match (
            &k.path,
            loaded.inventory.artifacts.mode,
            &loaded.inventory.artifacts.bundle,
        ) {
            (Some(p), _, _) => loaded.resolve(p),
            (None, ArtifactMode::Airgap, Some(b)) => loaded.resolve(b).join("kubespray").join(&k.version),
            _ => {
                problems.push(
                    Diagnostic::error(push_key(&base, "path"), format!("cluster `{c}` needs a Kubespray {} checkout", k.version))
                        .with_hint("set `path:` to a checkout of that release (in air-gap mode it defaults to <bundle>/kubespray/<version>)")
                        .at(loaded.spans.value(&base)),
                );
                continue;
            }
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        if !path.join("cluster.yml").is_file() {
            problems.push(
                Diagnostic::error(
                    push_key(&base, "path"),
                    format!("{} has no cluster.yml: not a Kubespray checkout", path.display()),
                )
                .at(loaded
                    .spans
                    .value(&push_key(&base, "path"))
                    .or(loaded.spans.value(&base))),
            );
            continue;
        }
        let workers: Vec<String> = k.workers.clone();
        let mut members: Vec<(&String, Role)> = k.control_plane.iter().map(|h| (h, Role::Server)).collect();
        members.extend(
            k.workers
                .iter()
                .filter(|w| !k.control_plane.contains(w))
                .map(|h| (h, Role::Agent)),
        );
        let conns: Vec<HostConn> = members
            .iter()
            .filter_map(|(h, _)| hosts::connection(loaded, h))
            .collect();
        if conns.len() != members.len() {
            // Hosts from a Terraform module not yet applied: planned after it runs.
            continue;
        }
        let preflight_id = preflight::plan_cluster(loaded, c, &members, steps);
        let creators: Vec<String> = members
            .iter()
            .filter_map(|(h, _)| infrastructure::provider_step(loaded, h))
            .collect();
        let first = conns[0].clone();
        let mut nodes: Vec<String> = k.control_plane.clone();
        nodes.extend(workers.into_iter().filter(|w| !k.control_plane.contains(w)));
        let api_host = k.api_endpoint.as_deref().map(|e| {
            e.split("://")
                .last()
                .unwrap_or(e)
                .split(':')
                .next()
                .unwrap_or(e)
                .to_string()
        });
        let cert_dir = k
            .extra_vars
            .get("kube_cert_dir")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_KUBE_CERT_DIR);
        let oidc = super::kube_oidc::for_inventory(&loaded.inventory, &format!("{cert_dir}/{OIDC_CA_NAME}"));
        let spec = ClusterSpec {
            cluster: c.clone(),
            version: k.version.clone(),
            kube_version: kube_version.clone(),
            hosts: conns,
            control_plane: k.control_plane.clone(),
            nodes: nodes.clone(),
            etcd: if k.etcd.is_empty() {
                k.control_plane.clone()
            } else {
                k.etcd.clone()
            },
            network_plugin: k.network_plugin.clone().unwrap_or_else(|| "calico".into()),
            pod_cidr: cluster
                .networking
                .pod_cidr
                .clone()
                .unwrap_or_else(|| DEFAULT_POD_CIDR.into()),
            service_cidr: cluster
                .networking
                .service_cidr
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVICE_CIDR.into()),
            api_host,
            mirrors: loaded.inventory.artifacts.mirrors.clone(),
            extra_vars: k.extra_vars.clone(),
            oidc: oidc.clone(),
            harbor_mirror: crate::components::registries::install::harbor_mirror(loaded),
        };
        let needs_ca = spec.oidc.is_some() || spec.harbor_mirror.is_some();
        let cluster_id = format!("kubespray/{c}/cluster");
        steps.push(
            Step::of(
                &cluster_id,
                format!("Kubespray {} cluster {c} (Kubernetes {kube_version})", k.version),
                &spec,
            )
            .needs([preflight_id])
            .needs(creators)
            .needs(needs_ca.then(|| crate::components::certificates::STEP_ID.to_string()))
            .with_settings(json!(KubespraySettings { path: Some(path) })),
        );
        let config_dir = k
            .extra_vars
            .get("kube_config_dir")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_KUBE_CONFIG_DIR);
        let endpoint = match &k.api_endpoint {
            Some(ep) if ep.contains("://") => ep.clone(),
            Some(ep) => format!("https://{ep}:6443"),
            None => format!("https://{}:6443", first.address),
        };
        steps.push(
            Step::of(
                crate::steps::kube_target::kubespray_kubeconfig_step_id(c),
                format!("kubeconfig of cluster {c}"),
                &KubeconfigSpec {
                    cluster: c.clone(),
                    endpoint,
                    nodes: nodes.iter().map(|n| (n.clone(), kube_version.clone())).collect(),
                    remote_path: format!("{config_dir}/admin.conf"),
                    oidc: oidc.clone(),
                },
            )
            .needs([cluster_id])
            .with_settings(json!({ "conn": first })),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[derive(Serialize)]
struct InventoryHost<'a> {
    name: &'a str,
    address: &'a str,
    port: u16,
    user: &'a str,
    identity_file: Option<String>,
    use_become: bool,
    internal_address: &'a str,
}

/// hosts.yaml and group_vars for `spec`, verifying host keys against `known_hosts`.
pub fn render_inventory(spec: &ClusterSpec, known_hosts: &str) -> Result<(String, String), String> {
    let hosts: Vec<InventoryHost> = spec
        .hosts
        .iter()
        .map(|h| InventoryHost {
            name: &h.name,
            address: &h.address,
            port: h.port,
            user: &h.user,
            identity_file: h.identity_file.as_ref().map(|p| p.display().to_string()),
            use_become: h.user != "root",
            internal_address: &h.internal_address,
        })
        .collect();
    let inventory = crate::templates::render(
        "kubespray/hosts.yaml",
        &json!({
            "cluster": spec.cluster, "hosts": hosts, "control_plane": spec.control_plane,
            "nodes": spec.nodes, "etcd": spec.etcd, "known_hosts": known_hosts,
        }),
    )?;
    let extra = if spec.extra_vars.is_empty() {
        String::new()
    } else {
        serde_yaml::to_string(&spec.extra_vars).map_err(|e| e.to_string())?
    };
    let mut mirrors: Vec<Value> = spec
        .mirrors
        .iter()
        .map(|(r, e)| json!({"registry": r, "endpoints": e}))
        .collect();
    if let Some(h) = &spec.harbor_mirror {
        mirrors.push(json!({"registry": h.registry, "endpoints": [h.endpoint]}));
    }
    // The apiserver's sign-in through Dex (before the user's extra
    // variables, which may override any of it).
    let oidc = match &spec.oidc {
        Some(o) => serde_yaml::to_string(&o.kubespray_vars()).map_err(|e| e.to_string())?,
        None => String::new(),
    };
    let group_vars = crate::templates::render(
        "kubespray/group_vars.yml",
        &json!({
            "cluster": spec.cluster, "kube_version": spec.kube_version, "network_plugin": spec.network_plugin,
            "pod_cidr": spec.pod_cidr, "service_cidr": spec.service_cidr, "api_host": spec.api_host,
            "mirrors": mirrors, "extra_vars": extra, "oidc": oidc,
        }),
    )?;
    Ok((inventory, group_vars))
}

pub struct KubesprayHandler;

/// Where Kubespray's checkout is: a setting, so moving it does not re-run
/// the playbook (its version is in the spec).
#[derive(Debug, Default, Serialize, Deserialize)]
struct KubespraySettings {
    path: Option<PathBuf>,
}

/// Write the inventory for `spec` into the cluster's directory; returns the playbook runner.
fn prepare(ctx: &StepContext, spec: &ClusterSpec) -> Result<Playbook, StepError> {
    let path = ctx
        .settings::<KubespraySettings>()?
        .path
        .ok_or_else(|| StepError::new("kubespray step lacks its path (settings.path)"))?;
    let ssh = crate::steps::remote::AnsibleSsh::of(ctx)?;
    let (inventory, group_vars) = render_inventory(spec, &ssh.known_hosts).map_err(StepError::new)?;
    let dir = ctx.workdir.join("kubespray").join(&spec.cluster);
    let err = |e: std::io::Error| {
        StepError::new(format!(
            "cannot write the Kubespray inventory under {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir.join("group_vars/all")).map_err(err)?;
    crate::util::write_atomic(&dir.join("hosts.yaml"), inventory.as_bytes(), 0o600).map_err(err)?;
    crate::util::write_atomic(&dir.join("group_vars/all/nautes.yml"), group_vars.as_bytes(), 0o600).map_err(err)?;
    let binary = ansible::locate().map_err(|e| StepError::new(e.to_string()))?;
    Ok(Playbook {
        binary,
        dir: path,
        inventory: dir.join("hosts.yaml"),
        extra_args: Vec::new(),
        env: BTreeMap::from([ssh.env()]),
        timeout: ctx.limits.ansible,
    })
}

async fn run(ctx: &StepContext, pb: &Playbook, playbook: &str, args: &[String]) -> Result<usize, StepError> {
    let mut pb = Playbook {
        extra_args: args.to_vec(),
        ..clone_playbook(pb)
    };
    pb.extra_args
        .extend(["-e".to_string(), "ansible_ssh_retries=3".to_string()]);
    let progress = pb
        .run(playbook, &|line, p| {
            tracing::info!(target: "nautes_install::ansible", playbook, "{line}");
            if line.starts_with("TASK [") || line.starts_with("PLAY [") {
                ctx.progress(format!("{playbook}: play {} task {}: {}", p.plays, p.tasks, p.current));
            }
        })
        .await
        .map_err(|e| StepError::new(e.to_string()))?;
    Ok(progress.tasks)
}

fn clone_playbook(pb: &Playbook) -> Playbook {
    Playbook {
        binary: pb.binary.clone(),
        dir: pb.dir.clone(),
        inventory: pb.inventory.clone(),
        extra_args: pb.extra_args.clone(),
        env: pb.env.clone(),
        timeout: pb.timeout,
    }
}

#[async_trait]
impl Handler for KubesprayHandler {
    type Spec = ClusterSpec;

    async fn apply(&self, ctx: &StepContext, spec: &ClusterSpec) -> Result<Value, StepError> {
        let prev_version = ctx.previous_outputs["kube_version"].as_str().map(str::to_string);
        let prev_nodes: Vec<String> = serde_json::from_value(ctx.previous_outputs["nodes"].clone()).unwrap_or_default();
        let prev_hosts: Vec<HostConn> =
            serde_json::from_value(ctx.previous_outputs["hosts"].clone()).unwrap_or_default();
        let mut ran = Vec::new();
        let mut tasks = 0;
        let removed: Vec<&String> = prev_nodes.iter().filter(|n| !spec.nodes.contains(n)).collect();
        let added: Vec<&String> = spec.nodes.iter().filter(|n| !prev_nodes.contains(n)).collect();
        if !removed.is_empty() {
            // remove-node.yml needs the leaving nodes in the inventory it reads.
            let mut with_leaving = spec.clone();
            for r in &removed {
                if let Some(h) = prev_hosts.iter().find(|h| &&h.name == r) {
                    with_leaving.hosts.push(h.clone());
                    with_leaving.nodes.push((*r).clone());
                }
            }
            let pb = prepare(ctx, &with_leaving)?;
            for r in &removed {
                tasks += run(
                    ctx,
                    &pb,
                    "remove-node.yml",
                    &[
                        "-e".into(),
                        format!("node={r}"),
                        "-e".into(),
                        "skip_confirmation=yes".into(),
                    ],
                )
                .await?;
                ran.push(format!("remove-node.yml ({r})"));
            }
        }
        if let Some(oidc) = &spec.oidc {
            let ca = super::certificates::ca_pem_of(ctx)?;
            for h in spec.hosts.iter().filter(|h| spec.control_plane.contains(&h.name)) {
                let node = crate::steps::remote::connect(ctx, h).await?;
                let dir = std::path::Path::new(&oidc.ca_file)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "/".into());
                crate::steps::remote::run_checked(
                    &*node,
                    &format!("mkdir -p {}", crate::steps::remote::sh_quote(&dir)),
                )
                .await?;
                node.upload_bytes(ca.as_bytes(), &oidc.ca_file, 0o644).await?;
            }
        }
        // Before the playbook, so a containerd it installs starts trusting us.
        let mut restart = Vec::new();
        if spec.harbor_mirror.is_some() {
            let ca = super::certificates::ca_pem_of(ctx)?;
            for h in &spec.hosts {
                let node = crate::steps::remote::connect(ctx, h).await?;
                if node_trust::trust(&*node, &ca).await? == node_trust::Trust::AddedWhileContainerdRan {
                    restart.push(node);
                }
            }
        }
        let pb = prepare(ctx, spec)?;
        let (playbook, args): (&str, Vec<String>) = match prev_version {
            None => ("cluster.yml", vec![]),
            Some(v) if v != spec.kube_version => ("upgrade-cluster.yml", vec![]),
            Some(_) if !added.is_empty() => (
                "scale.yml",
                vec![format!(
                    "--limit={}",
                    added.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                )],
            ),
            Some(_) if !removed.is_empty() => ("", vec![]),
            Some(_) => ("cluster.yml", vec![]),
        };
        if !playbook.is_empty() {
            tasks += run(ctx, &pb, playbook, &args).await?;
            ran.push(playbook.to_string());
        }
        for node in restart {
            ctx.progress(format!("restarting containerd on {} to trust our CA", node.host()));
            node_trust::restart_containerd(&*node).await?;
        }
        Ok(
            json!({ "kube_version": spec.kube_version, "nodes": spec.nodes, "hosts": spec.hosts, "playbooks": ran, "tasks": tasks }),
        )
    }

    fn declare_drift(&self, ctx: &StepContext, spec: &ClusterSpec) {
        let reads = HostReads::of(ctx);
        for (host, paths) in managed(spec) {
            reads.declare(&host.name, paths.iter().map(String::as_str), []);
        }
    }

    /// On each control-plane host: the CA we lay down for the apiserver's
    /// OIDC, and the admin kubeconfig Kubespray writes (there, whatever it
    /// holds: Kubespray renders it). Read with the other steps' files of
    /// the host in one round trip.
    async fn drift(&self, ctx: &StepContext, spec: &ClusterSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let ca = match &spec.oidc {
            Some(_) => Some(super::certificates::ca_pem_of(ctx)?),
            None => None,
        };
        let reads = HostReads::of(ctx);
        let mut found = Vec::new();
        for (host, paths) in managed(spec) {
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let live = reads.read(ctx, host, &refs, &[]).await?;
            let want: Vec<Expect> = paths
                .iter()
                .map(|p| match (&spec.oidc, &ca) {
                    (Some(o), Some(ca)) if *p == o.ca_file => Expect::content(p, ca.as_bytes()),
                    _ => Expect::present(p),
                })
                .collect();
            found.extend(live.compare(&host.name, &want));
        }
        Ok(Some(found))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &ClusterSpec, _outputs: &Value) -> Result<(), StepError> {
        let pb = prepare(ctx, spec)?;
        run(ctx, &pb, "reset.yml", &["-e".into(), "reset_confirmation=yes".into()]).await?;
        Ok(())
    }

    fn render(&self, spec: &ClusterSpec) -> Result<Vec<Rendered>, StepError> {
        let (inventory, group_vars) = render_inventory(spec, "<workdir>/known_hosts").map_err(StepError::new)?;
        Ok(vec![
            Rendered {
                path: format!("kubespray/{}/hosts.yaml", spec.cluster),
                contents: inventory,
            },
            Rendered {
                path: format!("kubespray/{}/group_vars/all/nautes.yml", spec.cluster),
                contents: group_vars,
            },
        ])
    }
}

/// The files drift checks on each control-plane host.
fn managed(spec: &ClusterSpec) -> Vec<(&HostConn, Vec<String>)> {
    let config_dir = spec
        .extra_vars
        .get("kube_config_dir")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_KUBE_CONFIG_DIR);
    spec.hosts
        .iter()
        .filter(|h| spec.control_plane.contains(&h.name))
        .map(|h| {
            let mut paths = vec![format!("{config_dir}/admin.conf")];
            paths.extend(spec.oidc.as_ref().map(|o| o.ca_file.clone()));
            (h, paths)
        })
        .collect()
}

/// Clusters made by Kubespray.
pub struct Kubespray;

impl super::Component for Kubespray {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(KubesprayHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Kubespray cluster beside the Harbor installed in a K3s cluster,
    /// with `mirror` as given.
    fn cluster_step(mirror: &str) -> Step {
        let text = format!(
            "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n\
settings: {{ domain: d.test }}\n\
hosts:\n  - {{ name: n1, address: 192.0.2.10 }}\n  - {{ name: n2, address: 192.0.2.11 }}\n  - {{ name: n3, address: 192.0.2.12 }}\n\
clusters:\n  - name: a\n    type: k3s\n    k3s: {{ version: v1.27.4+k3s1, servers: [n1] }}\n    usage: [host]\n  \
- name: ks\n    type: kubespray\n    kubespray: {{ version: v2.23.1, kubeVersion: v1.27.7, path: {checkout}, controlPlane: [n2], workers: [n3] }}\n    usage: [deployment]\n\
components:\n  traefik: {{}}\n  harbor: {{ placement: cluster, cluster: a, values: {{ mirror: {mirror} }} }}\n",
            checkout = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kubespray_standin"),
        );
        let loaded = crate::inventory::load_str(std::path::Path::new("i.yaml"), &text)
            .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let steps = crate::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        steps
            .into_iter()
            .find(|s| s.id == "kubespray/ks/cluster")
            .expect("the Kubespray cluster step")
    }

    /// With `mirror: true`, containerd on every node is pointed at the
    /// Harbor's ingress for images named harbor.<domain>/..., through
    /// Kubespray's own variable, after our CA exists; without it the spec
    /// is as before (no field, so existing clusters' fingerprints hold).
    #[test]
    fn kubespray_nodes_pull_from_the_harbor_installed_here_when_asked() {
        let with = cluster_step("true");
        let spec: ClusterSpec = serde_json::from_value(with.spec.clone()).unwrap();
        let (_, group_vars) = render_inventory(&spec, "kh").unwrap();
        let vars: serde_yaml::Value = serde_yaml::from_str(&group_vars).unwrap();
        let mirrors = vars["containerd_registries_mirrors"].as_sequence().expect(&group_vars);
        let harbor = mirrors
            .iter()
            .find(|m| m["prefix"].as_str() == Some("harbor.d.test"))
            .unwrap_or_else(|| panic!("{group_vars}"));
        assert_eq!(
            harbor["mirrors"][0]["host"].as_str(),
            Some("https://harbor.d.test:30443")
        );
        assert_eq!(
            harbor["mirrors"][0]["skip_verify"].as_bool(),
            Some(false),
            "verified, not skipped"
        );
        assert!(with
            .needs
            .contains(&crate::components::certificates::STEP_ID.to_string()));

        let without = cluster_step("false");
        assert!(without.spec.get("harbor_mirror").is_none(), "{}", without.spec);
        let spec: ClusterSpec = serde_json::from_value(without.spec).unwrap();
        let (_, group_vars) = render_inventory(&spec, "kh").unwrap();
        assert!(!group_vars.contains("harbor.d.test"), "{group_vars}");
    }
}
