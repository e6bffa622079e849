//! The instance OAuth application Dex signs users in with. It is found and
//! kept, never deleted and recreated on a run, so its client id (which Dex
//! and every user session depend on) stays stable.
//!
//! GitLab 15.10's API can create, list and delete applications but not
//! change one. When someone edited ours, a GitLab we installed on a host is
//! corrected in place through `gitlab-rails runner` over SSH (same client id
//! and secret); for a GitLab we do not run, the drift is reported, and the
//! application is replaced only when the inventory allows it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::credentials::{field, CredentialStore, Fields};
use super::{Calls, Create};
use crate::drivers::gitlab::{Auth, Gitlab};
use crate::drivers::ssh::sh_quote;
use crate::engine::{Intent, Intents, StepContext, StepError};
use crate::secret::Secret;
use crate::steps::hosts::HostConn;
use crate::steps::remote::{connect, run_checked};

pub const OAUTH_APP: &str = "dex-oauth-app";
/// The scopes of Dex's application: Dex's GitLab connector asks for
/// `read_user` and, for the groups claim, `openid` (GitLab refuses an
/// authorization request for scopes its application lacks).
pub const DEX_APP_SCOPES: &str = "openid profile email read_user read_api";
/// The records of our creates of the application.
const OAUTH_RECORD: &str = "oauth-app";
/// Where the update script goes on a GitLab host.
const RUNNER_SCRIPT: &str = "/opt/nautes/gitlab/update-oauth-app.rb";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OauthSpec {
    pub name: String,
    pub redirect_uri: String,
    /// Space-separated, as GitLab takes them.
    pub scopes: String,
    /// For a GitLab we cannot fix in place: replace a changed application
    /// (Dex then gets a new client id).
    pub recreate_on_drift: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OauthApp {
    pub id: u64,
    pub client_id: String,
    pub name: String,
}

fn err(what: &str) -> impl FnOnce(crate::drivers::gitlab::GitlabError) -> StepError + '_ {
    move |e| StepError::new(format!("{what}: {e}"))
}

/// How the live application differs from what Dex needs ("" when it does not).
fn drift(app: &Value, spec: &OauthSpec) -> String {
    let mut problems = Vec::new();
    if app["callback_url"].as_str() != Some(spec.redirect_uri.as_str()) {
        problems.push(format!(
            "callback URL is {} instead of {}",
            app["callback_url"], spec.redirect_uri
        ));
    }
    if app["confidential"] != true {
        problems.push("it is no longer confidential".to_string());
    }
    if app["application_name"].as_str() != Some(spec.name.as_str()) {
        problems.push(format!("it was renamed to {}", app["application_name"]));
    }
    problems.join(", ")
}

async fn create(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    intents: &Intents,
    admin: Auth<'_>,
    spec: &OauthSpec,
    after_id: u64,
) -> Result<OauthApp, StepError> {
    let (_, app) = calls
        .create(
            gl,
            intents,
            Create {
                record: OAUTH_RECORD,
                about: json!({"afterId": after_id, "name": spec.name}),
                path: "applications",
                doing: "creating Dex's OAuth application",
            },
            admin,
            // An application has no field for a marker; the record's
            // `afterId` (ids only grow) identifies it instead.
            |_| json!({"name": spec.name, "redirect_uri": spec.redirect_uri, "scopes": spec.scopes, "confidential": true}),
        )
        .await?;
    let client_id = app["application_id"].as_str().unwrap_or_default().to_string();
    let fields: Fields = [
        ("clientId".to_string(), Secret::new(client_id.clone())),
        (
            "clientSecret".to_string(),
            Secret::new(app["secret"].as_str().unwrap_or_default()),
        ),
        ("id".to_string(), Secret::new(app["id"].to_string())),
    ]
    .into();
    store.put(OAUTH_APP, &fields).await?;
    Ok(OauthApp {
        id: app["id"].as_u64().unwrap_or_default(),
        client_id,
        name: spec.name.clone(),
    })
}

/// The application an unanswered create made: the first one of that name
/// with an id above every id GitLab had when the create was recorded.
fn made_by(record: &Intent, apps: &[Value]) -> Option<u64> {
    let after = record.about["afterId"].as_u64()?;
    let name = record.about["name"].as_str()?;
    apps.iter()
        .filter(|a| a["application_name"].as_str() == Some(name))
        .filter_map(|a| a["id"].as_u64())
        .filter(|id| *id > after)
        .min()
}

/// Make the records match the one application we keep (`keep`): every other
/// one they name — made by a run whose answer, and so the secret, was
/// lost, or replaced — is deleted; the user's applications are not in the
/// records and are never touched. Returns the ids deleted.
async fn tidy(
    gl: &Gitlab,
    calls: &mut Calls,
    intents: &Intents,
    admin: Auth<'_>,
    apps: &[Value],
    keep: Option<u64>,
) -> Result<Vec<u64>, StepError> {
    let mut deleted = Vec::new();
    for i in intents.list(OAUTH_RECORD) {
        let id = i.made_id().or_else(|| made_by(&i, apps));
        let live = id.filter(|id| apps.iter().any(|a| a["id"].as_u64() == Some(*id)));
        match live {
            Some(id) if Some(id) == keep => {
                if i.made.is_none() {
                    intents.settle(OAUTH_RECORD, &i.marker, json!(id)).await?;
                }
            }
            Some(id) => {
                calls
                    .delete(gl, &format!("applications/{id}"), admin)
                    .await
                    .map_err(err("deleting an OAuth application we no longer hold the secret of"))?;
                if i.made.is_none() {
                    calls.note(format!(
                        "deleted OAuth application {id}: an interrupted run made it and its secret was never stored"
                    ));
                }
                deleted.push(id);
                intents.forget(OAUTH_RECORD, &i.marker).await?;
            }
            None => intents.forget(OAUTH_RECORD, &i.marker).await?,
        }
    }
    if let Some(id) = keep {
        if !intents.list(OAUTH_RECORD).iter().any(|i| i.made_id() == Some(id)) {
            // Made before these records existed: ours, as the store holds its secret.
            intents.adopt(OAUTH_RECORD, json!(id), Value::Null).await?;
        }
    }
    Ok(deleted)
}

fn highest_id(apps: &[Value]) -> u64 {
    apps.iter().filter_map(|a| a["id"].as_u64()).max().unwrap_or(0)
}

/// For teardown: delete every application that is ours (the stored one
/// and any the records name).
pub async fn remove(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    intents: &Intents,
    admin: Auth<'_>,
    recorded: Option<u64>,
) -> Result<(), StepError> {
    let apps = gl
        .list("applications", admin)
        .await
        .map_err(err("listing OAuth applications"))?;
    let stored = match store.get(OAUTH_APP).await? {
        Some(f) => f.get("clientId").map(|c| c.expose().to_string()),
        None => None,
    };
    let ours = stored
        .as_deref()
        .and_then(|c| apps.iter().find(|a| a["application_id"].as_str() == Some(c)))
        .and_then(|a| a["id"].as_u64())
        .or(recorded.filter(|id| apps.iter().any(|a| a["id"].as_u64() == Some(*id))));
    tidy(gl, calls, intents, admin, &apps, None).await?;
    if let Some(id) = ours {
        calls
            .delete(gl, &format!("applications/{id}"), admin)
            .await
            .map_err(err("removing Dex's OAuth application"))?;
    }
    Ok(())
}

/// Correct the application in place on the GitLab host.
async fn fix_on_host(
    (ctx, conn): (&StepContext, &HostConn),
    client_id: &str,
    spec: &OauthSpec,
) -> Result<(), StepError> {
    // Connected only now: most runs find nothing to fix.
    let remote = connect(ctx, conn).await?;
    let host = remote.as_ref();
    let script = crate::templates::render("gitlab/update-oauth-app.rb", &json!({})).map_err(StepError::new)?;
    host.upload_bytes(script.as_bytes(), RUNNER_SCRIPT, 0o644).await?;
    run_checked(
        host,
        &format!(
            "gitlab-rails runner {RUNNER_SCRIPT} {} {} {}",
            sh_quote(client_id),
            sh_quote(&spec.redirect_uri),
            sh_quote(&spec.scopes)
        ),
    )
    .await
    .map(|_| ())
}

pub async fn application(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    intents: &Intents,
    admin: Auth<'_>,
    spec: &OauthSpec,
    rails: Option<(&StepContext, &HostConn)>,
) -> Result<OauthApp, StepError> {
    let mut apps = gl
        .list("applications", admin)
        .await
        .map_err(err("listing OAuth applications"))?;
    let stored = store.get(OAUTH_APP).await?;
    let stored_client = match &stored {
        Some(f) => Some(field(f, OAUTH_APP, "clientId")?.expose().to_string()),
        None => None,
    };
    let ours_id = stored_client
        .as_deref()
        .and_then(|c| apps.iter().find(|a| a["application_id"].as_str() == Some(c)))
        .and_then(|a| a["id"].as_u64());
    let gone = tidy(gl, calls, intents, admin, &apps, ours_id).await?;
    apps.retain(|a| !a["id"].as_u64().is_some_and(|id| gone.contains(&id)));
    let ours = ours_id.and_then(|id| apps.iter().find(|a| a["id"].as_u64() == Some(id)));
    let Some(app) = ours else {
        if let Some(other) = apps
            .iter()
            .find(|a| a["application_name"].as_str() == Some(spec.name.as_str()))
        {
            // Someone else's application of that name: ours would be in
            // the records. We cannot read a secret back from GitLab.
            if !spec.recreate_on_drift {
                return Err(StepError::new(format!(
                    "GitLab already has an OAuth application `{}` (id {}) that nautes-install did not make \
                     (hint: delete it in Admin Area → Applications, or set components.gitlab.values.oauthRecreateOnDrift: true \
                     to let the installer replace it)",
                    spec.name, other["id"]
                )));
            }
            calls
                .delete(gl, &format!("applications/{}", other["id"]), admin)
                .await
                .map_err(err("replacing the OAuth application"))?;
        }
        return create(gl, calls, store, intents, admin, spec, highest_id(&apps)).await;
    };
    let client_id = app["application_id"].as_str().unwrap_or_default().to_string();
    let found = OauthApp {
        id: app["id"].as_u64().unwrap_or_default(),
        client_id: client_id.clone(),
        name: spec.name.clone(),
    };
    let problems = drift(app, spec);
    if problems.is_empty() {
        return Ok(found);
    }
    match rails {
        Some(host) => {
            calls.note(format!("Dex's OAuth application was changed ({problems}): restoring it in place"));
            fix_on_host(host, &client_id, spec).await?;
            calls.writes.push(format!("gitlab-rails runner: update application {}", found.id));
            Ok(found)
        }
        None if spec.recreate_on_drift => {
            calls.note(format!(
                "Dex's OAuth application was changed ({problems}): replacing it (new client id)"
            ));
            let after = highest_id(&apps);
            calls
                .delete(gl, &format!("applications/{}", found.id), admin)
                .await
                .map_err(err("replacing the OAuth application"))?;
            for i in intents.list(OAUTH_RECORD) {
                if i.made_id() == Some(found.id) {
                    intents.forget(OAUTH_RECORD, &i.marker).await?;
                }
            }
            create(gl, calls, store, intents, admin, spec, after).await
        }
        None => Err(StepError::new(format!(
            "Dex's OAuth application `{}` (id {}) was changed in GitLab: {problems}. GitLab's API cannot edit an application \
             (hint: fix it in Admin Area → Applications, or set components.gitlab.values.oauthRecreateOnDrift: true to replace it; \
             Dex then gets a new client id)",
            spec.name, found.id
        ))),
    }
}
