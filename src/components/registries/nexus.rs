//! Nexus: the instance step replaces the first-run admin password (the
//! `admin.password` file Nexus writes into its data directory, which it
//! deletes once the password is changed) and sets anonymous access; a tenant
//! step keeps the tenant's hosted and proxy repositories, one role granting
//! everything on exactly those repositories and one local user with it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    admin, admin_record, ca, failed, fields, generate_password, kept_admin_password, store, take_over_admin,
    tenant_record, AdminAccount, Endpoint, Report,
};
use crate::components::gitlab::credentials::CredentialStore;
use crate::drivers::nexus::Nexus;
use crate::drivers::rest::RestError;
use crate::engine::{Change, Difference, Handler, StepContext, StepError};
use crate::secret::Secret;

pub const INSTANCE_KIND: &str = "nexus-configure";
pub const TENANT_KIND: &str = "nexus-tenant";
const FOLDER: &str = "nexus";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Maven,
    Npm,
    Pypi,
    Docker,
}

impl Format {
    /// The format's name in the API's paths.
    pub fn path(self) -> &'static str {
        match self {
            Format::Maven => "maven",
            Format::Npm => "npm",
            Format::Pypi => "pypi",
            Format::Docker => "docker",
        }
    }

    /// The format's name in repository listings and privilege names.
    pub fn id(self) -> &'static str {
        match self {
            Format::Maven => "maven2",
            other => other.path(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hosted,
    Proxy,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Hosted => "hosted",
            Kind::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    pub name: String,
    pub format: Format,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Proxy repositories: what they proxy.
    #[serde(default)]
    pub remote_url: Option<String>,
}

impl Repository {
    /// The settings we send; what Nexus returns holds them (and more).
    pub fn settings(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "online": true,
            "storage": {"blobStoreName": "default", "strictContentTypeValidation": true},
        });
        match self.kind {
            Kind::Hosted => {
                let policy = if self.format == Format::Maven {
                    "allow_once"
                } else {
                    "allow"
                };
                v["storage"]["writePolicy"] = json!(policy);
            }
            Kind::Proxy => {
                v["proxy"] = json!({
                    "remoteUrl": self.remote_url.clone().unwrap_or_default(),
                    "contentMaxAge": 1440,
                    "metadataMaxAge": 1440,
                });
                v["negativeCache"] = json!({"enabled": true, "timeToLive": 1440});
                v["httpClient"] = json!({"blocked": false, "autoBlock": true});
            }
        }
        match self.format {
            Format::Maven => {
                v["maven"] =
                    json!({"versionPolicy": "MIXED", "layoutPolicy": "STRICT", "contentDisposition": "INLINE"});
            }
            Format::Docker => {
                v["docker"] = json!({"v1Enabled": false, "forceBasicAuth": true});
                if self.kind == Kind::Proxy {
                    v["dockerProxy"] = json!({"indexType": "REGISTRY"});
                }
            }
            Format::Npm | Format::Pypi => {}
        }
        v
    }

    /// Nexus' privilege for every action on this repository.
    pub fn privilege(&self) -> String {
        format!("nx-repository-view-{}-{}-*", self.format.id(), self.name)
    }
}

/// Whether every field of `want` has that value in `live` (which may hold more).
pub fn holds(live: &Value, want: &Value) -> bool {
    match (live, want) {
        (Value::Object(l), Value::Object(w)) => w.iter().all(|(k, v)| l.get(k).is_some_and(|lv| holds(lv, v))),
        _ => live == want,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    pub endpoint: Endpoint,
    pub anonymous: bool,
}

impl crate::plan::StepSpec for InstanceSpec {
    const KIND: &'static str = INSTANCE_KIND;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    pub endpoint: Endpoint,
    pub tenant: String,
    pub repositories: Vec<Repository>,
    /// The tenant's data-loss guard (see tenants::guard_data_loss).
    #[serde(default, flatten)]
    pub data_loss: super::DataLoss,
}

impl crate::plan::StepSpec for TenantSpec {
    const KIND: &'static str = TENANT_KIND;
}

/// The role and the user a tenant gets.
pub fn tenant_principal(tenant: &str) -> String {
    format!("nautes-{tenant}")
}

pub async fn admin_password(
    n: &Nexus,
    store: &CredentialStore,
    endpoint: &Endpoint,
    initial: Option<&Secret>,
    report: &mut Report,
) -> Result<Secret, StepError> {
    take_over_admin(n, store, &admin_record(&endpoint.instance), initial, report).await
}

impl AdminAccount for Nexus {
    async fn log_in(&self, password: &Secret) -> Result<bool, RestError> {
        self.can_log_in(admin(password)).await
    }

    async fn replace(&self, old: &Secret, new: &Secret) -> Result<(), RestError> {
        self.change_password(admin(old), "admin", new).await
    }
}

pub async fn converge_anonymous(
    n: &Nexus,
    password: &Secret,
    enabled: bool,
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let want = json!({"enabled": enabled, "userId": "anonymous", "realmName": "NexusAuthorizingRealm"});
    let live = n
        .anonymous(auth)
        .await
        .map_err(|e| failed("reading Nexus' anonymous access", e))?;
    if holds(&live, &want) {
        return Ok(());
    }
    n.set_anonymous(auth, &want)
        .await
        .map_err(|e| failed("setting Nexus' anonymous access", e))?;
    report.wrote("anonymous access");
    Ok(())
}

pub async fn converge_tenant(
    n: &Nexus,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    tenant: &str,
    repositories: &[Repository],
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    for repo in repositories {
        let (format, kind, name) = (repo.format.path(), repo.kind.path(), repo.name.as_str());
        let want = repo.settings();
        match n
            .repository(auth, format, kind, name)
            .await
            .map_err(|e| failed(&format!("reading repository {name}"), e))?
        {
            None => {
                n.create_repository(auth, format, kind, &want)
                    .await
                    .map_err(|e| failed(&format!("creating repository {name}"), e))?;
                report.wrote(format!("repository {name}"));
            }
            Some(live) if !holds(&live, &want) => {
                n.update_repository(auth, format, kind, name, &want)
                    .await
                    .map_err(|e| failed(&format!("updating repository {name}"), e))?;
                report.wrote(format!("repository {name} settings"));
            }
            Some(_) => {}
        }
    }
    let id = tenant_principal(tenant);
    let mut privileges: Vec<String> = repositories.iter().map(Repository::privilege).collect();
    privileges.sort();
    let role = json!({
        "id": id,
        "name": id,
        "description": format!("tenant {tenant}: its repositories (nautes-install)"),
        "privileges": privileges,
        "roles": [],
    });
    match n
        .role(auth, &id)
        .await
        .map_err(|e| failed(&format!("reading role {id}"), e))?
    {
        None => {
            n.create_role(auth, &role)
                .await
                .map_err(|e| failed(&format!("creating role {id}"), e))?;
            report.wrote(format!("role {id}"));
        }
        Some(live) => {
            let mut live_privileges: Vec<String> = live["privileges"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            live_privileges.sort();
            if live_privileges != privileges || live["description"] != role["description"] {
                n.update_role(auth, &id, &role)
                    .await
                    .map_err(|e| failed(&format!("updating role {id}"), e))?;
                report.wrote(format!("role {id} privileges"));
            }
        }
    }
    let record = tenant_record(instance, tenant);
    let stored = store.get(&record).await?;
    let user_password = match stored.as_ref().and_then(|f| f.get("password")) {
        Some(p) => p.clone(),
        None => {
            let p = generate_password()?;
            store
                .put(
                    &record,
                    &fields(&[("username", &Secret::new(id.clone())), ("password", &p)]),
                )
                .await?;
            p
        }
    };
    let user = json!({
        "userId": id,
        "firstName": "Tenant",
        "lastName": tenant,
        "emailAddress": format!("{id}@nautes.invalid"),
        "status": "active",
        "roles": [id],
        "source": "default",
    });
    match n
        .user(auth, &id)
        .await
        .map_err(|e| failed(&format!("reading user {id}"), e))?
    {
        None => {
            let mut create = user.clone();
            create["password"] = json!(user_password.expose());
            n.create_user(auth, &create)
                .await
                .map_err(|e| failed(&format!("creating user {id}"), e))?;
            report.wrote(format!("user {id}"));
        }
        Some(live) => {
            if !holds(&live, &json!({"status": "active", "roles": [id]})) {
                n.update_user(auth, &id, &user)
                    .await
                    .map_err(|e| failed(&format!("updating user {id}"), e))?;
                report.wrote(format!("user {id} roles"));
            }
            if stored.is_none() {
                // Made by a run that lost its password before storing it.
                n.change_password(auth, &id, &user_password)
                    .await
                    .map_err(|e| failed(&format!("setting the password of {id}"), e))?;
                report.wrote(format!("user {id} password"));
            }
        }
    }
    Ok(())
}

/// What [`converge_tenant`] would change, read with the admin password we
/// keep and GET requests only: a repository missing or with other
/// settings, the tenant's role with other privileges, its user missing,
/// disabled or without the role, or a password we do not hold.
pub async fn tenant_drift(
    n: &Nexus,
    store: &CredentialStore,
    instance: &str,
    tenant: &str,
    repositories: &[Repository],
) -> Result<Vec<Difference>, StepError> {
    let password = match kept_admin_password(store, "Nexus", instance).await? {
        Ok(password) => password,
        Err(missing) => return Ok(vec![missing]),
    };
    let auth = admin(&password);
    let mut found = Vec::new();
    for repo in repositories {
        let (format, kind, name) = (repo.format.path(), repo.kind.path(), repo.name.as_str());
        match n
            .repository(auth, format, kind, name)
            .await
            .map_err(|e| failed(&format!("reading repository {name}"), e))?
        {
            None => found.push(Difference::new(
                format!("Nexus repository {name}"),
                Change::Missing,
                None,
            )),
            Some(live) if !holds(&live, &repo.settings()) => found.push(Difference::new(
                format!("Nexus repository {name}"),
                Change::Changed,
                Some("settings"),
            )),
            Some(_) => {}
        }
    }
    let id = tenant_principal(tenant);
    let mut privileges: Vec<String> = repositories.iter().map(Repository::privilege).collect();
    privileges.sort();
    match n
        .role(auth, &id)
        .await
        .map_err(|e| failed(&format!("reading role {id}"), e))?
    {
        None => found.push(Difference::new(format!("Nexus role {id}"), Change::Missing, None)),
        Some(live) => {
            let mut live_privileges: Vec<String> = live["privileges"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            live_privileges.sort();
            if live_privileges != privileges {
                found.push(Difference::new(
                    format!("Nexus role {id}"),
                    Change::Changed,
                    Some("privileges"),
                ));
            }
        }
    }
    let held = store
        .get(&tenant_record(instance, tenant))
        .await?
        .is_some_and(|f| f.contains_key("password"));
    match n
        .user(auth, &id)
        .await
        .map_err(|e| failed(&format!("reading user {id}"), e))?
    {
        None => found.push(Difference::new(format!("Nexus user {id}"), Change::Missing, None)),
        Some(live) if !holds(&live, &json!({"status": "active", "roles": [id]})) => found.push(Difference::new(
            format!("Nexus user {id}"),
            Change::Changed,
            Some("status/roles"),
        )),
        Some(_) if !held => found.push(Difference::new(
            format!("Nexus user {id}"),
            Change::Changed,
            Some("password (not held)"),
        )),
        Some(_) => {}
    }
    Ok(found)
}

pub async fn remove_tenant(
    n: &Nexus,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    tenant: &str,
    repositories: &[Repository],
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let id = tenant_principal(tenant);
    if n.delete_user(auth, &id)
        .await
        .map_err(|e| failed(&format!("deleting user {id}"), e))?
    {
        report.wrote(format!("user {id} removed"));
    }
    if n.delete_role(auth, &id)
        .await
        .map_err(|e| failed(&format!("deleting role {id}"), e))?
    {
        report.wrote(format!("role {id} removed"));
    }
    for repo in repositories {
        if n.delete_repository(auth, &repo.name)
            .await
            .map_err(|e| failed(&format!("deleting repository {}", repo.name), e))?
        {
            report.wrote(format!("repository {} removed", repo.name));
        }
    }
    store.remove(&tenant_record(instance, tenant)).await
}

async fn client(ctx: &StepContext, endpoint: &Endpoint) -> Result<Nexus, StepError> {
    let address = super::address(endpoint).await?;
    Nexus::new_at(&endpoint.url, ca(ctx, endpoint)?.as_deref(), ctx.limits.http, address).map_err(StepError::new)
}

/// The first-run password, if the file Nexus writes is still there: after
/// the change Nexus deletes it, and a missing file is no error then. One we
/// install starts with Nexus' default (see `install`).
fn initial(ctx: &StepContext, endpoint: &Endpoint) -> Option<Secret> {
    if endpoint.installed && endpoint.initial_password.is_none() {
        return Some(Secret::new(super::install::NEXUS_DEFAULT_PASSWORD));
    }
    endpoint
        .initial_password
        .as_ref()
        .and_then(|r| r.resolve(&ctx.base_dir).ok())
        .map(|s| Secret::new(s.expose().trim()))
}

async fn connect(
    ctx: &StepContext,
    endpoint: &Endpoint,
) -> Result<(Nexus, CredentialStore, Secret, Report), StepError> {
    let n = client(ctx, endpoint).await?;
    let store = store(ctx, FOLDER, endpoint.vault.as_ref())?;
    let mut report = Report::default();
    let password = admin_password(&n, &store, endpoint, initial(ctx, endpoint).as_ref(), &mut report).await?;
    Ok((n, store, password, report))
}

pub struct InstanceHandler;

#[async_trait]
impl Handler for InstanceHandler {
    type Spec = InstanceSpec;

    async fn apply(&self, ctx: &StepContext, spec: &InstanceSpec) -> Result<Value, StepError> {
        let (n, store, password, mut report) = connect(ctx, &spec.endpoint).await?;
        converge_anonymous(&n, &password, spec.anonymous, &mut report).await?;
        Ok(report.outputs(json!({
            "url": spec.endpoint.url,
            "adminPassword": store.location(&admin_record(&spec.endpoint.instance)),
        })))
    }

    async fn destroy(&self, _ctx: &StepContext, _spec: &InstanceSpec, _outputs: &Value) -> Result<(), StepError> {
        Ok(())
    }
}

pub struct TenantHandler;

#[async_trait]
impl Handler for TenantHandler {
    type Spec = TenantSpec;

    async fn apply(&self, ctx: &StepContext, spec: &TenantSpec) -> Result<Value, StepError> {
        let (n, store, password, mut report) = connect(ctx, &spec.endpoint).await?;
        let instance = &spec.endpoint.instance;
        let before: Vec<Repository> =
            serde_json::from_value(ctx.previous_outputs["repositories"].clone()).unwrap_or_default();
        let gone: Vec<Repository> = before
            .into_iter()
            .filter(|r| !spec.repositories.iter().any(|q| q.name == r.name))
            .collect();
        let allowed = spec.data_loss.allow_data_loss;
        super::guard_nexus_repositories(ctx, &n, &password, &spec.tenant, allowed, &gone).await?;
        for gone in &gone {
            if n.delete_repository(admin(&password), &gone.name)
                .await
                .map_err(|e| failed(&format!("deleting repository {}", gone.name), e))?
            {
                report.wrote(format!("repository {} removed", gone.name));
            }
        }
        converge_tenant(
            &n,
            &store,
            instance,
            &password,
            &spec.tenant,
            &spec.repositories,
            &mut report,
        )
        .await?;
        Ok(report.outputs(json!({
            "repositories": spec.repositories,
            "credential": store.location(&tenant_record(instance, &spec.tenant)),
        })))
    }

    async fn drift(&self, ctx: &StepContext, spec: &TenantSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let n = client(ctx, &spec.endpoint).await?;
        let store = store(ctx, FOLDER, spec.endpoint.vault.as_ref())?;
        tenant_drift(&n, &store, &spec.endpoint.instance, &spec.tenant, &spec.repositories)
            .await
            .map(Some)
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TenantSpec, _outputs: &Value) -> Result<(), StepError> {
        let (n, store, password, mut report) = connect(ctx, &spec.endpoint).await?;
        let allowed = spec.data_loss.allow_data_loss;
        super::guard_nexus_repositories(ctx, &n, &password, &spec.tenant, allowed, &spec.repositories).await?;
        remove_tenant(
            &n,
            &store,
            &spec.endpoint.instance,
            &password,
            &spec.tenant,
            &spec.repositories,
            &mut report,
        )
        .await
    }
}
