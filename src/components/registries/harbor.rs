//! Harbor: the instance step takes over the admin password and sets OIDC
//! sign-in (`auth_mode: oidc_auth` against Dex); a tenant step keeps the
//! tenant's projects, each with one robot account for pipelines whose
//! secret — told by Harbor only in the answer to the create — is stored
//! the moment it arrives.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{
    admin, admin_record, ca, failed, fields, kept_admin_password, store, take_over_admin, AdminAccount, Endpoint,
    Report,
};
use crate::components::gitlab::credentials::CredentialStore;
use crate::drivers::harbor::{Harbor, ROLE_DEVELOPER, ROLE_GUEST, ROLE_PROJECT_ADMIN};
use crate::drivers::rest::RestError;
use crate::engine::{Change, Difference, Handler, StepContext, StepError};
use crate::inventory::TenantRole;
use crate::secret::Secret;

pub const INSTANCE_KIND: &str = "harbor-configure";
pub const TENANT_KIND: &str = "harbor-tenant";
const FOLDER: &str = "harbor";
/// The robot each project gets; Harbor names it `robot$<project>+pipeline`.
pub const ROBOT: &str = "pipeline";

/// OIDC sign-in through Dex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Oidc {
    /// Dex's issuer URL.
    pub endpoint: String,
    pub client_id: String,
    /// The client secret Harbor and Dex share, kept 0600 under this path
    /// of the outputs directory (made by whichever step needs it first).
    pub client_secret_file: String,
    pub verify_cert: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    pub endpoint: Endpoint,
    pub oidc: Option<Oidc>,
}

impl crate::plan::StepSpec for InstanceSpec {
    const KIND: &'static str = INSTANCE_KIND;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub name: String,
    #[serde(default)]
    pub public: bool,
}

/// A tenant group (as Dex names it in `groups`) and its role in each of
/// the tenant's projects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub name: String,
    pub role: TenantRole,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    pub endpoint: Endpoint,
    pub tenant: String,
    pub projects: Vec<Project>,
    /// The tenant's data-loss guard (see tenants::guard_data_loss).
    #[serde(default, flatten)]
    pub data_loss: super::DataLoss,
    /// Members of every project by group: only when Harbor signs in
    /// through Dex (Harbor knows OIDC groups only in `oidc_auth`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
}

/// Harbor's project role for a tenant role: admin → ProjectAdmin (also
/// manages members), developer → Developer (push and pull), viewer →
/// Guest (pull only).
pub fn project_role(role: TenantRole) -> u64 {
    match role {
        TenantRole::Admin => ROLE_PROJECT_ADMIN,
        TenantRole::Developer => ROLE_DEVELOPER,
        TenantRole::Viewer => ROLE_GUEST,
    }
}

impl crate::plan::StepSpec for TenantSpec {
    const KIND: &'static str = TENANT_KIND;
}

/// What a pipeline robot may do in its project.
pub fn robot_access() -> Vec<(String, String)> {
    [("repository", "pull"), ("repository", "push"), ("artifact", "read")]
        .iter()
        .map(|(r, a)| (r.to_string(), a.to_string()))
        .collect()
}

/// Where a project's robot credential is kept.
pub fn robot_record(instance: &str, project: &str) -> String {
    format!("{instance}/robots/{project}")
}

fn oidc_record(instance: &str) -> String {
    format!("{instance}/oidc-applied")
}

/// The admin password, taking it over on the first run.
pub async fn admin_password(
    h: &Harbor,
    store: &CredentialStore,
    endpoint: &Endpoint,
    initial: Option<&Secret>,
    report: &mut Report,
) -> Result<Secret, StepError> {
    take_over_admin(h, store, &admin_record(&endpoint.instance), initial, report).await
}

impl AdminAccount for Harbor {
    async fn log_in(&self, password: &Secret) -> Result<bool, RestError> {
        self.can_log_in(admin(password)).await
    }

    async fn replace(&self, old: &Secret, new: &Secret) -> Result<(), RestError> {
        let id = self.current_user_id(admin(old)).await?;
        self.change_password(admin(old), id, old, new).await
    }
}

/// OIDC sign-in. Harbor never returns the client secret, so the one we last
/// wrote is kept beside our credentials and compared; the other keys are
/// compared with what Harbor returns.
pub async fn converge_oidc(
    h: &Harbor,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    oidc: &Oidc,
    secret: &Secret,
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let live = h
        .configurations(auth)
        .await
        .map_err(|e| failed("reading Harbor's configuration", e))?;
    let want = json!({
        "auth_mode": "oidc_auth",
        "oidc_name": "Dex",
        "oidc_endpoint": oidc.endpoint,
        "oidc_client_id": oidc.client_id,
        "oidc_scope": "openid,profile,email,groups,offline_access",
        "oidc_groups_claim": "groups",
        "oidc_user_claim": "name",
        "oidc_verify_cert": oidc.verify_cert,
        "oidc_auto_onboard": true,
    });
    let mut changed: Map<String, Value> = want
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| live[k.as_str()]["value"] != **v)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let record = oidc_record(instance);
    let applied = store.get(&record).await?;
    let secret_current = applied.as_ref().and_then(|f| f.get("clientSecret")) == Some(secret);
    if changed.is_empty() && secret_current {
        return Ok(());
    }
    if changed.contains_key("auth_mode") && live["auth_mode"]["editable"] == false {
        return Err(StepError::new(format!(
            "Harbor {instance} is in auth mode {} and refuses to change it: it already has users besides admin \
             (Harbor allows the change only before any other user exists)",
            live["auth_mode"]["value"]
        )));
    }
    changed.insert("oidc_client_secret".into(), Value::String(secret.expose().to_string()));
    h.set_configurations(auth, &Value::Object(changed))
        .await
        .map_err(|e| failed("setting Harbor's OIDC sign-in", e))?;
    report.wrote("configurations (OIDC)");
    store.put(&record, &fields(&[("clientSecret", secret)])).await?;
    Ok(())
}

/// The tenant's projects and their robots. Returns the projects kept.
pub async fn converge_tenant(
    h: &Harbor,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    projects: &[Project],
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    for project in projects {
        let name = &project.name;
        let live = match h
            .project(auth, name)
            .await
            .map_err(|e| failed(&format!("reading project {name}"), e))?
        {
            Some(p) => p,
            None => {
                h.create_project(auth, name, project.public)
                    .await
                    .map_err(|e| failed(&format!("creating project {name}"), e))?;
                report.wrote(format!("project {name}"));
                h.project(auth, name)
                    .await
                    .map_err(|e| failed(&format!("reading project {name}"), e))?
                    .ok_or_else(|| StepError::new(format!("Harbor created project {name} but does not show it")))?
            }
        };
        let public = live["metadata"]["public"].as_str() == Some("true");
        if public != project.public {
            h.set_project_public(auth, name, project.public)
                .await
                .map_err(|e| failed(&format!("updating project {name}"), e))?;
            report.wrote(format!("project {name} visibility"));
        }
        let project_id = live["project_id"]
            .as_u64()
            .ok_or_else(|| StepError::new(format!("Harbor's project {name} has no project_id")))?;
        converge_robot(h, store, instance, auth, name, project_id, report).await?;
    }
    Ok(())
}

/// Each group a member of each project with its role; the groups this
/// step granted before and no longer lists (`gone`) lose their membership.
/// Members anyone else added are left alone.
pub async fn converge_groups(
    h: &Harbor,
    password: &Secret,
    projects: &[Project],
    groups: &[Group],
    gone: &[String],
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    for project in projects {
        let name = &project.name;
        let live = h
            .project_members(auth, name)
            .await
            .map_err(|e| failed(&format!("listing the members of {name}"), e))?;
        let member = |group: &str| live.iter().find(|m| m.group && m.name == group);
        for g in groups {
            let role = project_role(g.role);
            match member(&g.name) {
                Some(m) if m.role_id == role => {}
                Some(m) => {
                    h.set_member_role(auth, name, m.id, role)
                        .await
                        .map_err(|e| failed(&format!("changing the role of group {} in {name}", g.name), e))?;
                    report.wrote(format!("group {} role in {name}", g.name));
                }
                None => {
                    h.add_group_member(auth, name, &g.name, role)
                        .await
                        .map_err(|e| failed(&format!("adding group {} to {name}", g.name), e))?;
                    report.wrote(format!("group {} in {name}", g.name));
                }
            }
        }
        for group in gone.iter().filter(|g| !groups.iter().any(|w| &w.name == *g)) {
            if let Some(m) = member(group) {
                h.delete_member(auth, name, m.id)
                    .await
                    .map_err(|e| failed(&format!("removing group {group} from {name}"), e))?;
                report.wrote(format!("group {group} removed from {name}"));
            }
        }
    }
    Ok(())
}

/// What [`converge_tenant`] would change, read with the admin password we
/// keep and GET requests only: a project missing or of the other
/// visibility, its robot missing, disabled, with other access, or one
/// whose secret we do not hold (apply replaces it).
pub async fn tenant_drift(
    h: &Harbor,
    store: &CredentialStore,
    instance: &str,
    projects: &[Project],
) -> Result<Vec<Difference>, StepError> {
    let password = match kept_admin_password(store, "Harbor", instance).await? {
        Ok(password) => password,
        Err(missing) => return Ok(vec![missing]),
    };
    let auth = admin(&password);
    let mut found = Vec::new();
    let mut want = robot_access();
    want.sort();
    for project in projects {
        let name = &project.name;
        let Some(live) = h
            .project(auth, name)
            .await
            .map_err(|e| failed(&format!("reading project {name}"), e))?
        else {
            found.push(Difference::new(format!("Harbor project {name}"), Change::Missing, None));
            continue;
        };
        if (live["metadata"]["public"].as_str() == Some("true")) != project.public {
            found.push(Difference::new(
                format!("Harbor project {name}"),
                Change::Changed,
                Some("metadata.public"),
            ));
        }
        let project_id = live["project_id"]
            .as_u64()
            .ok_or_else(|| StepError::new(format!("Harbor's project {name} has no project_id")))?;
        let robots = h
            .project_robots(auth, project_id)
            .await
            .map_err(|e| failed(&format!("listing the robots of {name}"), e))?;
        let suffix = format!("{name}+{ROBOT}");
        let live: Vec<_> = robots.iter().filter(|r| r.name.ends_with(&suffix)).collect();
        let stored = store
            .get(&robot_record(instance, name))
            .await?
            .and_then(|f| f.get("username").map(|s| s.expose().to_string()));
        let robot = format!("Harbor robot {ROBOT} of project {name}");
        match live.as_slice() {
            [] => found.push(Difference::new(robot, Change::Missing, None)),
            [one] => {
                let mut access = one.access.clone();
                access.sort();
                if one.disabled {
                    found.push(Difference::new(robot, Change::Changed, Some("disable")));
                } else if access != want {
                    found.push(Difference::new(robot, Change::Changed, Some("permissions")));
                } else if stored.as_deref() != Some(one.name.as_str()) {
                    found.push(Difference::new(robot, Change::Changed, Some("secret (not held)")));
                }
            }
            _ => found.push(Difference::new(robot, Change::Changed, Some("more than one"))),
        }
    }
    Ok(found)
}

async fn converge_robot(
    h: &Harbor,
    store: &CredentialStore,
    instance: &str,
    auth: crate::drivers::rest::Auth<'_>,
    project: &str,
    project_id: u64,
    report: &mut Report,
) -> Result<(), StepError> {
    let record = robot_record(instance, project);
    let robots = h
        .project_robots(auth, project_id)
        .await
        .map_err(|e| failed(&format!("listing the robots of {project}"), e))?;
    let suffix = format!("{project}+{ROBOT}");
    let live: Vec<_> = robots.iter().filter(|r| r.name.ends_with(&suffix)).collect();
    let stored = store.get(&record).await?;
    let mut want = robot_access();
    want.sort();
    let good = |r: &&crate::drivers::harbor::Robot| {
        let mut access = r.access.clone();
        access.sort();
        access == want && !r.disabled
    };
    let stored_name = stored
        .as_ref()
        .and_then(|f| f.get("username"))
        .map(|s| s.expose().to_string());
    if let [one] = live.as_slice() {
        if good(one) && stored_name.as_deref() == Some(one.name.as_str()) {
            return Ok(());
        }
    }
    // Its secret is lost (never stored, or a crash between the create and
    // the store) or it is not what we make: replace it.
    for r in live {
        h.delete_robot(auth, r.id)
            .await
            .map_err(|e| failed(&format!("deleting robot {}", r.name), e))?;
        report.wrote(format!("robot {} removed", r.name));
    }
    let made = h
        .create_project_robot(auth, project, ROBOT, &robot_access())
        .await
        .map_err(|e| failed(&format!("creating the robot of {project}"), e))?;
    report.wrote(format!("robot {}", made.name));
    store
        .put(
            &record,
            &fields(&[
                ("username", &Secret::new(made.name.clone())),
                ("password", &made.secret),
            ]),
        )
        .await?;
    Ok(())
}

/// Removes the tenant's projects (Harbor refuses one that still holds
/// images) with their robots, and the stored robot credentials.
pub async fn remove_tenant(
    h: &Harbor,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    projects: &[Project],
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    for project in projects {
        let name = &project.name;
        if let Some(live) = h
            .project(auth, name)
            .await
            .map_err(|e| failed(&format!("reading project {name}"), e))?
        {
            let id = live["project_id"].as_u64().unwrap_or_default();
            for r in h
                .project_robots(auth, id)
                .await
                .map_err(|e| failed(&format!("listing the robots of {name}"), e))?
            {
                h.delete_robot(auth, r.id)
                    .await
                    .map_err(|e| failed(&format!("deleting robot {}", r.name), e))?;
                report.wrote(format!("robot {} removed", r.name));
            }
            h.delete_project(auth, name).await.map_err(|e| {
                failed(
                    &format!(
                        "deleting project {name} (Harbor keeps a project that still holds images: delete them first)"
                    ),
                    e,
                )
            })?;
            report.wrote(format!("project {name} removed"));
        }
        store.remove(&robot_record(instance, name)).await?;
    }
    Ok(())
}

/// A shared secret kept 0600 at `path`, made the first time it is asked for.
fn kept_secret(path: &std::path::Path) -> Result<Secret, StepError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Secret::new(s.trim())),
        Err(_) => {
            let s = crate::secret::random_token()
                .map_err(|e| StepError::new(format!("cannot make a random secret: {e}")))?;
            crate::secret::write_private(path, &s)
                .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
            Ok(s)
        }
    }
}

async fn client(ctx: &StepContext, endpoint: &Endpoint) -> Result<Harbor, StepError> {
    let address = super::address(endpoint).await?;
    Harbor::new_at(&endpoint.url, ca(ctx, endpoint)?.as_deref(), ctx.limits.http, address).map_err(StepError::new)
}

fn initial(ctx: &StepContext, endpoint: &Endpoint) -> Result<Option<Secret>, StepError> {
    endpoint
        .initial_password
        .as_ref()
        .map(|r| {
            r.resolve(&ctx.base_dir)
                .map_err(|e| StepError::new(format!("Harbor {}'s first-run password: {e}", endpoint.instance)))
        })
        .transpose()
}

pub struct InstanceHandler;

#[async_trait]
impl Handler for InstanceHandler {
    type Spec = InstanceSpec;

    async fn apply(&self, ctx: &StepContext, spec: &InstanceSpec) -> Result<Value, StepError> {
        let h = client(ctx, &spec.endpoint).await?;
        let store = store(ctx, FOLDER, spec.endpoint.vault.as_ref())?;
        let mut report = Report::default();
        let initial = initial(ctx, &spec.endpoint)?;
        let password = admin_password(&h, &store, &spec.endpoint, initial.as_ref(), &mut report).await?;
        if let Some(oidc) = &spec.oidc {
            let secret = kept_secret(&ctx.outputs_dir.join(&oidc.client_secret_file))?;
            converge_oidc(
                &h,
                &store,
                &spec.endpoint.instance,
                &password,
                oidc,
                &secret,
                &mut report,
            )
            .await?;
        }
        Ok(report.outputs(json!({
            "url": spec.endpoint.url,
            "adminPassword": store.location(&admin_record(&spec.endpoint.instance)),
        })))
    }

    /// What we made in Harbor goes with the tenant steps; the admin
    /// password we keep goes with the instance.
    async fn destroy(&self, ctx: &StepContext, spec: &InstanceSpec, _outputs: &Value) -> Result<(), StepError> {
        let store = store(ctx, FOLDER, spec.endpoint.vault.as_ref())?;
        store.remove(&oidc_record(&spec.endpoint.instance)).await?;
        Ok(())
    }
}

pub struct TenantHandler;

async fn tenant_context(
    ctx: &StepContext,
    spec: &TenantSpec,
) -> Result<(Harbor, CredentialStore, Secret, Report), StepError> {
    let h = client(ctx, &spec.endpoint).await?;
    let store = store(ctx, FOLDER, spec.endpoint.vault.as_ref())?;
    let mut report = Report::default();
    let initial = initial(ctx, &spec.endpoint)?;
    let password = admin_password(&h, &store, &spec.endpoint, initial.as_ref(), &mut report).await?;
    Ok((h, store, password, report))
}

#[async_trait]
impl Handler for TenantHandler {
    type Spec = TenantSpec;

    async fn apply(&self, ctx: &StepContext, spec: &TenantSpec) -> Result<Value, StepError> {
        let (h, store, password, mut report) = tenant_context(ctx, spec).await?;
        // Projects this step made before and no longer lists go.
        let before: Vec<Project> = serde_json::from_value(ctx.previous_outputs["projects"].clone()).unwrap_or_default();
        let gone: Vec<Project> = before
            .into_iter()
            .filter(|p| !spec.projects.iter().any(|q| q.name == p.name))
            .collect();
        let allowed = spec.data_loss.allow_data_loss;
        super::clear_harbor_projects(ctx, &h, &password, &spec.tenant, allowed, &gone, &mut report).await?;
        remove_tenant(&h, &store, &spec.endpoint.instance, &password, &gone, &mut report).await?;
        converge_tenant(
            &h,
            &store,
            &spec.endpoint.instance,
            &password,
            &spec.projects,
            &mut report,
        )
        .await?;
        let granted: Vec<String> = serde_json::from_value(ctx.previous_outputs["groups"].clone()).unwrap_or_default();
        converge_groups(&h, &password, &spec.projects, &spec.groups, &granted, &mut report).await?;
        let groups: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
        let robots: Vec<String> = spec
            .projects
            .iter()
            .map(|p| store.location(&robot_record(&spec.endpoint.instance, &p.name)))
            .collect();
        Ok(report.outputs(json!({"projects": spec.projects, "robotCredentials": robots, "groups": groups})))
    }

    async fn drift(&self, ctx: &StepContext, spec: &TenantSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let h = client(ctx, &spec.endpoint).await?;
        let store = store(ctx, FOLDER, spec.endpoint.vault.as_ref())?;
        tenant_drift(&h, &store, &spec.endpoint.instance, &spec.projects)
            .await
            .map(Some)
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TenantSpec, _outputs: &Value) -> Result<(), StepError> {
        let (h, store, password, mut report) = tenant_context(ctx, spec).await?;
        let allowed = spec.data_loss.allow_data_loss;
        super::clear_harbor_projects(ctx, &h, &password, &spec.tenant, allowed, &spec.projects, &mut report).await?;
        remove_tenant(
            &h,
            &store,
            &spec.endpoint.instance,
            &password,
            &spec.projects,
            &mut report,
        )
        .await
    }
}

/// Where a tenant's robot credentials are, for outputs and messages.
pub fn robot_files(outputs: &std::path::Path, instance: &str, project: &str) -> PathBuf {
    outputs
        .join(FOLDER)
        .join(format!("{}.json", robot_record(instance, project).replace('/', "-")))
}
