//! From the inventory to the `gitlab/configure` step: where GitLab is (our
//! host or the user's own), the `components.gitlab.values` it is tuned with
//! (each checked, every problem reported at once), the tenant repository's
//! files rendered from our templates, and the Nautes release the repository
//! delivers through Argo CD.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::oauth::OauthSpec;
use super::tenant_group::{self, TenantGroupSpec};
use super::{GitlabSpec, ReleaseFile, HOST_STEP_ID, KIND, STEP_ID};
use crate::catalog;
use crate::components::certificates;
use crate::components::vault as vault_component;
use crate::inventory::spans::push_key;
use crate::inventory::{Diagnostic, Loaded, Placement};
use crate::plan::Step;
use crate::steps::{hosts, release_files};

fn value_error(loaded: &Loaded, key: &str, message: String) -> Diagnostic {
    let path = push_key("components.gitlab.values", key);
    Diagnostic::error(&path, message).at(loaded.spans.value(&path))
}

fn string_value(
    loaded: &Loaded,
    values: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, Diagnostic> {
    match values.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(value_error(
            loaded,
            key,
            format!("`{key}` must be a non-empty string, not {v}"),
        )),
    }
}

fn days_value(
    loaded: &Loaded,
    values: &serde_json::Map<String, Value>,
    key: &str,
    default: i64,
) -> Result<i64, Diagnostic> {
    match values.get(key) {
        None => Ok(default),
        Some(v) => v.as_i64().filter(|d| (1..=365).contains(d)).ok_or_else(|| {
            value_error(
                loaded,
                key,
                format!("`{key}` must be a number of days from 1 to 365, not {v}"),
            )
        }),
    }
}

fn bool_value(loaded: &Loaded, values: &serde_json::Map<String, Value>, key: &str) -> Result<bool, Diagnostic> {
    match values.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(value_error(
            loaded,
            key,
            format!("`{key}` must be true or false, not {v}"),
        )),
    }
}

/// The value, or `None` with the problem kept, so every problem is reported at once.
fn collect<T>(problems: &mut Vec<Diagnostic>, r: Result<T, Diagnostic>) -> Option<T> {
    r.map_err(|d| problems.push(d)).ok()
}

/// The tenant repository's files, rendered from the inventory.
fn repo_files(loaded: &Loaded, group: &str) -> Result<BTreeMap<String, String>, String> {
    let inv = &loaded.inventory;
    let context = json!({
        "name": inv.metadata.name,
        "group": group,
        "domain": inv.settings.domain,
        "clusters": inv.clusters.iter().map(|c| json!({"name": c.name, "usage": c.usage})).collect::<Vec<_>>(),
        "virtualClusters": inv.virtual_clusters.iter().map(|v| json!({"name": v.name, "hostCluster": v.host_cluster, "usage": v.usage})).collect::<Vec<_>>(),
    });
    // Only the tenants template lists tenants, and it reads their names,
    // clusters and namespace names: an inventory may hold ten thousand
    // tenants, and handing every template whole tenants (their registries,
    // groups, labels) was most of the time planning one took.
    let tenants = TenantsContext {
        name: &inv.metadata.name,
        tenants: inv
            .tenants
            .iter()
            .map(|t| TenantView {
                name: &t.name,
                cluster: &t.cluster,
                namespaces: t.namespaces.iter().map(NamespaceView::of).collect(),
            })
            .collect(),
    };
    let mut files = BTreeMap::new();
    files.insert(
        "README.md".to_string(),
        crate::templates::render("gitlab/tenant-repo/README.md", &context)?,
    );
    files.insert(
        "tenant/production/tenants.yaml".to_string(),
        crate::templates::render("gitlab/tenant-repo/tenants.yaml", &tenants)?,
    );
    files.insert(
        "tenant/production/clusters.yaml".to_string(),
        crate::templates::render("gitlab/tenant-repo/clusters.yaml", &context)?,
    );
    Ok(files)
}

/// What `tenants.yaml.tera` reads.
#[derive(serde::Serialize)]
struct TenantsContext<'a> {
    name: &'a str,
    tenants: Vec<TenantView<'a>>,
}

#[derive(serde::Serialize)]
struct TenantView<'a> {
    name: &'a str,
    cluster: &'a str,
    namespaces: Vec<NamespaceView<'a>>,
}

#[derive(serde::Serialize)]
struct NamespaceView<'a> {
    name: &'a str,
    children: Vec<NamespaceView<'a>>,
}

impl<'a> NamespaceView<'a> {
    fn of(node: &'a crate::inventory::NamespaceNode) -> Self {
        NamespaceView {
            name: &node.name,
            children: node.children.iter().map(NamespaceView::of).collect(),
        }
    }
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let Some(gitlab) = loaded.inventory.components.enabled_one(catalog::GITLAB.key) else {
        return Ok(());
    };
    let domain = loaded.inventory.settings.domain.clone();
    let (url, token, ca_file, host) = match (gitlab.placement, &gitlab.external, &gitlab.host) {
        (Placement::External, Some(e), _) => (
            e.url.trim_end_matches('/').to_string(),
            e.token.clone(),
            e.ca_file
                .as_ref()
                .map(|p| std::path::absolute(loaded.resolve(p)).unwrap_or_else(|_| loaded.resolve(p))),
            None,
        ),
        (Placement::Host, _, Some(h)) => {
            let Some(conn) = hosts::connection(loaded, h) else {
                // Validation reports an unknown host with its position.
                return Ok(());
            };
            let url = match &domain {
                Some(d) => format!("https://gitlab.{d}"),
                None => format!("https://{}", conn.address),
            };
            (url, None, None, Some(conn))
        }
        // Validation reports a placement without its details; in a cluster, #7's stack owns it.
        _ => return Ok(()),
    };
    if gitlab.placement == Placement::External && token.is_none() {
        return Err(vec![Diagnostic::error(
            "components.gitlab.external.token",
            "an existing GitLab needs an administrator's token to configure it",
        )
        .with_hint(
            "add `token: { env: GITLAB_ADMIN_TOKEN }` (scope `api`); the installer then makes and rotates its own",
        )
        .at(loaded.spans.value("components.gitlab.external"))]);
    }
    let values = &gitlab.values;
    let mut problems = Vec::new();
    let group = collect(&mut problems, string_value(loaded, values, "group"))
        .flatten()
        .unwrap_or_else(|| "nautes".into());
    let validity = collect(&mut problems, days_value(loaded, values, "tokenValidityDays", 90)).unwrap_or(90);
    let renew = collect(&mut problems, days_value(loaded, values, "tokenRenewDays", 14)).unwrap_or(14);
    let recreate = collect(&mut problems, bool_value(loaded, values, "oauthRecreateOnDrift")).unwrap_or(false);
    let can_push = collect(&mut problems, bool_value(loaded, values, "deployKeyCanPush")).unwrap_or(false);
    let rails_host = match collect(&mut problems, string_value(loaded, values, "railsHost")).flatten() {
        Some(name) => match hosts::connection(loaded, &name) {
            Some(conn) => Some(conn),
            None => {
                problems.push(
                    value_error(loaded, "railsHost", format!("`{name}` is not a host in `hosts`"))
                        .with_hint("name the host GitLab runs on, as listed under `hosts:`"),
                );
                None
            }
        },
        None => host.clone(),
    };
    let app_name = collect(&mut problems, string_value(loaded, values, "oauthAppName"))
        .flatten()
        .unwrap_or_else(|| "nautes-dex".into());
    let redirect = collect(&mut problems, string_value(loaded, values, "oauthRedirectUri"))
        .flatten()
        .or_else(|| domain.as_deref().map(crate::components::endpoints::dex_callback));
    if renew >= validity {
        problems.push(value_error(
            loaded,
            "tokenRenewDays",
            format!("tokens valid for {validity} days cannot be renewed {renew} days before they expire"),
        ));
    }
    let Some(redirect) = redirect else {
        problems.push(
            Diagnostic::error(
                "components.gitlab.values.oauthRedirectUri",
                "Dex's OAuth application needs a callback URL",
            )
            .with_hint(
                "set `settings.domain` (the callback is then https://dex.<domain>/callback) or `oauthRedirectUri`",
            )
            .at(loaded.spans.value("components.gitlab")),
        );
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut repo_files = repo_files(loaded, &group).map_err(|e| vec![Diagnostic::error("components.gitlab", e)])?;
    let mut release_files = BTreeMap::new();
    let mut needs = Vec::new();
    if let Some(nautes) = loaded.inventory.components.enabled_one(catalog::NAUTES.key) {
        // Nautes is delivered from the tenant repository, as upstream does.
        let release = &catalog::NAUTES_RELEASE;
        let version = nautes
            .version
            .clone()
            .unwrap_or_else(|| catalog::NAUTES.default_version().to_string());
        let file = release.file(&version);
        let files = vec![release_files::pinned_file(
            &file,
            format!("{}/{version}/{file}", release.slug),
            release.url(release_files::GITHUB, &version),
            None,
        )];
        let step = release_files::files_step(
            loaded,
            release.slug,
            release.title,
            &version,
            files,
            "components.nautes",
        )
        .map_err(|d| vec![d])?;
        release_files.insert(
            format!("nautes/{file}"),
            ReleaseFile {
                artifacts: step.id.clone(),
                file: file.clone(),
            },
        );
        repo_files.insert(
            "nautes/kustomization.yaml".into(),
            format!("# Nautes {version}, delivered by Argo CD (Application `nautes`).\nresources:\n  - {file}\n"),
        );
        needs.push(step.id.clone());
        if !steps.iter().any(|s| s.id == step.id) {
            steps.push(step);
        }
    }
    let vault = vault_component::target(loaded);
    let spec = GitlabSpec {
        url: url.clone(),
        token,
        ca_file,
        host: host.clone(),
        rails_host,
        group,
        token_validity_days: validity,
        token_renew_days: renew,
        deploy_key_can_push: can_push,
        oauth: OauthSpec {
            name: app_name,
            redirect_uri: redirect,
            scopes: super::oauth::DEX_APP_SCOPES.into(),
            recreate_on_drift: recreate,
        },
        repo_files,
        vault: vault.clone(),
        release_files,
    };
    if host.is_some() {
        needs.push(HOST_STEP_ID.to_string());
        needs.push(certificates::STEP_ID.to_string());
    }
    if let Some(v) = &vault {
        needs.push(vault_component::STEP_ID.to_string());
        if v.host_step.is_some() {
            needs.push(certificates::STEP_ID.to_string());
        }
    }
    steps.push(Step::new(STEP_ID, KIND, format!("GitLab at {url}"), json!(spec)).needs(needs.clone()));
    // Each tenant's own group, with the admin token gitlab/configure keeps.
    for t in &loaded.inventory.tenants {
        let Some(g) = &t.gitlab else { continue };
        let spec = TenantGroupSpec {
            tenant: t.name.clone(),
            group: g.group.clone(),
            url: url.clone(),
            ca_file: spec.ca_file.clone(),
            on_host: host.is_some(),
            vault: vault.clone(),
            allow_data_loss: t.allow_data_loss,
        };
        let mut group_needs = vec![STEP_ID.to_string()];
        group_needs.extend(needs.iter().filter(|n| n.as_str() != HOST_STEP_ID).cloned());
        steps.push(
            Step::of(
                tenant_group::step_id(&t.name),
                format!("GitLab group {} of tenant {}", g.group, t.name),
                &spec,
            )
            .needs(group_needs),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The tenant repository's tenants.yaml, whole: nested trees, a tenant
    /// without namespaces. The text is what the repository held before its
    /// context was cut down to what the template reads, so a change to it
    /// shows as a commit in every install's tenant repository.
    #[test]
    fn tenants_file_lists_every_tenant_tree() {
        let text = r#"apiVersion: install.nautes.io/v1alpha1
kind: Inventory
metadata:
  name: acme
hosts:
  - {name: node-1, address: 10.0.0.1}
clusters:
  - name: host
    type: k3s
    k3s: {version: v1.27.4+k3s1, servers: [node-1]}
virtualClusters:
  - {name: vc, hostCluster: host}
tenants:
  - name: a
    cluster: vc
    namespaces:
      - name: x
        labels: {team: x}
        children:
          - name: y
            children: [{name: z}]
          - name: w
      - name: v
  - name: b
    cluster: host
"#;
        let loaded = crate::inventory::load_str(std::path::Path::new("i.yaml"), text)
            .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let files = super::repo_files(&loaded, "nautes").unwrap();
        assert_eq!(
            files["tenant/production/tenants.yaml"],
            "# Tenants of acme and their namespace trees (HNC), as installed.\ntenants:\n  - name: a\n    cluster: vc\n    namespaces:\n      - name: x\n        children:\n          - name: y\n            children:\n              - name: z\n          - name: w\n      - name: v\n  - name: b\n    cluster: host\n    namespaces: []\n"
        );
        assert!(files["README.md"].starts_with("# Tenant configuration of acme\n"));
        assert!(files["tenant/production/clusters.yaml"].contains("  - name: vc\n    hostCluster: host\n"));
    }
}
