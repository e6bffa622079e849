//! The tenant configuration repository, initialised from our templates
//! through GitLab's commits API. All changes of a run go into one commit,
//! and the commit is checked: GitLab must answer with it and the branch must
//! then point at it, so a rejected push is an error, never a silent skip.
//!
//! After the first commit the repository belongs to its users. A file is
//! updated from a newer template only while it still holds exactly what we
//! last wrote; a file someone edited is left alone and reported.

use std::collections::BTreeMap;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::Calls;
use crate::drivers::gitlab::{encode, Auth, Gitlab, GitlabError};
use crate::engine::StepError;

pub fn sha256_hex(text: &str) -> String {
    crate::util::hex(&Sha256::digest(text.as_bytes()))
}

pub struct Synced {
    /// path -> sha256 of what the repository holds that came from us.
    pub files: BTreeMap<String, String>,
    pub commit: Option<String>,
    /// Files someone changed, which we therefore left as they are.
    pub kept: Vec<String>,
}

/// What to do with one template file, given the repository's copy.
#[derive(Debug, PartialEq)]
enum Action {
    Create,
    Update,
    Keep,
    LeaveEdited,
}

fn decide(live_sha: Option<&str>, wanted_sha: &str, we_wrote: Option<&str>) -> Action {
    match live_sha {
        None => Action::Create,
        Some(live) if live == wanted_sha => Action::Keep,
        Some(live) if Some(live) == we_wrote => Action::Update,
        Some(_) => Action::LeaveEdited,
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn sync(
    gl: &Gitlab,
    calls: &mut Calls,
    auth: Auth<'_>,
    project_id: u64,
    project_path: &str,
    branch: &str,
    files: &BTreeMap<String, String>,
    written_before: &BTreeMap<String, String>,
) -> Result<Synced, StepError> {
    let mut actions = Vec::new();
    let mut recorded = BTreeMap::new();
    let mut kept = Vec::new();
    for (path, content) in files {
        let wanted = sha256_hex(content);
        let live = match gl
            .get(
                &format!(
                    "projects/{project_id}/repository/files/{}?ref={}",
                    encode(path),
                    encode(branch)
                ),
                auth,
            )
            .await
        {
            Ok(f) => f,
            // An empty repository has no branch yet: every file is new.
            Err(GitlabError::Status { status: 404, .. }) => None,
            Err(e) => return Err(StepError::new(format!("reading {path} in {project_path}: {e}"))),
        };
        let live_sha = live.as_ref().and_then(|f| f["content_sha256"].as_str());
        match decide(live_sha, &wanted, written_before.get(path).map(String::as_str)) {
            Action::Keep => {
                recorded.insert(path.clone(), wanted);
            }
            Action::LeaveEdited => {
                kept.push(path.clone());
                if let Some(previous) = written_before.get(path) {
                    recorded.insert(path.clone(), previous.clone());
                }
            }
            action => {
                let verb = if action == Action::Create { "create" } else { "update" };
                actions.push(json!({"action": verb, "file_path": path, "content": content}));
                recorded.insert(path.clone(), wanted);
            }
        }
    }
    if actions.is_empty() {
        return Ok(Synced {
            files: recorded,
            commit: None,
            kept,
        });
    }
    let count = actions.len();
    let commit = calls
        .post(
            gl,
            &format!("projects/{project_id}/repository/commits"),
            auth,
            &json!({
                "branch": branch,
                "commit_message": format!("nautes-install: tenant configuration ({count} files from the installer's templates)"),
                "actions": actions,
            }),
        )
        .await
        .map_err(|e| {
            StepError::new(format!(
                "GitLab refused our commit to {project_path} ({branch}): {e} \
                 (hint: the branch may be protected or a push rule rejected it; allow the installer's admin to push, then run again)"
            ))
        })?;
    let id = commit["id"].as_str().unwrap_or_default().to_string();
    let head = gl
        .get(
            &format!("projects/{project_id}/repository/branches/{}", encode(branch)),
            auth,
        )
        .await
        .map_err(|e| StepError::new(format!("checking {project_path} after our commit: {e}")))?;
    let head_id = head
        .as_ref()
        .and_then(|b| b["commit"]["id"].as_str())
        .unwrap_or_default();
    if id.is_empty() || head_id != id {
        return Err(StepError::new(format!(
            "our commit to {project_path} did not land: GitLab answered commit `{id}` but {branch} points at `{head_id}`"
        )));
    }
    Ok(Synced {
        files: recorded,
        commit: Some(id),
        kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_still_as_we_wrote_them_are_updated() {
        assert_eq!(decide(None, "new", None), Action::Create);
        assert_eq!(decide(Some("new"), "new", Some("old")), Action::Keep);
        assert_eq!(decide(Some("old"), "new", Some("old")), Action::Update);
        assert_eq!(decide(Some("users"), "new", Some("old")), Action::LeaveEdited);
        assert_eq!(decide(Some("theirs"), "new", None), Action::LeaveEdited);
    }
}
