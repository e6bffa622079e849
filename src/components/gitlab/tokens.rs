//! The tokens we hold in GitLab. Each has an explicit expiry and is replaced
//! (new one stored first, old one revoked after) when it comes within the
//! renewal window, so no later run ever depends on a token about to lapse —
//! the official installer's one-day init token is exactly that trap.
//!
//! * our admin token, a personal access token of an administrator, made from
//!   the bootstrap credential (the inventory's token, or the root password
//!   of a GitLab we installed) and used for everything else;
//! * the base operator's read-only project access token on the management
//!   project.

use serde_json::{json, Value};
use time::{Date, Duration, Month, OffsetDateTime};

use super::credentials::{field, CredentialStore, Fields};
use super::{marked, Calls, Create};
use crate::drivers::gitlab::{encode, Auth, Gitlab, GitlabError};
use crate::engine::{Intents, StepError};
use crate::secret::Secret;

pub const ADMIN_TOKEN: &str = "admin-token";
pub const BASE_OPERATOR_TOKEN: &str = "base-operator-token";
const ADMIN_TOKEN_NAME: &str = "nautes-install";
const BASE_OPERATOR_TOKEN_NAME: &str = "nautes-base-operator";
/// GitLab's Reporter role: read access to the repository.
const REPORTER: u32 = 20;

#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    pub validity_days: i64,
    pub renew_days: i64,
}

/// How we first prove we are an administrator.
pub enum Bootstrap {
    Token(Secret),
    RootPassword(Secret),
}

/// Today in UTC; GitLab's token expiry is a date.
pub fn today() -> Date {
    OffsetDateTime::now_utc().date()
}

pub fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.get(..10)?.split('-');
    let year = parts.next()?.parse().ok()?;
    let month = Month::try_from(parts.next()?.parse::<u8>().ok()?).ok()?;
    let day = parts.next()?.parse().ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

fn expiry(lifetime: Lifetime) -> String {
    (today() + Duration::days(lifetime.validity_days)).to_string()
}

/// Still usable for a whole renewal window? A token without expiry never needs renewing.
pub(super) fn fresh(expires_at: &Value, lifetime: Lifetime) -> bool {
    match expires_at.as_str().and_then(parse_date) {
        Some(d) => d - today() > Duration::days(lifetime.renew_days),
        None => expires_at.is_null(),
    }
}

fn failed(what: &str, e: GitlabError) -> StepError {
    StepError::new(format!("{what}: {e}"))
}

pub struct AdminToken {
    pub token: Secret,
    pub id: u64,
    pub expires_at: String,
    pub user_id: u64,
}

fn describe(token: Secret, info: &Value) -> AdminToken {
    AdminToken {
        token,
        id: info["id"].as_u64().unwrap_or_default(),
        expires_at: info["expires_at"].as_str().unwrap_or_default().to_string(),
        user_id: info["user_id"].as_u64().unwrap_or_default(),
    }
}

/// Which of our tokens a record is about, and where GitLab keeps it.
#[derive(Clone, Copy)]
pub enum Held {
    /// Our admin token, a personal access token of this user.
    Admin { user_id: u64 },
    /// The base operator's token on this project.
    BaseOperator { project_id: u64 },
}

impl Held {
    pub fn record(self) -> &'static str {
        match self {
            Held::Admin { .. } => ADMIN_TOKEN,
            Held::BaseOperator { .. } => BASE_OPERATOR_TOKEN,
        }
    }

    fn about(self) -> Value {
        match self {
            Held::Admin { user_id } => json!({"userId": user_id}),
            Held::BaseOperator { project_id } => json!({"projectId": project_id}),
        }
    }

    /// The same kind of token, for the user or project a record names.
    fn as_recorded(self, about: &Value) -> Held {
        match self {
            Held::Admin { user_id } => Held::Admin {
                user_id: about["userId"].as_u64().unwrap_or(user_id),
            },
            Held::BaseOperator { project_id } => Held::BaseOperator {
                project_id: about["projectId"].as_u64().unwrap_or(project_id),
            },
        }
    }

    fn item(self, id: u64) -> String {
        match self {
            Held::Admin { .. } => format!("personal_access_tokens/{id}"),
            Held::BaseOperator { project_id } => format!("projects/{project_id}/access_tokens/{id}"),
        }
    }

    /// The live tokens carrying `name`.
    async fn named(self, gl: &Gitlab, auth: Auth<'_>, name: &str) -> Result<Vec<u64>, GitlabError> {
        let list = match self {
            Held::Admin { user_id } => format!(
                "personal_access_tokens?user_id={user_id}&state=active&search={}",
                encode(name)
            ),
            Held::BaseOperator { project_id } => format!("projects/{project_id}/access_tokens"),
        };
        let tokens = match gl.list(&list, auth).await {
            Ok(t) => t,
            // The project (and every token of its bots) is gone.
            Err(e) if e.status() == Some(404) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(tokens
            .iter()
            .filter(|t| t["name"].as_str() == Some(name) && t["active"] != false && t["revoked"] != true)
            .filter_map(|t| t["id"].as_u64())
            .collect())
    }

    async fn active(self, gl: &Gitlab, auth: Auth<'_>, id: u64) -> Result<bool, GitlabError> {
        Ok(gl
            .get(&self.item(id), auth)
            .await?
            .is_some_and(|t| t["active"] == true && t["revoked"] != true))
    }
}

/// Make the records of `held` match the one token we keep: an unanswered
/// create is looked up by the marked name it carries, and every token the
/// records name other than `keep` is revoked — its value was lost, or it
/// was replaced — so no crash leaves a live token of ours behind. Tokens
/// the records do not name (the user's, whatever their name) are left.
pub async fn tidy(
    gl: &Gitlab,
    calls: &mut Calls,
    intents: &Intents,
    auth: Auth<'_>,
    held: Held,
    keep: Option<u64>,
) -> Result<(), StepError> {
    let record = held.record();
    let base = match held {
        Held::Admin { .. } => ADMIN_TOKEN_NAME,
        Held::BaseOperator { .. } => BASE_OPERATOR_TOKEN_NAME,
    };
    for i in intents.list(record) {
        let at = held.as_recorded(&i.about);
        let ids = match i.made_id() {
            Some(id) => {
                if Some(id) != keep
                    && !at
                        .active(gl, auth, id)
                        .await
                        .map_err(|e| failed("checking a token we made", e))?
                {
                    Vec::new()
                } else {
                    vec![id]
                }
            }
            None => at
                .named(gl, auth, &marked(base, &i.marker))
                .await
                .map_err(|e| failed("looking for a token an interrupted run made", e))?,
        };
        let mut kept = false;
        for id in ids {
            if Some(id) == keep {
                kept = true;
                if i.made.is_none() {
                    intents.settle(record, &i.marker, json!(id)).await?;
                }
                continue;
            }
            calls
                .delete(gl, &at.item(id), auth)
                .await
                .map_err(|e| failed("revoking a token we no longer hold", e))?;
            if i.made.is_none() {
                calls.note(format!(
                    "revoked GitLab token {id} ({base}): an interrupted run made it and its value was never stored"
                ));
            }
        }
        if !kept {
            intents.forget(record, &i.marker).await?;
        }
    }
    if let Some(id) = keep {
        if !intents.list(record).iter().any(|i| i.made_id() == Some(id)) {
            // Made before these records existed: ours, as the store holds it.
            intents.adopt(record, json!(id), held.about()).await?;
        }
    }
    Ok(())
}

/// Our admin token: the stored one while it is fresh, a replacement when it
/// nears expiry, a new one from the bootstrap credential when it is gone.
pub async fn admin_token(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    intents: &Intents,
    lifetime: Lifetime,
    bootstrap: impl FnOnce() -> Result<Bootstrap, StepError>,
) -> Result<AdminToken, StepError> {
    if let Some(stored) = store.get(ADMIN_TOKEN).await? {
        let token = field(&stored, ADMIN_TOKEN, "token")?.clone();
        match gl.get("personal_access_tokens/self", Auth::Token(&token)).await {
            Ok(Some(info)) if info["active"] == true && fresh(&info["expires_at"], lifetime) => {
                let current = describe(token, &info);
                let held = Held::Admin {
                    user_id: current.user_id,
                };
                tidy(gl, calls, intents, Auth::Token(&current.token), held, Some(current.id)).await?;
                return Ok(current);
            }
            Ok(Some(info)) if info["active"] == true => {
                calls.note(format!(
                    "our GitLab admin token expires on {}: replacing it",
                    info["expires_at"].as_str().unwrap_or("?")
                ));
                let old = describe(token, &info);
                let held = Held::Admin { user_id: old.user_id };
                // The old one is recorded first: should we die after making
                // the new one, the next run still knows to revoke it.
                tidy(gl, calls, intents, Auth::Token(&old.token), held, Some(old.id)).await?;
                let new = create_admin_token(
                    gl,
                    calls,
                    store,
                    intents,
                    Auth::Token(&old.token),
                    old.user_id,
                    lifetime,
                )
                .await?;
                tidy(gl, calls, intents, Auth::Token(&new.token), held, Some(new.id)).await?;
                return Ok(new);
            }
            Ok(_) | Err(GitlabError::Status { status: 401, .. }) => {
                calls.note(
                    "the stored GitLab admin token no longer works: making a new one from the bootstrap credential",
                );
            }
            Err(e) => return Err(failed("checking our GitLab admin token", e)),
        }
    }
    let bootstrap = bootstrap()?;
    let oauth;
    let auth = match &bootstrap {
        Bootstrap::Token(t) => Auth::Token(t),
        Bootstrap::RootPassword(password) => {
            oauth = gl
                .password_grant("root", password)
                .await
                .map_err(|e| failed("signing in to GitLab as root with the generated password", e))?;
            Auth::Bearer(&oauth)
        }
    };
    let user = gl
        .get("user", auth)
        .await
        .map_err(|e| failed("the GitLab bootstrap credential does not work", e))?
        .unwrap_or_default();
    if user["is_admin"] != true {
        return Err(StepError::new(format!(
            "the GitLab bootstrap credential belongs to `{}`, who is not an administrator; \
             Nautes needs an admin token (hint: create one under Admin Area as an administrator, scope `api`)",
            user["username"].as_str().unwrap_or("?")
        )));
    }
    let user_id = user["id"].as_u64().unwrap_or_default();
    // We hold no working token: every one the records name goes.
    tidy(gl, calls, intents, auth, Held::Admin { user_id }, None).await?;
    create_admin_token(gl, calls, store, intents, auth, user_id, lifetime).await
}

async fn create_admin_token(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    intents: &Intents,
    auth: Auth<'_>,
    user_id: u64,
    lifetime: Lifetime,
) -> Result<AdminToken, StepError> {
    let path = format!("users/{user_id}/personal_access_tokens");
    let (_, created) = calls
        .create(
            gl,
            intents,
            Create {
                record: ADMIN_TOKEN,
                about: Held::Admin { user_id }.about(),
                path: &path,
                doing: "creating our GitLab admin token",
            },
            auth,
            |marker| json!({"name": marked(ADMIN_TOKEN_NAME, marker), "scopes": ["api"], "expires_at": expiry(lifetime)}),
        )
        .await?;
    let token = Secret::new(created["token"].as_str().unwrap_or_default());
    if token.expose().is_empty() {
        return Err(StepError::new("GitLab created the admin token but did not return it"));
    }
    let fields: Fields = [
        ("token".to_string(), token.clone()),
        ("id".to_string(), Secret::new(created["id"].to_string())),
    ]
    .into();
    store.put(ADMIN_TOKEN, &fields).await?;
    Ok(describe(token, &created))
}

pub struct ProjectToken {
    pub id: u64,
    pub expires_at: String,
}

/// The base operator's read-only token on the management project.
pub async fn base_operator_token(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    intents: &Intents,
    admin: Auth<'_>,
    project_id: u64,
    lifetime: Lifetime,
) -> Result<ProjectToken, StepError> {
    let list_path = format!("projects/{project_id}/access_tokens");
    let live = gl
        .list(&list_path, admin)
        .await
        .map_err(|e| failed("listing the management project's access tokens", e))?;
    let stored = store.get(BASE_OPERATOR_TOKEN).await?;
    let stored_id = stored
        .as_ref()
        .and_then(|f| f.get("id"))
        .and_then(|id| id.expose().parse::<u64>().ok());
    let current = stored_id.and_then(|id| {
        live.iter()
            .find(|t| t["id"].as_u64() == Some(id) && t["active"] != false && t["revoked"] != true)
    });
    let held = Held::BaseOperator { project_id };
    let current_id = current.and_then(|t| t["id"].as_u64());
    tidy(gl, calls, intents, admin, held, current_id).await?;
    if let Some(t) = current {
        if fresh(&t["expires_at"], lifetime) {
            return Ok(ProjectToken {
                id: t["id"].as_u64().unwrap_or_default(),
                expires_at: t["expires_at"].as_str().unwrap_or_default().to_string(),
            });
        }
        calls.note("the base operator's GitLab token nears expiry: replacing it");
    }
    let (_, created) = calls
        .create(
            gl,
            intents,
            Create {
                record: BASE_OPERATOR_TOKEN,
                about: held.about(),
                path: &list_path,
                doing: "creating the base operator's token",
            },
            admin,
            |marker| {
                json!({
                    "name": marked(BASE_OPERATOR_TOKEN_NAME, marker),
                    "scopes": ["read_api", "read_repository"],
                    "access_level": REPORTER,
                    "expires_at": expiry(lifetime),
                })
            },
        )
        .await?;
    let fields: Fields = [
        (
            "token".to_string(),
            Secret::new(created["token"].as_str().unwrap_or_default()),
        ),
        ("id".to_string(), Secret::new(created["id"].to_string())),
    ]
    .into();
    store.put(BASE_OPERATOR_TOKEN, &fields).await?;
    // Revokes the replaced one, now that the new one is stored.
    tidy(gl, calls, intents, admin, held, created["id"].as_u64()).await?;
    Ok(ProjectToken {
        id: created["id"].as_u64().unwrap_or_default(),
        expires_at: created["expires_at"].as_str().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_and_freshness_uses_the_renewal_window() {
        assert_eq!(
            parse_date("2026-02-28"),
            Date::from_calendar_date(2026, Month::February, 28).ok()
        );
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("soon"), None);
        let lifetime = Lifetime {
            validity_days: 90,
            renew_days: 14,
        };
        let in_days = |n: i64| json!((today() + Duration::days(n)).to_string());
        assert!(fresh(&in_days(30), lifetime));
        assert!(!fresh(&in_days(14), lifetime));
        assert!(!fresh(&in_days(3), lifetime));
        assert!(
            fresh(&Value::Null, lifetime),
            "a token without expiry never needs renewing"
        );
    }
}
