//! One module per thing we install. Each turns its inventory section into
//! steps (with explicit needs) and provides the handlers that run them. The
//! plumbing they share (reaching hosts and clusters, fetching release files,
//! applying object sets, hooks) is in [`crate::steps`].

use crate::steps::{hooks, manifests, release_files};

pub mod certificates;
pub mod endpoints;
pub mod gitlab;
pub mod infrastructure;
pub mod k3s;
pub mod kube_oidc;
pub mod kubespray;
pub mod preflight;
pub mod registries;
pub mod service_hosts;
pub mod stack;
pub mod tenants;
pub mod vault;
pub mod vault_approle;
pub mod vault_kubernetes;
pub mod vault_oidc;
pub mod vcluster;

use crate::engine::Registry;
use crate::inventory::{Diagnostic, Loaded};
use crate::plan::{Plan, PlanError, Step};

/// The ordered plan of everything the inventory asks for.
pub fn plan(loaded: &Loaded) -> Result<Plan, PlanError> {
    Plan::from_steps(plan_steps(loaded).map_err(PlanError::Invalid)?)
}

/// One installable thing: how it turns the inventory into steps and the
/// handlers that run them. The planner and the registry both walk
/// [`COMPONENTS`], so a component is added in one place.
pub trait Component: Sync {
    /// Add this component's steps. The steps of the components listed
    /// before it are already in `steps` (its needs may name them).
    /// Components whose steps others plan for them (preflight, release
    /// files, object sets) plan nothing themselves.
    fn plan(&self, _loaded: &Loaded, _steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
        Ok(())
    }

    /// Register a handler for every kind of step this component runs.
    fn handlers(&self, registry: &mut Registry);
}

/// Every component, in planning order.
pub const COMPONENTS: &[&dyn Component] = &[
    &SharedSteps,
    &preflight::Preflight,
    &infrastructure::Infrastructure,
    &certificates::Certificates,
    &k3s::K3s,
    &kubespray::Kubespray,
    &vcluster::Vclusters,
    &tenants::Tenants,
    &service_hosts::ServiceHosts,
    &vault::VaultConfiguration,
    &vault_kubernetes::VaultKubernetes,
    &gitlab::GitlabConfiguration,
    &stack::Stack,
    // Needs Dex's step, which the stack plans.
    &vault_oidc::VaultOidc,
    &registries::Registries,
    // Hooks attach to the other steps, so they are planned last.
    &Hooks,
];

/// Release files and object sets: steps every component may plan.
struct SharedSteps;

impl Component for SharedSteps {
    fn handlers(&self, registry: &mut Registry) {
        registry.add(release_files::ArtifactsHandler);
        registry.add(manifests::ApplyHandler);
    }
}

/// The user's hooks, before or after any other step.
struct Hooks;

impl Component for Hooks {
    fn plan(&self, loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
        hooks::plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut Registry) {
        registry.add(hooks::HookHandler);
    }
}

/// Every step the inventory asks for, unordered; the plan orders them.
/// Every component plans even when one before it failed, so one run
/// reports all the problems.
pub fn plan_steps(loaded: &Loaded) -> Result<Vec<Step>, Vec<Diagnostic>> {
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    for component in COMPONENTS {
        if let Err(mut p) = component.plan(loaded, &mut steps) {
            problems.append(&mut p);
        }
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
    let mut registry = Registry::default();
    for component in COMPONENTS {
        component.handlers(&mut registry);
    }
    registry
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
