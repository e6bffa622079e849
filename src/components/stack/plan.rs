//! Planning the stack from the inventory: which component goes on which
//! cluster (the management cluster, the ingress cluster under it, runtime
//! clusters by usage), at which version, as one `stack-apply` step each with
//! the needs that are its real dependencies — plus the artifacts steps its
//! releases come from, the cluster registrations and the final health step.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::catalog::{self, Form, Release};
use super::runtime::{self, Runtime};
use super::sign_in;
use super::{health, register, step_id, StackSpec};
use crate::components::{certificates, gitlab, vault, vault_kubernetes, vault_oidc};
use crate::inventory::{ClusterUsage, Component, Diagnostic, Loaded};
use crate::plan::Step;
use crate::steps::kube_target::{self, KubeTarget};
use crate::steps::manifests::{ApplySpec, Source};
use crate::steps::release_files::{files_step, pinned_file, GITHUB};
use crate::versions;

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
            release.url(GITHUB, &version),
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
        let namespace_owner = release
            .and_then(|(r, _)| r.namespace_of)
            .map(|slug| step_id(slug, cluster));
        needs.extend(namespace_owner.clone());
        let spec = StackSpec {
            apply: ApplySpec {
                target,
                set: id.clone(),
                namespace: Some(namespace.into()),
                force_conflicts: force,
                sources,
                ready: release
                    .map(|(r, _)| r.ready.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect())
                    .unwrap_or_default(),
            },
            runtime,
            optional_kinds: optional_kinds
                .iter()
                .map(|(a, k)| (a.to_string(), k.to_string()))
                .collect(),
            namespace_owner,
        };
        needs.extend(spec.apply.needs());
        self.steps
            .push(Step::of(&id, format!("{description} on {cluster}"), &spec).needs(needs));
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

/// Our own keys among Traefik's values, checked: a NodePort in Kubernetes'
/// range, an address as text. (Wrong ones would otherwise fall back to the
/// defaults without a word.)
fn traefik_value_problems(loaded: &Loaded) -> Vec<Diagnostic> {
    let values = values_of(loaded, "traefik");
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
        p.problems.extend(traefik_value_problems(loaded));
        let (web, websecure) = traefik_ports(loaded);
        let mut values = json!({
            "service": {"type": "NodePort"},
            "ports": {"web": {"nodePort": web}, "websecure": {"nodePort": websecure}},
        });
        crate::steps::manifests::merge_values(&mut values, &Value::Object(values_of(loaded, "traefik")));
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
            vec![certificates::STEP_ID.into()],
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
            needs.push(certificates::STEP_ID.into());
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
                Some(Runtime::Dex(runtime::DexSpec {
                    domain: domain.clone(),
                    version: c.version.clone().unwrap_or(versions::DEX.into()),
                    vault: vault_target.clone(),
                    clients: sign_in::enabled(&inv.components)
                        .into_iter()
                        .chain(vault_oidc::wanted(loaded).then(|| vault_oidc::CLIENT_ID.to_string()))
                        .collect(),
                })),
                vec![gitlab::STEP_ID.into(), certificates::STEP_ID.into()],
                "dex",
                &[],
            ),
            // Without GitLab, validation has said so (`Components::NEEDS`);
            // a GitLab that failed to plan has its own error.
            _ => None,
        };
        stack_steps.extend(dex.clone());
        if let (Some(c), Some(cluster)) = (component(loaded, "oauth2Proxy"), ingress_cluster(loaded)) {
            let target = c.cluster.clone().unwrap_or(cluster);
            let mut needs: Vec<String> = dex.iter().cloned().collect();
            needs.push(certificates::STEP_ID.into());
            // Its Middleware is a Traefik kind.
            if component(loaded, "traefik").is_some() && ingress_cluster(loaded).as_ref() == Some(&target) {
                needs.push(step_id("traefik", &target));
            }
            stack_steps.extend(p.apply(
                "oauth2-proxy",
                &target,
                None,
                Value::Null,
                Some(Runtime::Oauth2Proxy(runtime::Oauth2ProxySpec {
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
                Some(Runtime::VaultProxy(runtime::VaultProxySpec {
                    image: format!(
                        "ghcr.io/nautes-labs/vault-proxy:{}",
                        n.version.clone().unwrap_or(versions::NAUTES.into())
                    ),
                    vault: v.clone(),
                })),
                vec![vault::STEP_ID.into(), certificates::STEP_ID.into()],
                "nautes",
                &[],
            ),
            _ => None,
        };
        stack_steps.extend(proxy.clone());
        if component(loaded, "argocd").is_some() && gitlab_step {
            let mut needs = vec![gitlab::STEP_ID.to_string(), certificates::STEP_ID.to_string()];
            needs.extend(dex.clone());
            let argocd = p.apply(
                "argocd",
                &on("argocd"),
                Some((&catalog::ARGOCD, "argocd")),
                Value::Null,
                Some(Runtime::Argocd(runtime::ArgocdSpec {
                    domain: domain.clone(),
                    vault: vault_target.clone(),
                    rbac: runtime::argocd_rbac_config(&inv.tenants),
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
                    Some(Runtime::Nautes(runtime::NautesSpec { path: "nautes".into() })),
                    needs,
                    "argocd",
                    &[],
                );
                stack_steps.extend(nautes.clone());
                // Runtime clusters are registered with Nautes once it runs.
                let pki_here = steps.iter().any(|s| s.id == certificates::STEP_ID);
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
                        needs.push(certificates::STEP_ID.into());
                    }
                    needs.extend(target.needs());
                    let id = register::step_id(&cluster);
                    p.steps
                        .push(Step::of(&id, format!("register {cluster} with Nautes"), &spec).needs(needs));
                    stack_steps.push(id);
                }
            }
        }
    }

    // Runtime releases, as the catalog places them; each companion right
    // after the release it goes with, on the same cluster.
    let mgmt = management_cluster(loaded);
    for release in catalog::RELEASES {
        let Some(on) = release.on_runtime else {
            continue;
        };
        if component(loaded, on.enabled_by).is_none() {
            continue;
        }
        for cluster in runtime_clusters(loaded, on.usage) {
            if Some(&cluster) == mgmt.as_ref() && release.slug == catalog::ARGOCD.slug {
                continue; // the management cluster's Argo CD is configured above
            }
            let (values, needs) = if release.slug == catalog::VAULT_INJECTOR.slug {
                (
                    json!({"server": {"enabled": false}, "injector": {"enabled": true,
                           "externalVaultAddr": vault_target.as_ref().map(|v| v.url.clone())}}),
                    vault_target.iter().map(|_| vault::STEP_ID.to_string()).collect(),
                )
            } else {
                (Value::Object(values_of(loaded, on.enabled_by)), Vec::new())
            };
            stack_steps.extend(p.apply(
                release.slug,
                &cluster,
                Some((release, release.key)),
                values,
                None,
                needs,
                release.namespace,
                on.removed_kinds,
            ));
            for companion in catalog::RELEASES
                .iter()
                .filter(|c| c.companion_of == Some(release.slug))
            {
                stack_steps.extend(p.apply(
                    companion.slug,
                    &cluster,
                    Some((companion, companion.key)),
                    Value::Null,
                    None,
                    // Its namespace's owner comes from the catalog (`namespace_of`).
                    Vec::new(),
                    companion.namespace,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::manifests::unknown_value_keys;

    /// The stand-in chart (tests/charts) that mirrors each real chart we
    /// pin, and the keys upstream documents only as comments in its values.
    fn standin(chart_file: &str) -> Option<(&'static str, &'static [&'static str])> {
        const TRAEFIK_COMMENTED: &[&str] = &["ports.web.nodePort", "ports.websecure.nodePort"];
        [
            ("traefik-", ("traefik-standin", TRAEFIK_COMMENTED)),
            ("external-secrets-", ("external-secrets-standin", &[][..])),
            ("vault-", ("vault-standin", &[][..])),
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
            ["external-secrets-standin", "traefik-standin", "vault-standin"]
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
            ["external-secrets-0.5.7.tgz", "traefik-10.24.0.tgz", "vault-0.22.0.tgz"]
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
            let Some(release) = catalog::RELEASES.into_iter().find(|r| r.slug == slug) else {
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
                        let name = format!("{root}/tests/fixtures/stack/{slug}/{}/{file}", release.default_version);
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
        let all: BTreeSet<&str> = catalog::RELEASES
            .iter()
            .map(|r| r.slug)
            .filter(|s| *s != catalog::NAUTES.slug)
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
