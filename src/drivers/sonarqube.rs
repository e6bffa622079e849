//! SonarQube's web services (`/api`, as 9.x serves them): the admin
//! password, local users, user tokens (whose value SonarQube shows once, in
//! the answer to `generate`) and settings. Writes are form-encoded POSTs,
//! as SonarQube requires. HTTP Basic. Knows nothing of Nautes.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::rest::{encode, Auth, Body, Rest, RestError};
use crate::secret::Secret;

pub struct Sonarqube {
    rest: Rest,
}

/// Where a group's permissions are: a permission template (by name), which
/// projects created with a matching key start with, or one project (by key).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Template(&'a str),
    Project(&'a str),
}

fn plain(v: &str) -> Secret {
    Secret::new(v)
}

impl Sonarqube {
    /// `url`: SonarQube's address (`https://sonarqube.example`).
    pub fn new(url: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Sonarqube, String> {
        Sonarqube::new_at(url, ca_pem, timeout, None)
    }

    /// As `new`, reaching the URL's host at `address`.
    pub fn new_at(
        url: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        address: Option<std::net::SocketAddr>,
    ) -> Result<Sonarqube, String> {
        Ok(Sonarqube {
            rest: Rest::new_at(
                "SonarQube",
                &format!("{}/api", url.trim_end_matches('/')),
                ca_pem,
                timeout,
                address,
            )?,
        })
    }

    /// `UP`, `STARTING`, `DB_MIGRATION_NEEDED`, ... (no credentials needed).
    pub async fn status(&self) -> Result<String, RestError> {
        let v = self
            .rest
            .get("system/status", Auth::Anonymous)
            .await?
            .unwrap_or_default();
        Ok(v["status"].as_str().unwrap_or_default().to_string())
    }

    /// Whether these credentials are valid (SonarQube answers 200 either way).
    pub async fn can_log_in(&self, auth: Auth<'_>) -> Result<bool, RestError> {
        let v = self
            .rest
            .get("authentication/validate", auth)
            .await?
            .unwrap_or_default();
        Ok(v["valid"] == true)
    }

    pub async fn change_password(
        &self,
        auth: Auth<'_>,
        login: &str,
        previous: &Secret,
        new: &Secret,
    ) -> Result<(), RestError> {
        let form = [
            ("login", plain(login)),
            ("previousPassword", previous.clone()),
            ("password", new.clone()),
        ];
        self.post(auth, "users/change_password", &form).await
    }

    /// An active local or external user by exact login.
    pub async fn user(&self, auth: Auth<'_>, login: &str) -> Result<Option<Value>, RestError> {
        let v = self
            .rest
            .get(&format!("users/search?q={}&ps=500", encode(login)), auth)
            .await?
            .unwrap_or_default();
        Ok(v["users"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["login"].as_str() == Some(login))
            .cloned())
    }

    /// A local user; creating a deactivated login reactivates it.
    pub async fn create_user(
        &self,
        auth: Auth<'_>,
        login: &str,
        name: &str,
        password: &Secret,
    ) -> Result<(), RestError> {
        let form = [
            ("login", plain(login)),
            ("name", plain(name)),
            ("password", password.clone()),
            ("local", plain("true")),
        ];
        self.post(auth, "users/create", &form).await
    }

    pub async fn deactivate_user(&self, auth: Auth<'_>, login: &str) -> Result<(), RestError> {
        self.post(auth, "users/deactivate", &[("login", plain(login))]).await
    }

    /// The names of a user's tokens (their values are never listed).
    pub async fn token_names(&self, auth: Auth<'_>, login: &str) -> Result<Vec<String>, RestError> {
        let v = self
            .rest
            .get(&format!("user_tokens/search?login={}", encode(login)), auth)
            .await?
            .unwrap_or_default();
        Ok(v["userTokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect())
    }

    /// A new token of `login` named `name`: its value, told this once.
    pub async fn generate_token(&self, auth: Auth<'_>, login: &str, name: &str) -> Result<Secret, RestError> {
        let form = [("login", plain(login)), ("name", plain(name))];
        let reply = self
            .rest
            .call(Method::POST, "user_tokens/generate", auth, Body::Form(&form), &[])
            .await?;
        reply.json()["token"]
            .as_str()
            .map(Secret::new)
            .ok_or_else(|| RestError::Status {
                product: "SonarQube",
                method: Method::POST,
                path: "user_tokens/generate".into(),
                status: reply.status,
                message: "the answer carries no token".into(),
            })
    }

    /// Revoking a token that is not there is not an error (SonarQube says 204).
    pub async fn revoke_token(&self, auth: Auth<'_>, login: &str, name: &str) -> Result<(), RestError> {
        self.post(
            auth,
            "user_tokens/revoke",
            &[("login", plain(login)), ("name", plain(name))],
        )
        .await
    }

    /// The values of these settings that are set (inherited defaults
    /// included); secured ones are only named in `setSecuredSettings`.
    pub async fn settings(&self, auth: Auth<'_>, keys: &[&str]) -> Result<Value, RestError> {
        Ok(self
            .rest
            .get(&format!("settings/values?keys={}", encode(&keys.join(","))), auth)
            .await?
            .unwrap_or_default())
    }

    pub async fn set_setting(&self, auth: Auth<'_>, key: &str, value: &Secret) -> Result<(), RestError> {
        self.post(auth, "settings/set", &[("key", plain(key)), ("value", value.clone())])
            .await
    }

    pub async fn reset_settings(&self, auth: Auth<'_>, keys: &[&str]) -> Result<(), RestError> {
        self.post(auth, "settings/reset", &[("keys", plain(&keys.join(",")))])
            .await
    }

    /// Whether a group of exactly this name exists.
    pub async fn group_exists(&self, auth: Auth<'_>, name: &str) -> Result<bool, RestError> {
        let v = self
            .rest
            .get(&format!("user_groups/search?q={}&ps=500", encode(name)), auth)
            .await?
            .unwrap_or_default();
        Ok(v["groups"].as_array().into_iter().flatten().any(|g| g["name"] == name))
    }

    pub async fn create_group(&self, auth: Auth<'_>, name: &str, description: &str) -> Result<(), RestError> {
        self.post(
            auth,
            "user_groups/create",
            &[("name", plain(name)), ("description", plain(description))],
        )
        .await
    }

    /// A permission template by exact name: `{id, name, projectKeyPattern, ...}`.
    pub async fn template(&self, auth: Auth<'_>, name: &str) -> Result<Option<Value>, RestError> {
        let v = self
            .rest
            .get(&format!("permissions/search_templates?q={}", encode(name)), auth)
            .await?
            .unwrap_or_default();
        Ok(v["permissionTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == name)
            .cloned())
    }

    pub async fn create_template(&self, auth: Auth<'_>, name: &str, key_pattern: &str) -> Result<(), RestError> {
        self.post(
            auth,
            "permissions/create_template",
            &[
                ("name", plain(name)),
                ("projectKeyPattern", plain(key_pattern)),
                ("description", plain("managed by nautes-install")),
            ],
        )
        .await
    }

    pub async fn set_template_pattern(&self, auth: Auth<'_>, id: &str, key_pattern: &str) -> Result<(), RestError> {
        self.post(
            auth,
            "permissions/update_template",
            &[("id", plain(id)), ("projectKeyPattern", plain(key_pattern))],
        )
        .await
    }

    pub async fn delete_template(&self, auth: Auth<'_>, name: &str) -> Result<(), RestError> {
        self.post(auth, "permissions/delete_template", &[("templateName", plain(name))])
            .await
    }

    /// The permissions `group` holds: on a template (`Scope::Template`) or
    /// a project (`Scope::Project`).
    pub async fn group_permissions(
        &self,
        auth: Auth<'_>,
        scope: Scope<'_>,
        group: &str,
    ) -> Result<Vec<String>, RestError> {
        let (path, key, value) = match scope {
            Scope::Template(t) => ("permissions/template_groups", "templateName", t),
            Scope::Project(p) => ("permissions/groups", "projectKey", p),
        };
        let v = self
            .rest
            .get(
                &format!("{path}?{key}={}&q={}&ps=100", encode(value), encode(group)),
                auth,
            )
            .await?
            .unwrap_or_default();
        Ok(v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["name"] == group)
            .flat_map(|g| g["permissions"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect())
    }

    /// Grants (`true`) or revokes a permission of `group`.
    pub async fn set_group_permission(
        &self,
        auth: Auth<'_>,
        scope: Scope<'_>,
        group: &str,
        permission: &str,
        grant: bool,
    ) -> Result<(), RestError> {
        let (path, key, value) = match (scope, grant) {
            (Scope::Template(t), true) => ("permissions/add_group_to_template", "templateName", t),
            (Scope::Template(t), false) => ("permissions/remove_group_from_template", "templateName", t),
            (Scope::Project(p), true) => ("permissions/add_group", "projectKey", p),
            (Scope::Project(p), false) => ("permissions/remove_group", "projectKey", p),
        };
        self.post(
            auth,
            path,
            &[
                (key, plain(value)),
                ("groupName", plain(group)),
                ("permission", plain(permission)),
            ],
        )
        .await
    }

    /// The projects whose key or name contains `q`: `(key, public)`.
    pub async fn projects(&self, auth: Auth<'_>, q: &str) -> Result<Vec<(String, bool)>, RestError> {
        let v = self
            .rest
            .get(&format!("projects/search?q={}&ps=500", encode(q)), auth)
            .await?
            .unwrap_or_default();
        Ok(v["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["key"].as_str()?.to_string(), c["visibility"] == "public")))
            .collect())
    }

    async fn post(&self, auth: Auth<'_>, path: &str, form: &[(&str, Secret)]) -> Result<(), RestError> {
        self.rest.call(Method::POST, path, auth, Body::Form(form), &[]).await?;
        Ok(())
    }
}
