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
//! (and does not disable it). Versions default from the versions table and
//! are overridable; a changed version changes that component's step, which
//! re-runs it and everything that needs it.

pub mod catalog;
pub mod config;
pub mod health;
pub mod register;

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::catalog::{Form, Release};
use self::config::Runtime;
use super::artifacts::{files_step, github, pinned_file};
use super::kube_target::{self, client, KubeTarget};
use super::manifests::{
    apply_objects, delete_recorded, previous_objects, render_objects, report_outputs, ApplySpec, Source,
};
use super::{gitlab, pki, vault, vault_kubernetes, versions};
use crate::drivers::kube::{KubeClient, ObjectRef};
use crate::engine::{StepContext, StepError, StepHandler};
use crate::inventory::{ClusterUsage, Component, Diagnostic, Loaded};
use crate::plan::Step;

pub const KIND: &str = "stack-apply";
/// Kinds Tekton 0.37 ships that Kubernetes 1.25 removed.
const TEKTON_REMOVED_KINDS: [(&str, &str); 2] = [
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("autoscaling/v2beta1", "HorizontalPodAutoscaler"),
];

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
}

pub fn step_id(component: &str, cluster: &str) -> String {
    format!("stack/{component}/{cluster}")
}

/// The management cluster: `components.nautes.cluster`, else the first
/// virtual, then physical, cluster whose usage includes `host`.
pub fn management_cluster(loaded: &Loaded) -> Option<String> {
    let inv = &loaded.inventory;
    if let Some(c) = inv.components.nautes.as_ref().and_then(|n| n.cluster.clone()) {
        return Some(c);
    }
    inv.virtual_clusters
        .iter()
        .find(|v| v.usage.contains(&ClusterUsage::Host))
        .map(|v| v.name.clone())
        .or_else(|| {
            inv.clusters
                .iter()
                .find(|c| c.usage.contains(&ClusterUsage::Host))
                .map(|c| c.name.clone())
        })
}

/// Where ingress traffic for the management cluster lands: the physical
/// cluster under it.
pub fn ingress_cluster(loaded: &Loaded) -> Option<String> {
    let inv = &loaded.inventory;
    if let Some(c) = inv.components.traefik.as_ref().and_then(|t| t.cluster.clone()) {
        return Some(c);
    }
    let mgmt = management_cluster(loaded)?;
    Some(
        inv.virtual_clusters
            .iter()
            .find(|v| v.name == mgmt)
            .map(|v| v.host_cluster.clone())
            .unwrap_or(mgmt),
    )
}

/// Runtime clusters (physical or virtual) with a given usage.
fn runtime_clusters(loaded: &Loaded, usage: &[ClusterUsage]) -> Vec<String> {
    let inv = &loaded.inventory;
    inv.clusters
        .iter()
        .map(|c| (&c.name, &c.usage))
        .chain(inv.virtual_clusters.iter().map(|v| (&v.name, &v.usage)))
        .filter(|(_, u)| u.iter().any(|x| usage.contains(x)))
        .map(|(n, _)| n.clone())
        .collect()
}

fn component<'a>(loaded: &'a Loaded, key: &str) -> Option<&'a Component> {
    loaded
        .inventory
        .components
        .iter()
        .find(|(k, c)| *k == key && c.enabled)
        .map(|(_, c)| c)
}

/// Plans steps while remembering the artifacts steps already made.
struct Planner<'a> {
    loaded: &'a Loaded,
    steps: Vec<Step>,
    problems: Vec<Diagnostic>,
    artifacts: BTreeSet<String>,
}

impl Planner<'_> {
    fn version(&self, release: &Release, key: &str) -> String {
        component(self.loaded, key)
            .and_then(|c| c.version.clone())
            .unwrap_or_else(|| release.default_version.to_string())
    }

    /// The artifacts step of `release` at the inventory's version.
    fn artifacts(&mut self, release: &Release, key: &str) -> Option<(String, String)> {
        let version = self.version(release, key);
        let file = release.file(&version);
        let files = vec![pinned_file(
            &file,
            format!("{}/{version}/{file}", release.slug),
            release.url(&github(self.loaded), &version),
            None,
        )];
        match files_step(
            self.loaded,
            release.slug,
            release.title,
            &version,
            files,
            &format!("components.{key}"),
        ) {
            Ok(step) => {
                let id = step.id.clone();
                if self.artifacts.insert(id.clone()) {
                    self.steps.push(step);
                }
                Some((id, file))
            }
            Err(d) => {
                self.problems.push(d);
                None
            }
        }
    }

    /// A step applying `release` (and/or run-time objects) on `cluster`.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        name: &str,
        cluster: &str,
        release: Option<(&Release, &str)>,
        values: Value,
        runtime: Option<Runtime>,
        mut needs: Vec<String>,
        namespace: &str,
        optional_kinds: &[(&str, &str)],
    ) -> Option<String> {
        let target: KubeTarget = kube_target::target(self.loaded, cluster)?;
        let mut sources = Vec::new();
        let mut description = name.to_string();
        if let Some((release, key)) = release {
            let (artifacts, file) = self.artifacts(release, key)?;
            description = format!("{} {}", release.title, self.version(release, key));
            sources.push(match release.form {
                Form::Manifest => Source::Manifest { artifacts, file },
                Form::Chart { release: r } => Source::Chart {
                    artifacts,
                    file,
                    release: r.into(),
                    namespace: namespace.into(),
                    values,
                },
            });
        }
        let force = component(self.loaded, release.map(|r| r.1).unwrap_or(name)).is_some_and(|c| c.force_conflicts);
        let id = step_id(name, cluster);
        let spec = StackSpec {
            apply: ApplySpec {
                target,
                set: id.clone(),
                namespace: Some(namespace.into()),
                force_conflicts: force,
                sources,
            },
            runtime,
            optional_kinds: optional_kinds
                .iter()
                .map(|(a, k)| (a.to_string(), k.to_string()))
                .collect(),
        };
        needs.extend(spec.apply.needs());
        self.steps
            .push(Step::new(&id, KIND, format!("{description} on {cluster}"), json!(spec)).needs(needs));
        Some(id)
    }
}

fn values_of(loaded: &Loaded, key: &str) -> serde_json::Map<String, Value> {
    component(loaded, key).map(|c| c.values.clone()).unwrap_or_default()
}

/// Traefik's chart values: NodePorts and our certificate as its default.
pub fn traefik_ports(loaded: &Loaded) -> (u16, u16) {
    let v = values_of(loaded, "traefik");
    let port = |k: &str, d: u16| v.get(k).and_then(Value::as_u64).map(|p| p as u16).unwrap_or(d);
    (port("webNodePort", 30080), port("websecureNodePort", 30443))
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let inv = &loaded.inventory;
    let mut p = Planner {
        loaded,
        steps: Vec::new(),
        problems: Vec::new(),
        artifacts: BTreeSet::new(),
    };
    let domain = inv.settings.domain.clone().unwrap_or_default();
    let vault_target = vault::target(loaded);
    let gitlab_step = steps.iter().any(|s| s.id == gitlab::STEP_ID);
    let mut stack_steps = Vec::new();

    if let (Some(cluster), Some(_)) = (ingress_cluster(loaded), component(loaded, "traefik")) {
        let (web, websecure) = traefik_ports(loaded);
        let mut values = json!({
            "service": {"type": "NodePort"},
            "ports": {"web": {"nodePort": web}, "websecure": {"nodePort": websecure}},
        });
        config::merge(&mut values, &Value::Object(values_of(loaded, "traefik")));
        // Our own keys, not the chart's.
        for key in ["webNodePort", "websecureNodePort", "ingressAddress"] {
            values.as_object_mut().map(|o| o.remove(key));
        }
        stack_steps.extend(p.apply(
            "traefik",
            &cluster,
            Some((&catalog::TRAEFIK, "traefik")),
            values,
            Some(Runtime::IngressTls {
                namespace: "traefik".into(),
            }),
            vec![pki::STEP_ID.into()],
            "traefik",
            &[],
        ));
    }

    if let Some(mgmt) = management_cluster(loaded) {
        // Each management component may be placed elsewhere with `cluster:`.
        let on = |key: &str| {
            component(loaded, key)
                .and_then(|c| c.cluster.clone())
                .unwrap_or(mgmt.clone())
        };
        if component(loaded, "certManager").is_some() {
            let cm = p.apply(
                "cert-manager",
                &on("certManager"),
                Some((&catalog::CERT_MANAGER, "certManager")),
                Value::Null,
                None,
                Vec::new(),
                "cert-manager",
                &[],
            );
            stack_steps.extend(cm.clone());
            let user_ca_key = inv.pki.ca.as_ref().map(|c| c.key.clone());
            let mut needs: Vec<String> = cm.into_iter().collect();
            needs.push(pki::STEP_ID.into());
            stack_steps.extend(p.apply(
                "ca-issuer",
                &on("certManager"),
                None,
                Value::Null,
                Some(Runtime::CaIssuer { user_ca_key }),
                needs,
                "cert-manager",
                &[],
            ));
        }
        let dex = match (component(loaded, "dex"), gitlab_step) {
            (Some(c), true) => p.apply(
                "dex",
                &on("dex"),
                None,
                Value::Null,
                Some(Runtime::Dex(config::DexSpec {
                    domain: domain.clone(),
                    version: c.version.clone().unwrap_or(versions::DEX.into()),
                    vault: vault_target.clone(),
                    oauth2_proxy: component(loaded, "oauth2Proxy").is_some(),
                })),
                vec![gitlab::STEP_ID.into(), pki::STEP_ID.into()],
                "dex",
                &[],
            ),
            // A GitLab that is configured but failed to plan has its own error.
            (Some(_), false) if component(loaded, "gitlab").is_none() => {
                p.problems.push(
                    Diagnostic::error(
                        "components.dex",
                        "Dex signs users in through GitLab, which this inventory does not configure",
                    )
                    .with_hint("add `components.gitlab` (placement `host` or `external`)")
                    .at(loaded.spans.value("components.dex")),
                );
                None
            }
            _ => None,
        };
        stack_steps.extend(dex.clone());
        if let (Some(c), Some(cluster)) = (component(loaded, "oauth2Proxy"), ingress_cluster(loaded)) {
            if dex.is_none() {
                p.problems.push(
                    Diagnostic::error(
                        "components.oauth2Proxy",
                        "oauth2-proxy signs users in through Dex, which is not installed",
                    )
                    .with_hint("add `components.dex` (and GitLab, which Dex signs in with)")
                    .at(loaded.spans.value("components.oauth2Proxy")),
                );
            }
            let target = c.cluster.clone().unwrap_or(cluster);
            let mut needs: Vec<String> = dex.iter().cloned().collect();
            needs.push(pki::STEP_ID.into());
            // Its Middleware is a Traefik kind.
            if component(loaded, "traefik").is_some() && ingress_cluster(loaded).as_ref() == Some(&target) {
                needs.push(step_id("traefik", &target));
            }
            stack_steps.extend(p.apply(
                "oauth2-proxy",
                &target,
                None,
                Value::Null,
                Some(Runtime::Oauth2Proxy(config::Oauth2ProxySpec {
                    domain: domain.clone(),
                    version: c.version.clone().unwrap_or(versions::OAUTH2_PROXY.into()),
                })),
                needs,
                "oauth2-proxy",
                &[],
            ));
        }
        let proxy = match (&vault_target, component(loaded, "nautes")) {
            (Some(v), Some(n)) => p.apply(
                "vault-proxy",
                &on("nautes"),
                None,
                Value::Null,
                Some(Runtime::VaultProxy(config::VaultProxySpec {
                    image: format!(
                        "ghcr.io/nautes-labs/vault-proxy:{}",
                        n.version.clone().unwrap_or(versions::NAUTES.into())
                    ),
                    vault: v.clone(),
                })),
                vec![vault::STEP_ID.into(), pki::STEP_ID.into()],
                "nautes",
                &[],
            ),
            _ => None,
        };
        stack_steps.extend(proxy.clone());
        if component(loaded, "argocd").is_some() && gitlab_step {
            let mut needs = vec![gitlab::STEP_ID.to_string(), pki::STEP_ID.to_string()];
            needs.extend(dex.clone());
            let argocd = p.apply(
                "argocd",
                &on("argocd"),
                Some((&catalog::ARGOCD, "argocd")),
                Value::Null,
                Some(Runtime::Argocd(config::ArgocdSpec {
                    domain: domain.clone(),
                    vault: vault_target.clone(),
                })),
                needs,
                "argocd",
                &[],
            );
            stack_steps.extend(argocd.clone());
            if component(loaded, "nautes").is_some() {
                // Nautes' operators log in to Vault: its auth and policies first.
                let mut needs: Vec<String> = argocd.into_iter().collect();
                needs.push(gitlab::STEP_ID.into());
                needs.extend(proxy.clone());
                if vault_target.is_some() {
                    needs.push(vault::STEP_ID.into());
                    needs.extend(inv.tenants.iter().map(|t| vault_kubernetes::step_id(&t.name)));
                }
                let nautes = p.apply(
                    "nautes",
                    &on("argocd"),
                    None,
                    Value::Null,
                    Some(Runtime::Nautes(config::NautesSpec { path: "nautes".into() })),
                    needs,
                    "argocd",
                    &[],
                );
                stack_steps.extend(nautes.clone());
                // Runtime clusters are registered with Nautes once it runs.
                let pki_here = steps.iter().any(|s| s.id == pki::STEP_ID);
                let api = health::ingress_endpoint(
                    loaded,
                    pki_here,
                    "Nautes API server",
                    &health::nautes_api_host(loaded),
                    "",
                    health::Expect::Answers,
                );
                for cluster in runtime_clusters(loaded, &[ClusterUsage::Deployment, ClusterUsage::Pipeline]) {
                    let Some(target) = kube_target::target(loaded, &cluster) else {
                        continue;
                    };
                    let host_cluster = inv
                        .virtual_clusters
                        .iter()
                        .find(|v| v.name == cluster)
                        .map(|v| v.host_cluster.clone());
                    let spec = register::RegisterSpec {
                        cluster: cluster.clone(),
                        target: target.clone(),
                        cluster_type: if host_cluster.is_some() { "virtual" } else { "physical" }.into(),
                        host_cluster,
                        api: api.clone(),
                        vault: vault_target.clone(),
                    };
                    let mut needs: Vec<String> = nautes.iter().cloned().collect();
                    needs.push(gitlab::STEP_ID.into());
                    if pki_here {
                        needs.push(pki::STEP_ID.into());
                    }
                    needs.extend(target.needs());
                    let id = register::step_id(&cluster);
                    p.steps.push(
                        Step::new(
                            &id,
                            register::KIND,
                            format!("register {cluster} with Nautes"),
                            json!(spec),
                        )
                        .needs(needs),
                    );
                    stack_steps.push(id);
                }
            }
        }
    }

    let deploy = [ClusterUsage::Deployment];
    let pipeline = [ClusterUsage::Pipeline];
    let both = [ClusterUsage::Deployment, ClusterUsage::Pipeline];
    let runtime: [(&Release, &str, &[ClusterUsage]); 6] = [
        (&catalog::ARGOCD, "argocd", &deploy),
        (&catalog::ARGO_ROLLOUTS, "argoRollouts", &deploy),
        (&catalog::ARGO_EVENTS, "argoEvents", &pipeline),
        (&catalog::TEKTON, "tekton", &pipeline),
        (&catalog::EXTERNAL_SECRETS, "externalSecrets", &both),
        (&catalog::VAULT_INJECTOR, "vault", &both),
    ];
    let mgmt = management_cluster(loaded);
    for (release, key, usage) in runtime {
        if component(loaded, key).is_none() {
            continue;
        }
        for cluster in runtime_clusters(loaded, usage) {
            if Some(&cluster) == mgmt.as_ref() && key == "argocd" {
                continue; // the management cluster's Argo CD is configured above
            }
            let (values, needs, version_key) = match key {
                "vault" => (
                    json!({"server": {"enabled": false}, "injector": {"enabled": true,
                           "externalVaultAddr": vault_target.as_ref().map(|v| v.url.clone())}}),
                    vault_target.iter().map(|_| vault::STEP_ID.to_string()).collect(),
                    "vaultInjector",
                ),
                _ => (Value::Object(values_of(loaded, key)), Vec::new(), key),
            };
            stack_steps.extend(p.apply(
                release.slug,
                &cluster,
                Some((release, version_key)),
                values,
                None,
                needs,
                release.namespace,
                if key == "tekton" {
                    &TEKTON_REMOVED_KINDS[..]
                } else {
                    &[]
                },
            ));
            if key == "tekton" {
                stack_steps.extend(p.apply(
                    "tekton-dashboard",
                    &cluster,
                    Some((&catalog::TEKTON_DASHBOARD, "tektonDashboard")),
                    Value::Null,
                    None,
                    vec![step_id(release.slug, &cluster)],
                    catalog::TEKTON_DASHBOARD.namespace,
                    &[],
                ));
            }
        }
    }

    if !p.problems.is_empty() {
        return Err(p.problems);
    }
    if !stack_steps.is_empty() {
        p.steps.push(health::plan(loaded, steps, &stack_steps));
    }
    steps.append(&mut p.steps);
    Ok(())
}

fn parse(spec: &Value) -> Result<StackSpec, StepError> {
    serde_json::from_value(spec.clone()).map_err(|e| StepError::new(format!("stack step is malformed: {e}")))
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
    // Some releases (Argo Events) expect their namespace to exist already.
    if let (Some(ns), false) = (&spec.apply.namespace, spec.apply.sources.is_empty()) {
        let has = objects
            .iter()
            .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == ns.as_str());
        if !has {
            objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
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
    for extra in config::objects(ctx, runtime, client).await? {
        let k = key(&extra);
        match objects.iter_mut().find(|o| k.is_some() && key(o) == k) {
            Some(base) => config::merge(base, &extra),
            None => objects.push(extra),
        }
    }
    Ok(objects)
}

pub struct StackHandler;

#[async_trait]
impl StepHandler for StackHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn apply(&self, ctx: &StepContext, spec: &Value) -> Result<Value, StepError> {
        let spec = parse(spec)?;
        let client = client(ctx, &spec.apply.target).await?;
        let objects = objects(ctx, &spec, &client).await?;
        let report = apply_objects(
            ctx,
            &client,
            &spec.apply.set,
            spec.apply.namespace.as_deref(),
            spec.apply.force_conflicts,
            objects,
            previous_objects(&ctx.previous_outputs),
        )
        .await?;
        Ok(report_outputs(&report))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &Value, outputs: &Value) -> Result<(), StepError> {
        let spec = parse(spec)?;
        let client = match client(ctx, &spec.apply.target).await {
            Ok(c) => c,
            // The cluster went first, and its objects with it.
            Err(e) if ctx.full_teardown => {
                tracing::warn!("{}: {e}; nothing left to delete", spec.apply.set);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        delete_recorded(ctx, &client, &spec.apply.set, outputs).await
    }
}
