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
use crate::drivers::sonarqube::Sonarqube;
use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::SecretRef;
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
}

impl crate::plan::StepSpec for InstanceSpec {
    const KIND: &'static str = INSTANCE_KIND;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    pub endpoint: Endpoint,
    pub tenant: String,
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

const SIGN_IN_KEYS: [&str; 4] = [
    "sonar.core.serverBaseURL",
    "sonar.auth.gitlab.enabled",
    "sonar.auth.gitlab.url",
    "sonar.auth.gitlab.applicationId",
];

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
    let live = s
        .settings(auth, &SIGN_IN_KEYS)
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
    let want = [
        ("sonar.core.serverBaseURL", sign_in.server_base_url.as_str()),
        ("sonar.auth.gitlab.enabled", "true"),
        ("sonar.auth.gitlab.url", sign_in.gitlab_url.as_str()),
        ("sonar.auth.gitlab.applicationId", sign_in.application_id.as_str()),
    ];
    for (key, v) in want {
        if value(key).as_deref() != Some(v) {
            s.set_setting(auth, key, &Secret::new(v))
                .await
                .map_err(|e| failed(&format!("setting {key}"), e))?;
            report.wrote(format!("setting {key}"));
        }
    }
    // Secured settings are never read back: compare with the one we last wrote.
    let record = sign_in_record(instance);
    let applied = store.get(&record).await?;
    if applied.as_ref().and_then(|f| f.get("secret")) != Some(secret) {
        s.set_setting(auth, "sonar.auth.gitlab.secret.secured", secret)
            .await
            .map_err(|e| failed("setting sonar.auth.gitlab.secret.secured", e))?;
        report.wrote("setting sonar.auth.gitlab.secret.secured");
        store.put(&record, &fields(&[("secret", secret)])).await?;
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

    async fn destroy(&self, ctx: &StepContext, spec: &InstanceSpec, _outputs: &Value) -> Result<(), StepError> {
        let store = store(ctx, FOLDER, spec.endpoint.vault.as_ref())?;
        store.remove(&sign_in_record(&spec.endpoint.instance)).await
    }
}

pub struct TenantHandler;

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
        Ok(report.outputs(json!({
            "token": store.location(&tenant_record(&spec.endpoint.instance, &spec.tenant)),
        })))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TenantSpec, _outputs: &Value) -> Result<(), StepError> {
        let (s, store, password, mut report) = connect(ctx, &spec.endpoint).await?;
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
