//! What a tenant owns in Harbor, Nexus and SonarQube, and the Harbor
//! instances a tenant runs for itself; with the checks that keep two
//! tenants from claiming one thing.
//!
//! `components.harbor` (`nexus`, `sonarqube`) is the platform's shared
//! instance, named `harbor` (`nexus`, `sonarqube`). A tenant may own
//! instances of its own (`tenants[].harborInstances`) and hold projects on
//! any instance it names — its own or the shared one — so one tenant can
//! isolate products on several instances and others share one.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diagnostics::{Diagnostic, Report};
use super::load::Loaded;
use super::spans::{push_index, push_key};
use super::types::{ExternalService, Placement};

/// The name of the shared instance `components.harbor` declares.
pub const SHARED_HARBOR: &str = "harbor";
pub const SHARED_NEXUS: &str = "nexus";
pub const SHARED_SONARQUBE: &str = "sonarqube";

fn shared_harbor() -> String {
    SHARED_HARBOR.to_string()
}

fn shared_nexus() -> String {
    SHARED_NEXUS.to_string()
}

/// A Harbor instance one tenant owns: it is removed with the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HarborInstance {
    /// Unique among all Harbor instances (`harbor` is the shared one).
    pub name: String,
    /// Only `external` is configured through the API today: the instance
    /// at `external.url`, `external.token` being its first-run admin password.
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub external: Option<ExternalService>,
}

/// A tenant's projects on one Harbor instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantHarbor {
    /// The instance: `harbor` (the shared one, default) or one of any
    /// tenant's `harborInstances` — but a tenant's own instance only by it.
    #[serde(default = "shared_harbor")]
    pub instance: String,
    /// Harbor projects, each with a pipeline robot whose credential goes to
    /// Vault (or the outputs).
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryFormat {
    Maven,
    Npm,
    Pypi,
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryType {
    Hosted,
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NexusRepository {
    pub name: String,
    pub format: RepositoryFormat,
    #[serde(rename = "type")]
    pub kind: RepositoryType,
    /// What a proxy repository proxies.
    #[serde(default)]
    pub remote_url: Option<String>,
}

/// A tenant's repositories on the shared Nexus, with a role and a user
/// that may use exactly those.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantNexus {
    #[serde(default = "shared_nexus")]
    pub instance: String,
    pub repositories: Vec<NexusRepository>,
}

/// The tenant's own GitLab group: a top-level group made through the API
/// (private), removed with the tenant only while it holds no project —
/// or when the tenant's `allowDataLoss` says so. Members are not managed
/// here: who may do what is `tenants[].groups` (through Dex), and GitLab's
/// own membership stays the group owners' business.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantGitlab {
    /// The group's path (one segment: `acme`, not `acme/dev`).
    pub group: String,
}

/// A SonarQube user with a pipeline token for the tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSonarqube {}

/// Where the first claim of something is, for the error at the second:
/// its field path and, when known, its line and column.
fn first_at(loaded: &Loaded, path: &str) -> String {
    match loaded.spans.value(path) {
        Some(s) => format!("{path} (line {}, column {})", s.line, s.col),
        None => path.to_string(),
    }
}

/// GitLab's rule for a group path: letters, digits, `_`, `-` and `.`,
/// not starting with `-`, not ending in `.git`, `.atom` or
/// `.`; and not one of the top-level paths GitLab keeps for its routes.
pub fn is_gitlab_group_path(path: &str) -> bool {
    const RESERVED: [&str; 20] = [
        "-",
        "admin",
        "api",
        "assets",
        "dashboard",
        "explore",
        "groups",
        "help",
        "import",
        "jwt",
        "login",
        "oauth",
        "profile",
        "projects",
        "public",
        "s",
        "search",
        "snippets",
        "uploads",
        "users",
    ];
    !path.starts_with('-')
        && !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !path.ends_with(".git")
        && !path.ends_with(".atom")
        && !path.ends_with('.')
        && path.len() <= 255
        && !RESERVED.contains(&path.to_ascii_lowercase().as_str())
}

/// Each check's error, at the position of what it names.
pub fn validate(loaded: &Loaded, report: &mut Report) {
    let inv = &loaded.inventory;
    gitlab_groups(loaded, report);
    let error = |report: &mut Report, path: &str, message: String, hint: String| {
        report.diagnostics.push(
            Diagnostic::error(path, message)
                .with_hint(hint)
                .at(loaded.spans.value(path)),
        );
    };
    // Every Harbor instance and who owns it (None: the shared one).
    let mut instances: HashMap<&str, (Option<&str>, String)> = HashMap::new();
    if inv.components.enabled("harbor") {
        instances.insert(SHARED_HARBOR, (None, "components.harbor".to_string()));
    }
    for (i, t) in inv.tenants.iter().enumerate() {
        for (j, h) in t.harbor_instances.iter().enumerate() {
            let path = push_key(
                &push_index(&push_key(&push_index("tenants", i), "harborInstances"), j),
                "name",
            );
            if let Some((owner, first)) = instances.get(h.name.as_str()) {
                let first = first_at(loaded, first);
                error(
                    report,
                    &path,
                    match owner {
                        Some(o) if *o == t.name => {
                            format!("Harbor instance `{}` is declared twice by tenant `{o}`", h.name)
                        }
                        Some(o) => format!(
                            "Harbor instance `{}` is claimed by tenants `{o}` and `{}`",
                            h.name, t.name
                        ),
                        None => format!(
                            "Harbor instance `{}` is the shared one (components.harbor), claimed by tenant `{}`",
                            h.name, t.name
                        ),
                    },
                    format!("first at {first}; Harbor instance names are unique (`harbor` is components.harbor)"),
                );
                continue;
            }
            instances.insert(&h.name, (Some(&t.name), path.clone()));
            let base = push_index(&push_key(&push_index("tenants", i), "harborInstances"), j);
            if h.placement != Placement::External || h.external.is_none() {
                error(
                    report,
                    &push_key(&base, "placement"),
                    format!("Harbor instance `{}` needs `placement: external` and `external`", h.name),
                    "a tenant's own Harbor is configured through its API at `external.url`, with its first-run admin password in `external.token`".into(),
                );
            }
        }
    }
    // (instance, project) -> (tenant, where)
    let mut projects: HashMap<(&str, &str), (&str, String)> = HashMap::new();
    for (i, t) in inv.tenants.iter().enumerate() {
        for (j, th) in t.harbor.iter().enumerate() {
            let base = push_index(&push_key(&push_index("tenants", i), "harbor"), j);
            match instances.get(th.instance.as_str()) {
                None => {
                    let mut known: Vec<&str> = instances.keys().copied().collect();
                    known.sort_unstable();
                    let path = push_key(&base, "instance");
                    let path = if loaded.spans.value(&path).is_some() {
                        path
                    } else {
                        base.clone()
                    };
                    error(
                        report,
                        &path,
                        format!(
                            "tenant `{}` refers to Harbor instance `{}`, which is not declared",
                            t.name, th.instance
                        ),
                        if known.is_empty() {
                            "declare it under `tenants[].harborInstances`, or enable `components.harbor` for the shared `harbor`".to_string()
                        } else {
                            format!("known instances: {}", known.join(", "))
                        },
                    );
                    continue;
                }
                Some((Some(owner), _)) if *owner != t.name => {
                    error(
                        report,
                        &push_key(&base, "instance"),
                        format!("Harbor instance `{}` belongs to tenant `{owner}`", th.instance),
                        "a tenant's own instance holds only that tenant's projects; use the shared `harbor` or an instance of this tenant".into(),
                    );
                    continue;
                }
                Some(_) => {}
            }
            for (k, p) in th.projects.iter().enumerate() {
                let path = push_index(&push_key(&base, "projects"), k);
                if !is_harbor_name(p) {
                    error(
                        report,
                        &path,
                        format!("`{p}` is not a Harbor project name"),
                        "lower-case letters and digits, separated by single `.`, `_` or `-`".into(),
                    );
                }
                match projects.get(&(th.instance.as_str(), p.as_str())) {
                    Some((other, first)) => {
                        let (other, first) = (other.to_string(), first_at(loaded, first));
                        error(
                            report,
                            &path,
                            if other == t.name {
                                format!(
                                    "Harbor project `{p}` on `{}` appears twice in tenant `{other}`",
                                    th.instance
                                )
                            } else {
                                format!(
                                    "Harbor project `{p}` on `{}` is claimed by tenants `{other}` and `{}`",
                                    th.instance, t.name
                                )
                            },
                            format!("first at {first}; a project belongs to one tenant"),
                        );
                    }
                    None => {
                        projects.insert((th.instance.as_str(), p.as_str()), (&t.name, path));
                    }
                }
            }
        }
    }
    // Nexus repositories are one namespace per instance too.
    let nexus_on = inv.components.enabled("nexus");
    let mut repositories: HashMap<&str, (&str, String)> = HashMap::new();
    for (i, t) in inv.tenants.iter().enumerate() {
        let Some(n) = &t.nexus else { continue };
        let base = push_key(&push_index("tenants", i), "nexus");
        if !nexus_on || n.instance != SHARED_NEXUS {
            error(
                report,
                &base,
                format!(
                    "tenant `{}` has Nexus repositories but there is no Nexus `{}`",
                    t.name, n.instance
                ),
                "enable `components.nexus` (the shared instance `nexus`)".into(),
            );
        }
        for (k, r) in n.repositories.iter().enumerate() {
            let path = push_index(&push_key(&base, "repositories"), k);
            if let Some((other, first)) = repositories.get(r.name.as_str()) {
                let (other, first) = (other.to_string(), first_at(loaded, first));
                error(
                    report,
                    &push_key(&path, "name"),
                    format!(
                        "Nexus repository `{}` is claimed by tenants `{other}` and `{}`",
                        r.name, t.name
                    ),
                    format!("first at {first}; a repository belongs to one tenant"),
                );
            } else {
                repositories.insert(&r.name, (&t.name, push_key(&path, "name")));
            }
            if (r.kind == RepositoryType::Proxy) != r.remote_url.is_some() {
                error(
                    report,
                    &path,
                    format!(
                        "Nexus repository `{}`: `remoteUrl` goes with `type: proxy`, and only there",
                        r.name
                    ),
                    "a proxy repository names what it proxies; a hosted one does not".into(),
                );
            }
        }
    }
    // Installed in a cluster, each answers at <key>.<domain> behind Traefik.
    for key in ["harbor", "nexus", "sonarqube"] {
        if !inv
            .components
            .enabled_one(key)
            .is_some_and(|c| c.placement == Placement::Cluster)
        {
            continue;
        }
        // At `placement` when it is written (`spans.value` falls back to
        // the nearest ancestor), else at the component.
        let component = format!("components.{key}");
        let placement = push_key(&component, "placement");
        let path = if loaded.spans.value(&placement) != loaded.spans.value(&component) {
            placement
        } else {
            component
        };
        let missing = match (inv.components.enabled("traefik"), inv.settings.domain.is_some()) {
            (false, _) => Some("`components.traefik`, whose ingress serves it"),
            (true, false) => Some("`settings.domain`, under which it answers"),
            (true, true) => None,
        };
        if let Some(missing) = missing {
            error(
                report,
                &path,
                format!("`{key}` is installed in a cluster (placement cluster) but there is no {missing}"),
                format!("add {missing}, or run it yourself and set `placement: external` with `external.url`"),
            );
        }
    }
    // `components.harbor.values.mirror`: the clusters' nodes pull from the
    // Harbor installed in a cluster (K3s' registries.yaml, Kubespray's
    // containerd_registries_mirrors).
    if let Some(m) = inv
        .components
        .enabled_one("harbor")
        .and_then(|h| h.values.get("mirror").map(|m| (h, m)))
    {
        let (h, m) = m;
        let path = "components.harbor.values.mirror";
        match m {
            serde_json::Value::Bool(false) => {}
            serde_json::Value::Bool(true) if h.placement != Placement::Cluster => error(
                report,
                path,
                "`mirror` needs the Harbor installed here (`placement: cluster`)".into(),
                "for your own Harbor, list it under `artifacts.mirrors`".into(),
            ),
            serde_json::Value::Bool(true) => {}
            other => error(
                report,
                path,
                format!("`mirror` must be true or false, not {other}"),
                "true: the K3s and Kubespray clusters' nodes pull images named harbor.<domain>/... from this Harbor, trusting our CA"
                    .into(),
            ),
        }
    }
    let sonar_on = inv.components.enabled("sonarqube");
    for (i, t) in inv.tenants.iter().enumerate() {
        if t.sonarqube.is_some() && !sonar_on {
            error(
                report,
                &push_key(&push_index("tenants", i), "sonarqube"),
                format!(
                    "tenant `{}` asks for a SonarQube token but SonarQube is not enabled",
                    t.name
                ),
                "enable `components.sonarqube`".into(),
            );
        }
    }
}

/// Each tenant's GitLab group: a valid top-level path, GitLab configured
/// by us, not the platform's own group, and no two tenants on one.
fn gitlab_groups(loaded: &Loaded, report: &mut Report) {
    let inv = &loaded.inventory;
    let gitlab = inv.components.enabled_one("gitlab");
    let platform = gitlab
        .and_then(|c| c.values.get("group"))
        .and_then(|v| v.as_str())
        .unwrap_or("nautes");
    // Paths are case-insensitive in GitLab.
    let mut seen: HashMap<String, (&str, String)> = HashMap::new();
    for (i, t) in inv.tenants.iter().enumerate() {
        let Some(g) = &t.gitlab else { continue };
        let path = push_key(&push_key(&push_index("tenants", i), "gitlab"), "group");
        let mut fail = |message: String, hint: String| {
            report.diagnostics.push(
                Diagnostic::error(&path, message)
                    .with_hint(hint)
                    .at(loaded.spans.value(&path)),
            );
        };
        if gitlab.is_none() {
            fail(
                format!("tenant `{}` has a GitLab group but GitLab is not enabled", t.name),
                "enable `components.gitlab` (the installer makes the group through its API)".into(),
            );
            continue;
        }
        if !is_gitlab_group_path(&g.group) {
            fail(
                format!("`{}` is not a top-level GitLab group path", g.group),
                "one segment of letters, digits, `_`, `-` and `.`, not starting with `-` nor ending in `.`, `.git` or `.atom`, and not a path GitLab reserves (admin, api, groups, …)".into(),
            );
            continue;
        }
        let key = g.group.to_ascii_lowercase();
        if key == platform.to_ascii_lowercase() {
            fail(
                format!("tenant `{}` claims `{}`, the platform's own GitLab group", t.name, g.group),
                "the platform group (components.gitlab.values.group, default `nautes`) holds the tenant repository; give the tenant a group of its own".into(),
            );
            continue;
        }
        match seen.get(&key) {
            Some((other, first)) => {
                let first = first_at(loaded, first);
                fail(
                    if *other == t.name {
                        format!("GitLab group `{}` appears twice in tenant `{other}`", g.group)
                    } else {
                        format!(
                            "GitLab group `{}` is claimed by tenants `{other}` and `{}`",
                            g.group, t.name
                        )
                    },
                    format!("first at {first}; a group belongs to one tenant (paths are case-insensitive)"),
                );
            }
            None => {
                seen.insert(key, (&t.name, path.clone()));
            }
        }
    }
}

/// Harbor's project name rule: `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`, at most 255.
pub fn is_harbor_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut prev_sep = true;
    for c in name.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if sep && prev_sep {
            return false;
        }
        if !(sep || c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return false;
        }
        prev_sep = sep;
    }
    !prev_sep
}

#[cfg(test)]
mod tests {
    #[test]
    fn harbor_names() {
        for ok in ["a", "team-a", "a.b_c-1"] {
            assert!(super::is_harbor_name(ok), "{ok}");
        }
        for bad in ["", "A", "a-", "-a", "a--b", "a b"] {
            assert!(!super::is_harbor_name(bad), "{bad}");
        }
    }

    #[test]
    fn gitlab_group_paths() {
        for ok in ["acme", "Acme_2", "_x", ".a", "a.b-c"] {
            assert!(super::is_gitlab_group_path(ok), "{ok}");
        }
        for bad in ["", "acme/dev", "-a", "a.git", "a.", "a b", "admin", "API"] {
            assert!(!super::is_gitlab_group_path(bad), "{bad}");
        }
    }
}
