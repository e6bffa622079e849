//! One module per thing we install. Each turns its inventory section into
//! steps (with explicit needs) and provides the handlers that run them. The
//! plumbing they share (reaching hosts and clusters, fetching release files,
//! applying object sets, hooks) is in [`crate::steps`].

use crate::steps::{hooks, manifests, release_files};

pub mod certificates;
pub mod gitlab;
pub mod infrastructure;
pub mod k3s;
pub mod kubespray;
pub mod preflight;
pub mod service_hosts;
pub mod stack;
pub mod tenants;
pub mod vault;
pub mod vault_approle;
pub mod vault_kubernetes;
pub mod vcluster;

use std::sync::Arc;

use crate::engine::Registry;
use crate::inventory::{Diagnostic, Loaded};
use crate::plan::{Plan, PlanError, Step};

/// The ordered plan of everything the inventory asks for.
pub fn plan(loaded: &Loaded) -> Result<Plan, PlanError> {
    Plan::from_steps(plan_steps(loaded).map_err(PlanError::Invalid)?)
}

/// Every step the inventory asks for, unordered; the plan orders them.
pub fn plan_steps(loaded: &Loaded) -> Result<Vec<Step>, Vec<Diagnostic>> {
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    infrastructure::plan(loaded, &mut steps);
    certificates::plan(loaded, &mut steps);
    if let Err(mut p) = k3s::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    if let Err(mut p) = kubespray::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    if let Err(mut p) = vcluster::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    if let Err(mut p) = tenants::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    if let Err(mut p) = service_hosts::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    if let Err(mut p) = vault::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    vault_kubernetes::plan(loaded, &mut steps);
    if let Err(mut p) = gitlab::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    if let Err(mut p) = stack::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    // Hooks attach to the other steps, so they are planned last.
    if let Err(mut p) = hooks::plan(loaded, &mut steps) {
        problems.append(&mut p);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    defer_until_infrastructure(loaded, &mut steps);
    Ok(steps)
}

/// While Terraform has not yet made some hosts, the clusters on them are
/// not planned (their nodes are unknown), and neither can anything inside
/// them be: such steps are dropped now and planned by the run after
/// Terraform's, as `plan` notes. With no host pending, a missing need stays
/// an error, since then it is a bug.
fn defer_until_infrastructure(loaded: &Loaded, steps: &mut Vec<Step>) {
    let inv = &loaded.inventory;
    let pending = inv
        .infrastructure
        .modules
        .iter()
        .flat_map(|m| &m.provides)
        .any(|h| !inv.hosts.iter().any(|x| &x.name == h));
    if !pending {
        return;
    }
    loop {
        let planned: std::collections::BTreeSet<String> = steps.iter().map(|s| s.id.clone()).collect();
        let before = steps.len();
        steps.retain(|s| s.needs.iter().all(|n| planned.contains(n)));
        if steps.len() == before {
            return;
        }
    }
}

/// Handlers for every step kind this binary knows.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.add(hooks::HookHandler);
    r.register(Arc::new(release_files::ArtifactsHandler));
    r.add(k3s::TokenHandler);
    r.add(k3s::NodeHandler);
    r.add(k3s::KubeconfigHandler);
    r.register(Arc::new(preflight::PreflightHandler));
    r.register(Arc::new(infrastructure::TerraformHandler));
    r.register(Arc::new(kubespray::KubesprayHandler));
    r.register(Arc::new(manifests::ApplyHandler));
    r.register(Arc::new(certificates::PkiHandler));
    r.register(Arc::new(service_hosts::ServiceHostHandler));
    r.register(Arc::new(vault::VaultHandler));
    r.register(Arc::new(gitlab::GitlabHandler));
    r.add(vault_kubernetes::KubernetesAuthHandler);
    r.add(stack::StackHandler);
    r.add(stack::health::HealthHandler);
    r.add(stack::register::RegisterHandler);
    r.register(Arc::new(tenants::TenantHandler));
    r.register(Arc::new(vcluster::VclusterHandler));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_mirror_covers_every_upstream_file_of_a_complete_install() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/inventories/single-node-k3s.yaml"));
        let mirror = "https://mirror.example/upstream";
        let text = std::fs::read_to_string(path).unwrap().replace(
            "\ncomponents:\n",
            &format!("\nartifacts:\n  downloadMirror: {mirror}/\ncomponents:\n"),
        );
        let loaded = crate::inventory::load_str(path, &text).unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let steps = super::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        let mut urls = Vec::new();
        for step in steps.iter().filter(|s| s.kind == release_files::KIND) {
            let spec: release_files::ArtifactsSpec = serde_json::from_value(step.spec.clone()).unwrap();
            urls.extend(
                spec.files
                    .iter()
                    .flat_map(|f| std::iter::once(f.url.clone()).chain(f.sums_url.clone())),
            );
        }
        // Charts, manifests and packages from hosts other than GitHub are there too.
        for upstream in [
            "charts.loft.sh",
            "traefik.github.io",
            "storage.googleapis.com",
            "releases.hashicorp.com",
            "/k3s-io/k3s/",
        ] {
            assert!(
                urls.iter().any(|u| u.contains(upstream)),
                "{upstream} not planned: {urls:#?}"
            );
        }
        let direct: Vec<&String> = urls.iter().filter(|u| !u.starts_with(&format!("{mirror}/"))).collect();
        assert!(direct.is_empty(), "downloaded around the mirror: {direct:#?}");
    }
}
