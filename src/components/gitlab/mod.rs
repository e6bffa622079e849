//! GitLab configured through its REST API, for a GitLab we installed on a
//! host (see service_hosts) or the user's own. One step, `gitlab/configure`:
//! our admin token (explicit expiry, rotated before it lapses), the tenant
//! group and its `management` project, the deploy key Argo CD reads with,
//! the tenant repository initialised from our templates in checked commits,
//! Dex's OAuth application (kept, never recreated) and the base operator's
//! read-only token. Credentials go to Vault when Vault is part of the
//! install, else to 0600 files; never to the state file.
//!
//! Every item is read first and written only when missing or different, so
//! a run that finds everything in place makes no write call. The step asks
//! to be checked on every run: tokens age and people edit things in GitLab
//! without any change to the inventory.
//!
//! The step is planned from the inventory in plan.rs; this module holds its
//! spec, the handler that runs it and what the handler shares with the
//! other files (the write log, the credential store, the API client).

pub mod credentials;
mod drift;
mod oauth;
mod plan;
mod project;
mod repo;
mod tenant_group;
mod tokens;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::credentials::CredentialStore;
use self::oauth::OauthSpec;
pub use self::plan::plan;
use self::project::Created;
use self::tokens::{Bootstrap, Lifetime};
use super::vault::{self as vault_component, VaultTarget};
use crate::drivers::gitlab::{Auth, Gitlab, GitlabError};
use crate::engine::{Handler, Intents, StepContext, StepError};
use crate::inventory::SecretRef;
use crate::plan::diff::REFRESH_AFTER;
use crate::secret::Secret;
use crate::steps::hosts::HostConn;
use crate::util::unix_now;

pub const KIND: &str = "gitlab-configure";
pub const STEP_ID: &str = "gitlab/configure";
/// Installs GitLab on its host (placement `host`); see service_hosts.
pub const HOST_STEP_ID: &str = "gitlab/host";
const PROJECT: &str = "management";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitlabSpec {
    pub url: String,
    /// Placement `external`: the admin token we bootstrap from.
    pub token: Option<SecretRef>,
    /// Placement `external`: the CA of its certificate (else system roots).
    pub ca_file: Option<PathBuf>,
    /// Placement `host`: where it runs (root password, Rails runner).
    pub host: Option<HostConn>,
    /// Where `gitlab-rails runner` can fix what the API cannot (an edited
    /// OAuth application): the GitLab host, or for your own GitLab the host
    /// named by `values.railsHost`.
    #[serde(default)]
    pub rails_host: Option<HostConn>,
    pub group: String,
    pub token_validity_days: i64,
    pub token_renew_days: i64,
    pub deploy_key_can_push: bool,
    pub oauth: OauthSpec,
    /// Tenant repository: path -> content, rendered from our templates.
    pub repo_files: BTreeMap<String, String>,
    /// Keep credentials in this Vault instead of files.
    pub vault: Option<VaultTarget>,
    /// Tenant repository files copied from release artifacts (the Nautes
    /// release Argo CD delivers): repo path -> where the file comes from.
    #[serde(default)]
    pub release_files: BTreeMap<String, ReleaseFile>,
}

impl crate::plan::StepSpec for GitlabSpec {
    const KIND: &'static str = KIND;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseFile {
    pub artifacts: String,
    pub file: String,
}

/// The write calls a run makes (for its outputs) and what it wants the user to know.
#[derive(Default)]
pub struct Calls {
    pub writes: Vec<String>,
    pub notes: Vec<String>,
}

impl Calls {
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub async fn post(&mut self, gl: &Gitlab, path: &str, auth: Auth<'_>, body: &Value) -> Result<Value, GitlabError> {
        let v = gl.post(path, auth, body).await?;
        self.writes.push(format!("POST {path}"));
        Ok(v)
    }

    pub async fn delete(&mut self, gl: &Gitlab, path: &str, auth: Auth<'_>) -> Result<bool, GitlabError> {
        let gone = gl.delete(path, auth).await?;
        self.writes.push(format!("DELETE {path}"));
        Ok(gone)
    }

    /// A create with its write-ahead record: the record, holding the marker
    /// `body` must put into the object, is on disk before the request, and
    /// names the id GitLab answered right after it. When GitLab refuses
    /// (4xx), nothing was made and the record goes; when the answer does
    /// not arrive (a dropped connection, a timeout) or is a 5xx (a proxy
    /// giving up on a GitLab that may have finished), it stays, since the
    /// create may have happened, and the next run looks for the marker.
    pub async fn create(
        &mut self,
        gl: &Gitlab,
        intents: &Intents,
        create: Create<'_>,
        auth: Auth<'_>,
        body: impl FnOnce(&str) -> Value,
    ) -> Result<(String, Value), StepError> {
        let intent = intents.begin(create.record, create.about).await?;
        match self.post(gl, create.path, auth, &body(&intent.marker)).await {
            Ok(made) => {
                intents
                    .settle(create.record, &intent.marker, made["id"].clone())
                    .await?;
                Ok((intent.marker, made))
            }
            Err(e) => {
                if e.status().is_some_and(|s| (400..500).contains(&s)) {
                    intents.forget(create.record, &intent.marker).await?;
                }
                Err(StepError::new(format!("{}: {e}", create.doing)))
            }
        }
    }
}

/// What `Calls::create` makes: the record it goes under, what a later run
/// needs to find it (no secret), where it is posted, and what it is for
/// messages.
pub struct Create<'a> {
    pub record: &'a str,
    pub about: Value,
    pub path: &'a str,
    pub doing: &'a str,
}

/// `name` carrying an intent's marker (for objects whose only free-form
/// field is their name: tokens).
pub fn marked(name: &str, marker: &str) -> String {
    format!("{name} [{marker}]")
}

/// What the step records; no secret in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recorded {
    #[serde(default)]
    group: Option<Created>,
    #[serde(default)]
    project: Option<Created>,
    #[serde(default)]
    oauth_app_id: Option<u64>,
    #[serde(default)]
    repo_files: BTreeMap<String, String>,
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, StepError> {
    std::fs::read(path).map_err(|e| StepError::new(format!("cannot read the CA for GitLab, {}: {e}", path.display())))
}

/// The API client, trusting the given CA, or our CA for a GitLab on a host.
fn client(ctx: &StepContext, spec: &GitlabSpec) -> Result<Gitlab, StepError> {
    let url = ctx
        .needs_outputs
        .get(HOST_STEP_ID)
        .and_then(|o| o["url"].as_str())
        .unwrap_or(&spec.url)
        .to_string();
    connect(ctx, &url, spec.ca_file.as_deref(), spec.host.is_some())
}

/// A client of the GitLab at `url`: trusting `ca_file`, or — for the
/// GitLab on our host — our CA (from the certificates step's outputs).
fn connect(
    ctx: &StepContext,
    url: &str,
    ca_file: Option<&std::path::Path>,
    on_host: bool,
) -> Result<Gitlab, StepError> {
    let ca = match (ca_file, ctx.needs_outputs.get(crate::components::certificates::STEP_ID)) {
        (Some(p), _) => Some(read_pem(p)?),
        (None, Some(pki)) if on_host => Some(read_pem(std::path::Path::new(
            pki["ca"]["cert"].as_str().unwrap_or_default(),
        ))?),
        _ => None,
    };
    let http = ctx.limits.http;
    Gitlab::new(url, ca.as_deref(), http).map_err(StepError::new)
}

pub use self::credentials::Fields;
pub use self::oauth::{DEX_APP_SCOPES, OAUTH_APP};
pub use self::tokens::{ADMIN_TOKEN, BASE_OPERATOR_TOKEN};

fn store(ctx: &StepContext, spec: &GitlabSpec) -> Result<CredentialStore, StepError> {
    credential_store(ctx, spec.vault.as_ref())
}

/// Where the GitLab credentials of this install are kept (for steps that
/// read them: Dex's OAuth secret, Argo CD's repository token).
pub fn credential_store(ctx: &StepContext, vault: Option<&VaultTarget>) -> Result<CredentialStore, StepError> {
    Ok(match vault {
        Some(target) => {
            let (vault, token) = vault_component::connect(ctx, target)?;
            CredentialStore::Vault {
                vault,
                token,
                mount: credentials::GITLAB_MOUNT,
                folder: credentials::GITLAB_FOLDER,
            }
        }
        None => CredentialStore::Files(ctx.outputs_dir.join("gitlab")),
    })
}

/// A credential the GitLab step stored, for steps that use it (Dex, Argo
/// CD, cluster registration); an error says where it should have been.
pub async fn stored_credential(
    ctx: &StepContext,
    vault: Option<&VaultTarget>,
    name: &str,
) -> Result<Fields, StepError> {
    let store = credential_store(ctx, vault)?;
    store.get(name).await?.ok_or_else(|| {
        StepError::new(format!(
            "the GitLab credential `{name}` is not at {} (the gitlab/configure step makes it)",
            store.location(name)
        ))
    })
}

/// How to become an administrator when we hold no working token of our own.
fn bootstrap(ctx: &StepContext, spec: &GitlabSpec) -> Result<Bootstrap, StepError> {
    if let Some(r) = &spec.token {
        return r
            .resolve(&ctx.base_dir)
            .map(Bootstrap::Token)
            .map_err(|e| StepError::new(format!("components.gitlab.external.token: {e}")));
    }
    let file = ctx
        .needs_outputs
        .get(HOST_STEP_ID)
        .and_then(|o| o["rootPasswordFile"].as_str())
        .map(PathBuf::from)
        .unwrap_or_else(|| ctx.outputs_dir.join("gitlab/root-password"));
    std::fs::read_to_string(&file)
        .map(|p| Bootstrap::RootPassword(Secret::new(p.trim())))
        .map_err(|e| {
            StepError::new(format!(
                "cannot read GitLab's root password from {}: {e}",
                file.display()
            ))
        })
}

fn lifetime(spec: &GitlabSpec) -> Lifetime {
    Lifetime {
        validity_days: spec.token_validity_days,
        renew_days: spec.token_renew_days,
    }
}

pub struct GitlabHandler;

#[async_trait]
impl Handler for GitlabHandler {
    type Spec = GitlabSpec;

    async fn apply(&self, ctx: &StepContext, spec: &GitlabSpec) -> Result<Value, StepError> {
        let before: Recorded = serde_json::from_value(ctx.previous_outputs.clone()).unwrap_or_default();
        let gl = client(ctx, spec)?;
        let store = store(ctx, spec)?;
        let mut calls = Calls::default();
        let intents = &ctx.intents;
        let admin = tokens::admin_token(&gl, &mut calls, &store, intents, lifetime(spec), || {
            bootstrap(ctx, spec)
        })
        .await?;
        let auth = Auth::Token(&admin.token);
        let group = project::group(
            &gl,
            &mut calls,
            intents,
            auth,
            &spec.group,
            "Nautes tenants",
            before.group.as_ref(),
        )
        .await?;
        let project =
            project::project(&gl, &mut calls, intents, auth, &group, PROJECT, before.project.as_ref()).await?;
        let key = project::deploy_key(
            &gl,
            &mut calls,
            &store,
            auth,
            project.record.id,
            spec.deploy_key_can_push,
            &ctx.workdir,
        )
        .await?;
        let mut files = spec.repo_files.clone();
        for (path, from) in &spec.release_files {
            let local = crate::steps::release_files::files_from_outputs(
                ctx.needs_outputs.get(&from.artifacts).unwrap_or(&Value::Null),
            )?
            .remove(&from.file)
            .ok_or_else(|| StepError::new(format!("step {} provided no {}", from.artifacts, from.file)))?;
            let text = std::fs::read_to_string(&local.path)
                .map_err(|e| StepError::new(format!("{}: {e}", local.path.display())))?;
            files.insert(path.clone(), text);
        }
        let synced = repo::sync(
            &gl,
            &mut calls,
            auth,
            project.record.id,
            &project.record.path,
            &project.default_branch,
            &files,
            &before.repo_files,
        )
        .await?;
        for path in &synced.kept {
            calls.note(format!(
                "{path} in {} was changed by someone: left as it is",
                project.record.path
            ));
        }
        let rails = spec.rails_host.as_ref().map(|conn| (ctx, conn));
        let app = oauth::application(&gl, &mut calls, &store, intents, auth, &spec.oauth, rails).await?;
        let reader = tokens::base_operator_token(
            &gl,
            &mut calls,
            &store,
            intents,
            auth,
            project.record.id,
            lifetime(spec),
        )
        .await?;
        for note in &calls.notes {
            ctx.notice(note.clone());
        }
        if !calls.writes.is_empty() {
            ctx.progress(format!("GitLab: {} changes", calls.writes.len()));
        }
        let recorded = Recorded {
            group: Some(group.clone()),
            project: Some(project.record.clone()),
            oauth_app_id: Some(app.id),
            repo_files: synced.files.clone(),
        };
        let mut out = serde_json::to_value(&recorded).unwrap_or_default();
        let credentials: BTreeMap<&str, String> = [
            tokens::ADMIN_TOKEN,
            tokens::BASE_OPERATOR_TOKEN,
            project::DEPLOY_KEY,
            oauth::OAUTH_APP,
        ]
        .into_iter()
        .map(|name| (name, store.location(name)))
        .collect();
        let extra = json!({
            "url": gl.url(),
            "repository": project.ssh_url,
            "defaultBranch": project.default_branch,
            "deployKey": {"id": key.id, "public": key.public},
            "oauthApp": app,
            "adminToken": {"id": admin.id, "expiresAt": admin.expires_at},
            "baseOperatorToken": {"id": reader.id, "expiresAt": reader.expires_at},
            "credentials": credentials,
            "lastCommit": synced.commit,
            "keptUserEdits": synced.kept,
            "written": calls.writes,
            // Checked on every run: tokens age and people edit GitLab.
            REFRESH_AFTER: unix_now(),
        });
        if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        Ok(out)
    }

    /// The admin token, group, project, deploy key, base operator token and
    /// Dex's OAuth application, read with GET requests only.
    async fn drift(
        &self,
        ctx: &StepContext,
        spec: &GitlabSpec,
    ) -> Result<Option<Vec<crate::engine::Difference>>, StepError> {
        drift::drift(ctx, spec).await.map(Some)
    }

    async fn destroy(&self, ctx: &StepContext, spec: &GitlabSpec, outputs: &Value) -> Result<(), StepError> {
        let store = store(ctx, spec)?;
        let intents = &ctx.intents;
        let names = [
            oauth::OAUTH_APP,
            tokens::BASE_OPERATOR_TOKEN,
            project::DEPLOY_KEY,
            tokens::ADMIN_TOKEN,
        ];
        if spec.host.is_some() {
            // The host's uninstall removes GitLab with everything in it.
            for name in names {
                store.remove(name).await?;
            }
            return intents.forget_all().await;
        }
        // What is ours comes from the records (and the outputs of an earlier
        // version), so a teardown after an interrupted run — or of one —
        // still finds everything we made. Every removal below is a no-op
        // when it is already gone, so a teardown killed half-way is simply
        // run again.
        let recorded: Recorded = serde_json::from_value(outputs.clone()).unwrap_or_default();
        let gl = client(ctx, spec)?;
        let mut calls = Calls::default();
        let admin = tokens::admin_token(&gl, &mut calls, &store, intents, lifetime(spec), || {
            bootstrap(ctx, spec)
        })
        .await?;
        let auth = Auth::Token(&admin.token);
        let fail = |what: &str, e: GitlabError| StepError::new(format!("{what}: {e}"));
        oauth::remove(&gl, &mut calls, &store, intents, auth, recorded.oauth_app_id).await?;
        let full = format!("{}/{PROJECT}", spec.group);
        let live_project = gl
            .get(&format!("projects/{}", crate::drivers::gitlab::encode(&full)), auth)
            .await
            .map_err(|e| fail("looking up the management project", e))?;
        let project_id = live_project.as_ref().and_then(|p| p["id"].as_u64());
        // Our tokens on the project, wherever it came from: the records',
        // and the one an earlier version named only in its outputs.
        if let Some(project_id) = project_id {
            let held = tokens::Held::BaseOperator { project_id };
            let legacy = outputs["baseOperatorToken"]["id"].as_u64();
            if let Some(id) = legacy.filter(|id| !intents.list(held.record()).iter().any(|i| i.made_id() == Some(*id)))
            {
                intents
                    .adopt(held.record(), json!(id), json!({"projectId": project_id}))
                    .await?;
            }
            tokens::tidy(&gl, &mut calls, intents, auth, held, None).await?;
        }
        let ours = project::ours_at(
            &gl,
            intents,
            auth,
            project::PROJECT_RECORD,
            &format!("projects/{}", crate::drivers::gitlab::encode(&full)),
            recorded.project.as_ref(),
            &full,
        )
        .await?;
        match (ours, project_id) {
            (Some(id), _) => {
                gl.delete(&format!("projects/{id}"), auth)
                    .await
                    .map_err(|e| fail("removing the management project", e))?;
            }
            (None, Some(pid)) => {
                if let Some(key) = project::our_deploy_key(&gl, &store, auth, pid).await? {
                    gl.delete(&format!("projects/{pid}/deploy_keys/{key}"), auth)
                        .await
                        .map_err(|e| fail("removing our deploy key", e))?;
                }
            }
            (None, None) => {}
        }
        let group = project::ours_at(
            &gl,
            intents,
            auth,
            project::GROUP_RECORD,
            &format!("groups/{}", crate::drivers::gitlab::encode(&spec.group)),
            recorded.group.as_ref(),
            &spec.group,
        )
        .await?;
        if let Some(id) = group {
            gl.delete(&format!("groups/{id}"), auth)
                .await
                .map_err(|e| fail("removing the tenant group", e))?;
        }
        // Our own tokens go last: everything above needed one. Any other
        // admin token the records name (an interrupted run's) goes first.
        tokens::tidy(
            &gl,
            &mut calls,
            intents,
            auth,
            tokens::Held::Admin { user_id: admin.user_id },
            Some(admin.id),
        )
        .await?;
        gl.delete(&format!("personal_access_tokens/{}", admin.id), auth)
            .await
            .map_err(|e| fail("revoking our admin token", e))?;
        for name in names {
            store.remove(name).await?;
        }
        intents.forget_all().await
    }
}

/// GitLab's configuration: tokens, groups, OAuth applications.
pub struct GitlabConfiguration;

impl super::Component for GitlabConfiguration {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(GitlabHandler);
        registry.add(tenant_group::TenantGroupHandler);
    }
}
