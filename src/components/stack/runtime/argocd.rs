//! Argo CD as the stack configures it, merged over the upstream manifest's
//! objects of the same name: OIDC through Dex, our CA for GitLab's
//! certificate, TLS ended at Traefik, and the tenant repository with the
//! base operator's read token. Also the Nautes AppProject and Application,
//! through which Argo CD delivers Nautes from the tenant repository.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dex::client_secret;
use super::{b64, ca_pem, gitlab_outputs, ingress, Configure, Planner, Runtime, StackStep};
use crate::catalog;
use crate::components::gitlab::{self, credentials::field};
use crate::components::stack::sign_in;
use crate::components::vault::VaultTarget;
use crate::components::{certificates, endpoints, vault, vault_kubernetes};
use crate::drivers::kube::KubeClient;
use crate::engine::{StepContext, StepError};
use crate::inventory::{Tenant, TenantRole};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgocdSpec {
    pub domain: String,
    pub vault: Option<VaultTarget>,
    /// The data of `argocd-rbac-cm`, rendered from the tenants' groups when
    /// planning ([`rbac_config`]).
    #[serde(default)]
    pub rbac: BTreeMap<String, String>,
}

/// `argocd-rbac-cm`'s data: the tenants' [`policy_csv`]; no default role
/// (`role:readonly` would show every tenant's applications to everyone
/// signed in), so a user in no tenant group may nothing; groups from Dex's
/// `groups` claim.
pub fn rbac_config(tenants: &[Tenant]) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("policy.csv".to_string(), policy_csv(tenants)),
        ("policy.default".to_string(), String::new()),
        ("scopes".to_string(), "[groups]".to_string()),
    ])
}

/// What each tenant role may do in Argo CD, on the applications of the
/// tenant's project (the AppProject named after the tenant; objects
/// `<tenant>/<application>`):
///
/// * viewer: see the applications, their logs and the project;
/// * developer: also sync them and run their resource actions (restart…);
/// * admin: also create, update, delete and override (sync local
///   manifests) them, and exec into their pods.
///
/// Nothing outside the tenant's project (clusters, repositories,
/// certificates, other projects, the project's own settings) is granted.
pub fn role_permissions(role: TenantRole) -> &'static [(&'static str, &'static str)] {
    const VIEWER: &[(&str, &str)] = &[("applications", "get"), ("logs", "get"), ("projects", "get")];
    const DEVELOPER: &[(&str, &str)] = &[
        ("applications", "get"),
        ("applications", "sync"),
        ("applications", "action/*"),
        ("logs", "get"),
        ("projects", "get"),
    ];
    const ADMIN: &[(&str, &str)] = &[
        ("applications", "get"),
        ("applications", "create"),
        ("applications", "update"),
        ("applications", "delete"),
        ("applications", "sync"),
        ("applications", "override"),
        ("applications", "action/*"),
        ("logs", "get"),
        ("exec", "create"),
        ("projects", "get"),
    ];
    match role {
        TenantRole::Viewer => VIEWER,
        TenantRole::Developer => DEVELOPER,
        TenantRole::Admin => ADMIN,
    }
}

/// Argo CD's role for a tenant role.
pub fn argocd_role(tenant: &str, role: TenantRole) -> String {
    format!("role:{tenant}-{}", role.as_str())
}

/// A CSV field as Argo CD reads policy lines (Go's encoding/csv): quoted
/// when it holds a comma or a quote, or has surrounding spaces.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) || s.trim() != s {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Argo CD's `policy.csv` for the tenants: every tenant gets its three
/// roles ([`role_permissions`]) on its project, and each of its groups (as
/// Dex's `groups` claim names it) the role it is given. Removing a group
/// removes exactly its `g` line.
pub fn policy_csv(tenants: &[Tenant]) -> String {
    let mut out =
        String::from("# Rendered by nautes-install from the tenants and their groups; edits are overwritten.\n");
    for tenant in tenants {
        let t = &tenant.name;
        out.push_str(&format!("\n# tenant {t}\n"));
        for role in TenantRole::ALL {
            let subject = argocd_role(t, role);
            for (resource, action) in role_permissions(role) {
                let object = if *resource == "projects" {
                    t.clone()
                } else {
                    format!("{t}/*")
                };
                out.push_str(&format!("p, {subject}, {resource}, {action}, {object}, allow\n"));
            }
        }
        for g in &tenant.groups {
            out.push_str(&format!("g, {}, {}\n", csv_field(&g.name), argocd_role(t, g.role)));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NautesSpec {
    /// Path of the Nautes release in the tenant repository.
    pub path: String,
}

/// Argo CD on the management cluster: its release with OIDC through Dex,
/// our CA and the tenant repository (whose token the GitLab step made).
/// (On runtime clusters its release is planned from its entry alone.)
pub(super) struct Argocd;

#[async_trait]
impl Configure for Argocd {
    const TYPE: &'static str = "argocd";
    type Spec = ArgocdSpec;
    const PLANS: Option<&'static str> = Some(catalog::ARGOCD.key);
    const NEEDS: &'static [&'static str] = catalog::ARGOCD.needs;

    fn plan(&self, p: &mut Planner, mgmt: &str) {
        if p.enabled(catalog::ARGOCD.key).is_none() || !p.planned_before(gitlab::STEP_ID) {
            return;
        }
        let mut needs = vec![gitlab::STEP_ID.to_string(), certificates::STEP_ID.to_string()];
        needs.extend(p.catalog_needs(&catalog::ARGOCD));
        let spec = ArgocdSpec {
            domain: p.domain.clone(),
            vault: p.vault_target.clone(),
            rbac: rbac_config(&p.loaded.inventory.tenants),
        };
        let mut step = StackStep::release(&catalog::ARGOCD_RELEASE, Value::Null, needs);
        step.runtime = Some(Runtime::of::<Self>(&spec));
        let cluster = p.cluster_of(catalog::ARGOCD.key, mgmt);
        if let Some(id) = p.add(&cluster, step) {
            p.planned.insert(catalog::ARGOCD.key, id);
        }
    }

    async fn objects(&self, ctx: &StepContext, spec: &ArgocdSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        argocd(ctx, spec).await
    }
}

/// Nautes, delivered by Argo CD from the tenant repository: its
/// AppProject and Application, once Vault's auth and policies exist.
pub(super) struct Nautes;

#[async_trait]
impl Configure for Nautes {
    const TYPE: &'static str = "nautes";
    type Spec = NautesSpec;
    const PLANS: Option<&'static str> = Some(catalog::NAUTES.key);
    /// Argo CD, which delivers it, and vault-proxy (besides its catalog
    /// needs: Vault, GitLab and Argo CD).
    const NEEDS: &'static [&'static str] = &[catalog::ARGOCD.key, super::vault_proxy::NAME];

    fn plan(&self, p: &mut Planner, mgmt: &str) {
        let Some(argocd) = p.planned_step(catalog::ARGOCD.key) else {
            return;
        };
        if p.enabled(catalog::NAUTES.key).is_none() {
            return;
        }
        // Nautes' operators log in to Vault: its auth and policies first.
        let mut needs = vec![argocd, gitlab::STEP_ID.into()];
        needs.extend(p.planned_step(super::vault_proxy::NAME));
        if p.vault_target.is_some() {
            needs.push(vault::STEP_ID.into());
            needs.extend(
                p.loaded
                    .inventory
                    .tenants
                    .iter()
                    .map(|t| vault_kubernetes::step_id(&t.name)),
            );
        }
        needs.extend(p.catalog_needs(&catalog::NAUTES));
        let spec = NautesSpec { path: "nautes".into() };
        let step = StackStep::ours(
            catalog::NAUTES.slug,
            Some(&catalog::NAUTES),
            Runtime::of::<Self>(&spec),
            catalog::ARGOCD_RELEASE.namespace,
        )
        .needing(needs);
        // Where Argo CD runs, which delivers it.
        let cluster = p.cluster_of(catalog::ARGOCD.key, mgmt);
        if let Some(id) = p.add(&cluster, step) {
            p.planned.insert(catalog::NAUTES.key, id);
        }
    }

    async fn objects(&self, ctx: &StepContext, spec: &NautesSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        nautes(ctx, spec)
    }
}

async fn argocd(ctx: &StepContext, spec: &ArgocdSpec) -> Result<Vec<Value>, StepError> {
    let ns = "argocd";
    let domain = &spec.domain;
    let ca = ca_pem(ctx)?;
    let gitlab = gitlab_outputs(ctx)?;
    let gitlab_url = gitlab["url"].as_str().unwrap_or_default();
    let repo = format!(
        "{}/{}.git",
        gitlab_url.trim_end_matches('/'),
        gitlab["project"]["path"].as_str().unwrap_or_default()
    );
    let gitlab_host = gitlab_url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_string();
    let reader = gitlab::stored_credential(ctx, spec.vault.as_ref(), gitlab::BASE_OPERATOR_TOKEN).await?;
    let token = field(&reader, gitlab::BASE_OPERATOR_TOKEN, "token")?;
    let oidc = format!(
        "name: GitLab\nissuer: {}\nclientID: {}\nclientSecret: $oidc.dex.clientSecret\nrequestedScopes: [openid, profile, email, groups]\nrootCA: |\n{}",
        endpoints::dex_issuer(domain),
        sign_in::ARGOCD.id,
        ca.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let mut tls_certs = BTreeMap::new();
    if !gitlab_host.is_empty() {
        tls_certs.insert(gitlab_host, ca.clone());
    }
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "namespace": ns},
               "data": {"url": endpoints::ARGOCD.url(domain), "oidc.config": oidc, "admin.enabled": "false"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "argocd-secret", "namespace": ns},
               "data": {"oidc.dex.clientSecret": b64(client_secret(ctx, &sign_in::ARGOCD)?.expose())}}),
        // TLS ends at Traefik, which has our certificate.
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-rbac-cm", "namespace": ns},
               "data": spec.rbac}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cmd-params-cm", "namespace": ns},
               "data": {"server.insecure": "true"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-tls-certs-cm", "namespace": ns},
               "data": tls_certs}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nautes-tenant-repo", "namespace": ns,
                   "labels": {"argocd.argoproj.io/secret-type": "repository"}},
               "data": {"type": b64("git"), "url": b64(&repo), "username": b64("nautes-base-operator"),
                        "password": b64(token.expose())}}),
        ingress(
            "argocd-server",
            ns,
            &endpoints::ARGOCD.host(domain),
            "argocd-server",
            80,
        ),
    ])
}

fn nautes(ctx: &StepContext, spec: &NautesSpec) -> Result<Vec<Value>, StepError> {
    let gitlab = gitlab_outputs(ctx)?;
    let repo = format!(
        "{}/{}.git",
        gitlab["url"].as_str().unwrap_or_default().trim_end_matches('/'),
        gitlab["project"]["path"].as_str().unwrap_or_default()
    );
    let branch = gitlab["defaultBranch"].as_str().unwrap_or("main");
    Ok(vec![
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
               "metadata": {"name": "nautes", "namespace": "argocd"},
               "spec": {"sourceRepos": [repo], "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "*"}],
                        "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}),
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": "nautes", "namespace": "argocd"},
               "spec": {"project": "nautes",
                        "source": {"repoURL": repo, "targetRevision": branch, "path": spec.path},
                        "destination": {"server": "https://kubernetes.default.svc", "namespace": "nautes"},
                        "syncPolicy": {"automated": {"prune": true, "selfHeal": true}, "syncOptions": ["CreateNamespace=true"]}}}),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, groups: &[(&str, TenantRole)]) -> Tenant {
        serde_json::from_value(json!({
            "name": name, "cluster": "host",
            "groups": groups.iter().map(|(g, r)| json!({"name": g, "role": r.as_str()})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// The exact file for two tenants: any change to what a role grants, to
    /// how groups are bound or to the format shows here first; what it means
    /// to Argo CD is checked by the real casbin in tests/e2e/argocd_rbac.rs.
    #[test]
    fn policy_csv_for_two_tenants_is_exactly_the_reviewed_file() {
        let tenants = [
            tenant(
                "acme",
                &[
                    ("acme/dev", TenantRole::Developer),
                    ("acme/ops", TenantRole::Admin),
                    ("acme/qa", TenantRole::Viewer),
                ],
            ),
            tenant(
                "other",
                &[("other/dev", TenantRole::Developer), ("a,\"b\"", TenantRole::Viewer)],
            ),
        ];
        let expected = include_str!("../../../../tests/fixtures/argocd/policy.csv");
        assert_eq!(policy_csv(&tenants), expected);
    }
}
