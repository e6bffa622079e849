//! Harbor, Nexus and SonarQube configured through their REST APIs, and the
//! resources each tenant owns in them.
//!
//! Per instance, one step takes over the admin account (the first-run
//! password — Harbor's configured one, the `admin.password` file Nexus
//! writes, SonarQube's `admin/admin` — replaced by one we generate, stored
//! before the change so a crash never locks us out) and sets the instance's
//! own configuration (Harbor's OIDC sign-in, Nexus' anonymous access). Per
//! tenant and instance, one step converges what that tenant owns: Harbor
//! projects with a pipeline robot each, Nexus repositories with a role and a
//! user, a SonarQube user with a pipeline token. Removing a tenant from the
//! inventory removes its step, and the step's `destroy` removes exactly what
//! it made.
//!
//! Every converge reads the live state first and writes only what differs,
//! so a run that finds everything in place makes no write call.
//! Credentials (admin passwords, robot secrets, user passwords, tokens) go
//! to Vault's `repo` KV engine when Vault is installed, otherwise to 0600
//! files under `<outputs>/<product>/`; never to the state file or a log.

pub mod harbor;
pub mod install;
pub mod nexus;
pub mod sonarqube;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::certificates;
use super::endpoints;
use super::gitlab::credentials::{CredentialStore, Fields};
use super::stack::sign_in;
use super::vault::{self as vault_component, VaultTarget};
use crate::catalog;
use crate::drivers::rest::{Auth, RestError};
use crate::engine::{Change, Difference, Registry, StepContext, StepError};
use crate::inventory::registries::{RepositoryFormat, RepositoryType, SHARED_HARBOR, SHARED_NEXUS, SHARED_SONARQUBE};
use crate::inventory::{Component, Diagnostic, ExternalService, Loaded, Placement, SecretRef};
use crate::plan::Step;
use crate::secret::{random_token, Secret};

/// The Vault KV v2 engine the credentials of artifact repositories live in.
pub const VAULT_MOUNT: &str = "repo";

/// How to reach one instance's API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The instance's name in the inventory (credential names start with it).
    pub instance: String,
    pub url: String,
    /// The CA of its certificate (else the system roots).
    pub ca_file: Option<PathBuf>,
    /// The first-run admin password (Harbor's configured one, the file Nexus
    /// writes); SonarQube's is its fixed default.
    pub initial_password: Option<SecretRef>,
    /// Keep credentials in this Vault instead of files.
    pub vault: Option<VaultTarget>,
    /// Installed by us (`placement: cluster`): its admin password is ours
    /// from the start (Harbor) or the product's documented default (Nexus
    /// with `NEXUS_SECURITY_RANDOMPASSWORD=false`, SonarQube's admin/admin).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub installed: bool,
    /// Trust our CA (the PKI step's) when no `ca_file` is named: an
    /// instance behind our ingress.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pki_ca: bool,
    /// "address:port" the URL's host is reached at (the ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<String>,
}

/// The write calls one converge made, named (never with a value).
#[derive(Debug, Default)]
pub struct Report {
    pub writes: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn wrote(&mut self, what: impl Into<String>) {
        self.writes.push(what.into());
    }

    /// The step's outputs: what it wrote, and a request to be re-checked
    /// on every run (people change things in these products' UIs).
    pub fn outputs(&self, extra: Value) -> Value {
        let mut v = json!({
            "writes": self.writes.len(),
            "written": self.writes,
            crate::plan::diff::REFRESH_AFTER: crate::util::unix_now(),
        });
        if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), extra) {
            o.extend(extra);
        }
        v
    }
}

pub fn failed(what: &str, e: RestError) -> StepError {
    StepError::new(format!("{what}: {e}"))
}

/// A password every product's policy takes: Harbor wants 8+ characters
/// with an upper-case letter, a lower-case letter and a digit.
pub fn generate_password() -> Result<Secret, StepError> {
    let token = random_token().map_err(|e| StepError::new(format!("cannot read random bytes: {e}")))?;
    Ok(Secret::new(format!("Nx{}7", &token.expose()[..40])))
}

/// Where an instance's admin password is kept, in its product's folder.
pub fn admin_record(instance: &str) -> String {
    format!("{instance}/admin")
}

/// Where the credential a tenant gets on an instance (Nexus user,
/// SonarQube token) is kept, in its product's folder.
pub fn tenant_record(instance: &str, tenant: &str) -> String {
    format!("{instance}/tenants/{tenant}")
}

/// Where one product's credentials are kept.
pub fn store(
    ctx: &StepContext,
    folder: &'static str,
    vault: Option<&VaultTarget>,
) -> Result<CredentialStore, StepError> {
    Ok(match vault {
        Some(target) => {
            let (vault, token) = vault_component::connect(ctx, target)?;
            CredentialStore::Vault {
                vault,
                token,
                mount: VAULT_MOUNT,
                folder,
            }
        }
        None => CredentialStore::Files(ctx.outputs_dir.join(folder)),
    })
}

/// The CA to trust for an instance: the one it names, else ours for an
/// instance behind our ingress, else none (the system roots).
pub fn ca(ctx: &StepContext, endpoint: &Endpoint) -> Result<Option<Vec<u8>>, StepError> {
    let ours = || {
        ctx.needs_outputs
            .get(certificates::STEP_ID)
            .and_then(|o| o["ca"]["cert"].as_str())
            .map(PathBuf::from)
    };
    let path = match (&endpoint.ca_file, endpoint.pki_ca) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(
            ours()
                .ok_or_else(|| StepError::new("the PKI step has not run (internal error: missing need)".to_string()))?,
        ),
        (None, false) => None,
    };
    path.as_ref()
        .map(|p| {
            std::fs::read(p).map_err(|e| {
                StepError::new(format!(
                    "cannot read the CA of {}, {}: {e}",
                    endpoint.instance,
                    p.display()
                ))
            })
        })
        .transpose()
}

pub fn fields(pairs: &[(&str, &Secret)]) -> Fields {
    pairs.iter().map(|(k, v)| (k.to_string(), (*v).clone())).collect()
}

/// Where the instance's host is reached, when it is behind our ingress.
pub async fn address(endpoint: &Endpoint) -> Result<Option<std::net::SocketAddr>, StepError> {
    let Some(addr) = &endpoint.resolve else {
        return Ok(None);
    };
    tokio::net::lookup_host(addr.as_str())
        .await
        .ok()
        .and_then(|mut it| it.next())
        .map(Some)
        .ok_or_else(|| StepError::new(format!("the ingress address {addr} does not resolve")))
}

/// A product's `admin` account, as [`take_over_admin`] needs it.
pub trait AdminAccount: Sync {
    /// Whether `password` logs in as admin.
    fn log_in(&self, password: &Secret) -> impl std::future::Future<Output = Result<bool, RestError>> + Send;
    /// Replace the admin password `old` by `new`.
    fn replace(&self, old: &Secret, new: &Secret) -> impl std::future::Future<Output = Result<(), RestError>> + Send;
}

/// The admin password we keep for an instance, logging in with it. The
/// first run generates it and stores it *before* changing the first-run
/// password to it, so a run killed in between finds it stored and still
/// makes the change; a later run finds it working and writes nothing.
pub async fn take_over_admin(
    account: &impl AdminAccount,
    store: &CredentialStore,
    record: &str,
    initial: Option<&Secret>,
    report: &mut Report,
) -> Result<Secret, StepError> {
    let ours = match store.get(record).await? {
        Some(f) => f
            .get("password")
            .cloned()
            .ok_or_else(|| StepError::new(format!("the stored credential `{record}` has no password")))?,
        None => {
            let p = generate_password()?;
            store.put(record, &fields(&[("password", &p)])).await?;
            p
        }
    };
    if account
        .log_in(&ours)
        .await
        .map_err(|e| failed("logging in as admin", e))?
    {
        return Ok(ours);
    }
    let Some(initial) = initial else {
        return Err(StepError::new(format!(
            "the admin password kept at {} does not log in, and no first-run password is known to replace",
            store.location(record)
        )));
    };
    if !account
        .log_in(initial)
        .await
        .map_err(|e| failed("logging in as admin", e))?
    {
        return Err(StepError::new(format!(
            "neither the admin password kept at {} nor the first-run one logs in; was it changed by hand?",
            store.location(record)
        )));
    }
    account
        .replace(initial, &ours)
        .await
        .map_err(|e| failed("replacing the first-run admin password", e))?;
    report.wrote("admin password");
    Ok(ours)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The tenant's `allowDataLoss`, as its registry steps keep it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataLoss {
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_data_loss: bool,
}

/// A short list for a message: the first few names, and how many more.
fn some_of(names: &[String], more: bool) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 || more {
        s.push_str(", …");
    }
    s
}

/// Harbor projects about to be removed, through the data-loss guard: a
/// project holding repositories is named and the removal refused unless
/// the tenant allows it; then its repositories go first, since Harbor
/// refuses to delete a project that holds any.
pub async fn clear_harbor_projects(
    ctx: &StepContext,
    h: &crate::drivers::harbor::Harbor,
    password: &Secret,
    tenant: &str,
    allowed: bool,
    projects: &[harbor::Project],
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let mut holding = Vec::new();
    let mut contents = Vec::new();
    for p in projects {
        if h.project(auth, &p.name)
            .await
            .map_err(|e| failed(&format!("reading project {}", p.name), e))?
            .is_none()
        {
            continue;
        }
        let repos = h
            .repositories(auth, &p.name)
            .await
            .map_err(|e| failed(&format!("listing the repositories of project {}", p.name), e))?;
        if !repos.is_empty() {
            holding.push(format!(
                "Harbor project {} ({} repositories: {})",
                p.name,
                repos.len(),
                some_of(&repos, false)
            ));
            contents.push((p.name.clone(), repos));
        }
    }
    crate::components::tenants::guard_data_loss(ctx, tenant, allowed, "Harbor projects", &holding)?;
    for (project, repos) in contents {
        for r in repos {
            if h.delete_repository(auth, &project, &r)
                .await
                .map_err(|e| failed(&format!("deleting repository {project}/{r}"), e))?
            {
                report.wrote(format!("repository {project}/{r} removed"));
            }
        }
    }
    Ok(())
}

/// Nexus repositories about to be removed, through the data-loss guard: a
/// hosted one holding components is named and the removal refused unless
/// the tenant allows it (a proxy's components are a cache of its remote).
pub async fn guard_nexus_repositories(
    ctx: &StepContext,
    n: &crate::drivers::nexus::Nexus,
    password: &Secret,
    tenant: &str,
    allowed: bool,
    repositories: &[nexus::Repository],
) -> Result<(), StepError> {
    let auth = admin(password);
    let mut holding = Vec::new();
    for r in repositories.iter().filter(|r| r.kind == nexus::Kind::Hosted) {
        let (components, more) = n
            .components(auth, &r.name, 100)
            .await
            .map_err(|e| failed(&format!("listing the components of repository {}", r.name), e))?;
        if !components.is_empty() {
            holding.push(format!(
                "Nexus repository {} ({}{} components: {})",
                r.name,
                components.len(),
                if more { "+" } else { "" },
                some_of(&components, more)
            ));
        }
    }
    crate::components::tenants::guard_data_loss(ctx, tenant, allowed, "Nexus repositories", &holding)
}

pub fn admin(password: &Secret) -> Auth<'_> {
    Auth::Basic("admin", password)
}

/// The admin password we keep for `instance` of `product` (what drift
/// reads with), or the one difference drift reports when we keep none.
pub async fn kept_admin_password(
    store: &CredentialStore,
    product: &str,
    instance: &str,
) -> Result<Result<Secret, Difference>, StepError> {
    let kept = store
        .get(&admin_record(instance))
        .await?
        .and_then(|f| f.get("password").cloned());
    Ok(kept.ok_or_else(|| Difference::new(format!("{product} {instance} admin password"), Change::Missing, None)))
}

/// Whether SonarQube runs on `cluster`, whose hosts then need its kernel
/// limits: placed there, or — for one you run — the cluster its
/// `cluster:` names.
pub fn sonarqube_runs_on(loaded: &Loaded, cluster: &str) -> bool {
    loaded.inventory.components.get("sonarqube").is_some_and(|c| {
        c.enabled
            && match c.placement {
                Placement::Cluster => c.cluster.as_deref().is_none_or(|x| x == cluster),
                Placement::External => c.cluster.as_deref() == Some(cluster),
                Placement::Host => false,
            }
    })
}

fn endpoint(loaded: &Loaded, instance: &str, external: &ExternalService) -> Endpoint {
    Endpoint {
        instance: instance.to_string(),
        url: external.url.clone(),
        ca_file: external
            .ca_file
            .as_ref()
            .map(|p| std::path::absolute(loaded.resolve(p)).unwrap_or_else(|_| loaded.resolve(p))),
        initial_password: external.token.clone(),
        vault: vault_component::target(loaded),
        installed: false,
        pki_ca: false,
        resolve: None,
    }
}

/// The instance a component installs in a cluster, reached through our
/// ingress at its subdomain and trusted through our CA; with the steps
/// its configuration waits for (its release, the PKI's).
fn in_cluster(loaded: &Loaded, steps: &[Step], component: &catalog::Component) -> Option<(Endpoint, Vec<String>)> {
    let stack_step = steps
        .iter()
        .find(|s| s.id.starts_with(&format!("stack/{}/", component.slug)))?;
    let pki_here = steps.iter().any(|s| s.id == certificates::STEP_ID);
    let subdomain = component.subdomain?;
    let e = crate::components::stack::health::ingress_endpoint(
        loaded,
        pki_here,
        component.key,
        subdomain.label(),
        "",
        crate::components::stack::health::Expect::Answers,
    );
    let mut needs = vec![stack_step.id.clone()];
    if pki_here {
        needs.push(certificates::STEP_ID.to_string());
    }
    Some((
        Endpoint {
            instance: component.key.to_string(),
            url: e.url,
            ca_file: None,
            initial_password: None,
            vault: vault_component::target(loaded),
            installed: true,
            pki_ca: pki_here,
            resolve: e.resolve,
        },
        needs,
    ))
}

/// The shared instance a component declares, if it is configured here.
fn shared(component: Option<&Component>) -> Option<&ExternalService> {
    component
        .filter(|c| c.enabled && c.placement == Placement::External)
        .and_then(|c| c.external.as_ref())
}

/// `step`, and the PKI's when the instance is trusted through our CA.
fn with_pki(endpoint: &Endpoint, step: String) -> Vec<String> {
    let mut needs = vec![step];
    if endpoint.pki_ca {
        needs.push(certificates::STEP_ID.to_string());
    }
    needs
}

pub fn instance_step(product: &str, instance: &str) -> String {
    format!("{product}/{instance}/configure")
}

pub fn tenant_step(product: &str, instance: &str, tenant: &str) -> String {
    format!("{product}/{instance}/tenant/{tenant}")
}

/// Steps writing to Vault wait for `vault/configure` (it mounts `repo`).
fn vault_needs(loaded: &Loaded) -> Vec<String> {
    vault_component::target(loaded)
        .map(|_| vec![vault_component::STEP_ID.to_string()])
        .unwrap_or_default()
}

/// The Harbor instances you run, by name: the shared one when its
/// placement is external, and the tenants' own. (The shared one installed
/// in a cluster joins them in `plan_all`, once its release step exists.)
fn external_harbor_instances(loaded: &Loaded) -> Vec<(String, Endpoint)> {
    let inv = &loaded.inventory;
    let mut harbors: Vec<(String, Endpoint)> = Vec::new();
    if let Some(ext) = shared(inv.components.get("harbor")) {
        harbors.push((SHARED_HARBOR.into(), endpoint(loaded, SHARED_HARBOR, ext)));
    }
    for t in &inv.tenants {
        for h in &t.harbor_instances {
            if let (Placement::External, Some(ext)) = (h.placement, &h.external) {
                harbors.push((h.name.clone(), endpoint(loaded, &h.name, ext)));
            }
        }
    }
    harbors
}

/// The redirect URIs of Harbor's Dex client: the callback below each
/// instance's URL, and below `harbor.<domain>` for the one installed here.
pub fn harbor_redirect_uris(loaded: &Loaded) -> Vec<String> {
    let installed = loaded
        .inventory
        .components
        .get(catalog::HARBOR.key)
        .filter(|c| c.enabled && c.placement == Placement::Cluster)
        .map(|_| {
            let domain = loaded.inventory.settings.domain.clone().unwrap_or_default();
            sign_in::HARBOR.redirect_uri(&domain)
        });
    installed
        .into_iter()
        .chain(
            external_harbor_instances(loaded)
                .iter()
                .map(|(_, ep)| sign_in::HARBOR.redirect_uri_at(&ep.url)),
        )
        .collect()
}

/// Harbor's sign-in through Dex, when Dex is planned: its issuer, Harbor's
/// client, the secret Dex and Harbor share (kept where Dex keeps its
/// clients'), and the step that configures Dex.
fn harbor_oidc(loaded: &Loaded, steps: &[Step]) -> Option<(harbor::Oidc, String)> {
    let dex_step = steps.iter().find(|s| s.id.starts_with("stack/dex/"))?;
    let domain = loaded.inventory.settings.domain.clone().unwrap_or_default();
    let oidc = harbor::Oidc {
        endpoint: endpoints::dex_issuer(&domain),
        client_id: sign_in::HARBOR.id.to_string(),
        client_secret_file: sign_in::HARBOR.secret_file.to_string(),
        verify_cert: true,
    };
    Some((oidc, dex_step.id.clone()))
}

fn plan_all(loaded: &Loaded, steps: &mut Vec<Step>) {
    let inv = &loaded.inventory;
    let after_vault = vault_needs(loaded);
    let oidc = harbor_oidc(loaded, steps);
    // The shared Harbor installed here waits for its release (and our CA).
    let mut harbors: Vec<(String, Endpoint, Vec<String>)> = Vec::new();
    if let Some((ep, needs)) = in_cluster(loaded, steps, &catalog::HARBOR) {
        harbors.push((SHARED_HARBOR.into(), ep, needs));
    }
    harbors.extend(
        external_harbor_instances(loaded)
            .into_iter()
            .map(|(name, ep)| (name, ep, Vec::new())),
    );
    for (name, ep, release_needs) in &harbors {
        let spec = harbor::InstanceSpec {
            endpoint: ep.clone(),
            oidc: oidc.as_ref().map(|(o, _)| o.clone()),
        };
        // Harbor checks nothing of Dex when configured, but its users can
        // sign in only once Dex knows its client.
        let needs = after_vault
            .iter()
            .chain(release_needs)
            .cloned()
            .chain(oidc.iter().map(|(_, dex)| dex.clone()));
        steps.push(Step::of(instance_step("harbor", name), format!("configure Harbor {name}"), &spec).needs(needs));
    }
    // Groups become project members only where Harbor knows OIDC groups.
    let groups_of = |t: &crate::inventory::Tenant| -> Vec<harbor::Group> {
        match oidc {
            Some(_) => t
                .groups
                .iter()
                .map(|g| harbor::Group {
                    name: g.name.clone(),
                    role: g.role,
                })
                .collect(),
            None => Vec::new(),
        }
    };
    // By name, the first of a name winning as a scan would: every tenant
    // may own an instance, so a scan per tenant would be quadratic.
    let mut harbor_by_name: HashMap<&str, &Endpoint> = HashMap::with_capacity(harbors.len());
    for (name, ep, _) in &harbors {
        harbor_by_name.entry(name.as_str()).or_insert(ep);
    }
    for t in &inv.tenants {
        let mut per_instance: Vec<(&str, Vec<harbor::Project>)> = Vec::new();
        for th in &t.harbor {
            let projects = th.projects.iter().map(|p| harbor::Project {
                name: p.clone(),
                public: false,
            });
            match per_instance.iter_mut().find(|(i, _)| *i == th.instance) {
                Some((_, ps)) => ps.extend(projects),
                None => per_instance.push((&th.instance, projects.collect())),
            }
        }
        for (instance, projects) in per_instance {
            let Some(&ep) = harbor_by_name.get(instance) else {
                continue;
            };
            let spec = harbor::TenantSpec {
                endpoint: ep.clone(),
                tenant: t.name.clone(),
                projects,
                data_loss: DataLoss {
                    allow_data_loss: t.allow_data_loss,
                },
                groups: groups_of(t),
            };
            steps.push(
                Step::of(
                    tenant_step("harbor", instance, &t.name),
                    format!("Harbor projects of tenant {} on {instance}", t.name),
                    &spec,
                )
                .needs(with_pki(ep, instance_step("harbor", instance))),
            );
        }
    }
    let nexus = shared(inv.components.get("nexus"))
        .map(|ext| (endpoint(loaded, SHARED_NEXUS, ext), Vec::new()))
        .or_else(|| in_cluster(loaded, steps, &catalog::NEXUS));
    if let Some((ep, needs)) = nexus {
        let anonymous = inv
            .components
            .get("nexus")
            .and_then(|c| c.values.get("anonymous"))
            .and_then(Value::as_bool);
        let spec = nexus::InstanceSpec {
            endpoint: ep.clone(),
            anonymous: anonymous.unwrap_or(false),
        };
        steps.push(
            Step::of(instance_step("nexus", SHARED_NEXUS), "configure Nexus", &spec)
                .needs(after_vault.iter().cloned().chain(needs)),
        );
        for t in &inv.tenants {
            let Some(n) = &t.nexus else { continue };
            let repositories = n
                .repositories
                .iter()
                .map(|r| nexus::Repository {
                    name: r.name.clone(),
                    format: match r.format {
                        RepositoryFormat::Maven => nexus::Format::Maven,
                        RepositoryFormat::Npm => nexus::Format::Npm,
                        RepositoryFormat::Pypi => nexus::Format::Pypi,
                        RepositoryFormat::Docker => nexus::Format::Docker,
                    },
                    kind: match r.kind {
                        RepositoryType::Hosted => nexus::Kind::Hosted,
                        RepositoryType::Proxy => nexus::Kind::Proxy,
                    },
                    remote_url: r.remote_url.clone(),
                })
                .collect();
            let spec = nexus::TenantSpec {
                endpoint: ep.clone(),
                tenant: t.name.clone(),
                repositories,
                data_loss: DataLoss {
                    allow_data_loss: t.allow_data_loss,
                },
            };
            steps.push(
                Step::of(
                    tenant_step("nexus", SHARED_NEXUS, &t.name),
                    format!("Nexus repositories of tenant {}", t.name),
                    &spec,
                )
                .needs(with_pki(&ep, instance_step("nexus", SHARED_NEXUS))),
            );
        }
    }
    let sonarqube = shared(inv.components.get("sonarqube"))
        .map(|ext| (endpoint(loaded, SHARED_SONARQUBE, ext), Vec::new()))
        .or_else(|| in_cluster(loaded, steps, &catalog::SONARQUBE));
    if let Some((ep, release_needs)) = sonarqube {
        // SonarQube Community has no OpenID Connect: it signs in through
        // the GitLab Dex itself signs in through, when we configure one.
        let gitlab_step = steps.iter().find(|s| s.id == super::gitlab::STEP_ID);
        let gitlab_app = gitlab_step.map(|g| sonarqube::GitlabApp {
            ca_file: g.spec["caFile"].as_str().map(std::path::PathBuf::from),
            ours: !g.spec["host"].is_null(),
        });
        let mut needs = after_vault.clone();
        needs.extend(release_needs);
        if let Some(g) = gitlab_step {
            for need in [g.id.clone(), certificates::STEP_ID.to_string()] {
                if !needs.contains(&need) {
                    needs.push(need);
                }
            }
        }
        let spec = sonarqube::InstanceSpec {
            endpoint: ep.clone(),
            gitlab_sign_in: None,
            gitlab_app,
        };
        steps.push(
            Step::of(
                instance_step("sonarqube", SHARED_SONARQUBE),
                "configure SonarQube",
                &spec,
            )
            .needs(needs),
        );
        for t in inv.tenants.iter().filter(|t| t.sonarqube.is_some()) {
            let spec = sonarqube::TenantSpec {
                endpoint: ep.clone(),
                tenant: t.name.clone(),
                groups: t
                    .groups
                    .iter()
                    .map(|g| sonarqube::Group {
                        name: g.name.clone(),
                        role: g.role,
                    })
                    .collect(),
            };
            steps.push(
                Step::of(
                    tenant_step("sonarqube", SHARED_SONARQUBE, &t.name),
                    format!("SonarQube token of tenant {}", t.name),
                    &spec,
                )
                .needs(with_pki(&ep, instance_step("sonarqube", SHARED_SONARQUBE))),
            );
        }
    }
}

pub struct Registries;

impl super::Component for Registries {
    fn plan(&self, loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
        plan_all(loaded, steps);
        Ok(())
    }

    fn handlers(&self, registry: &mut Registry) {
        registry.add(harbor::InstanceHandler);
        registry.add(harbor::TenantHandler);
        registry.add(nexus::InstanceHandler);
        registry.add(nexus::TenantHandler);
        registry.add(sonarqube::InstanceHandler);
        registry.add(sonarqube::TenantHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(body: &str) -> Vec<Step> {
        let text = format!(
            "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n\
hosts:\n  - {{ name: n1, address: 192.0.2.10 }}\n  - {{ name: n2, address: 192.0.2.11 }}\n\
clusters:\n  - name: a\n    type: k3s\n    k3s: {{ version: v1.27.4+k3s1, servers: [n1] }}\n    usage: [host]\n  - name: b\n    type: k3s\n    k3s: {{ version: v1.27.4+k3s1, servers: [n2] }}\n    usage: [deployment]\n{body}"
        );
        let loaded = crate::inventory::load_str(std::path::Path::new("i.yaml"), &text)
            .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        crate::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn sonarqube_hosts(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter(|s| s.kind == crate::components::preflight::KIND)
            .flat_map(|s| s.spec["hosts"].as_array().cloned().unwrap_or_default())
            .filter(|h| h["sonarqube"] == true)
            .map(|h| h["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn step<'s>(steps: &'s [Step], id: &str) -> &'s Step {
        steps.iter().find(|s| s.id == id).unwrap_or_else(|| {
            panic!(
                "no step {id} among {:?}",
                steps.iter().map(|s| &s.id).collect::<Vec<_>>()
            )
        })
    }

    /// Installed in a cluster, each product gets its release after Traefik,
    /// and its configure step reaches it through the ingress at its
    /// subdomain once the release is ready; no password is in the values.
    /// Yours (`placement: external`) gets no release.
    #[test]
    fn in_cluster_instances_are_installed_after_traefik_and_configured_through_the_ingress() {
        let body = "settings: { domain: d.test }\ncomponents:\n  traefik: {}\n  harbor: { placement: cluster, cluster: a }\n  nexus: { placement: cluster, cluster: a }\n  sonarqube: { placement: cluster, cluster: a }\n";
        let steps = plan_of(body);
        let pki = steps.iter().any(|s| s.id == certificates::STEP_ID);
        for (key, instance) in [
            ("harbor", SHARED_HARBOR),
            ("nexus", SHARED_NEXUS),
            ("sonarqube", SHARED_SONARQUBE),
        ] {
            let release = step(&steps, &format!("stack/{key}/a"));
            assert!(
                release.needs.contains(&"stack/traefik/a".to_string()),
                "{key}: {:?}",
                release.needs
            );
            let text = release.spec.to_string();
            assert!(
                !text.to_lowercase().contains("adminpassword"),
                "{key}: a password in the values: {text}"
            );
            let configure = step(&steps, &instance_step(key, instance));
            assert!(configure.needs.contains(&release.id), "{key}: {:?}", configure.needs);
            let ep: Endpoint = serde_json::from_value(configure.spec["endpoint"].clone()).unwrap();
            assert_eq!(ep.url, format!("https://{key}.d.test:30443"));
            assert!(
                ep.installed && ep.pki_ca == pki && ep.initial_password.is_none(),
                "{key}: {ep:?}"
            );
        }
        let yours = plan_of(
            "settings: { domain: d.test }\ncomponents:\n  traefik: {}\n  harbor: { placement: external, external: { url: https://h.example.com } }\n",
        );
        assert!(!yours.iter().any(|s| s.id.starts_with("stack/harbor/")));
        let ep: Endpoint =
            serde_json::from_value(step(&yours, "harbor/harbor/configure").spec["endpoint"].clone()).unwrap();
        assert!(!ep.installed && ep.url == "https://h.example.com");
    }

    /// With `mirror: true` every K3s node gets registries.yaml naming the
    /// in-cluster Harbor at the ingress, trusted through our CA (laid down
    /// on the node, so after the PKI); without it, none.
    #[test]
    fn k3s_nodes_pull_from_the_harbor_installed_here_when_asked() {
        let with = |mirror: &str| {
            plan_of(&format!(
                "settings: {{ domain: d.test }}\ncomponents:\n  traefik: {{}}\n  harbor: {{ placement: cluster, cluster: a, values: {{ mirror: {mirror} }} }}\n"
            ))
        };
        let steps = with("true");
        let nodes: Vec<&Step> = steps
            .iter()
            .filter(|s| s.kind == crate::components::k3s::NODE_KIND)
            .collect();
        assert_eq!(nodes.len(), 2);
        for node in nodes {
            let registries = node.spec["registries"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: none", node.id));
            let doc: serde_json::Value = serde_yaml::from_str(registries).unwrap();
            assert_eq!(
                doc["mirrors"]["harbor.d.test"]["endpoint"],
                json!(["https://harbor.d.test:30443"]),
                "{registries}"
            );
            let ca = crate::components::k3s::REMOTE_OIDC_CA_FILE;
            assert_eq!(
                doc["configs"]["harbor.d.test:30443"]["tls"]["ca_file"], ca,
                "{registries}"
            );
            assert_eq!(
                node.spec["oidcCaFile"].as_str().or(node.spec["oidc_ca_file"].as_str()),
                Some(ca)
            );
            assert!(
                node.needs.contains(&certificates::STEP_ID.to_string()),
                "{:?}",
                node.needs
            );
        }
        // Our key is not passed to the chart.
        let harbor = step(&steps, "stack/harbor/a");
        assert!(!harbor.spec.to_string().contains("\"mirror\""), "{}", harbor.spec);
        for node in with("false")
            .iter()
            .filter(|s| s.kind == crate::components::k3s::NODE_KIND)
        {
            assert!(node.spec["registries"].is_null(), "{}", node.spec);
        }
    }

    #[test]
    fn preflight_checks_sonarqubes_kernel_needs_on_the_hosts_of_its_cluster_only() {
        let on_b = "components:\n  sonarqube:\n    placement: external\n    cluster: b\n    external: { url: https://sonarqube.example.com }\n";
        assert_eq!(sonarqube_hosts(&plan_of(on_b)), ["n2"]);
        let elsewhere = "components:\n  sonarqube:\n    placement: external\n    external: { url: https://sonarqube.example.com }\n";
        assert!(sonarqube_hosts(&plan_of(elsewhere)).is_empty());
        assert!(sonarqube_hosts(&plan_of("")).is_empty());
    }
}
