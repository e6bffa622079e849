//! One module per thing we install. Each turns its inventory section into
//! steps (with explicit needs) and provides the handlers that run them.

pub mod artifacts;
pub mod gitlab;
pub mod hooks;
pub mod hosts;
pub mod infrastructure;
pub mod k3s;
pub mod kube_target;
pub mod kubespray;
pub mod manifests;
pub mod pki;
pub mod preflight;
pub mod remote;
pub mod service_hosts;
pub mod stack;
pub mod tenants;
pub mod vault;
pub mod vault_kubernetes;
pub mod vcluster;
pub mod versions;

use std::sync::Arc;

use crate::engine::Registry;
use crate::inventory::{Diagnostic, Loaded};
use crate::plan::Step;

/// Every step the inventory asks for, unordered; the plan orders them.
pub fn plan_steps(loaded: &Loaded) -> Result<Vec<Step>, Vec<Diagnostic>> {
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    infrastructure::plan(loaded, &mut steps);
    pki::plan(loaded, &mut steps);
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
    Ok(steps)
}

/// Handlers for every step kind this binary knows.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register(Arc::new(hooks::HookHandler));
    r.register(Arc::new(artifacts::ArtifactsHandler));
    r.register(Arc::new(k3s::TokenHandler));
    r.register(Arc::new(k3s::NodeHandler));
    r.register(Arc::new(k3s::KubeconfigHandler));
    r.register(Arc::new(preflight::PreflightHandler));
    r.register(Arc::new(infrastructure::TerraformHandler));
    r.register(Arc::new(kubespray::KubesprayHandler));
    r.register(Arc::new(manifests::ApplyHandler));
    r.register(Arc::new(pki::PkiHandler));
    r.register(Arc::new(service_hosts::ServiceHostHandler));
    r.register(Arc::new(vault::VaultHandler));
    r.register(Arc::new(gitlab::GitlabHandler));
    r.register(Arc::new(vault_kubernetes::KubernetesAuthHandler));
    r.register(Arc::new(stack::StackHandler));
    r.register(Arc::new(stack::health::HealthHandler));
    r.register(Arc::new(stack::register::RegisterHandler));
    r.register(Arc::new(tenants::TenantHandler));
    r.register(Arc::new(vcluster::VclusterHandler));
    r
}
