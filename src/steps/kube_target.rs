//! Which cluster a Kubernetes step talks to, and the shared client for it.
//! A K3s or Kubespray cluster's kubeconfig comes from its kubeconfig step, a
//! virtual cluster's from its vcluster step, a brought-in cluster's from the
//! file the inventory names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::drivers::kube::KubeClient;
use crate::engine::{StepContext, StepError};
use crate::inventory::{ClusterType, Loaded};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "camelCase")]
pub enum KubeTarget {
    /// The `kubeconfig` output of this step.
    Step { step: String, cluster: String },
    /// A kubeconfig file the user brought (relative to the inventory).
    File {
        cluster: String,
        path: PathBuf,
        context: Option<String>,
    },
}

impl KubeTarget {
    /// The step that must run first, if any.
    pub fn needs(&self) -> Vec<String> {
        match self {
            KubeTarget::Step { step, .. } => vec![step.clone()],
            KubeTarget::File { .. } => Vec::new(),
        }
    }

    pub fn cluster(&self) -> &str {
        match self {
            KubeTarget::Step { cluster, .. } | KubeTarget::File { cluster, .. } => cluster,
        }
    }
}

// The ids of the steps that make a cluster's kubeconfig, one function per
// kind: the planners of K3s, Kubespray and vcluster name their steps with
// these, and every target below points at the same names.

pub fn vcluster_step_id(name: &str) -> String {
    format!("vcluster/{name}")
}

pub fn k3s_kubeconfig_step_id(cluster: &str) -> String {
    format!("k3s/{cluster}/kubeconfig")
}

pub fn kubespray_kubeconfig_step_id(cluster: &str) -> String {
    format!("kubespray/{cluster}/kubeconfig")
}

/// The target for the cluster or virtual cluster named `name` (validation
/// has already checked that it exists).
pub fn target(loaded: &Loaded, name: &str) -> Option<KubeTarget> {
    let inv = &loaded.inventory;
    if let Some(c) = inv.clusters.iter().find(|c| c.name == name) {
        return Some(match (c.cluster_type, &c.external) {
            (ClusterType::External, Some(e)) => KubeTarget::File {
                cluster: name.to_string(),
                path: e.kubeconfig.clone(),
                context: e.context.clone(),
            },
            (ClusterType::Kubespray, _) => KubeTarget::Step {
                step: kubespray_kubeconfig_step_id(name),
                cluster: name.to_string(),
            },
            _ => KubeTarget::Step {
                step: k3s_kubeconfig_step_id(name),
                cluster: name.to_string(),
            },
        });
    }
    inv.virtual_clusters
        .iter()
        .find(|v| v.name == name)
        .map(|v| KubeTarget::Step {
            step: vcluster_step_id(&v.name),
            cluster: name.to_string(),
        })
}

/// One client per kubeconfig for the whole run (discovery is cached in it).
#[derive(Default)]
struct Clients(tokio::sync::Mutex<HashMap<String, Arc<KubeClient>>>);

/// The kubeconfig file of a target, as this run sees it.
pub fn kubeconfig_path(ctx: &StepContext, target: &KubeTarget) -> Result<(PathBuf, Option<String>), StepError> {
    match target {
        KubeTarget::File { path, context, .. } => Ok((
            crate::inventory::load::resolve_path(&ctx.base_dir, path),
            context.clone(),
        )),
        KubeTarget::Step { step, cluster } => {
            let path = ctx
                .needs_outputs
                .get(step)
                .and_then(|o| o["kubeconfig"].as_str())
                .ok_or_else(|| {
                    StepError::new(format!(
                        "cluster {cluster}: step {step} recorded no kubeconfig; run it first"
                    ))
                })?;
            Ok((PathBuf::from(path), None))
        }
    }
}

/// A connected client for the target, shared by every step of the run.
pub async fn client(ctx: &StepContext, target: &KubeTarget) -> Result<Arc<KubeClient>, StepError> {
    let (path, context) = kubeconfig_path(ctx, target)?;
    let clients = ctx.services.get_or_insert_with(Clients::default);
    let key = format!("{}#{}", path.display(), context.as_deref().unwrap_or(""));
    let mut map = clients.0.lock().await;
    // A kubeconfig rewritten during the run (a re-created vcluster) gets a new client.
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let key = format!("{key}@{modified:?}");
    if let Some(c) = map.get(&key) {
        return Ok(c.clone());
    }
    let http = ctx.limits.http;
    let c = KubeClient::from_kubeconfig_file(&path, context.as_deref(), http)
        .await
        .map_err(|e| StepError::new(format!("cluster {}: {e}", target.cluster())))?;
    let c = Arc::new(c);
    map.insert(key, c.clone());
    Ok(c)
}
