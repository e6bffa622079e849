//! The Nautes platform stack on the clusters, as steps whose needs are the
//! real dependencies:
//!
//! * host clusters (those holding the management vcluster, or the
//!   management cluster itself): Traefik, its default certificate our
//!   ingress wildcard;
//! * the management cluster: cert-manager and a ClusterIssuer on our CA,
//!   Dex (CRD storage, GitLab connector from the GitLab step), Argo CD (OIDC
//!   through Dex, our CA, the tenant repository), then Nautes itself, which
//!   Argo CD delivers from the tenant repository — only after Vault's auth
//!   and policies exist;
//! * runtime clusters, by usage: Argo CD and Argo Rollouts for deployment,
//!   Argo Events and Tekton (+ dashboard) for pipelines, External Secrets
//!   and the Vault agent injector for both;
//! * a final health step (see health.rs).
//!
//! A component is installed when the inventory lists it under `components`
//! (and does not disable it). What each is — releases, placement, needs,
//! readiness, Dex client, health endpoint — is its entry in
//! `crate::catalog`. Versions default from there and are overridable; a
//! changed version changes that component's step, which re-runs it and
//! everything that needs it.
//!
//! The planning is in plan.rs, the objects built when a step runs in
//! runtime/; this module holds the step's spec, its handler and the merge
//! of the two kinds of objects.

pub mod health;
mod plan;
pub mod register;
pub mod runtime;
pub mod sign_in;
pub mod tenant_clients;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use self::plan::{ingress_cluster, management_cluster, plan, traefik_ports};
use self::runtime::Runtime;
use crate::drivers::kube::{KubeClient, ObjectRef};
use crate::engine::{Difference, Handler, StepContext, StepError};
use crate::plan::StepSpec;
use crate::steps::kube_target::client;
use crate::steps::manifests::{apply_spec, check_readiness_rule, destroy_spec, drift_spec, render_objects, ApplySpec};

pub const KIND: &str = "stack-apply";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackSpec {
    #[serde(flatten)]
    pub apply: ApplySpec,
    /// Objects built when the step runs, merged over or added to the sources'.
    pub runtime: Option<Runtime>,
    /// (apiVersion, kind) of release objects left out when the cluster no
    /// longer serves them (Tekton 0.37 still ships a PodSecurityPolicy and a
    /// v2beta1 HorizontalPodAutoscaler, both gone from Kubernetes 1.25).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_kinds: Vec<(String, String)>,
    /// The step whose set owns the namespace this one lives in; unset when
    /// the namespace is this set's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_owner: Option<String>,
}

impl StepSpec for StackSpec {
    const KIND: &'static str = KIND;
}

pub fn step_id(component: &str, cluster: &str) -> String {
    format!("stack/{component}/{cluster}")
}

/// The set's namespace among the release's objects: left out when another
/// set owns it, added when the release expects it to exist already. What
/// was left out, as a notice.
fn own_namespace(spec: &StackSpec, objects: &mut Vec<Value>) -> Option<String> {
    if let (Some(ns), Some(owner)) = (&spec.apply.namespace, &spec.namespace_owner) {
        // One owning set per object: the owner's step ran before this one.
        let before = objects.len();
        objects.retain(|o| !(o["kind"] == "Namespace" && o["metadata"]["name"] == ns.as_str()));
        if objects.len() < before {
            return Some(format!("left out Namespace {ns}: it belongs to {owner}"));
        }
    } else if let (Some(ns), false) = (&spec.apply.namespace, spec.apply.sources.is_empty()) {
        // Some releases (Argo Events) expect their namespace to exist already.
        let has = objects
            .iter()
            .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == ns.as_str());
        if !has {
            objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
    }
    None
}

/// The upstream objects with our run-time objects merged over those of the
/// same name and the rest added.
async fn objects(ctx: &StepContext, spec: &StackSpec, client: &KubeClient) -> Result<Vec<Value>, StepError> {
    let mut objects = render_objects(ctx, &spec.apply.sources).await?;
    for (api_version, kind) in &spec.optional_kinds {
        let served = client
            .served(api_version, kind)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        if served.is_none() {
            let before = objects.len();
            objects.retain(|o| !(o["apiVersion"] == api_version.as_str() && o["kind"] == kind.as_str()));
            if objects.len() < before {
                ctx.notice(format!(
                    "left out {} {kind} ({api_version}): {} no longer serves it",
                    before - objects.len(),
                    client.server
                ));
            }
        }
    }
    if let Some(notice) = own_namespace(spec, &mut objects) {
        ctx.notice(notice);
    }
    let Some(runtime) = &spec.runtime else {
        return Ok(objects);
    };
    let default_ns = spec.apply.namespace.as_deref();
    let key = |o: &Value| {
        ObjectRef::of(o).ok().map(|mut r| {
            if r.namespace.is_none() && r.kind != "Namespace" && !r.kind.starts_with("Cluster") {
                r.namespace = default_ns.map(str::to_string);
            }
            r
        })
    };
    for extra in runtime.configuration()?.objects(ctx, runtime, client).await? {
        let k = key(&extra);
        match objects.iter_mut().find(|o| k.is_some() && key(o) == k) {
            Some(base) => crate::steps::manifests::merge_values(base, &extra),
            None => objects.push(extra),
        }
    }
    Ok(objects)
}

pub struct StackHandler;

#[async_trait]
impl Handler for StackHandler {
    type Spec = StackSpec;

    async fn apply(&self, ctx: &StepContext, spec: &StackSpec) -> Result<Value, StepError> {
        let client = client(ctx, &spec.apply.target).await?;
        let objects = objects(ctx, spec, &client).await?;
        check_readiness_rule(&spec.apply, &objects)?;
        apply_spec(ctx, &client, &spec.apply, objects).await
    }

    /// A set whose run-time objects cannot be built without a write
    /// (vault-proxy's, see `Configure::DRIFT`) is not checked.
    async fn drift(&self, ctx: &StepContext, spec: &StackSpec) -> Result<Option<Vec<Difference>>, StepError> {
        if let Some(runtime) = &spec.runtime {
            if !runtime.configuration()?.drift() {
                return Ok(None);
            }
        }
        let client = client(ctx, &spec.apply.target).await?;
        let objects = objects(ctx, spec, &client).await?;
        Ok(Some(drift_spec(ctx, &client, &spec.apply, objects).await?))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &StackSpec, outputs: &Value) -> Result<(), StepError> {
        destroy_spec(ctx, &spec.apply, outputs).await?;
        match &spec.runtime {
            Some(rt) => rt.configuration()?.destroy(ctx, rt).await,
            None => Ok(()),
        }
    }
}

/// The platform's Kubernetes stack: Traefik, cert-manager, Dex, Argo CD,
/// Nautes and the runtime releases, their cluster registrations and the
/// final health check.
pub struct Stack;

impl super::Component for Stack {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(StackHandler);
        registry.add(health::HealthHandler);
        registry.add(register::RegisterHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::kube_target::KubeTarget;

    #[test]
    fn a_release_that_no_longer_renders_a_workload_its_readiness_rule_names_fails() {
        let spec = StackSpec {
            apply: ApplySpec {
                target: KubeTarget::Step {
                    step: "k".into(),
                    cluster: "c".into(),
                },
                set: "stack/vault-injector/c".into(),
                namespace: Some("vault".into()),
                force_conflicts: false,
                sources: Vec::new(),
                ready: crate::catalog::VAULT_INJECTOR
                    .ready
                    .iter()
                    .map(|(k, n)| (k.to_string(), n.to_string()))
                    .collect(),
            },
            runtime: None,
            optional_kinds: Vec::new(),
            namespace_owner: None,
        };
        let deployment = |name: &str, ns: Option<&str>| {
            let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}});
            if let Some(ns) = ns {
                d["metadata"]["namespace"] = json!(ns);
            }
            d
        };
        check_readiness_rule(&spec.apply, &[deployment("vault-agent-injector", None)]).unwrap();
        check_readiness_rule(&spec.apply, &[deployment("vault-agent-injector", Some("vault"))]).unwrap();
        for wrong in [
            deployment("vault-injector", Some("vault")),
            deployment("vault-agent-injector", Some("other")),
        ] {
            let err = check_readiness_rule(&spec.apply, &[wrong]).unwrap_err().to_string();
            assert!(err.contains("renders no Deployment vault-agent-injector"), "{err}");
        }
    }
}
