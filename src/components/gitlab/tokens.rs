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
use super::Calls;
use crate::drivers::gitlab::{Auth, Gitlab, GitlabError};
use crate::engine::StepError;
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
fn fresh(expires_at: &Value, lifetime: Lifetime) -> bool {
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

/// Our admin token: the stored one while it is fresh, a replacement when it
/// nears expiry, a new one from the bootstrap credential when it is gone.
pub async fn admin_token(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    lifetime: Lifetime,
    bootstrap: impl FnOnce() -> Result<Bootstrap, StepError>,
) -> Result<AdminToken, StepError> {
    if let Some(stored) = store.get(ADMIN_TOKEN).await? {
        let token = field(&stored, ADMIN_TOKEN, "token")?.clone();
        match gl.get("personal_access_tokens/self", Auth::Token(&token)).await {
            Ok(Some(info)) if info["active"] == true && fresh(&info["expires_at"], lifetime) => {
                return Ok(describe(token, &info));
            }
            Ok(Some(info)) if info["active"] == true => {
                calls.note(format!(
                    "our GitLab admin token expires on {}: replacing it",
                    info["expires_at"].as_str().unwrap_or("?")
                ));
                let old = describe(token, &info);
                let new = create_admin_token(gl, calls, store, Auth::Token(&old.token), old.user_id, lifetime).await?;
                calls
                    .delete(
                        gl,
                        &format!("personal_access_tokens/{}", old.id),
                        Auth::Token(&new.token),
                    )
                    .await
                    .map_err(|e| failed("revoking the replaced admin token", e))?;
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
    create_admin_token(gl, calls, store, auth, user_id, lifetime).await
}

async fn create_admin_token(
    gl: &Gitlab,
    calls: &mut Calls,
    store: &CredentialStore,
    auth: Auth<'_>,
    user_id: u64,
    lifetime: Lifetime,
) -> Result<AdminToken, StepError> {
    let created = calls
        .post(
            gl,
            &format!("users/{user_id}/personal_access_tokens"),
            auth,
            &json!({"name": ADMIN_TOKEN_NAME, "scopes": ["api"], "expires_at": expiry(lifetime)}),
        )
        .await
        .map_err(|e| failed("creating our GitLab admin token", e))?;
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
    if let Some(t) = current {
        if fresh(&t["expires_at"], lifetime) {
            return Ok(ProjectToken {
                id: t["id"].as_u64().unwrap_or_default(),
                expires_at: t["expires_at"].as_str().unwrap_or_default().to_string(),
            });
        }
        calls.note("the base operator's GitLab token nears expiry: replacing it");
    }
    let created = calls
        .post(
            gl,
            &list_path,
            admin,
            &json!({
                "name": BASE_OPERATOR_TOKEN_NAME,
                "scopes": ["read_api", "read_repository"],
                "access_level": REPORTER,
                "expires_at": expiry(lifetime),
            }),
        )
        .await
        .map_err(|e| failed("creating the base operator's token", e))?;
    let fields: Fields = [
        (
            "token".to_string(),
            Secret::new(created["token"].as_str().unwrap_or_default()),
        ),
        ("id".to_string(), Secret::new(created["id"].to_string())),
    ]
    .into();
    store.put(BASE_OPERATOR_TOKEN, &fields).await?;
    if let Some(old) = current {
        calls
            .delete(gl, &format!("{list_path}/{}", old["id"]), admin)
            .await
            .map_err(|e| failed("revoking the base operator's replaced token", e))?;
    }
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
