//! Planning the stack from the inventory and the catalog: which release
//! goes on which cluster (the management cluster, the ingress cluster
//! under it, runtime clusters by usage), at which version, as one
//! `stack-apply` step each with the needs that are its real dependencies —
//! plus the artifacts steps its releases come from, the cluster
//! registrations and the final health step.
//!
//! What the catalog declares (`crate::catalog`: placement, needs, values,
//! readiness, companions) is planned generically here, so a release that
//! needs no configuration of ours is planned from its entry alone. The
//! components we configure when their step runs (Traefik's ports, the CA
//! issuer, Dex, oauth2-proxy, vault-proxy, Argo CD and Nautes) are planned
//! by their configuration (`runtime::Configure`, one file each, found by
//! the build), in the order their declared needs of each other give.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::runtime::{self, Runtime};
use super::{health, register, step_id, StackSpec};
use crate::catalog::{self, ClusterUsage, Component, Form, Place, Release, Values};
use crate::components::vault::VaultTarget;
use crate::components::{certificates, gitlab, vault};
use crate::inventory::{Diagnostic, Loaded, Placement};
use crate::plan::Step;
use crate::steps::kube_target::{self, KubeTarget};
use crate::steps::manifests::{ApplySpec, Source};
use crate::steps::release_files::{files_step, pinned_file, GITHUB};

/// The management cluster: `components.nautes.cluster`, else the first
/// virtual, then physical, cluster whose usage includes `host`.
pub fn management_cluster(loaded: &Loaded) -> Option<String> {
    let inv = &loaded.inventory;
    if let Some(c) = inv.components.get(catalog::NAUTES.key).and_then(|n| n.cluster.clone()) {
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
    if let Some(c) = inv.components.get(catalog::TRAEFIK.key).and_then(|t| t.cluster.clone()) {
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
pub(super) fn runtime_clusters(loaded: &Loaded, usage: &[ClusterUsage]) -> Vec<String> {
    let inv = &loaded.inventory;
    inv.clusters
        .iter()
        .map(|c| (&c.name, &c.usage))
        .chain(inv.virtual_clusters.iter().map(|v| (&v.name, &v.usage)))
        .filter(|(_, u)| u.iter().any(|x| usage.contains(x)))
        .map(|(n, _)| n.clone())
        .collect()
}

pub(super) fn values_of(loaded: &Loaded, key: &str) -> serde_json::Map<String, Value> {
    loaded
        .inventory
        .components
        .enabled_one(key)
        .map(|c| c.values.clone())
        .unwrap_or_default()
}

/// One `stack-apply` step: a catalog release and/or our run-time objects.
pub(super) struct StackStep<'s> {
    /// Names the step (`stack/<name>/<cluster>`): the release's slug, or
    /// what our objects are (`ca-issuer`).
    name: &'s str,
    /// Whose `forceConflicts` and version apply.
    component: Option<&'static Component>,
    release: Option<&'static Release>,
    values: Value,
    pub(super) runtime: Option<Runtime>,
    needs: Vec<String>,
    namespace: &'s str,
}

impl<'s> StackStep<'s> {
    /// A catalog release, as its entry declares it.
    pub(super) fn release(release: &'static Release, values: Value, needs: Vec<String>) -> StackStep<'static> {
        StackStep {
            name: release.slug,
            component: Some(release.component()),
            release: Some(release),
            values,
            runtime: None,
            needs,
            namespace: release.namespace,
        }
    }

    /// Only objects of ours, built when the step runs.
    pub(super) fn ours(
        name: &'s str,
        component: Option<&'static Component>,
        runtime: Runtime,
        namespace: &'s str,
    ) -> Self {
        StackStep {
            name,
            component,
            release: None,
            values: Value::Null,
            runtime: Some(runtime),
            needs: Vec::new(),
            namespace,
        }
    }

    pub(super) fn needing(mut self, needs: impl IntoIterator<Item = String>) -> Self {
        self.needs.extend(needs);
        self
    }
}

/// Plans steps while remembering the artifacts steps already made and the
/// step each component got, which later steps' needs resolve to.
pub(super) struct Planner<'a> {
    pub(super) loaded: &'a Loaded,
    /// Steps planned before the stack (PKI, Vault, GitLab, ...).
    before: &'a [Step],
    steps: Vec<Step>,
    pub(super) problems: Vec<Diagnostic>,
    artifacts: BTreeSet<String>,
    /// The step of each component on the management side, by key (and of
    /// a configuration's own step by its name, e.g. `vault-proxy`).
    pub(super) planned: BTreeMap<&'static str, String>,
    /// What configurations still to be planned record their steps under
    /// (their `PLANS`): reading one of those now would be too early.
    unplanned: BTreeSet<&'static str>,
    /// Steps whose catalog needs are resolved once everything is planned.
    pending: Vec<(usize, &'static Component)>,
    /// Every stack step, for the health step to wait on.
    stack_steps: Vec<String>,
    pub(super) vault_target: Option<VaultTarget>,
    pub(super) domain: String,
    /// Where ingress traffic for the management cluster lands.
    pub(super) ingress: Option<String>,
}

impl Planner<'_> {
    pub(super) fn enabled(&self, key: &str) -> Option<&crate::inventory::Component> {
        self.loaded.inventory.components.enabled_one(key)
    }

    /// The step recorded under `key` (a component's key, or a
    /// configuration's own name), if it is planned. A configuration reads
    /// only what it declares in `Configure::NEEDS`, planned before it: one
    /// read too early is a bug, stopped here rather than planned without.
    pub(super) fn planned_step(&self, key: &str) -> Option<String> {
        assert!(
            !self.unplanned.contains(key),
            "internal error: `{key}` was read before the configuration that plans it ran \
             (declare it in the reader's `Configure::NEEDS`)"
        );
        self.planned.get(key).cloned()
    }

    pub(super) fn planned_before(&self, id: &str) -> bool {
        self.before.iter().any(|s| s.id == id)
    }

    /// The cluster a management-side component goes to: its own `cluster:`,
    /// else `default`.
    pub(super) fn cluster_of(&self, key: &str, default: &str) -> String {
        self.enabled(key)
            .and_then(|c| c.cluster.clone())
            .unwrap_or_else(|| default.to_string())
    }

    /// The release's version: its own pin, else the component's.
    fn version(&self, release: &Release) -> String {
        let component = release.component();
        match release.pinned {
            Some(v) => v.to_string(),
            None => self
                .enabled(component.key)
                .and_then(|c| c.version.clone())
                .unwrap_or_else(|| component.default_version().to_string()),
        }
    }

    /// The artifacts step of `release` at the inventory's version.
    fn artifacts(&mut self, release: &Release) -> Option<(String, String)> {
        let version = self.version(release);
        let file = release.file(&version);
        let files = vec![pinned_file(
            &file,
            format!("{}/{version}/{file}", release.slug),
            release.url(GITHUB, &version),
            None,
        )];
        let path = format!("components.{}", release.component().key);
        match files_step(self.loaded, release.slug, release.title, &version, files, &path) {
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

    /// Plan `s` on `cluster`; its id, unless the cluster cannot be reached
    /// (reported elsewhere) or its release failed to plan.
    pub(super) fn add(&mut self, cluster: &str, s: StackStep) -> Option<String> {
        let target: KubeTarget = kube_target::target(self.loaded, cluster)?;
        let mut sources = Vec::new();
        let mut description = s.name.to_string();
        if let Some(release) = s.release {
            let (artifacts, file) = self.artifacts(release)?;
            description = format!("{} {}", release.title, self.version(release));
            sources.push(match release.form {
                Form::Manifest => Source::Manifest { artifacts, file },
                Form::Chart { release: r } => Source::Chart {
                    artifacts,
                    file,
                    release: r.into(),
                    namespace: s.namespace.into(),
                    values: s.values,
                },
            });
        }
        let force = s
            .component
            .and_then(|c| self.enabled(c.key))
            .is_some_and(|c| c.force_conflicts);
        let id = step_id(s.name, cluster);
        let namespace_owner = s
            .release
            .and_then(|r| r.namespace_of)
            .map(|slug| step_id(slug, cluster));
        let mut needs = s.needs;
        needs.extend(namespace_owner.clone());
        let spec = StackSpec {
            apply: ApplySpec {
                target,
                set: id.clone(),
                namespace: Some(s.namespace.into()),
                force_conflicts: force,
                sources,
                ready: s
                    .release
                    .map(|r| r.ready.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect())
                    .unwrap_or_default(),
            },
            runtime: s.runtime,
            optional_kinds: s
                .release
                .map(|r| {
                    r.removed_kinds
                        .iter()
                        .map(|(a, k)| (a.to_string(), k.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            namespace_owner,
        };
        needs.extend(spec.apply.needs());
        self.steps
            .push(Step::of(&id, format!("{description} on {cluster}"), &spec).needs(needs));
        self.stack_steps.push(id.clone());
        Some(id)
    }

    /// `release` on `cluster` with what its entry and we add to it, and
    /// each release that goes with it right after, on the same cluster.
    fn add_release(&mut self, cluster: &str, release: &'static Release) -> Option<String> {
        let ours = self.ours(release);
        let mut step = StackStep::release(release, ours.values, ours.needs);
        step.runtime = ours.runtime;
        let id = self.add(cluster, step);
        if id.is_some() {
            for part in catalog::releases().filter(|r| matches!(r.place, Place::With(s) if s == release.slug)) {
                // Its namespace's owner comes from the catalog (`namespace_of`).
                self.add_release(cluster, part);
            }
        }
        id
    }

    /// What we add to a catalog release: its values (the user's, or ours
    /// where its entry says `Values::Planned`), objects of ours built when
    /// it runs, and the steps those need.
    fn ours(&mut self, release: &Release) -> Ours {
        match (release.values, release.slug) {
            (Values::User, _) => Ours {
                values: Value::Object(values_of(self.loaded, release.component().key)),
                runtime: None,
                needs: Vec::new(),
            },
            (Values::Planned, s) => runtime::of_release(s)
                .unwrap_or_else(|| unreachable!("no configuration plans the values of {s} (the planner's tests check)"))
                .release(self),
        }
    }

    /// The steps of what `component` needs (by the catalog), as far as they
    /// are planned: GitLab's and Vault's own steps, or the management-side
    /// step of a stack component.
    pub(super) fn catalog_needs(&self, component: &Component) -> Vec<String> {
        component
            .needs
            .iter()
            .filter_map(|key| match *key {
                k if k == catalog::GITLAB.key => self.planned_before(gitlab::STEP_ID).then(|| gitlab::STEP_ID.into()),
                k if k == catalog::VAULT.key => self.planned_before(vault::STEP_ID).then(|| vault::STEP_ID.into()),
                k => self.planned_step(k),
            })
            .collect()
    }
}

/// What the planner adds to a catalog release (see `Planner::ours`).
pub(super) struct Ours {
    pub(super) values: Value,
    pub(super) runtime: Option<Runtime>,
    pub(super) needs: Vec<String>,
}

/// Traefik's chart values: NodePorts and our certificate as its default.
pub fn traefik_ports(loaded: &Loaded) -> (u16, u16) {
    let v = values_of(loaded, catalog::TRAEFIK.key);
    let port = |k: &str, d: u16| v.get(k).and_then(Value::as_u64).map(|p| p as u16).unwrap_or(d);
    (port("webNodePort", 30080), port("websecureNodePort", 30443))
}

/// Traefik's chart values: its NodePorts from our own keys, then the user's
/// values (ours taken out: they are not the chart's).
pub(super) fn traefik_values(loaded: &Loaded) -> Value {
    let (web, websecure) = traefik_ports(loaded);
    let mut values = json!({
        "service": {"type": "NodePort"},
        "ports": {"web": {"nodePort": web}, "websecure": {"nodePort": websecure}},
    });
    crate::steps::manifests::merge_values(&mut values, &Value::Object(values_of(loaded, catalog::TRAEFIK.key)));
    for key in ["webNodePort", "websecureNodePort", "ingressAddress"] {
        values.as_object_mut().map(|o| o.remove(key));
    }
    values
}

/// Our own keys among Traefik's values, checked: a NodePort in Kubernetes'
/// range, an address as text. (Wrong ones would otherwise fall back to the
/// defaults without a word.)
pub(super) fn traefik_value_problems(loaded: &Loaded) -> Vec<Diagnostic> {
    let values = values_of(loaded, catalog::TRAEFIK.key);
    let mut problems = Vec::new();
    for key in ["webNodePort", "websecureNodePort"] {
        if let Some(v) = values.get(key) {
            if !v.as_u64().is_some_and(|p| (30000..=32767).contains(&p)) {
                let path = format!("components.traefik.values.{key}");
                problems.push(
                    Diagnostic::error(&path, format!("`{key}` must be a NodePort number, not {v}"))
                        .with_hint("use a port in Kubernetes' NodePort range, 30000-32767")
                        .at(loaded.spans.value(&path)),
                );
            }
        }
    }
    if let Some(v) = values.get("ingressAddress").filter(|v| !v.is_string()) {
        let path = "components.traefik.values.ingressAddress";
        problems.push(
            Diagnostic::error(path, format!("`ingressAddress` must be an address, not {v}"))
                .with_hint("the IP or name ingress traffic reaches, e.g. 192.0.2.10")
                .at(loaded.spans.value(path)),
        );
    }
    problems
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let mut p = Planner {
        loaded,
        before: steps,
        steps: Vec::new(),
        problems: Vec::new(),
        artifacts: BTreeSet::new(),
        planned: BTreeMap::new(),
        unplanned: BTreeSet::new(),
        pending: Vec::new(),
        stack_steps: Vec::new(),
        vault_target: vault::target(loaded),
        domain: loaded.inventory.settings.domain.clone().unwrap_or_default(),
        ingress: ingress_cluster(loaded),
    };
    let mgmt = management_cluster(loaded);
    let ingress = p.ingress.clone();

    // Releases the catalog places on the ingress or management cluster.
    for component in catalog::COMPONENTS {
        // Yours (`placement: external`) or on a host: not installed here.
        if p.enabled(component.key)
            .is_none_or(|c| c.placement != Placement::Cluster)
        {
            continue;
        }
        for release in component.releases {
            let cluster = match (release.place, &ingress, &mgmt) {
                (Place::Ingress, Some(c), _) | (Place::Management, _, Some(c)) => c,
                _ => continue,
            };
            let cluster = p.cluster_of(component.key, cluster);
            if let Some(id) = p.add_release(&cluster, release) {
                let index = p.steps.iter().position(|s| s.id == id).expect("just planned");
                p.pending.push((index, component));
                p.planned.insert(component.key, id);
            }
        }
    }

    // What we configure at run time, each as its configuration plans it.
    if let Some(mgmt) = &mgmt {
        let order = runtime::planning_order(runtime::CONFIGURATIONS);
        p.unplanned = order.iter().filter_map(|c| c.plans()).collect();
        for configuration in order {
            configuration.plan(&mut p, mgmt);
            if let Some(name) = configuration.plans() {
                p.unplanned.remove(name);
            }
        }
        if let Some(nautes) = p.planned.get(catalog::NAUTES.key).cloned() {
            register_runtime_clusters(&mut p, &nautes);
        }
    }

    // Runtime releases, as the catalog places them (each part that goes
    // with one right after it, on the same cluster).
    for release in catalog::releases() {
        let Place::Runtime { usage, management } = release.place else {
            continue;
        };
        if p.enabled(release.component().key).is_none() {
            continue;
        }
        for cluster in runtime_clusters(loaded, usage) {
            if management && Some(&cluster) == mgmt.as_ref() {
                continue; // the management cluster's is configured above (Argo CD)
            }
            p.add_release(&cluster, release);
        }
    }

    // What each management-side step needs by the catalog, now that all is planned.
    for (index, component) in std::mem::take(&mut p.pending) {
        for need in p.catalog_needs(component) {
            if !p.steps[index].needs.contains(&need) {
                p.steps[index].needs.push(need);
            }
        }
    }

    // The registries come after Dex, whose step is planned after theirs.
    if let Some(dex) = p.planned.get(catalog::DEX.key).cloned() {
        for c in [&catalog::HARBOR, &catalog::NEXUS, &catalog::SONARQUBE] {
            if let Some(step) = p
                .planned
                .get(c.key)
                .and_then(|id| p.steps.iter_mut().find(|s| &s.id == id))
            {
                step.needs.push(dex.clone());
            }
        }
    }

    if !p.problems.is_empty() {
        return Err(p.problems);
    }
    if !p.stack_steps.is_empty() {
        p.steps.push(health::plan(loaded, steps, &p.stack_steps));
    }
    steps.append(&mut p.steps);
    Ok(())
}

/// Runtime clusters are registered with Nautes once it runs.
fn register_runtime_clusters(p: &mut Planner, nautes: &str) {
    let loaded = p.loaded;
    let inv = &loaded.inventory;
    let pki_here = p.planned_before(certificates::STEP_ID);
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
            vault: p.vault_target.clone(),
        };
        let mut needs = vec![nautes.to_string(), gitlab::STEP_ID.into()];
        if pki_here {
            needs.push(certificates::STEP_ID.into());
        }
        needs.extend(target.needs());
        let id = register::step_id(&cluster);
        p.steps
            .push(Step::of(&id, format!("register {cluster} with Nautes"), &spec).needs(needs));
        p.stack_steps.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::manifests::unknown_value_keys;

    /// A release whose entry says the planner computes its values has a
    /// configuration that plans them (`Planner::ours` would stop
    /// otherwise), and a configuration claims only such a release.
    #[test]
    fn each_release_with_planned_values_has_its_configuration() {
        let planned: Vec<&str> = catalog::releases()
            .filter(|r| matches!(r.values, Values::Planned))
            .map(|r| r.slug)
            .collect();
        assert_eq!(
            planned,
            [
                catalog::TRAEFIK_RELEASE.slug,
                catalog::VAULT_INJECTOR.slug,
                catalog::HARBOR_RELEASE.slug,
                catalog::NEXUS_RELEASE.slug,
                catalog::SONARQUBE_RELEASE.slug,
            ]
        );
        let mut claimed: Vec<&str> = runtime::CONFIGURATIONS.iter().filter_map(|c| c.configures()).collect();
        claimed.sort();
        let mut planned = planned;
        planned.sort();
        assert_eq!(claimed, planned);
        for slug in planned {
            assert!(runtime::of_release(slug).is_some(), "{slug}");
        }
    }

    /// The build finds the configurations in whatever order; the planner
    /// plans each after those whose steps it reads (`NEEDS`), the same way
    /// whatever the order found. Their `TYPE`s, which a step's record is
    /// dispatched by, are unique.
    #[test]
    fn configurations_are_planned_after_what_they_need_whatever_order_they_are_found_in() {
        let kinds = |cs: &[&'static dyn runtime::Configuration]| cs.iter().map(|c| c.kind()).collect::<Vec<_>>();
        let order = runtime::planning_order(runtime::CONFIGURATIONS);
        let mut reversed = runtime::CONFIGURATIONS.to_vec();
        reversed.reverse();
        assert_eq!(kinds(&runtime::planning_order(&reversed)), kinds(&order));
        for (i, c) in order.iter().enumerate() {
            for need in c.needs() {
                if let Some(j) = order.iter().position(|o| o.plans() == Some(*need)) {
                    assert!(
                        j < i,
                        "{} needs {need}, planned after it by {}",
                        c.kind(),
                        order[j].kind()
                    );
                }
            }
        }
        // Those that plan steps of their own, in the order they always were.
        let planning: Vec<&str> = kinds(&order)
            .into_iter()
            .filter(|k| ["caIssuer", "dex", "vaultProxy", "argocd", "oauth2Proxy", "nautes"].contains(k))
            .collect();
        assert_eq!(
            planning,
            ["caIssuer", "dex", "vaultProxy", "argocd", "oauth2Proxy", "nautes"]
        );
        let mut unique = kinds(&order);
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            order.len(),
            "two configurations share a TYPE: {:?}",
            kinds(&order)
        );
    }

    /// A component configured at run time is planned by its file alone
    /// (found by the build): oauth2-proxy, enabled, gets its step on the
    /// ingress cluster, after Dex and with the Tekton Dashboard's route.
    #[test]
    fn oauth2_proxy_enabled_is_planned_from_its_configuration_file() {
        let root = env!("CARGO_MANIFEST_DIR");
        let path = std::path::Path::new(root).join("inventories/single-node-k3s.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\n  dex: {}", "\n  oauth2Proxy: {}\n  dex: {}");
        assert!(text.contains("oauth2Proxy"));
        let loaded = crate::inventory::load_str(&path, &text).unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let steps = crate::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        let step = steps
            .iter()
            .find(|s| s.id == "stack/oauth2-proxy/host")
            .unwrap_or_else(|| {
                panic!(
                    "no oauth2-proxy step in {:?}",
                    steps.iter().map(|s| &s.id).collect::<Vec<_>>()
                )
            });
        for need in [
            "stack/dex/tenant-mgmt",
            "stack/tekton-dashboard/host",
            "stack/traefik/host",
        ] {
            assert!(step.needs.iter().any(|n| n == need), "{need} not in {:?}", step.needs);
        }
        assert_eq!(step.spec["runtime"]["type"], "oauth2Proxy");
        assert_eq!(step.spec["runtime"]["tektonDashboard"], true);
    }

    /// The stand-in chart (tests/charts) that mirrors each real chart we
    /// pin, and the keys upstream documents only as comments in its values.
    fn standin(chart_file: &str) -> Option<(&'static str, &'static [&'static str])> {
        const TRAEFIK_COMMENTED: &[&str] = &["ports.web.nodePort", "ports.websecure.nodePort"];
        [
            ("traefik-", ("traefik-standin", TRAEFIK_COMMENTED)),
            ("external-secrets-", ("external-secrets-standin", &[][..])),
            ("vault-", ("vault-standin", &[][..])),
            ("harbor-", ("harbor-standin", &[][..])),
            ("nexus-repository-manager-", ("nexus-standin", &[][..])),
            // Commented out in the real values.yaml, read by its templates.
            ("sonarqube-", ("sonarqube-standin", &["postgresql.existingSecret"][..])),
        ]
        .into_iter()
        .find(|(prefix, _)| chart_file.starts_with(prefix))
        .map(|(_, s)| s)
    }

    /// The values each chart source is planned with (step, chart file,
    /// values), from an inventory with every chart and users' own values
    /// for Traefik (ours are taken out).
    fn chart_values_we_pass() -> Vec<(String, String, Value)> {
        let root = env!("CARGO_MANIFEST_DIR");
        let path = std::path::Path::new(root).join("inventories/single-node-k3s.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = crate::inventory::load_str(&path, &text).unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let steps = crate::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        let mut out = Vec::new();
        for step in steps.iter().filter(|s| s.kind == super::super::KIND) {
            let spec: StackSpec = serde_json::from_value(step.spec.clone()).unwrap();
            for source in spec.apply.sources {
                if let Source::Chart { file, values, .. } = source {
                    out.push((step.id.clone(), file, values));
                }
            }
        }
        out
    }

    #[test]
    fn every_chart_value_we_pass_is_a_key_of_the_charts_values() {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut checked = Vec::new();
        for (step, file, values) in chart_values_we_pass() {
            let (dir, documented) = standin(&file).unwrap_or_else(|| panic!("no stand-in chart mirrors {file}"));
            let text = std::fs::read_to_string(format!("{root}/tests/charts/{dir}/values.yaml")).unwrap();
            let defaults: Value = serde_yaml::from_str(&text).unwrap();
            let unknown = unknown_value_keys(&values, &defaults, documented);
            assert!(unknown.is_empty(), "{step}: {file} has no values {unknown:?}");
            checked.push(dir);
        }
        checked.sort();
        checked.dedup();
        assert_eq!(
            checked,
            [
                "external-secrets-standin",
                "harbor-standin",
                "nexus-standin",
                "sonarqube-standin",
                "traefik-standin",
                "vault-standin"
            ]
        );
    }

    /// Every key path of `values` (maps only; not below lists or scalars),
    /// as tests/fixtures/chart-keys/derive.py lists a chart's.
    fn key_paths(values: &Value) -> Vec<String> {
        fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
            for (k, child) in v.as_object().into_iter().flatten() {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(child, &path, out);
                out.push(path);
            }
        }
        let mut out = Vec::new();
        walk(values, "", &mut out);
        out.sort();
        out
    }

    /// The real chart's key paths (from its values.yaml at the release tag,
    /// see tests/fixtures/chart-keys), each with whether its default is an
    /// empty, free-form map. Named after the chart file, so a new version
    /// needs its own list.
    fn real_chart_keys(chart_file: &str) -> std::collections::BTreeMap<String, bool> {
        let stem = chart_file.strip_suffix(".tgz").unwrap_or(chart_file);
        let path = format!("{}/tests/fixtures/chart-keys/{stem}.txt", env!("CARGO_MANIFEST_DIR"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}; derive it with derive.py there"));
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.strip_suffix(" {}") {
                Some(p) => (p.to_string(), true),
                None => (l.to_string(), false),
            })
            .collect()
    }

    /// The key paths of `values` the real chart lacks: neither listed nor
    /// below one of its free-form maps (nor among `documented`).
    fn not_in_real_chart(
        values: &Value,
        keys: &std::collections::BTreeMap<String, bool>,
        documented: &[&str],
    ) -> Vec<String> {
        let free_form_above = |path: &str| {
            path.match_indices('.')
                .any(|(i, _)| keys.get(&path[..i]).copied().unwrap_or(false))
        };
        key_paths(values)
            .into_iter()
            .filter(|p| !keys.contains_key(p) && !documented.contains(&p.as_str()) && !free_form_above(p))
            .collect()
    }

    /// Helm ignores a value the chart does not read, and a stand-in chart
    /// that reads a key upstream lacks (say `service.nodePort`) would let
    /// such a value pass the test above while the real chart ignores it:
    /// both are checked against the real chart's keys.
    #[test]
    fn chart_values_we_pass_and_the_standins_keys_are_the_real_charts() {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut checked = Vec::new();
        for (step, file, values) in chart_values_we_pass() {
            let (dir, documented) = standin(&file).unwrap_or_else(|| panic!("no stand-in chart mirrors {file}"));
            let keys = real_chart_keys(&file);
            let unknown = not_in_real_chart(&values, &keys, documented);
            assert!(unknown.is_empty(), "{step}: the real {file} has no values {unknown:?}");
            let text = std::fs::read_to_string(format!("{root}/tests/charts/{dir}/values.yaml")).unwrap();
            let standin_values: Value = serde_yaml::from_str(&text).unwrap();
            let grown = not_in_real_chart(&standin_values, &keys, &[]);
            assert!(grown.is_empty(), "{dir} has values the real {file} lacks: {grown:?}");
            checked.push(file);
        }
        checked.sort();
        checked.dedup();
        assert_eq!(
            checked,
            [
                "external-secrets-0.5.7.tgz",
                "harbor-1.9.1.tgz",
                "nexus-repository-manager-39.0.0.tgz",
                "sonarqube-4.0.0.tgz",
                "traefik-10.24.0.tgz",
                "vault-0.22.0.tgz"
            ]
        );
    }

    /// The Helm to render the stand-in charts with: NAUTES_HELM, CI's, or
    /// PATH's.
    fn helm_binary() -> Option<std::path::PathBuf> {
        let candidates = [
            std::env::var_os("NAUTES_HELM").map(std::path::PathBuf::from),
            Some("/opt/nautes-ci/bin/helm".into()),
        ];
        candidates.into_iter().flatten().find(|p| p.exists()).or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("helm"))
                    .find(|p| p.exists())
            })
        })
    }

    /// A stack step as it would apply from the stand-in releases.
    struct Rendered {
        step: String,
        cluster: String,
        release: &'static Release,
        spec: StackSpec,
        objects: Vec<Value>,
    }

    /// What each release step of the inventory applies from the stand-in
    /// releases (tests/fixtures/stack, tests/charts/*-standin rendered by
    /// `helm template` with the planned values), through the step's own
    /// namespace handling; run-time objects, built against a cluster, are
    /// left out. None without Helm.
    fn rendered_standin_releases() -> Option<Vec<Rendered>> {
        let helm = helm_binary().or_else(|| {
            let why = "no Helm to render the stand-in charts (set NAUTES_HELM or put `helm` on PATH)";
            // CI installs Helm (.ci/install.d/40-helm.sh): there a missing one is a failure, not a skip.
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipped: {why}");
            None
        })?;
        let root = env!("CARGO_MANIFEST_DIR");
        let path = std::path::Path::new(root).join("inventories/single-node-k3s.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = crate::inventory::load_str(&path, &text).unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let steps = crate::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        let home = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for step in steps.iter().filter(|s| s.kind == super::super::KIND) {
            let spec: StackSpec = serde_json::from_value(step.spec.clone()).unwrap();
            let [_, slug, cluster] = step.id.splitn(3, '/').collect::<Vec<_>>()[..] else {
                panic!("step {} is not stack/<release>/<cluster>", step.id);
            };
            let Some(release) = catalog::release(slug) else {
                assert!(spec.apply.sources.is_empty(), "{}: sources of no release", step.id);
                continue; // ours only (Dex, the CA issuer, ...): built when it runs
            };
            if spec.apply.sources.is_empty() {
                continue; // Nautes: committed for Argo CD to deliver, not applied
            }
            let mut objects = Vec::new();
            for source in &spec.apply.sources {
                let (name, text) = match source {
                    Source::Manifest { file, .. } => {
                        let version = release.pinned.unwrap_or(release.component().default_version());
                        let name = format!("{root}/tests/fixtures/stack/{slug}/{version}/{file}");
                        let text = std::fs::read_to_string(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
                        (name, text)
                    }
                    Source::Chart {
                        file,
                        release: r,
                        namespace,
                        values,
                        ..
                    } => {
                        let (dir, _) = standin(file).unwrap();
                        let chart = std::path::PathBuf::from(format!("{root}/tests/charts/{dir}"));
                        let text = rt
                            .block_on(crate::drivers::helm::template(&crate::drivers::helm::Template {
                                binary: helm.clone(),
                                release: r,
                                chart: &chart,
                                namespace,
                                values_yaml: serde_yaml::to_string(values).unwrap(),
                                home: home.path(),
                                timeout: std::time::Duration::from_secs(60),
                            }))
                            .unwrap();
                        (file.clone(), text)
                    }
                    Source::Objects { .. } => panic!("{}: a release with objects of ours", step.id),
                };
                objects.extend(crate::drivers::kube::objects::parse_documents(&text, &name).unwrap());
            }
            super::super::own_namespace(&spec, &mut objects);
            out.push(Rendered {
                step: step.id.clone(),
                cluster: cluster.to_string(),
                release,
                spec,
                objects,
            });
        }
        Some(out)
    }

    /// A release is ready when every workload it runs has rolled out, so
    /// each readiness rule in the catalog names all of the Deployments and
    /// StatefulSets its release runs in its own namespace (the stand-ins
    /// have the real releases' names): one dropped from the list would let
    /// the stack go on without it.
    #[test]
    fn each_releases_readiness_rule_names_every_workload_it_runs_in_its_namespace() {
        let Some(rendered) = rendered_standin_releases() else {
            return;
        };
        let mut checked = BTreeSet::new();
        for r in &rendered {
            let ns = r.release.namespace;
            let mut runs: Vec<(String, String)> = r
                .objects
                .iter()
                .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
                .filter(|o| o["metadata"]["namespace"].as_str().unwrap_or(ns) == ns)
                .map(|o| {
                    (
                        o["kind"].as_str().unwrap().to_string(),
                        o["metadata"]["name"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            runs.sort();
            let mut ready = r.spec.apply.ready.clone();
            ready.sort();
            assert!(!ready.is_empty(), "{}: no readiness rule", r.step);
            assert_eq!(
                ready, runs,
                "{}: the readiness rule (left) and what the release runs in {ns}",
                r.step
            );
            crate::steps::manifests::check_readiness_rule(&r.spec.apply, &r.objects).unwrap();
            checked.insert(r.release.slug);
        }
        // Nautes is Argo CD's to deliver (its rule is the Application's health).
        let all: BTreeSet<&str> = catalog::releases()
            .map(|r| r.slug)
            .filter(|s| *s != catalog::NAUTES_RELEASE.slug)
            .collect();
        assert_eq!(checked, all);
    }

    /// Kinds the stand-in releases render without a namespace that are
    /// cluster-scoped; any other such object lives in the set's namespace.
    const CLUSTER_SCOPED: &[&str] = &[
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "PodSecurityPolicy",
    ];

    /// Each object has one owning set: two sets applying the same object
    /// would prune or fight over each other's (as the Tekton namespace,
    /// once claimed by Tekton and its dashboard, did).
    #[test]
    fn no_object_belongs_to_two_release_sets_on_a_cluster() {
        let Some(rendered) = rendered_standin_releases() else {
            return;
        };
        let mut owner: std::collections::BTreeMap<(String, String, String, Option<String>, String), String> =
            Default::default();
        let mut clashes = Vec::new();
        for r in &rendered {
            for o in &r.objects {
                let kind = o["kind"].as_str().unwrap().to_string();
                let group = o["apiVersion"]
                    .as_str()
                    .unwrap()
                    .rsplit_once('/')
                    .map(|(g, _)| g)
                    .unwrap_or("")
                    .to_string();
                let namespace = o["metadata"]["namespace"].as_str().map(str::to_string).or_else(|| {
                    (!CLUSTER_SCOPED.contains(&kind.as_str())).then(|| r.spec.apply.namespace.clone().unwrap())
                });
                let name = o["metadata"]["name"].as_str().unwrap().to_string();
                let key = (r.cluster.clone(), group, kind, namespace, name);
                if let Some(first) = owner.insert(key.clone(), r.step.clone()) {
                    if first != r.step {
                        clashes.push(format!("{key:?} in {first} and {}", r.step));
                    }
                }
            }
        }
        assert!(clashes.is_empty(), "objects of two sets: {clashes:#?}");
        // Both Tekton sets are there, on one cluster, to clash if they could.
        assert!(rendered
            .iter()
            .any(|r| r.release.slug == catalog::TEKTON_DASHBOARD.slug));
    }
}
