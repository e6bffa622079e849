//! Fetch the admin kubeconfig from the first server, point it at the
//! reachable endpoint, write it 0600 to the outputs, and prove it works:
//! every planned node must be Ready at its version through that endpoint.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{kubeconfig_file_name, KubeconfigSpec};
use crate::drivers::kube::KubeClient;
use crate::engine::{Handler, StepContext, StepError};
use crate::secret::{write_private, Secret};
use crate::steps::hosts::HostConn;
use crate::steps::kubeconfig;
use crate::steps::remote::connect;
use crate::wait::{Poll, Wait};

/// Where to fetch the admin kubeconfig from: the first server (K3s) or
/// control-plane node (Kubespray).
#[derive(Default, Deserialize)]
struct KubeconfigSettings {
    conn: Option<HostConn>,
}

pub struct KubeconfigHandler;

#[async_trait]
impl Handler for KubeconfigHandler {
    type Spec = KubeconfigSpec;

    async fn apply(&self, ctx: &StepContext, spec: &KubeconfigSpec) -> Result<Value, StepError> {
        let conn = ctx
            .settings::<KubeconfigSettings>()?
            .conn
            .ok_or_else(|| StepError::new("kubeconfig step lacks its host: its settings have no `conn`"))?;
        let server = connect(ctx, &conn).await?;
        let raw = server.read(&spec.remote_path).await?;
        let text = kubeconfig::rewrite(&String::from_utf8_lossy(&raw), &spec.cluster, &spec.endpoint)
            .map_err(|e| StepError::new(format!("{}: {e}", conn.name)))?;
        let path = ctx.outputs_dir.join(kubeconfig_file_name(&spec.cluster));
        // It holds the cluster-admin credential.
        write_private(&path, &Secret::new(text.clone()))
            .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;

        let http = ctx.limits.http;
        let api = KubeClient::from_kubeconfig_text(&text, None, http)
            .await
            .map_err(|e| StepError::new(format!("{}: {e}", path.display())))?;
        let (api, nodes) = (&api, &spec.nodes);
        Wait::for_(
            format!(
                "every node of cluster {} to be Ready through {}",
                spec.cluster, spec.endpoint
            ),
            ctx.limits.node_ready,
        )
        .until(move || async move {
            let missing = match api.list("v1", "Node", None).await {
                Ok(Some(live)) => not_ready(&serde_json::to_value(live).unwrap_or_default(), nodes),
                Ok(None) => vec!["the API serves no Nodes".to_string()],
                Err(e) => vec![e.to_string()],
            };
            if missing.is_empty() {
                return Ok::<_, StepError>(Poll::Done(()));
            }
            ctx.progress(format!("waiting for nodes: {}", missing.join("; ")));
            Ok(Poll::Pending(missing.join("; ")))
        })
        .await?;
        Ok(json!({ "kubeconfig": path, "endpoint": spec.endpoint, "nodes": spec.nodes.len() }))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &KubeconfigSpec, _outputs: &Value) -> Result<(), StepError> {
        match std::fs::remove_file(ctx.outputs_dir.join(kubeconfig_file_name(&spec.cluster))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StepError::new(format!("cannot remove the kubeconfig: {e}")))
            }
            _ => Ok(()),
        }
    }
}

/// Planned nodes the API does not report Ready at their version.
fn not_ready(items: &Value, nodes: &[(String, String)]) -> Vec<String> {
    let items = items.as_array().cloned().unwrap_or_default();
    nodes
        .iter()
        .filter_map(|(name, version)| {
            let Some(n) = items.iter().find(|i| i["metadata"]["name"] == name.as_str()) else {
                return Some(format!("{name} not registered"));
            };
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let have = n["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or("");
            (!ready || have != version).then(|| format!("{name} Ready={ready} version={have}"))
        })
        .collect()
}
