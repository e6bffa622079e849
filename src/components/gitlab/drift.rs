//! What `drift` reads of GitLab: the objects `gitlab/configure` made, read
//! with GET requests only, with the admin token it stored (never the
//! bootstrap credential, never a replacement). Each is named as the user
//! knows it and reported when `apply` would make, replace or fix it.

use serde_json::Value;

use super::credentials::field;
use super::oauth::OAUTH_APP;
use super::project::{key_material, DEPLOY_KEY};
use super::tokens::{fresh, ADMIN_TOKEN, BASE_OPERATOR_TOKEN};
use super::{client, lifetime, store, GitlabSpec, Recorded, PROJECT};
use crate::drivers::gitlab::{encode, Auth, GitlabError};
use crate::engine::{Change, Difference, StepContext, StepError};

fn failed(what: &str) -> impl FnOnce(GitlabError) -> StepError + '_ {
    move |e| StepError::new(format!("{what}: {e}"))
}

pub(super) async fn drift(ctx: &StepContext, spec: &GitlabSpec) -> Result<Vec<Difference>, StepError> {
    let recorded: Recorded = serde_json::from_value(ctx.previous_outputs.clone()).unwrap_or_default();
    let gl = client(ctx, spec)?;
    let store = store(ctx, spec)?;
    let mut found = Vec::new();
    let admin_name = "GitLab admin token of nautes-install".to_string();
    let Some(stored) = store.get(ADMIN_TOKEN).await? else {
        found.push(Difference::new(admin_name, Change::Missing, None));
        return Ok(found);
    };
    let token = field(&stored, ADMIN_TOKEN, "token")?.clone();
    match gl.get("personal_access_tokens/self", Auth::Token(&token)).await {
        Ok(Some(info)) if info["active"] == true => {
            if !fresh(&info["expires_at"], lifetime(spec)) {
                found.push(Difference::new(admin_name, Change::Changed, Some("expires_at")));
            }
        }
        Ok(_) | Err(GitlabError::Status { status: 401, .. }) => {
            // Revoked or gone: nothing more can be read without it.
            found.push(Difference::new(admin_name, Change::Missing, None));
            return Ok(found);
        }
        Err(e) => return Err(failed("checking our GitLab admin token")(e)),
    }
    let auth = Auth::Token(&token);

    let group = gl
        .get(&format!("groups/{}", encode(&spec.group)), auth)
        .await
        .map_err(failed("reading the tenant group"))?;
    if group.is_none() {
        found.push(Difference::new(
            format!("GitLab group {}", spec.group),
            Change::Missing,
            None,
        ));
    }
    let full = format!("{}/{PROJECT}", spec.group);
    let project = gl
        .get(&format!("projects/{}", encode(&full)), auth)
        .await
        .map_err(failed("reading the management project"))?;
    let Some(project_id) = project.as_ref().and_then(|p| p["id"].as_u64()) else {
        found.push(Difference::new(format!("GitLab project {full}"), Change::Missing, None));
        return Ok(found);
    };

    let key_name = format!("deploy key of {full}");
    match store.get(DEPLOY_KEY).await? {
        None => found.push(Difference::new(key_name, Change::Missing, None)),
        Some(stored) => {
            let wanted = key_material(field(&stored, DEPLOY_KEY, "public")?.expose());
            let keys = gl
                .list(&format!("projects/{project_id}/deploy_keys"), auth)
                .await
                .map_err(failed("listing deploy keys"))?;
            match keys
                .iter()
                .find(|k| k["key"].as_str().map(key_material).as_deref() == Some(wanted.as_str()))
            {
                None => found.push(Difference::new(key_name, Change::Missing, None)),
                Some(k) if k["can_push"].as_bool().unwrap_or(false) != spec.deploy_key_can_push => {
                    found.push(Difference::new(key_name, Change::Changed, Some("can_push")))
                }
                Some(_) => {}
            }
        }
    }

    let reader_name = format!("GitLab access token {BASE_OPERATOR_TOKEN} of {full}");
    let reader_id = store
        .get(BASE_OPERATOR_TOKEN)
        .await?
        .and_then(|f| f.get("id").and_then(|id| id.expose().parse::<u64>().ok()));
    let tokens = gl
        .list(&format!("projects/{project_id}/access_tokens"), auth)
        .await
        .map_err(failed("listing the management project's access tokens"))?;
    match reader_id.and_then(|id| {
        tokens
            .iter()
            .find(|t| t["id"].as_u64() == Some(id) && t["active"] != false && t["revoked"] != true)
    }) {
        None => found.push(Difference::new(reader_name, Change::Missing, None)),
        Some(t) if !fresh(&t["expires_at"], lifetime(spec)) => {
            found.push(Difference::new(reader_name, Change::Changed, Some("expires_at")))
        }
        Some(_) => {}
    }

    let app_name = format!("GitLab OAuth application {}", spec.oauth.name);
    let apps = gl
        .list("applications", auth)
        .await
        .map_err(failed("listing OAuth applications"))?;
    let stored_app = store
        .get(OAUTH_APP)
        .await?
        .and_then(|f| f.get("id").and_then(|id| id.expose().parse::<u64>().ok()));
    match recorded
        .oauth_app_id
        .or(stored_app)
        .and_then(|id| apps.iter().find(|a| a["id"].as_u64() == Some(id)))
    {
        None => found.push(Difference::new(app_name, Change::Missing, None)),
        Some(app) => {
            let field = if app["callback_url"].as_str() != Some(spec.oauth.redirect_uri.as_str()) {
                Some("callback_url")
            } else if app["confidential"] != Value::Bool(true) {
                Some("confidential")
            } else if app["application_name"].as_str() != Some(spec.oauth.name.as_str()) {
                Some("application_name")
            } else {
                None
            };
            if field.is_some() {
                found.push(Difference::new(app_name, Change::Changed, field));
            }
        }
    }
    Ok(found)
}
