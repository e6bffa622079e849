//! Harbor's REST API (`/api/v2.0`, as Harbor v2.5 serves it): projects,
//! project robot accounts (whose secret Harbor shows once, in the answer to
//! the create), system configuration (authentication mode, OIDC) and the
//! admin password. HTTP Basic as a local user. Knows nothing of Nautes.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::rest::{encode, Auth, Body, Rest, RestError};
use crate::secret::Secret;

pub struct Harbor {
    rest: Rest,
}

/// A robot account as Harbor lists it (never with its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Robot {
    pub id: u64,
    /// The full name, `<prefix><project>+<name>` (prefix `robot$` by default).
    pub name: String,
    /// `(resource, action)` pairs of its one project permission.
    pub access: Vec<(String, String)>,
    pub disabled: bool,
}

/// A robot just made: the only time Harbor tells its secret.
pub struct CreatedRobot {
    pub id: u64,
    pub name: String,
    pub secret: Secret,
}

/// A project member as Harbor lists it: a user (`u`) or a group (`g`).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The membership's id in the project.
    pub id: u64,
    pub name: String,
    pub group: bool,
    pub role_id: u64,
}

/// Harbor's project roles (`common.Role*` in Harbor's source).
pub const ROLE_PROJECT_ADMIN: u64 = 1;
pub const ROLE_DEVELOPER: u64 = 2;
pub const ROLE_GUEST: u64 = 3;
/// A group Harbor's `oidc_auth` knows from the `groups` claim.
pub const OIDC_GROUP_TYPE: u64 = 3;

/// The configuration keys whose values are secrets: Harbor never returns
/// them, so whether they are set cannot be read back.
pub const SECRET_KEYS: [&str; 5] = [
    "oidc_client_secret",
    "ldap_search_password",
    "email_password",
    "uaa_client_secret",
    "http_authproxy_server_certificate",
];

impl Harbor {
    /// `url`: Harbor's address (`https://harbor.example`).
    pub fn new(url: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Harbor, String> {
        Harbor::new_at(url, ca_pem, timeout, None)
    }

    /// As `new`, reaching the URL's host at `address`.
    pub fn new_at(
        url: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        address: Option<std::net::SocketAddr>,
    ) -> Result<Harbor, String> {
        Ok(Harbor {
            rest: Rest::new_at(
                "Harbor",
                &format!("{}/api/v2.0", url.trim_end_matches('/')),
                ca_pem,
                timeout,
                address,
            )?,
        })
    }

    /// Whether these credentials log in; `Ok(false)` on 401.
    pub async fn can_log_in(&self, auth: Auth<'_>) -> Result<bool, RestError> {
        self.rest.accepts("users/current", auth).await
    }

    /// The id of the user these credentials log in as.
    pub async fn current_user_id(&self, auth: Auth<'_>) -> Result<u64, RestError> {
        let v = self
            .rest
            .call(Method::GET, "users/current", auth, Body::Empty, &[])
            .await?
            .json();
        Ok(v["user_id"].as_u64().unwrap_or(1))
    }

    pub async fn change_password(
        &self,
        auth: Auth<'_>,
        user_id: u64,
        old: &Secret,
        new: &Secret,
    ) -> Result<(), RestError> {
        let body = json!({"old_password": old.expose(), "new_password": new.expose()});
        self.rest
            .call(
                Method::PUT,
                &format!("users/{user_id}/password"),
                auth,
                Body::Json(&body),
                &[],
            )
            .await?;
        Ok(())
    }

    /// A project by name; `None` when there is none.
    pub async fn project(&self, auth: Auth<'_>, name: &str) -> Result<Option<Value>, RestError> {
        let path = format!("projects/{}", encode(name));
        let reply = self
            .rest
            .send(Method::GET, &path, auth, Body::Empty, &[("X-Is-Resource-Name", "true")])
            .await?;
        match reply.status {
            200 => Ok(Some(reply.json())),
            404 => Ok(None),
            _ => Err(self.rest.refused(Method::GET, &path, &reply)),
        }
    }

    /// Creates a private (or public) project without a storage limit.
    pub async fn create_project(&self, auth: Auth<'_>, name: &str, public: bool) -> Result<(), RestError> {
        let body = json!({
            "project_name": name,
            "metadata": {"public": public.to_string()},
            "storage_limit": -1,
        });
        self.rest
            .call(Method::POST, "projects", auth, Body::Json(&body), &[])
            .await?;
        Ok(())
    }

    pub async fn set_project_public(&self, auth: Auth<'_>, name: &str, public: bool) -> Result<(), RestError> {
        let body = json!({"metadata": {"public": public.to_string()}});
        self.rest
            .call(
                Method::PUT,
                &format!("projects/{}", encode(name)),
                auth,
                Body::Json(&body),
                &[("X-Is-Resource-Name", "true")],
            )
            .await?;
        Ok(())
    }

    /// `false` when it was already gone. Harbor refuses (412) to delete a
    /// project that still holds repositories.
    pub async fn delete_project(&self, auth: Auth<'_>, name: &str) -> Result<bool, RestError> {
        let path = format!("projects/{}", encode(name));
        let reply = self
            .rest
            .send(
                Method::DELETE,
                &path,
                auth,
                Body::Empty,
                &[("X-Is-Resource-Name", "true")],
            )
            .await?;
        match reply.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.rest.refused(Method::DELETE, &path, &reply)),
        }
    }

    /// The repositories of a project, by name within it (`app`, `team/app`).
    pub async fn repositories(&self, auth: Auth<'_>, project: &str) -> Result<Vec<String>, RestError> {
        let mut names = Vec::new();
        let mut page = 1;
        loop {
            let path = format!("projects/{}/repositories?page={page}&page_size=100", encode(project));
            let items = self.rest.call(Method::GET, &path, auth, Body::Empty, &[]).await?.json();
            let items = items.as_array().cloned().unwrap_or_default();
            let prefix = format!("{project}/");
            names.extend(items.iter().filter_map(|r| {
                r["name"]
                    .as_str()
                    .map(|n| n.strip_prefix(&prefix).unwrap_or(n).to_string())
            }));
            if items.len() < 100 {
                return Ok(names);
            }
            page += 1;
        }
    }

    /// Deletes a repository with all its artifacts; `false` when it was
    /// already gone. Harbor wants a name holding `/` encoded twice.
    pub async fn delete_repository(&self, auth: Auth<'_>, project: &str, name: &str) -> Result<bool, RestError> {
        let path = format!("projects/{}/repositories/{}", encode(project), encode(&encode(name)));
        let reply = self.rest.send(Method::DELETE, &path, auth, Body::Empty, &[]).await?;
        match reply.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.rest.refused(Method::DELETE, &path, &reply)),
        }
    }

    /// The robot accounts of a project (by its numeric id).
    pub async fn project_robots(&self, auth: Auth<'_>, project_id: u64) -> Result<Vec<Robot>, RestError> {
        let mut robots = Vec::new();
        let mut page = 1;
        loop {
            let path = format!(
                "robots?q={}&page={page}&page_size=100",
                encode(&format!("Level=project,ProjectID={project_id}"))
            );
            let items = self.rest.call(Method::GET, &path, auth, Body::Empty, &[]).await?.json();
            let items = items.as_array().cloned().unwrap_or_default();
            let n = items.len();
            robots.extend(items.iter().map(robot));
            if n < 100 {
                return Ok(robots);
            }
            page += 1;
        }
    }

    /// A robot of one project, never expiring, with these `(resource, action)`s.
    pub async fn create_project_robot(
        &self,
        auth: Auth<'_>,
        project: &str,
        name: &str,
        access: &[(String, String)],
    ) -> Result<CreatedRobot, RestError> {
        let body = json!({
            "name": name,
            "description": "managed by nautes-install",
            "level": "project",
            "duration": -1,
            "disable": false,
            "permissions": [{
                "kind": "project",
                "namespace": project,
                "access": access.iter().map(|(r, a)| json!({"resource": r, "action": a})).collect::<Vec<_>>(),
            }],
        });
        let v = self
            .rest
            .call(Method::POST, "robots", auth, Body::Json(&body), &[])
            .await?
            .json();
        let secret = v["secret"].as_str().map(Secret::new).ok_or_else(|| RestError::Status {
            product: "Harbor",
            method: Method::POST,
            path: "robots".into(),
            status: 201,
            message: "the answer carries no secret".into(),
        })?;
        Ok(CreatedRobot {
            id: v["id"].as_u64().unwrap_or_default(),
            name: v["name"].as_str().unwrap_or_default().to_string(),
            secret,
        })
    }

    /// `false` when it was already gone.
    pub async fn delete_robot(&self, auth: Auth<'_>, id: u64) -> Result<bool, RestError> {
        let path = format!("robots/{id}");
        let reply = self.rest.send(Method::DELETE, &path, auth, Body::Empty, &[]).await?;
        match reply.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.rest.refused(Method::DELETE, &path, &reply)),
        }
    }

    /// The members of a project (by name), users and groups.
    pub async fn project_members(&self, auth: Auth<'_>, project: &str) -> Result<Vec<Member>, RestError> {
        let mut members = Vec::new();
        let mut page = 1;
        loop {
            let path = format!("projects/{}/members?page={page}&page_size=100", encode(project));
            let items = self
                .rest
                .call(Method::GET, &path, auth, Body::Empty, &[("X-Is-Resource-Name", "true")])
                .await?
                .json();
            let items = items.as_array().cloned().unwrap_or_default();
            let n = items.len();
            members.extend(items.iter().map(|m| Member {
                id: m["id"].as_u64().unwrap_or_default(),
                name: m["entity_name"].as_str().unwrap_or_default().to_string(),
                group: m["entity_type"] == "g",
                role_id: m["role_id"].as_u64().unwrap_or_default(),
            }));
            if n < 100 {
                return Ok(members);
            }
            page += 1;
        }
    }

    /// Makes an OIDC group (by the name Dex puts in `groups`) a member of a
    /// project with a role. Harbor onboards the group on the way, which it
    /// does only in `oidc_auth` mode.
    pub async fn add_group_member(
        &self,
        auth: Auth<'_>,
        project: &str,
        group: &str,
        role_id: u64,
    ) -> Result<(), RestError> {
        let body = json!({"role_id": role_id, "member_group": {"group_name": group, "group_type": OIDC_GROUP_TYPE}});
        self.rest
            .call(
                Method::POST,
                &format!("projects/{}/members", encode(project)),
                auth,
                Body::Json(&body),
                &[("X-Is-Resource-Name", "true")],
            )
            .await?;
        Ok(())
    }

    pub async fn set_member_role(&self, auth: Auth<'_>, project: &str, id: u64, role_id: u64) -> Result<(), RestError> {
        self.rest
            .call(
                Method::PUT,
                &format!("projects/{}/members/{id}", encode(project)),
                auth,
                Body::Json(&json!({"role_id": role_id})),
                &[("X-Is-Resource-Name", "true")],
            )
            .await?;
        Ok(())
    }

    pub async fn delete_member(&self, auth: Auth<'_>, project: &str, id: u64) -> Result<(), RestError> {
        self.rest
            .call(
                Method::DELETE,
                &format!("projects/{}/members/{id}", encode(project)),
                auth,
                Body::Empty,
                &[("X-Is-Resource-Name", "true")],
            )
            .await?;
        Ok(())
    }

    /// The system configuration: key -> `{"value", "editable"}` (secret
    /// keys left out, as Harbor does).
    pub async fn configurations(&self, auth: Auth<'_>) -> Result<Value, RestError> {
        Ok(self
            .rest
            .call(Method::GET, "configurations", auth, Body::Empty, &[])
            .await?
            .json())
    }

    /// Writes the given keys (a subset is fine).
    pub async fn set_configurations(&self, auth: Auth<'_>, values: &Value) -> Result<(), RestError> {
        self.rest
            .call(Method::PUT, "configurations", auth, Body::Json(values), &[])
            .await?;
        Ok(())
    }
}

fn robot(v: &Value) -> Robot {
    let access = v["permissions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["access"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["resource"].as_str().unwrap_or_default().to_string(),
                a["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Robot {
        id: v["id"].as_u64().unwrap_or_default(),
        name: v["name"].as_str().unwrap_or_default().to_string(),
        access,
        disabled: v["disable"].as_bool().unwrap_or(false),
    }
}
