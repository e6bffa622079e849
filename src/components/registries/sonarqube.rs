//! SonarQube: the instance step replaces the default `admin/admin` and,
//! when asked, turns on sign-in through GitLab; a tenant step keeps one
//! local user per tenant with one token for pipelines, whose value —
//! told by SonarQube only in the answer to `generate` — is stored the
//! moment it arrives.
//!
//! Sign-in: the Community Edition (9.x) has GitHub, GitLab and Bitbucket
//! OAuth and SAML built in, and no OpenID Connect. Dex speaks OIDC to the
//! applications behind it and is no SAML identity provider, so SonarQube
//! cannot sign in through Dex without a third-party plugin; it signs in
//! through GitLab, which Dex itself uses.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    admin, admin_record, ca, failed, fields, generate_password, store, take_over_admin, tenant_record, AdminAccount,
    Endpoint, Report,
};
use crate::components::gitlab::credentials::CredentialStore;
use crate::drivers::rest::RestError;
use crate::drivers::sonarqube::Scope;
use crate::drivers::sonarqube::Sonarqube;
use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::{SecretRef, TenantRole};
use crate::secret::Secret;

pub const INSTANCE_KIND: &str = "sonarqube-configure";
pub const TENANT_KIND: &str = "sonarqube-tenant";
const FOLDER: &str = "sonarqube";
/// SonarQube's first-run administrator password.
pub const DEFAULT_ADMIN_PASSWORD: &str = "admin";
/// The token each tenant's pipelines use.
pub const TOKEN_NAME: &str = "nautes-pipeline";

/// Sign-in through GitLab (an OAuth application there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitlabSignIn {
    /// SonarQube's own public URL (GitLab redirects back to it).
    pub server_base_url: String,
    pub gitlab_url: String,
    pub application_id: String,
    pub secret: SecretRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    pub endpoint: Endpoint,
    pub gitlab_sign_in: Option<GitlabSignIn>,
    /// Sign-in through the GitLab this install configures (Dex's own
    /// upstream, so the same identity and groups): SonarQube's OAuth
    /// application there is made through GitLab's API by this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_app: Option<GitlabApp>,
}

/// The GitLab SonarQube's application is made in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitlabApp {
    /// The CA of GitLab's certificate (else the system roots); GitLab's
    /// URL and the admin token come from the GitLab step.
    pub ca_file: Option<std::path::PathBuf>,
    /// GitLab runs on a host of ours, under our CA.
    pub ours: bool,
}

/// Where SonarQube receives GitLab's authorization code.
pub fn gitlab_callback(sonarqube_url: &str) -> String {
    format!("{}/oauth2/callback/gitlab", sonarqube_url.trim_end_matches('/'))
}

/// SonarQube's application in GitLab. `api` is the scope SonarQube 9.9's
/// group sync needs (it lists the user's groups); `read_user` signs in.
pub const GITLAB_APP_SCOPES: &str = "read_user api";

fn gitlab_app_name(instance: &str) -> String {
    format!("nautes-sonarqube-{instance}")
}

fn gitlab_app_record(instance: &str) -> String {
    format!("{instance}/gitlab-application")
}

/// Deletes SonarQube's application in GitLab (the one we keep, and any of
/// our name) and forgets its secret.
pub async fn remove_gitlab_app(
    gl: &crate::drivers::gitlab::Gitlab,
    token: &Secret,
    store: &CredentialStore,
    instance: &str,
) -> Result<(), StepError> {
    let auth = crate::drivers::gitlab::Auth::Token(token);
    let record = gitlab_app_record(instance);
    let stored_id = store
        .get(&record)
        .await?
        .and_then(|f| f.get("applicationId").map(|s| s.expose().to_string()));
    let apps = gl
        .list("applications", auth)
        .await
        .map_err(|e| StepError::new(format!("listing GitLab's OAuth applications: {e}")))?;
    let name = gitlab_app_name(instance);
    for app in apps.iter().filter(|a| {
        a["application_name"].as_str() == Some(name.as_str())
            || (stored_id.is_some() && a["application_id"].as_str() == stored_id.as_deref())
    }) {
        gl.delete(&format!("applications/{}", app["id"]), auth)
            .await
            .map_err(|e| StepError::new(format!("deleting SonarQube's GitLab application: {e}")))?;
    }
    store.remove(&record).await
}

/// SonarQube's OAuth application in GitLab: kept while it exists with our
/// callback and we hold its secret (GitLab shows it only in the answer to
/// the create); otherwise ours of that name is replaced. Returns its
/// application id and secret.
pub async fn ensure_gitlab_app(
    gl: &crate::drivers::gitlab::Gitlab,
    token: &Secret,
    store: &CredentialStore,
    instance: &str,
    callback: &str,
    report: &mut Report,
) -> Result<(String, Secret), StepError> {
    use crate::drivers::gitlab::Auth as GitlabAuth;
    let auth = GitlabAuth::Token(token);
    let gitlab_failed = |what: &str, e: crate::drivers::gitlab::GitlabError| StepError::new(format!("{what}: {e}"));
    let name = gitlab_app_name(instance);
    let record = gitlab_app_record(instance);
    let apps = gl
        .list("applications", auth)
        .await
        .map_err(|e| gitlab_failed("listing GitLab's OAuth applications", e))?;
    let stored = store.get(&record).await?;
    let stored_id = stored
        .as_ref()
        .and_then(|f| f.get("applicationId"))
        .map(|s| s.expose().to_string());
    if let (Some(f), Some(id)) = (&stored, &stored_id) {
        let live = apps.iter().find(|a| a["application_id"].as_str() == Some(id.as_str()));
        if let (Some(app), Some(secret)) = (live, f.get("secret")) {
            if app["callback_url"].as_str() == Some(callback) {
                return Ok((id.clone(), secret.clone()));
            }
        }
    }
    // Lost, changed or never made: ours (by name) go, one is made.
    for app in apps
        .iter()
        .filter(|a| a["application_name"].as_str() == Some(name.as_str()))
    {
        gl.delete(&format!("applications/{}", app["id"]), auth)
            .await
            .map_err(|e| gitlab_failed("replacing SonarQube's GitLab application", e))?;
        report.wrote(format!("GitLab application {} removed", app["id"]));
    }
    let app = gl
        .post(
            "applications",
            auth,
            &json!({"name": name, "redirect_uri": callback, "scopes": GITLAB_APP_SCOPES, "confidential": true}),
        )
        .await
        .map_err(|e| gitlab_failed("creating SonarQube's GitLab application", e))?;
    let id = app["application_id"].as_str().unwrap_or_default().to_string();
    let secret = Secret::new(app["secret"].as_str().unwrap_or_default());
    if id.is_empty() || secret.expose().is_empty() {
        return Err(StepError::new(
            "GitLab made SonarQube's application but did not tell its id and secret",
        ));
    }
    store
        .put(
            &record,
            &fields(&[("applicationId", &Secret::new(id.clone())), ("secret", &secret)]),
        )
        .await?;
    report.wrote(format!("GitLab application {name}"));
    Ok((id, secret))
}

impl crate::plan::StepSpec for InstanceSpec {
    const KIND: &'static str = INSTANCE_KIND;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    pub endpoint: Endpoint,
    pub tenant: String,
    /// The tenant's groups and their roles on its projects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
}

/// A tenant group: a SonarQube group of the same name (what GitLab sign-in
/// with `groupsSync` puts its members in) with the role's permissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub name: String,
    pub role: TenantRole,
}

/// A tenant's projects are those whose key starts with `<tenant>:`.
/// SonarQube projects are made by the first analysis, not declared in the
/// inventory, so a tenant's groups get their permissions through a
/// permission template of the tenant (`nautes-<tenant>`) whose key pattern
/// this is — every project created with such a key starts with them — and,
/// for projects that already exist, on each of them. `:` is in no tenant
/// name, so two tenants' patterns never both match one key.
pub fn project_key_pattern(tenant: &str) -> String {
    format!("{tenant}:.*")
}

pub fn template_name(tenant: &str) -> String {
    format!("nautes-{tenant}")
}

/// What every user has on a public project.
const PUBLIC_IMPLIED: [&str; 2] = ["user", "codeviewer"];

/// SonarQube's project permissions for a tenant role: viewer browses and
/// sees the code; developer also triages issues and security hotspots;
/// admin also administers the project (its settings and permissions).
/// Running analyses (`scan`) is the pipelines' token's, not people's.
pub fn project_permissions(role: TenantRole) -> &'static [&'static str] {
    match role {
        TenantRole::Viewer => &["codeviewer", "user"],
        TenantRole::Developer => &["codeviewer", "issueadmin", "securityhotspotadmin", "user"],
        TenantRole::Admin => &["admin", "codeviewer", "issueadmin", "securityhotspotadmin", "user"],
    }
}

impl crate::plan::StepSpec for TenantSpec {
    const KIND: &'static str = TENANT_KIND;
}

fn sign_in_record(instance: &str) -> String {
    format!("{instance}/sign-in-applied")
}

/// The login a tenant's pipelines use.
pub fn tenant_login(tenant: &str) -> String {
    format!("nautes-{tenant}")
}

pub async fn admin_password(
    s: &Sonarqube,
    store: &CredentialStore,
    endpoint: &Endpoint,
    initial: &Secret,
    report: &mut Report,
) -> Result<Secret, StepError> {
    take_over_admin(s, store, &admin_record(&endpoint.instance), Some(initial), report).await
}

impl AdminAccount for Sonarqube {
    async fn log_in(&self, password: &Secret) -> Result<bool, RestError> {
        self.can_log_in(admin(password)).await
    }

    async fn replace(&self, old: &Secret, new: &Secret) -> Result<(), RestError> {
        self.change_password(admin(old), "admin", old, new).await
    }
}

/// The plain settings of GitLab sign-in. SonarQube 9.9 keeps the
/// application id and secret as secured settings
/// (`sonar.auth.gitlab.applicationId.secured`, `...secret.secured`), which
/// it never shows; it lists GitLab as an identity provider only once
/// `enabled`, the application id and the secret are all set.
const SIGN_IN_KEYS: [&str; 4] = [
    "sonar.core.serverBaseURL",
    "sonar.auth.gitlab.enabled",
    "sonar.auth.gitlab.url",
    "sonar.auth.gitlab.groupsSync",
];
const APPLICATION_ID_KEY: &str = "sonar.auth.gitlab.applicationId.secured";
const SECRET_KEY: &str = "sonar.auth.gitlab.secret.secured";

pub async fn converge_sign_in(
    s: &Sonarqube,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    sign_in: &GitlabSignIn,
    secret: &Secret,
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let keys: Vec<&str> = SIGN_IN_KEYS
        .iter()
        .copied()
        .chain([APPLICATION_ID_KEY, SECRET_KEY])
        .collect();
    let live = s
        .settings(auth, &keys)
        .await
        .map_err(|e| failed("reading SonarQube's settings", e))?;
    let value = |key: &str| {
        live["settings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["key"] == key && x["inherited"] != true)
            .and_then(|x| x["value"].as_str())
            .map(str::to_string)
    };
    // Group sync puts a user signing in through GitLab into the SonarQube
    // groups named like their GitLab groups: the tenant groups.
    let want = [
        ("sonar.core.serverBaseURL", sign_in.server_base_url.as_str()),
        ("sonar.auth.gitlab.enabled", "true"),
        ("sonar.auth.gitlab.url", sign_in.gitlab_url.as_str()),
        ("sonar.auth.gitlab.groupsSync", "true"),
    ];
    for (key, v) in want {
        if value(key).as_deref() != Some(v) {
            s.set_setting(auth, key, &Secret::new(v))
                .await
                .map_err(|e| failed(&format!("setting {key}"), e))?;
            report.wrote(format!("setting {key}"));
        }
    }
    // Secured settings are never read back, only named when set: compare
    // with what we last wrote, and write again when one is not set.
    let secured: Vec<String> = live["setSecuredSettings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let record = sign_in_record(instance);
    let applied = store.get(&record).await?;
    let application_id = Secret::new(sign_in.application_id.as_str());
    let mut changed = false;
    for (key, field, v) in [
        (APPLICATION_ID_KEY, "applicationId", &application_id),
        (SECRET_KEY, "secret", secret),
    ] {
        if applied.as_ref().and_then(|f| f.get(field)) != Some(v) || !secured.iter().any(|k| k == key) {
            s.set_setting(auth, key, v)
                .await
                .map_err(|e| failed(&format!("setting {key}"), e))?;
            report.wrote(format!("setting {key}"));
            changed = true;
        }
    }
    if changed {
        store
            .put(
                &record,
                &fields(&[("applicationId", &application_id), ("secret", secret)]),
            )
            .await?;
    }
    Ok(())
}

pub async fn converge_tenant(
    s: &Sonarqube,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    tenant: &str,
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let login = tenant_login(tenant);
    if s.user(auth, &login)
        .await
        .map_err(|e| failed(&format!("reading user {login}"), e))?
        .is_none()
    {
        // Pipelines use the token; nobody signs in with this password.
        s.create_user(auth, &login, &format!("Nautes tenant {tenant}"), &generate_password()?)
            .await
            .map_err(|e| failed(&format!("creating user {login}"), e))?;
        report.wrote(format!("user {login}"));
    }
    let record = tenant_record(instance, tenant);
    let stored = store.get(&record).await?;
    let live = s
        .token_names(auth, &login)
        .await
        .map_err(|e| failed(&format!("listing the tokens of {login}"), e))?;
    let has = live.iter().any(|n| n == TOKEN_NAME);
    if has && stored.is_some() {
        return Ok(());
    }
    if has {
        // Its value is lost (a crash between the generate and the store).
        s.revoke_token(auth, &login, TOKEN_NAME)
            .await
            .map_err(|e| failed(&format!("revoking the token of {login}"), e))?;
        report.wrote(format!("token of {login} revoked"));
    }
    let token = s
        .generate_token(auth, &login, TOKEN_NAME)
        .await
        .map_err(|e| failed(&format!("generating the token of {login}"), e))?;
    report.wrote(format!("token of {login}"));
    store
        .put(
            &record,
            &fields(&[("login", &Secret::new(login.clone())), ("token", &token)]),
        )
        .await?;
    Ok(())
}

/// The tenant's groups with their permissions on its template and its
/// existing projects; the groups this step granted before and no longer
/// lists (`gone`) lose every permission there. Other groups' permissions
/// are not touched, and groups are never deleted (another tenant may list
/// the same one; sign-in keeps its members in it).
pub async fn converge_groups(
    s: &Sonarqube,
    password: &Secret,
    tenant: &str,
    groups: &[Group],
    gone: &[String],
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let gone: Vec<&String> = gone.iter().filter(|g| !groups.iter().any(|w| &&w.name == g)).collect();
    if groups.is_empty() && gone.is_empty() {
        return Ok(());
    }
    for g in groups {
        if !s
            .group_exists(auth, &g.name)
            .await
            .map_err(|e| failed(&format!("reading group {}", g.name), e))?
        {
            s.create_group(auth, &g.name, &format!("tenant {tenant} ({})", g.role.as_str()))
                .await
                .map_err(|e| failed(&format!("creating group {}", g.name), e))?;
            report.wrote(format!("group {}", g.name));
        }
    }
    let template = template_name(tenant);
    let pattern = project_key_pattern(tenant);
    match s
        .template(auth, &template)
        .await
        .map_err(|e| failed(&format!("reading permission template {template}"), e))?
    {
        None if groups.is_empty() => {}
        None => {
            s.create_template(auth, &template, &pattern)
                .await
                .map_err(|e| failed(&format!("creating permission template {template}"), e))?;
            report.wrote(format!("permission template {template}"));
        }
        Some(t) if t["projectKeyPattern"] != pattern.as_str() => {
            let id = t["id"].as_str().unwrap_or_default();
            s.set_template_pattern(auth, id, &pattern)
                .await
                .map_err(|e| failed(&format!("updating permission template {template}"), e))?;
            report.wrote(format!("permission template {template} key pattern"));
        }
        Some(_) => {}
    }
    let projects: Vec<(String, bool)> = s
        .projects(auth, &format!("{tenant}:"))
        .await
        .map_err(|e| failed(&format!("listing the projects of {tenant}"), e))?
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{tenant}:")))
        .collect();
    let template_exists = !groups.is_empty()
        || s.template(auth, &template)
            .await
            .map_err(|e| failed(&format!("reading permission template {template}"), e))?
            .is_some();
    // On a public project everyone browses and sees the code: SonarQube
    // refuses to grant `user` and `codeviewer` there, and lists neither.
    let scopes = template_exists
        .then_some((Scope::Template(template.as_str()), false))
        .into_iter()
        .chain(projects.iter().map(|(p, public)| (Scope::Project(p), *public)));
    let wanted = groups
        .iter()
        .map(|g| (g.name.as_str(), project_permissions(g.role)))
        .chain(gone.iter().map(|g| (g.as_str(), &[][..])));
    let wanted: Vec<(&str, &[&str])> = wanted.collect();
    for (scope, public) in scopes {
        let place = match scope {
            Scope::Template(t) => format!("template {t}"),
            Scope::Project(p) => format!("project {p}"),
        };
        for (group, want) in &wanted {
            let live = s
                .group_permissions(auth, scope, group)
                .await
                .map_err(|e| failed(&format!("reading the permissions of {group} on {place}"), e))?;
            let want: Vec<&str> = want
                .iter()
                .copied()
                .filter(|p| !(public && PUBLIC_IMPLIED.contains(p)))
                .collect();
            for p in want.iter().filter(|p| !live.iter().any(|l| l == *p)) {
                s.set_group_permission(auth, scope, group, p, true)
                    .await
                    .map_err(|e| failed(&format!("granting {p} to {group} on {place}"), e))?;
                report.wrote(format!("{p} to {group} on {place}"));
            }
            for p in live.iter().filter(|l| !want.contains(&l.as_str())) {
                s.set_group_permission(auth, scope, group, p, false)
                    .await
                    .map_err(|e| failed(&format!("revoking {p} of {group} on {place}"), e))?;
                report.wrote(format!("{p} of {group} revoked on {place}"));
            }
        }
    }
    Ok(())
}

/// Removes the tenant's groups' permissions (on its projects too) and its
/// permission template.
pub async fn remove_groups(
    s: &Sonarqube,
    password: &Secret,
    tenant: &str,
    granted: &[String],
    report: &mut Report,
) -> Result<(), StepError> {
    converge_groups(s, password, tenant, &[], granted, report).await?;
    let template = template_name(tenant);
    let auth = admin(password);
    if s.template(auth, &template)
        .await
        .map_err(|e| failed(&format!("reading permission template {template}"), e))?
        .is_some()
    {
        s.delete_template(auth, &template)
            .await
            .map_err(|e| failed(&format!("deleting permission template {template}"), e))?;
        report.wrote(format!("permission template {template} removed"));
    }
    Ok(())
}

pub async fn remove_tenant(
    s: &Sonarqube,
    store: &CredentialStore,
    instance: &str,
    password: &Secret,
    tenant: &str,
    report: &mut Report,
) -> Result<(), StepError> {
    let auth = admin(password);
    let login = tenant_login(tenant);
    if s.user(auth, &login)
        .await
        .map_err(|e| failed(&format!("reading user {login}"), e))?
        .is_some()
    {
        s.revoke_token(auth, &login, TOKEN_NAME)
            .await
            .map_err(|e| failed(&format!("revoking the token of {login}"), e))?;
        // SonarQube never deletes a user: deactivating drops its tokens,
        // groups and permissions.
        s.deactivate_user(auth, &login)
            .await
            .map_err(|e| failed(&format!("deactivating user {login}"), e))?;
        report.wrote(format!("user {login} deactivated"));
    }
    store.remove(&tenant_record(instance, tenant)).await
}

async fn client(ctx: &StepContext, endpoint: &Endpoint) -> Result<Sonarqube, StepError> {
    let address = super::address(endpoint).await?;
    Sonarqube::new_at(&endpoint.url, ca(ctx, endpoint)?.as_deref(), ctx.limits.http, address).map_err(StepError::new)
}

async fn connect(
    ctx: &StepContext,
    endpoint: &Endpoint,
) -> Result<(Sonarqube, CredentialStore, Secret, Report), StepError> {
    let s = client(ctx, endpoint).await?;
    let store = store(ctx, FOLDER, endpoint.vault.as_ref())?;
    let initial = match &endpoint.initial_password {
        Some(r) => r
            .resolve(&ctx.base_dir)
            .map_err(|e| StepError::new(format!("SonarQube's first-run password: {e}")))?,
        None => Secret::new(DEFAULT_ADMIN_PASSWORD),
    };
    let mut report = Report::default();
    let password = admin_password(&s, &store, endpoint, &initial, &mut report).await?;
    Ok((s, store, password, report))
}

pub struct InstanceHandler;

#[async_trait]
impl Handler for InstanceHandler {
    type Spec = InstanceSpec;

    async fn apply(&self, ctx: &StepContext, spec: &InstanceSpec) -> Result<Value, StepError> {
        let (s, store, password, mut report) = connect(ctx, &spec.endpoint).await?;
        if let Some(app) = &spec.gitlab_app {
            let (gl, token, gitlab_url) = gitlab_admin(ctx, spec, app).await?;
            let token = &token;
            let callback = gitlab_callback(&spec.endpoint.url);
            let (application_id, secret) =
                ensure_gitlab_app(&gl, token, &store, &spec.endpoint.instance, &callback, &mut report).await?;
            let sign_in = GitlabSignIn {
                server_base_url: spec.endpoint.url.clone(),
                gitlab_url,
                application_id,
                secret: SecretRef { env: None, file: None },
            };
            converge_sign_in(
                &s,
                &store,
                &spec.endpoint.instance,
                &password,
                &sign_in,
                &secret,
                &mut report,
            )
            .await?;
        }
        if let Some(sign_in) = &spec.gitlab_sign_in {
            let secret = sign_in
                .secret
                .resolve(&ctx.base_dir)
                .map_err(|e| StepError::new(format!("SonarQube's GitLab application secret: {e}")))?;
            converge_sign_in(
                &s,
                &store,
                &spec.endpoint.instance,
                &password,
                sign_in,
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

    /// The GitLab application we made goes with the instance.
    async fn destroy(&self, ctx: &StepContext, spec: &InstanceSpec, _outputs: &Value) -> Result<(), StepError> {
        let store = store(ctx, FOLDER, spec.endpoint.vault.as_ref())?;
        if let Some(app) = &spec.gitlab_app {
            let (gl, token, _) = gitlab_admin(ctx, spec, app).await?;
            remove_gitlab_app(&gl, &token, &store, &spec.endpoint.instance).await?;
        }
        store.remove(&sign_in_record(&spec.endpoint.instance)).await
    }
}

/// GitLab's API as its admin: the client (trusting GitLab's CA), the admin
/// token the GitLab step keeps, and GitLab's URL.
async fn gitlab_admin(
    ctx: &StepContext,
    spec: &InstanceSpec,
    app: &GitlabApp,
) -> Result<(crate::drivers::gitlab::Gitlab, Secret, String), StepError> {
    let gitlab = ctx
        .needs_outputs
        .get(crate::components::gitlab::STEP_ID)
        .ok_or_else(|| StepError::new("the GitLab step has not run (internal error: missing need)"))?;
    let gitlab_url = gitlab["url"].as_str().unwrap_or_default().to_string();
    let ca = match (&app.ca_file, app.ours) {
        (Some(p), _) => Some(
            std::fs::read(p)
                .map_err(|e| StepError::new(format!("cannot read the CA for GitLab, {}: {e}", p.display())))?,
        ),
        (None, true) => {
            let pki = ctx
                .needs_outputs
                .get(crate::components::certificates::STEP_ID)
                .ok_or_else(|| StepError::new("the PKI step has not run (internal error: missing need)"))?;
            let path = pki["ca"]["cert"].as_str().unwrap_or_default();
            Some(std::fs::read(path).map_err(|e| StepError::new(format!("cannot read our CA at {path}: {e}")))?)
        }
        (None, false) => None,
    };
    let gl =
        crate::drivers::gitlab::Gitlab::new(&gitlab_url, ca.as_deref(), ctx.limits.http).map_err(StepError::new)?;
    let stored = crate::components::gitlab::stored_credential(
        ctx,
        spec.endpoint.vault.as_ref(),
        crate::components::gitlab::ADMIN_TOKEN,
    )
    .await?;
    let token =
        crate::components::gitlab::credentials::field(&stored, crate::components::gitlab::ADMIN_TOKEN, "token")?
            .clone();
    Ok((gl, token, gitlab_url))
}

pub struct TenantHandler;

/// The groups a tenant step granted permissions to, from its outputs.
fn granted(outputs: &Value) -> Vec<String> {
    serde_json::from_value(outputs["groups"].clone()).unwrap_or_default()
}

#[async_trait]
impl Handler for TenantHandler {
    type Spec = TenantSpec;

    async fn apply(&self, ctx: &StepContext, spec: &TenantSpec) -> Result<Value, StepError> {
        let (s, store, password, mut report) = connect(ctx, &spec.endpoint).await?;
        converge_tenant(
            &s,
            &store,
            &spec.endpoint.instance,
            &password,
            &spec.tenant,
            &mut report,
        )
        .await?;
        let granted = granted(&ctx.previous_outputs);
        converge_groups(&s, &password, &spec.tenant, &spec.groups, &granted, &mut report).await?;
        let groups: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
        Ok(report.outputs(json!({
            "token": store.location(&tenant_record(&spec.endpoint.instance, &spec.tenant)),
            "groups": groups,
        })))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TenantSpec, outputs: &Value) -> Result<(), StepError> {
        let (s, store, password, mut report) = connect(ctx, &spec.endpoint).await?;
        let mut groups = granted(outputs);
        groups.extend(spec.groups.iter().map(|g| g.name.clone()));
        remove_groups(&s, &password, &spec.tenant, &groups, &mut report).await?;
        remove_tenant(
            &s,
            &store,
            &spec.endpoint.instance,
            &password,
            &spec.tenant,
            &mut report,
        )
        .await
    }
}
