//! HNC and tenant namespace trees. HNC (pinned release manifest) is
//! installed on every cluster that holds a tenant's tree; each tenant's
//! roots are full namespaces and every child is an HNC subnamespace created
//! through a SubnamespaceAnchor in its parent, so HNC propagates policy down
//! the tree. Removing a namespace from the inventory removes it (deepest
//! first), but never one that still runs workloads unless the tenant allows.
//!
//! A tenant's groups (as Dex's `groups` claim names them) get a RoleBinding
//! in each root of its tree, which HNC propagates to every subnamespace, to
//! one of Kubernetes' built-in aggregated ClusterRoles: `admin` → `admin`
//! (everything in the namespace, Roles and RoleBindings included: an admin
//! may grant access to others), `developer` → `edit` (workloads and their
//! Secrets, but no Roles or RoleBindings: no grants), `viewer` → `view`
//! (reads, Secrets excepted). The built-in roles follow what each release
//! adds (and what CRDs aggregate into them), which roles of our own would
//! not. The bindings are a set of their own, so a removed group loses
//! exactly its binding (pruned) and a re-run writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog;
use crate::drivers::kube::apply::delete_objects;
use crate::drivers::kube::{KubeClient, ObjectRef};
use crate::engine::{Difference, Handler, Rendered, StepContext, StepError};
use crate::inventory::spans::{push_index, push_key};
use crate::inventory::{Diagnostic, Loaded, NamespaceNode, TenantGroup, TenantRole};
use crate::plan::{Step, StepSpec};
use crate::steps::kube_target::{client, target, KubeTarget};
use crate::steps::manifests::{
    self, apply_objects, drift_objects, previous_objects, report_outputs, rollout_timeout, ApplySpec, Source,
};
use crate::steps::release_files::{self, files_step, pinned_file};
use crate::wait::{Poll, Wait};

pub const TENANT_KIND: &str = "tenant-namespaces";
const HNC_API: &str = "hnc.x-k8s.io/v1alpha2";
const HNC_MANIFEST: &str = "default.yaml";

/// HNC's readiness rule. Its default.yaml is the `default-cc` kustomize
/// variant (namePrefix `hnc-`, namespace `hnc-system`) with one workload,
/// the manager: it reconciles the trees and, with its internal cert
/// controller, serves the webhooks that admit SubnamespaceAnchors, so the
/// tenant trees can be created only once it has rolled out.
pub const HNC_READY: &[(&str, &str)] = &[("Deployment", "hnc-controller-manager")];

/// The tenant's field that lets a removal destroy data.
pub const ALLOW_DATA_LOSS: &str = "allowDataLoss";

/// The data-loss guard, one for everything a tenant owns: before a removal
/// (a tenant, or one of its resources, gone from the inventory) each
/// resource says what it still holds — workloads in a namespace, images in
/// a Harbor project, components in a Nexus repository, projects in a GitLab
/// group, secrets under the tenant's Vault path — and the removal is
/// refused, naming what holds data, unless the tenant's `allowDataLoss` was true
/// in the run before (its steps keep the flag). A teardown of the whole
/// platform is guarded too: these services may be the user's own and
/// outlive it (namespaces are not guarded there: their cluster goes).
/// Nothing is removed when it refuses.
pub fn guard_data_loss(
    ctx: &StepContext,
    tenant: &str,
    allowed: bool,
    what: &str,
    holding: &[String],
) -> Result<(), StepError> {
    if holding.is_empty() {
        return Ok(());
    }
    if allowed {
        ctx.notice(format!(
            "tenant {tenant}: removing {what} with what it holds: {}",
            holding.join(", ")
        ));
        return Ok(());
    }
    Err(StepError::new(format!(
        "tenant {tenant}: refusing to remove {what} that still hold data: {}; move or delete that data, \
         or set `{ALLOW_DATA_LOSS}: true` on the tenant, apply, and then remove it",
        holding.join(", ")
    )))
}

pub fn hnc_step_id(cluster: &str) -> String {
    format!("hnc/{cluster}")
}

/// HNC on each cluster that needs it, then each tenant's tree.
pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let inv = &loaded.inventory;
    let hnc = inv.components.get(catalog::HNC.key);
    if hnc.is_some_and(|c| !c.enabled) {
        return Ok(());
    }
    let mut clusters: BTreeSet<&str> = inv
        .tenants
        .iter()
        .filter(|t| !t.namespaces.is_empty())
        .map(|t| t.cluster.as_str())
        .collect();
    clusters.extend(hnc.and_then(|c| c.cluster.as_deref()));
    if clusters.is_empty() {
        return Ok(());
    }
    let version = hnc
        .and_then(|c| c.version.clone())
        .unwrap_or(catalog::HNC.default_version().to_string());
    let release = format!(
        "{}/kubernetes-sigs/hierarchical-namespaces/releases/download/{version}/{HNC_MANIFEST}",
        release_files::GITHUB
    );
    let files = vec![pinned_file(
        HNC_MANIFEST,
        format!("hnc/{version}/{HNC_MANIFEST}"),
        release,
        None,
    )];
    let files = files_step(loaded, "hnc", "HNC", &version, files, "components.hnc").map_err(|d| vec![d])?;
    let files_id = files.id.clone();
    steps.push(files);
    for cluster in clusters {
        let Some(target) = target(loaded, cluster) else {
            continue;
        };
        let spec = ApplySpec {
            target,
            set: hnc_step_id(cluster),
            namespace: Some("hnc-system".into()),
            force_conflicts: hnc.is_some_and(|c| c.force_conflicts),
            sources: vec![Source::Manifest {
                artifacts: files_id.clone(),
                file: HNC_MANIFEST.into(),
            }],
            ready: HNC_READY.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect(),
        };
        let needs = spec.needs();
        steps.push(
            Step::new(
                hnc_step_id(cluster),
                manifests::KIND,
                format!("HNC {version} on {cluster}"),
                json!(spec),
            )
            .needs(needs),
        );
    }
    for (i, t) in inv.tenants.iter().enumerate() {
        if t.namespaces.is_empty() {
            continue;
        }
        let Some(target) = target(loaded, &t.cluster) else {
            return Err(vec![Diagnostic::error(
                push_key(&push_index("tenants", i), "cluster"),
                format!("unknown cluster `{}`", t.cluster),
            )]);
        };
        let spec = TenantSpec {
            target,
            tenant: t.name.clone(),
            tree: flatten(&t.namespaces),
            allow_delete_with_workloads: t.allow_data_loss,
            groups: t.groups.clone(),
        };
        let mut needs = spec.target.needs();
        needs.push(hnc_step_id(&t.cluster));
        steps.push(
            Step::new(
                format!("tenant/{}/namespaces", t.name),
                TENANT_KIND,
                format!("namespace tree of tenant {} on {}", t.name, t.cluster),
                json!(spec),
            )
            .needs(needs),
        );
    }
    Ok(())
}

/// One namespace of a tree, with where it hangs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    pub name: String,
    /// None for a root (a full namespace).
    pub parent: Option<String>,
    pub depth: usize,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn flatten(roots: &[NamespaceNode]) -> Vec<TreeNode> {
    fn walk(node: &NamespaceNode, parent: Option<&str>, depth: usize, out: &mut Vec<TreeNode>) {
        out.push(TreeNode {
            name: node.name.clone(),
            parent: parent.map(str::to_string),
            depth,
            labels: node.labels.clone(),
            annotations: node.annotations.clone(),
        });
        for c in &node.children {
            walk(c, Some(&node.name), depth + 1, out);
        }
    }
    let mut out = Vec::new();
    for r in roots {
        walk(r, None, 0, &mut out);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    pub target: KubeTarget,
    pub tenant: String,
    pub tree: Vec<TreeNode>,
    pub allow_delete_with_workloads: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<TenantGroup>,
}

impl StepSpec for TenantSpec {
    const KIND: &'static str = TENANT_KIND;
}

fn namespace_object(node: &TreeNode) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": node.name, "labels": node.labels, "annotations": node.annotations},
    })
}

fn anchor_ref(name: &str, parent: &str) -> ObjectRef {
    ObjectRef {
        api_version: HNC_API.into(),
        kind: "SubnamespaceAnchor".into(),
        namespace: Some(parent.to_string()),
        name: name.to_string(),
    }
}

fn namespace_ref(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: None,
        name: name.to_string(),
    }
}

/// The objects that shape the tree: roots as namespaces, children as anchors.
fn structure(tree: &[TreeNode]) -> Vec<Value> {
    tree.iter()
        .map(|n| match &n.parent {
            None => namespace_object(n),
            Some(p) => json!({
                "apiVersion": HNC_API,
                "kind": "SubnamespaceAnchor",
                "metadata": {"name": n.name, "namespace": p},
            }),
        })
        .collect()
}

/// The built-in ClusterRole a tenant role is bound to (see the module's comment).
pub fn cluster_role(role: TenantRole) -> &'static str {
    match role {
        TenantRole::Admin => "admin",
        TenantRole::Developer => "edit",
        TenantRole::Viewer => "view",
    }
}

/// The RoleBinding of one group: named by role and group (a GitLab path's
/// `/` as `:`, which no path holds), since a binding's roleRef cannot
/// change — a new role is a new binding and the old one is pruned.
fn binding_name(group: &TenantGroup) -> String {
    format!("nautes:{}:{}", group.role.as_str(), group.name.replace('/', ":"))
}

/// Each group's RoleBinding in each root of the tree.
fn access(spec: &TenantSpec) -> Vec<Value> {
    let mut out = Vec::new();
    for root in spec.tree.iter().filter(|n| n.parent.is_none()) {
        for g in &spec.groups {
            out.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": binding_name(g), "namespace": root.name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role(g.role)},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g.name}],
            }));
        }
    }
    out
}

fn access_set(tenant: &str) -> String {
    format!("tenant/{tenant}/access")
}

fn structure_set(tenant: &str) -> String {
    format!("tenant/{tenant}/tree")
}

fn metadata_set(tenant: &str) -> String {
    format!("tenant/{tenant}/subnamespaces")
}

/// Kinds whose objects count as workloads that a removal would destroy.
const WORKLOADS: [(&str, &str); 4] = [
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
];

/// "2 Pod, 1 Deployment" running in `ns`, or empty.
async fn workloads_in(client: &KubeClient, ns: &str) -> Result<String, StepError> {
    let mut found = Vec::new();
    for (api_version, kind) in WORKLOADS {
        match client.list(api_version, kind, Some(ns)).await {
            Ok(Some(items)) if !items.is_empty() => found.push(format!("{} {kind}", items.len())),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(StepError::new(format!("listing {kind} in {ns}: {e}"))),
        }
    }
    Ok(found.join(", "))
}

/// Remove `nodes` deepest first: a subnamespace through its anchor (HNC
/// deletes the namespace), a root directly; each level is gone before the
/// next, since HNC refuses to drop an anchor whose namespace has children.
async fn remove_nodes(
    ctx: &StepContext,
    client: &KubeClient,
    spec: &TenantSpec,
    nodes: &[TreeNode],
) -> Result<(), StepError> {
    if nodes.is_empty() {
        return Ok(());
    }
    if !spec.allow_delete_with_workloads && !ctx.full_teardown {
        let mut busy = Vec::new();
        for n in nodes {
            let w = workloads_in(client, &n.name).await?;
            if !w.is_empty() {
                busy.push(format!("namespace {} ({w})", n.name));
            }
        }
        guard_data_loss(ctx, &spec.tenant, false, "namespaces", &busy)?;
    }
    let set = structure_set(&spec.tenant);
    let deepest = nodes.iter().map(|n| n.depth).max().unwrap_or(0);
    for depth in (0..=deepest).rev() {
        let level: Vec<ObjectRef> = nodes
            .iter()
            .filter(|n| n.depth == depth)
            .map(|n| match &n.parent {
                Some(p) => anchor_ref(&n.name, p),
                None => namespace_ref(&n.name),
            })
            .collect();
        if level.is_empty() {
            continue;
        }
        ctx.progress(format!("removing {} namespaces at depth {depth}", level.len()));
        delete_objects(client, &level, Some(&set), rollout_timeout(ctx), 8)
            .await
            .map_err(|e| StepError::new(format!("tenant {}: {e}", spec.tenant)))?;
        // HNC deletes a subnamespace after its anchor; wait for that too.
        let namespaces: Vec<ObjectRef> = nodes
            .iter()
            .filter(|n| n.depth == depth && n.parent.is_some())
            .map(|n| namespace_ref(&n.name))
            .collect();
        wait_namespaces(ctx, client, &namespaces, false).await?;
    }
    Ok(())
}

/// Wait until every namespace exists (`present`) or is gone.
async fn wait_namespaces(
    ctx: &StepContext,
    client: &KubeClient,
    namespaces: &[ObjectRef],
    present: bool,
) -> Result<(), StepError> {
    let served = client
        .served("v1", "Namespace")
        .await
        .map_err(|e| StepError::new(e.to_string()))?
        .ok_or_else(|| StepError::new("the cluster serves no Namespaces"))?;
    // One limit for all of them, as before.
    let limit = rollout_timeout(ctx);
    let deadline = std::time::Instant::now() + limit;
    for r in namespaces {
        let (what, hint) = if present {
            (
                format!("HNC to create subnamespace {}", r.name),
                "is the HNC manager running?",
            )
        } else {
            (
                format!("namespace {} to be gone", r.name),
                "finalizers or contents still being removed?",
            )
        };
        let served = &served;
        Wait::for_(what, limit)
            .by(deadline)
            .every(std::time::Duration::from_millis(200))
            .hint(hint)
            .until(move || async move {
                let live = client.get(served, r).await.map_err(|e| StepError::new(e.to_string()))?;
                // A terminating namespace is not there for new contents.
                let seen = match &live {
                    None => "absent",
                    Some(o) if o.metadata.deletion_timestamp.is_some() => "terminating",
                    Some(_) => "present",
                };
                Ok::<_, StepError>(if (seen == "present") == present {
                    Poll::Done(())
                } else {
                    Poll::Pending(seen.to_string())
                })
            })
            .await?;
    }
    Ok(())
}

fn previous_tree(outputs: &Value) -> Vec<TreeNode> {
    serde_json::from_value(outputs.get("tree").cloned().unwrap_or(Value::Null)).unwrap_or_default()
}

pub struct TenantHandler;

#[async_trait]
impl Handler for TenantHandler {
    type Spec = TenantSpec;

    async fn apply(&self, ctx: &StepContext, spec: &TenantSpec) -> Result<Value, StepError> {
        let client = client(ctx, &spec.target).await?;
        let before = previous_tree(&ctx.previous_outputs);
        let now: BTreeMap<&str, &TreeNode> = spec.tree.iter().map(|n| (n.name.as_str(), n)).collect();
        for old in &before {
            if let Some(new) = now.get(old.name.as_str()) {
                if new.parent != old.parent {
                    return Err(StepError::new(format!(
                        "tenant {}: namespace {} moved from {} to {}; HNC cannot move a subnamespace. \
                         Remove it in one run and add it under its new parent in the next",
                        spec.tenant,
                        old.name,
                        old.parent.as_deref().unwrap_or("the top"),
                        new.parent.as_deref().unwrap_or("the top")
                    )));
                }
            }
        }
        let removed: Vec<TreeNode> = before
            .iter()
            .filter(|n| !now.contains_key(n.name.as_str()))
            .cloned()
            .collect();
        remove_nodes(ctx, &client, spec, &removed).await?;

        let tree_set = structure_set(&spec.tenant);
        let report = apply_objects(
            ctx,
            &client,
            &tree_set,
            None,
            false,
            structure(&spec.tree),
            previous_objects(&ctx.previous_outputs),
        )
        .await?;
        let children: Vec<&TreeNode> = spec.tree.iter().filter(|n| n.parent.is_some()).collect();
        let child_refs: Vec<ObjectRef> = children.iter().map(|n| namespace_ref(&n.name)).collect();
        wait_namespaces(ctx, &client, &child_refs, true).await?;
        // Labels and annotations of subnamespaces: set on the namespaces HNC made.
        let meta_objects: Vec<Value> = children.iter().map(|n| namespace_object(n)).collect();
        let meta = apply_objects(
            ctx,
            &client,
            &metadata_set(&spec.tenant),
            None,
            false,
            meta_objects,
            previous_objects(&ctx.previous_outputs["subnamespaces"]),
        )
        .await?;
        let mut out = report_outputs(&report);
        out["tree"] = json!(spec.tree);
        out["subnamespaces"] = report_outputs(&meta);
        let granted = apply_objects(
            ctx,
            &client,
            &access_set(&spec.tenant),
            None,
            false,
            access(spec),
            previous_objects(&ctx.previous_outputs["access"]),
        )
        .await?;
        out["access"] = report_outputs(&granted);
        out["written"] = json!(report.written + meta.written + granted.written);
        Ok(out)
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TenantSpec, outputs: &Value) -> Result<(), StepError> {
        let client = client(ctx, &spec.target).await?;
        remove_nodes(ctx, &client, spec, &previous_tree(outputs)).await
    }

    /// The two sets apply writes: the tree (namespaces and anchors), then
    /// the subnamespaces' labels and annotations.
    async fn drift(&self, ctx: &StepContext, spec: &TenantSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let client = client(ctx, &spec.target).await?;
        let previous = previous_objects(&ctx.previous_outputs);
        let mut out = drift_objects(
            ctx,
            &client,
            &structure_set(&spec.tenant),
            None,
            structure(&spec.tree),
            &previous,
        )
        .await?;
        let children = spec.tree.iter().filter(|n| n.parent.is_some());
        let meta_objects: Vec<Value> = children.map(namespace_object).collect();
        let previous = previous_objects(&ctx.previous_outputs["subnamespaces"]);
        out.extend(drift_objects(ctx, &client, &metadata_set(&spec.tenant), None, meta_objects, &previous).await?);
        let previous = previous_objects(&ctx.previous_outputs["access"]);
        out.extend(drift_objects(ctx, &client, &access_set(&spec.tenant), None, access(spec), &previous).await?);
        Ok(Some(out))
    }

    /// The tree's objects as applied: namespaces and anchors, then the
    /// subnamespaces' labels and annotations.
    fn render(&self, spec: &TenantSpec) -> Result<Vec<Rendered>, StepError> {
        let children = spec.tree.iter().filter(|n| n.parent.is_some());
        let objects: Vec<Value> = structure(&spec.tree)
            .into_iter()
            .chain(children.map(namespace_object))
            .chain(access(spec))
            .collect();
        Ok(vec![Rendered {
            path: format!("manifests/tenant-{}.yaml", spec.tenant),
            contents: manifests::yaml_stream(&objects)?,
        }])
    }
}

pub const VAULT_KIND: &str = "tenant-vault-path";

pub fn vault_step_id(tenant: &str) -> String {
    format!("tenant/{tenant}/vault")
}

/// A tenant's own part of Vault: the path `<tenant>/` of the `tenant` KV
/// v2 engine, which only the tenant's policies reach (vault_oidc's
/// `tenant-<tenant>-<role>`). Nothing to make — the engine is mounted by
/// vault/configure and a KV path exists once written — but the step is
/// what a removed tenant leaves behind: its `destroy` removes the
/// tenant's secrets, through the data-loss guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantVaultSpec {
    pub tenant: String,
    pub vault: crate::components::vault::VaultTarget,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_data_loss: bool,
}

impl StepSpec for TenantVaultSpec {
    const KIND: &'static str = VAULT_KIND;
}

/// Where the tenant's secrets are, in the engine's metadata tree.
fn vault_metadata(tenant: &str) -> String {
    format!("{}/metadata/{tenant}", crate::components::vault_oidc::TENANT_ENGINE)
}

/// Every secret under the tenant's path (relative to it), depth first.
async fn tenant_secrets(
    vault: &crate::drivers::vault::Vault,
    token: &crate::secret::Secret,
    tenant: &str,
) -> Result<Vec<String>, StepError> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        let path = format!("{}/{dir}", vault_metadata(tenant));
        let keys = vault
            .list(path.trim_end_matches('/'), token)
            .await
            .map_err(|e| StepError::new(format!("listing {path}: {e}")))?;
        for k in keys {
            if k.ends_with('/') {
                pending.push(format!("{dir}{k}"));
            } else {
                found.push(format!("{dir}{k}"));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn plan_vault(loaded: &Loaded, steps: &mut Vec<Step>) {
    let Some(vault) = crate::components::vault::target(loaded) else {
        return;
    };
    let mut needs = vec![crate::components::vault::STEP_ID.to_string()];
    if vault.host_step.is_some() {
        needs.push(crate::components::certificates::STEP_ID.to_string());
    }
    for t in &loaded.inventory.tenants {
        let spec = TenantVaultSpec {
            tenant: t.name.clone(),
            vault: vault.clone(),
            allow_data_loss: t.allow_data_loss,
        };
        steps.push(
            Step::of(
                vault_step_id(&t.name),
                format!(
                    "Vault path {}/{}/ of tenant {}",
                    crate::components::vault_oidc::TENANT_ENGINE,
                    t.name,
                    t.name
                ),
                &spec,
            )
            .needs(needs.clone()),
        );
    }
}

pub struct TenantVaultHandler;

#[async_trait]
impl Handler for TenantVaultHandler {
    type Spec = TenantVaultSpec;

    async fn apply(&self, _ctx: &StepContext, spec: &TenantVaultSpec) -> Result<Value, StepError> {
        Ok(json!({
            "path": format!("{}/data/{}/", crate::components::vault_oidc::TENANT_ENGINE, spec.tenant),
            "writes": 0,
        }))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TenantVaultSpec, _outputs: &Value) -> Result<(), StepError> {
        let (vault, token) = crate::components::vault::connect(ctx, &spec.vault)?;
        let secrets = tenant_secrets(&vault, &token, &spec.tenant).await?;
        // What we handed the tenant (its Dex clients' credentials, under
        // `dex/`) is ours to remove, not the tenant's data.
        let data: Vec<&String> = secrets.iter().filter(|s| !s.starts_with("dex/")).collect();
        let holding: Vec<String> = if data.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "Vault path {}/{}/ ({} secrets: {})",
                crate::components::vault_oidc::TENANT_ENGINE,
                spec.tenant,
                data.len(),
                data.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )]
        };
        guard_data_loss(ctx, &spec.tenant, spec.allow_data_loss, "a Vault path", &holding)?;
        for s in &secrets {
            // Metadata's DELETE removes every version of the secret.
            let path = format!("{}/{s}", vault_metadata(&spec.tenant));
            vault
                .delete(&path, &token)
                .await
                .map_err(|e| StepError::new(format!("deleting {path}: {e}")))?;
        }
        Ok(())
    }
}

/// Tenants' namespace trees (and HNC, which holds them), and each tenant's
/// Vault path.
pub struct Tenants;

impl super::Component for Tenants {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan_vault(loaded, steps);
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(TenantHandler);
        registry.add(TenantVaultHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, children: Vec<NamespaceNode>) -> NamespaceNode {
        NamespaceNode {
            name: name.into(),
            labels: Default::default(),
            annotations: Default::default(),
            children,
        }
    }

    #[test]
    fn roots_are_namespaces_and_children_are_anchors_in_their_parent() {
        let tree = flatten(&[node("acme", vec![node("team-a", vec![node("dev", vec![])])])]);
        let objects = structure(&tree);
        let refs: Vec<String> = objects.iter().map(|o| ObjectRef::of(o).unwrap().to_string()).collect();
        assert_eq!(
            refs,
            [
                "Namespace acme",
                "SubnamespaceAnchor acme/team-a",
                "SubnamespaceAnchor team-a/dev"
            ]
        );
        assert_eq!(tree[2].depth, 2);
    }

    #[test]
    fn hnc_steps_check_that_the_release_renders_the_manager_its_readiness_rule_names() {
        let root = env!("CARGO_MANIFEST_DIR");
        let path = std::path::Path::new(root).join("inventories/single-node-k3s.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = crate::inventory::load_str(&path, &text).unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let mut steps = Vec::new();
        plan(&loaded, &mut steps).unwrap();
        let hnc: Vec<ApplySpec> = steps
            .iter()
            .filter(|s| s.id.starts_with("hnc/") && s.kind == manifests::KIND)
            .map(|s| serde_json::from_value(s.spec.clone()).unwrap())
            .collect();
        assert!(!hnc.is_empty(), "the inventory has a tenant tree, so HNC");
        // The stand-in has the real default.yaml's names and namespaces.
        let manifest = format!("{root}/tests/fixtures/kube/hnc-default.yaml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let objects = crate::drivers::kube::objects::parse_documents(&text, &manifest).unwrap();
        for spec in &hnc {
            assert_eq!(
                spec.ready,
                [("Deployment".to_string(), "hnc-controller-manager".to_string())]
            );
            manifests::check_readiness_rule(spec, &objects).unwrap();
            // A release that renamed the manager, or moved it, fails loudly.
            let renamed: Vec<Value> = objects
                .iter()
                .cloned()
                .map(|mut o| {
                    if o["kind"] == "Deployment" {
                        o["metadata"]["name"] = json!("controller-manager");
                    }
                    o
                })
                .collect();
            let err = manifests::check_readiness_rule(spec, &renamed).unwrap_err().to_string();
            assert!(err.contains("renders no Deployment hnc-controller-manager"), "{err}");
            let moved: Vec<Value> = objects
                .iter()
                .cloned()
                .map(|mut o| {
                    if o["kind"] == "Deployment" {
                        o["metadata"]["namespace"] = json!("hnc");
                    }
                    o
                })
                .collect();
            manifests::check_readiness_rule(spec, &moved).unwrap_err();
        }
    }
}
