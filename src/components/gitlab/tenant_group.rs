//! A tenant's own GitLab group (`tenants[].gitlab.group`): a private
//! top-level group made through the API with the admin token the
//! `gitlab/configure` step keeps, one step per tenant. Whether we made it
//! comes from the write-ahead records, as for the platform group, so a
//! group that was there before is used but never removed. Removing the
//! tenant (or changing its group) removes the group we made, but only while
//! it holds no project or subgroup — else the data-loss guard refuses,
//! unless the tenant allowed it. Members are not managed: access is
//! `tenants[].groups`, through Dex.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::credentials::field;
use super::project::{self, Created, GROUP_RECORD};
use super::{connect, stored_credential, Calls, ADMIN_TOKEN, STEP_ID};
use crate::components::tenants::guard_data_loss;
use crate::components::vault::VaultTarget;
use crate::drivers::gitlab::{encode, Auth, Gitlab};
use crate::engine::{Handler, StepContext, StepError};
use crate::plan::diff::REFRESH_AFTER;
use crate::util::unix_now;

pub const KIND: &str = "gitlab-tenant-group";

pub fn step_id(tenant: &str) -> String {
    format!("gitlab/tenant/{tenant}")
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantGroupSpec {
    pub tenant: String,
    /// The group's path (top level).
    pub group: String,
    /// Where GitLab is: as `gitlab/configure` reaches it.
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// GitLab runs on our host (then our CA is trusted).
    #[serde(default, skip_serializing_if = "is_false")]
    pub on_host: bool,
    /// Where `gitlab/configure` keeps its admin token.
    pub vault: Option<VaultTarget>,
    /// The tenant's `allowDataLoss`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_data_loss: bool,
}

impl crate::plan::StepSpec for TenantGroupSpec {
    const KIND: &'static str = KIND;
}

async fn session(ctx: &StepContext, spec: &TenantGroupSpec) -> Result<(Gitlab, crate::secret::Secret), StepError> {
    // The URL gitlab/configure used (our host's, when GitLab runs there).
    let url = ctx
        .needs_outputs
        .get(STEP_ID)
        .and_then(|o| o["url"].as_str())
        .unwrap_or(&spec.url)
        .to_string();
    let gl = connect(ctx, &url, spec.ca_file.as_deref(), spec.on_host)?;
    let admin = stored_credential(ctx, spec.vault.as_ref(), ADMIN_TOKEN).await?;
    let token = field(&admin, ADMIN_TOKEN, "token")?.clone();
    Ok((gl, token))
}

fn fail(what: String) -> impl FnOnce(crate::drivers::gitlab::GitlabError) -> StepError {
    move |e| StepError::new(format!("{what}: {e}"))
}

/// Remove the group at `path` if we made it, through the data-loss guard:
/// what it holds (projects, in subgroups too, and subgroups) is named.
async fn remove(
    ctx: &StepContext,
    gl: &Gitlab,
    auth: Auth<'_>,
    spec: &TenantGroupSpec,
    path: &str,
    recorded: Option<&Created>,
) -> Result<Vec<String>, StepError> {
    let api = format!("groups/{}", encode(path));
    let Some(id) = project::ours_at(gl, &ctx.intents, auth, GROUP_RECORD, &api, recorded, path).await? else {
        if gl
            .get(&api, auth)
            .await
            .map_err(fail(format!("looking up group {path}")))?
            .is_some()
        {
            ctx.notice(format!(
                "GitLab group {path} was there before tenant {}: left in place",
                spec.tenant
            ));
        }
        return Ok(Vec::new());
    };
    let projects = gl
        .list(&format!("groups/{id}/projects?include_subgroups=true"), auth)
        .await
        .map_err(fail(format!("listing the projects of group {path}")))?;
    let subgroups = gl
        .list(&format!("groups/{id}/subgroups"), auth)
        .await
        .map_err(fail(format!("listing the subgroups of group {path}")))?;
    let mut holding = Vec::new();
    if !projects.is_empty() {
        let mut names: Vec<&str> = projects
            .iter()
            .filter_map(|p| p["path_with_namespace"].as_str())
            .collect();
        names.sort_unstable();
        holding.push(format!(
            "GitLab group {path} ({} project(s): {})",
            projects.len(),
            names.join(", ")
        ));
    } else if !subgroups.is_empty() {
        holding.push(format!("GitLab group {path} ({} subgroup(s))", subgroups.len()));
    }
    guard_data_loss(ctx, &spec.tenant, spec.allow_data_loss, "a GitLab group", &holding)?;
    gl.delete(&format!("groups/{id}"), auth)
        .await
        .map_err(fail(format!("removing group {path}")))?;
    Ok(vec![format!("DELETE groups/{id}")])
}

pub struct TenantGroupHandler;

#[async_trait]
impl Handler for TenantGroupHandler {
    type Spec = TenantGroupSpec;

    async fn apply(&self, ctx: &StepContext, spec: &TenantGroupSpec) -> Result<Value, StepError> {
        let (gl, token) = session(ctx, spec).await?;
        let auth = Auth::Token(&token);
        let before: Option<Created> = serde_json::from_value(ctx.previous_outputs["group"].clone()).ok();
        let mut calls = Calls::default();
        // A group the tenant no longer names goes, as a removed tenant's would.
        if let Some(old) = before.as_ref().filter(|b| !b.path.eq_ignore_ascii_case(&spec.group)) {
            let removed = remove(ctx, &gl, auth, spec, &old.path, Some(old)).await?;
            calls.writes.extend(removed);
        }
        let kept = before.filter(|b| b.path.eq_ignore_ascii_case(&spec.group));
        let what = format!("Nautes tenant {}", spec.tenant);
        let group = project::group(&gl, &mut calls, &ctx.intents, auth, &spec.group, &what, kept.as_ref()).await?;
        if !group.created {
            ctx.notice(format!(
                "GitLab group {} was already there, not made by us: used, and left in place when the tenant goes",
                spec.group
            ));
        }
        Ok(json!({
            "group": group,
            "url": format!("{}/{}", gl.url().trim_end_matches('/'), spec.group),
            "writes": calls.writes.len(),
            "written": calls.writes,
            REFRESH_AFTER: unix_now(),
        }))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &TenantGroupSpec, outputs: &Value) -> Result<(), StepError> {
        let (gl, token) = session(ctx, spec).await?;
        let recorded: Option<Created> = serde_json::from_value(outputs["group"].clone()).ok();
        let path = recorded
            .as_ref()
            .map(|c| c.path.clone())
            .unwrap_or_else(|| spec.group.clone());
        remove(ctx, &gl, Auth::Token(&token), spec, &path, recorded.as_ref()).await?;
        ctx.intents.forget_all().await
    }
}
