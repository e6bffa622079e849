//! The tenant group, its `management` project and the project's deploy key
//! (the key Argo CD reads the tenant repository with). Each is looked up
//! first and created only when missing. Whether we made the group and
//! project comes from the write-ahead records (engine/intents.rs): a create
//! is recorded before its request with a marker the object's description
//! carries, so even when GitLab's answer was lost the next run (or a
//! teardown) knows the object is ours — never from "it was there when we
//! looked", which would hand our group to the user after a crash.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::credentials::{field, CredentialStore, Fields};
use super::{Calls, Create};
use crate::drivers::gitlab::{encode, Auth, Gitlab};
use crate::engine::{Intents, StepError};
use crate::secret::Secret;

pub const DEPLOY_KEY: &str = "deploy-key";
const DEPLOY_KEY_TITLE: &str = "nautes-argocd";
/// The records of our creates of the group and the project.
pub const GROUP_RECORD: &str = "group";
pub const PROJECT_RECORD: &str = "project";

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

/// What our groups and projects say about themselves; the marker lets a
/// run recognise the one it asked for when the answer never came.
fn description(what: &str, marker: &str) -> String {
    format!("{what}, made by nautes-install (intent {marker})")
}

fn carries(obj: &Value, marker: &str) -> bool {
    obj["description"]
        .as_str()
        .is_some_and(|d| d.contains(&format!("(intent {marker})")))
}

/// Whether `live` (what GitLab has at the path, if anything) is one we
/// made, by the records: a settled record names its id, an unanswered one
/// its marker (that record is then settled). Records of objects that are
/// gone, or of creates that never happened, are dropped.
pub async fn owned(intents: &Intents, record: &str, live: Option<&Value>) -> Result<bool, StepError> {
    let mut ours = false;
    for i in intents.list(record) {
        match (live, i.made_id()) {
            (Some(obj), Some(id)) if obj["id"].as_u64() == Some(id) => ours = true,
            (Some(obj), None) if carries(obj, &i.marker) => {
                intents.settle(record, &i.marker, obj["id"].clone()).await?;
                ours = true;
            }
            _ => intents.forget(record, &i.marker).await?,
        }
    }
    Ok(ours)
}

/// Ownership of what is at `api_path`, by the records, or by what an
/// earlier version of us put in the step's outputs (then recorded).
async fn ownership(
    intents: &Intents,
    record: &str,
    live: &Value,
    before: Option<&Created>,
    path: &str,
) -> Result<bool, StepError> {
    if owned(intents, record, Some(live)).await? {
        return Ok(true);
    }
    let id = live["id"].as_u64();
    if before.is_some_and(|c| c.created && c.path == path && Some(c.id) == id) {
        intents.adopt(record, json!(id), Value::Null).await?;
        return Ok(true);
    }
    Ok(false)
}

/// The group at `path`, created (private) when missing; `what` is what
/// its description says it is for.
pub async fn group(
    gl: &Gitlab,
    calls: &mut Calls,
    intents: &Intents,
    auth: Auth<'_>,
    path: &str,
    what: &str,
    before: Option<&Created>,
) -> Result<Created, StepError> {
    let live = gl
        .get(&format!("groups/{}", encode(path)), auth)
        .await
        .map_err(err("looking up the group"))?;
    if let Some(g) = live {
        return Ok(Created {
            id: g["id"].as_u64().unwrap_or_default(),
            path: path.to_string(),
            created: ownership(intents, GROUP_RECORD, &g, before, path).await?,
        });
    }
    owned(intents, GROUP_RECORD, None).await?;
    let (_, g) = calls
        .create(
            gl,
            intents,
            Create {
                record: GROUP_RECORD,
                about: json!({"path": path}),
                path: "groups",
                doing: "creating the group",
            },
            auth,
            |marker| {
                json!({"name": path, "path": path, "visibility": "private",
                       "description": description(what, marker)})
            },
        )
        .await?;
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
    intents: &Intents,
    auth: Auth<'_>,
    group: &Created,
    name: &str,
    before: Option<&Created>,
) -> Result<Project, StepError> {
    let full = format!("{}/{name}", group.path);
    let live = gl
        .get(&format!("projects/{}", encode(&full)), auth)
        .await
        .map_err(err("looking up the management project"))?;
    let (p, created) = match live {
        Some(p) => {
            let ours = ownership(intents, PROJECT_RECORD, &p, before, &full).await?;
            (p, ours)
        }
        None => {
            owned(intents, PROJECT_RECORD, None).await?;
            let (_, p) = calls
                .create(
                    gl,
                    intents,
                    Create {
                        record: PROJECT_RECORD,
                        about: json!({"path": full}),
                        path: "projects",
                        doing: "creating the management project",
                    },
                    auth,
                    |marker| {
                        json!({"name": name, "path": name, "namespace_id": group.id,
                               "default_branch": "main", "visibility": "private",
                               "description": description("Nautes tenant configuration", marker)})
                    },
                )
                .await?;
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

/// For teardown: the id of what is at `api_path` when it is ours (by the
/// records or the outputs of an earlier version), else `None`.
pub async fn ours_at(
    gl: &Gitlab,
    intents: &Intents,
    auth: Auth<'_>,
    record: &str,
    api_path: &str,
    before: Option<&Created>,
    path: &str,
) -> Result<Option<u64>, StepError> {
    let live = gl.get(api_path, auth).await.map_err(err("looking up what we made"))?;
    match live {
        Some(obj) if ownership(intents, record, &obj, before, path).await? => Ok(obj["id"].as_u64()),
        Some(_) => Ok(None),
        None => {
            owned(intents, record, None).await?;
            Ok(None)
        }
    }
}

/// "type base64" of an OpenSSH public key, without its comment.
pub(super) fn key_material(key: &str) -> String {
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

/// For teardown of a project that is not ours: our key's id on it, found by
/// its key material (the stored key pair is written before the key is
/// added, so a lost answer still leaves us knowing which key is ours).
pub async fn our_deploy_key(
    gl: &Gitlab,
    store: &CredentialStore,
    auth: Auth<'_>,
    project_id: u64,
) -> Result<Option<u64>, StepError> {
    let Some(stored) = store.get(DEPLOY_KEY).await? else {
        return Ok(None);
    };
    let wanted = key_material(field(&stored, DEPLOY_KEY, "public")?.expose());
    let keys = match gl.list(&format!("projects/{project_id}/deploy_keys"), auth).await {
        Ok(k) => k,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(err("listing deploy keys")(e)),
    };
    Ok(keys
        .iter()
        .find(|k| k["key"].as_str().map(key_material).as_deref() == Some(wanted.as_str()))
        .and_then(|k| k["id"].as_u64()))
}
