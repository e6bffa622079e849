//! Nexus Repository Manager 3's REST API (`/service/rest/v1`, as 3.39
//! serves it): the admin password, anonymous access, hosted and proxy
//! repositories, roles and local users. HTTP Basic. Knows nothing of Nautes.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::rest::{encode, Auth, Body, Rest, RestError};
use crate::secret::Secret;

pub struct Nexus {
    rest: Rest,
}

impl Nexus {
    /// `url`: Nexus' address (`https://nexus.example`).
    pub fn new(url: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Nexus, String> {
        Nexus::new_at(url, ca_pem, timeout, None)
    }

    /// As `new`, reaching the URL's host at `address`.
    pub fn new_at(
        url: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        address: Option<std::net::SocketAddr>,
    ) -> Result<Nexus, String> {
        Ok(Nexus {
            rest: Rest::new_at(
                "Nexus",
                &format!("{}/service/rest/v1", url.trim_end_matches('/')),
                ca_pem,
                timeout,
                address,
            )?,
        })
    }

    /// Whether these credentials log in (`GET /status/check` needs a user
    /// with nx-metrics-all; admin has it); `Ok(false)` on 401.
    pub async fn can_log_in(&self, auth: Auth<'_>) -> Result<bool, RestError> {
        self.rest.accepts("status/check", auth).await
    }

    pub async fn change_password(&self, auth: Auth<'_>, user: &str, new: &Secret) -> Result<(), RestError> {
        self.rest
            .call(
                Method::PUT,
                &format!("security/users/{}/change-password", encode(user)),
                auth,
                Body::Text(new),
                &[],
            )
            .await?;
        Ok(())
    }

    /// `{"enabled", "userId", "realmName"}`.
    pub async fn anonymous(&self, auth: Auth<'_>) -> Result<Value, RestError> {
        Ok(self
            .rest
            .call(Method::GET, "security/anonymous", auth, Body::Empty, &[])
            .await?
            .json())
    }

    pub async fn set_anonymous(&self, auth: Auth<'_>, settings: &Value) -> Result<(), RestError> {
        self.rest
            .call(Method::PUT, "security/anonymous", auth, Body::Json(settings), &[])
            .await?;
        Ok(())
    }

    /// Every repository: `{"name", "format", "type", "url", ...}`.
    pub async fn repositories(&self, auth: Auth<'_>) -> Result<Vec<Value>, RestError> {
        Ok(self
            .rest
            .call(Method::GET, "repositories", auth, Body::Empty, &[])
            .await?
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// One repository's settings; the path names its format
    /// (`maven`, `npm`, `pypi`, `docker`) and type (`hosted`, `proxy`).
    pub async fn repository(
        &self,
        auth: Auth<'_>,
        format: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Value>, RestError> {
        self.rest
            .get(&format!("repositories/{format}/{kind}/{}", encode(name)), auth)
            .await
    }

    pub async fn create_repository(
        &self,
        auth: Auth<'_>,
        format: &str,
        kind: &str,
        settings: &Value,
    ) -> Result<(), RestError> {
        self.rest
            .call(
                Method::POST,
                &format!("repositories/{format}/{kind}"),
                auth,
                Body::Json(settings),
                &[],
            )
            .await?;
        Ok(())
    }

    pub async fn update_repository(
        &self,
        auth: Auth<'_>,
        format: &str,
        kind: &str,
        name: &str,
        settings: &Value,
    ) -> Result<(), RestError> {
        self.rest
            .call(
                Method::PUT,
                &format!("repositories/{format}/{kind}/{}", encode(name)),
                auth,
                Body::Json(settings),
                &[],
            )
            .await?;
        Ok(())
    }

    /// The components a repository holds, as `group:name:version`, at most
    /// `limit` of them (Nexus pages them with a continuation token), and
    /// whether there are more; empty when the repository is gone.
    pub async fn components(
        &self,
        auth: Auth<'_>,
        repository: &str,
        limit: usize,
    ) -> Result<(Vec<String>, bool), RestError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("components?repository={}", encode(repository));
            if let Some(t) = &token {
                path.push_str(&format!("&continuationToken={}", encode(t)));
            }
            let reply = self.rest.send(Method::GET, &path, auth, Body::Empty, &[]).await?;
            let page = match reply.status {
                200 => reply.json(),
                404 => return Ok((names, false)),
                _ => return Err(self.rest.refused(Method::GET, &path, &reply)),
            };
            for c in page["items"].as_array().into_iter().flatten() {
                let part = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                names.push(format!("{}:{}:{}", part("group"), part("name"), part("version")));
            }
            token = page["continuationToken"].as_str().map(str::to_string);
            if token.is_none() {
                return Ok((names, false));
            }
            if names.len() >= limit {
                return Ok((names, true));
            }
        }
    }

    /// `false` when it was already gone.
    pub async fn delete_repository(&self, auth: Auth<'_>, name: &str) -> Result<bool, RestError> {
        self.delete(auth, &format!("repositories/{}", encode(name))).await
    }

    pub async fn role(&self, auth: Auth<'_>, id: &str) -> Result<Option<Value>, RestError> {
        self.rest.get(&format!("security/roles/{}", encode(id)), auth).await
    }

    pub async fn create_role(&self, auth: Auth<'_>, role: &Value) -> Result<(), RestError> {
        self.rest
            .call(Method::POST, "security/roles", auth, Body::Json(role), &[])
            .await?;
        Ok(())
    }

    pub async fn update_role(&self, auth: Auth<'_>, id: &str, role: &Value) -> Result<(), RestError> {
        self.rest
            .call(
                Method::PUT,
                &format!("security/roles/{}", encode(id)),
                auth,
                Body::Json(role),
                &[],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_role(&self, auth: Auth<'_>, id: &str) -> Result<bool, RestError> {
        self.delete(auth, &format!("security/roles/{}", encode(id))).await
    }

    /// A local user by exact id (the API's `userId` filter is a prefix match).
    pub async fn user(&self, auth: Auth<'_>, id: &str) -> Result<Option<Value>, RestError> {
        let users = self
            .rest
            .call(
                Method::GET,
                &format!("security/users?userId={}&source=default", encode(id)),
                auth,
                Body::Empty,
                &[],
            )
            .await?
            .json();
        Ok(users
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["userId"].as_str() == Some(id))
            .cloned())
    }

    /// `user` holds the password; it is sent once and never read back.
    pub async fn create_user(&self, auth: Auth<'_>, user: &Value) -> Result<(), RestError> {
        self.rest
            .call(Method::POST, "security/users", auth, Body::Json(user), &[])
            .await?;
        Ok(())
    }

    pub async fn update_user(&self, auth: Auth<'_>, id: &str, user: &Value) -> Result<(), RestError> {
        self.rest
            .call(
                Method::PUT,
                &format!("security/users/{}", encode(id)),
                auth,
                Body::Json(user),
                &[],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_user(&self, auth: Auth<'_>, id: &str) -> Result<bool, RestError> {
        self.delete(auth, &format!("security/users/{}", encode(id))).await
    }

    async fn delete(&self, auth: Auth<'_>, path: &str) -> Result<bool, RestError> {
        let reply = self.rest.send(Method::DELETE, path, auth, Body::Empty, &[]).await?;
        match reply.status {
            200 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(self.rest.refused(Method::DELETE, path, &reply)),
        }
    }
}
