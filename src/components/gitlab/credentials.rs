//! Where the credentials we create in GitLab (our admin token, the base
//! operator's token, the deploy key, Dex's OAuth secret) — and in Harbor,
//! Nexus and SonarQube — are kept between runs: in a folder of one of
//! Vault's KV v2 engines when Vault is part of the install — Nautes reads
//! them from there — otherwise in 0600 JSON files under a folder of
//! `<outputs>`. Never in the state file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::drivers::vault::Vault;
use crate::engine::StepError;
use crate::secret::{write_private, Secret};

/// A credential's fields; every value is treated as secret.
pub type Fields = BTreeMap<String, Secret>;

/// The KV v2 engine and folder the GitLab credentials live under.
pub const GITLAB_MOUNT: &str = "git";
pub const GITLAB_FOLDER: &str = "gitlab";

pub enum CredentialStore {
    Files(PathBuf),
    /// Under `<mount>/data/<folder>/`.
    Vault {
        vault: Vault,
        token: Secret,
        mount: &'static str,
        folder: &'static str,
    },
}

fn to_json(fields: &Fields) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.expose().to_string())))
            .collect(),
    )
}

fn from_json(v: &Value) -> Fields {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), Secret::new(s))))
        .collect()
}

impl CredentialStore {
    fn file(dir: &std::path::Path, name: &str) -> PathBuf {
        dir.join(format!("{}.json", name.replace('/', "-")))
    }

    /// Where `name` is kept, for the outputs and messages.
    pub fn location(&self, name: &str) -> String {
        match self {
            CredentialStore::Files(dir) => Self::file(dir, name).display().to_string(),
            CredentialStore::Vault {
                vault, mount, folder, ..
            } => {
                format!("{}/v1/{mount}/data/{folder}/{name}", vault.url())
            }
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<Fields>, StepError> {
        match self {
            CredentialStore::Files(dir) => {
                let path = Self::file(dir, name);
                match std::fs::read_to_string(&path) {
                    Ok(text) => serde_json::from_str::<Value>(&text)
                        .map(|v| Some(from_json(&v)))
                        .map_err(|e| StepError::new(format!("{} is not valid JSON: {e}", path.display()))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(StepError::new(format!("cannot read {}: {e}", path.display()))),
                }
            }
            CredentialStore::Vault {
                vault,
                token,
                mount,
                folder,
            } => {
                let v = vault
                    .read(&format!("{mount}/data/{folder}/{name}"), token)
                    .await
                    .map_err(StepError::new)?;
                Ok(v.map(|v| from_json(&v["data"]["data"])).filter(|f| !f.is_empty()))
            }
        }
    }

    /// Keeps `fields` under `name`; `false` when they were already there.
    pub async fn put(&self, name: &str, fields: &Fields) -> Result<bool, StepError> {
        if self.get(name).await?.as_ref() == Some(fields) {
            return Ok(false);
        }
        match self {
            CredentialStore::Files(dir) => {
                let path = Self::file(dir, name);
                let text = Secret::new(to_json(fields).to_string());
                write_private(&path, &text)
                    .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
            }
            CredentialStore::Vault {
                vault,
                token,
                mount,
                folder,
            } => {
                vault
                    .write(
                        &format!("{mount}/data/{folder}/{name}"),
                        token,
                        &json!({ "data": to_json(fields) }),
                    )
                    .await
                    .map_err(StepError::new)?;
            }
        }
        Ok(true)
    }

    pub async fn remove(&self, name: &str) -> Result<(), StepError> {
        match self {
            CredentialStore::Files(dir) => {
                let path = Self::file(dir, name);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(StepError::new(format!("cannot remove {}: {e}", path.display())))
                    }
                    _ => Ok(()),
                }
            }
            CredentialStore::Vault {
                vault,
                token,
                mount,
                folder,
            } => vault
                .delete(&format!("{mount}/metadata/{folder}/{name}"), token)
                .await
                .map_err(StepError::new),
        }
    }
}

/// One field of a stored credential, or an error naming where it should be.
pub fn field<'a>(fields: &'a Fields, name: &str, key: &str) -> Result<&'a Secret, StepError> {
    fields
        .get(key)
        .ok_or_else(|| StepError::new(format!("the stored GitLab credential `{name}` has no `{key}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_round_trip_private_and_report_unchanged_puts() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::Files(dir.path().join("gitlab"));
        assert!(store.get("admin-token").await.unwrap().is_none());
        let fields: Fields = [("token".to_string(), Secret::new("glpat-x"))].into();
        assert!(store.put("admin-token", &fields).await.unwrap());
        assert!(
            !store.put("admin-token", &fields).await.unwrap(),
            "same value written twice"
        );
        assert_eq!(store.get("admin-token").await.unwrap(), Some(fields));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("gitlab/admin-token.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        store.remove("admin-token").await.unwrap();
        store.remove("admin-token").await.unwrap();
        assert!(store.get("admin-token").await.unwrap().is_none());
    }
}
