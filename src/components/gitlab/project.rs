//! The tenant group, its `management` project and the project's deploy key
//! (the key Argo CD reads the tenant repository with). Each is looked up
//! first and created only when missing; whether we created the group and
//! project is remembered, so teardown removes only what was ours.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::credentials::{field, CredentialStore, Fields};
use super::Calls;
use crate::drivers::gitlab::{encode, Auth, Gitlab};
use crate::engine::StepError;
use crate::secret::Secret;

pub const DEPLOY_KEY: &str = "deploy-key";
const DEPLOY_KEY_TITLE: &str = "nautes-argocd";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub id: u64,
    pub path: String,
    /// Made by us (now or in an earlier run), so ours to remove.
    pub created: bool,
}

fn err(what: &str) -> impl FnOnce(crate::drivers::gitlab::GitlabError) -> StepError + '_ {
    move |e| StepError::new(format!("{what}: {e}"))
}

/// The group at `path`, created (private) when missing.
pub async fn group(
    gl: &Gitlab,
    calls: &mut Calls,
    auth: Auth<'_>,
    path: &str,
    before: Option<&Created>,
) -> Result<Created, StepError> {
    let ours_before = before.is_some_and(|c| c.created && c.path == path);
    if let Some(g) = gl
        .get(&format!("groups/{}", encode(path)), auth)
        .await
        .map_err(err("looking up the group"))?
    {
        return Ok(Created {
            id: g["id"].as_u64().unwrap_or_default(),
            path: path.to_string(),
            created: ours_before,
        });
    }
    let g = calls
        .post(
            gl,
            "groups",
            auth,
            &json!({"name": path, "path": path, "visibility": "private"}),
        )
        .await
        .map_err(err("creating the tenant group"))?;
    Ok(Created {
        id: g["id"].as_u64().unwrap_or_default(),
        path: path.to_string(),
        created: true,
    })
}

pub struct Project {
    pub record: Created,
    pub default_branch: String,
    pub ssh_url: String,
}

/// The project `name` in `group`, created (private, empty, branch `main`) when missing.
pub async fn project(
    gl: &Gitlab,
    calls: &mut Calls,
    auth: Auth<'_>,
    group: &Created,
    name: &str,
    before: Option<&Created>,
) -> Result<Project, StepError> {
    let full = format!("{}/{name}", group.path);
    let ours_before = before.is_some_and(|c| c.created && c.path == full);
    let (p, created) = match gl
        .get(&format!("projects/{}", encode(&full)), auth)
        .await
        .map_err(err("looking up the management project"))?
    {
        Some(p) => (p, ours_before),
        None => {
            let p = calls
                .post(
                    gl,
                    "projects",
                    auth,
                    &json!({"name": name, "path": name, "namespace_id": group.id,
                            "default_branch": "main", "visibility": "private"}),
                )
                .await
                .map_err(err("creating the management project"))?;
            (p, true)
        }
    };
    Ok(Project {
        record: Created {
            id: p["id"].as_u64().unwrap_or_default(),
            path: full,
            created,
        },
        default_branch: p["default_branch"].as_str().unwrap_or("main").to_string(),
        ssh_url: p["ssh_url_to_repo"].as_str().unwrap_or_default().to_string(),
    })
}

/// "type base64" of an OpenSSH public key, without its comment.
fn key_material(key: &str) -> String {
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// A new ed25519 key pair from `ssh-keygen` (the OpenSSH client we need for
/// hosts anyway), made in `workdir` and read back; the private half is
/// removed from disk once read.
fn generate_key(workdir: &std::path::Path) -> Result<(Secret, String), StepError> {
    std::fs::create_dir_all(workdir).map_err(|e| StepError::new(format!("{}: {e}", workdir.display())))?;
    let path = workdir.join("deploy-key");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", DEPLOY_KEY_TITLE, "-f"])
        .arg(&path)
        .output()
        .map_err(|e| StepError::new(format!("cannot run ssh-keygen to make the deploy key: {e}")))?;
    if !out.status.success() {
        return Err(StepError::new(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let private = std::fs::read_to_string(&path).map_err(|e| StepError::new(format!("{}: {e}", path.display())))?;
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .map_err(|e| StepError::new(format!("{}: {e}", path.display())))?;
    let _ = std::fs::remove_file(&path);
    Ok((Secret::new(private), public.trim().to_string()))
}

pub struct DeployKey {
    pub id: u64,
    pub public: String,
}

/// Our deploy key on the project: the stored key pair (made once), added
/// to the project unless it is already there.
pub async fn deploy_key(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    auth: Auth<'_>,
    project_id: u64,
    can_push: bool,
    workdir: &std::path::Path,
) -> Result<DeployKey, StepError> {
    let public = match store.get(DEPLOY_KEY).await? {
        Some(f) => field(&f, DEPLOY_KEY, "public")?.expose().to_string(),
        None => {
            let (private, public) = generate_key(workdir)?;
            let fields: Fields = [
                ("private".to_string(), private),
                ("public".to_string(), Secret::new(public.clone())),
            ]
            .into();
            store.put(DEPLOY_KEY, &fields).await?;
            public
        }
    };
    let path = format!("projects/{project_id}/deploy_keys");
    let keys = gl.list(&path, auth).await.map_err(err("listing deploy keys"))?;
    let wanted = key_material(&public);
    let live = keys
        .iter()
        .find(|k| k["key"].as_str().map(key_material).as_deref() == Some(wanted.as_str()));
    let id = match live {
        Some(k) if k["can_push"].as_bool().unwrap_or(false) == can_push => k["id"].as_u64().unwrap_or_default(),
        other => {
            // A key with the wrong push access is replaced rather than
            // edited: same key material, and nothing depends on its id.
            if let Some(k) = other {
                calls
                    .delete(gl, &format!("{path}/{}", k["id"]), auth)
                    .await
                    .map_err(err("replacing the deploy key"))?;
            }
            let k: Value = calls
                .post(
                    gl,
                    &path,
                    auth,
                    &json!({"title": DEPLOY_KEY_TITLE, "key": public, "can_push": can_push}),
                )
                .await
                .map_err(err("adding the deploy key"))?;
            k["id"].as_u64().unwrap_or_default()
        }
    };
    Ok(DeployKey { id, public })
}
