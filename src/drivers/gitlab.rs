//! GitLab's REST API (v4): authenticated requests, pagination, GitLab's
//! error shapes turned into readable messages, and the OAuth password grant
//! a freshly installed GitLab's root password allows. TLS is verified
//! against the CA we are given (or the system roots). Tokens travel only in
//! headers; request bodies never reach an error message. Knows nothing of
//! Nautes.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::secret::Secret;

/// How a request proves who it is.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// A personal, project or group access token (`PRIVATE-TOKEN`).
    Token(&'a Secret),
    /// An OAuth access token (`Authorization: Bearer`).
    Bearer(&'a Secret),
}

#[derive(Debug, thiserror::Error)]
pub enum GitlabError {
    #[error("{method} {url}: {reason}")]
    Transport {
        method: Method,
        url: String,
        reason: String,
    },
    #[error("GitLab answered {status} to {method} {path}: {message}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
}

impl GitlabError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GitlabError::Status { status, .. } => Some(*status),
            GitlabError::Transport { .. } => None,
        }
    }
}

pub struct Gitlab {
    base: String,
    client: reqwest::Client,
}

/// Percent-encodes one path segment the way GitLab expects `:id` and
/// `:file_path` parameters (`group/project` becomes `group%2Fproject`).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GitLab reports errors as `{"message": "..."}`, `{"message": {"field":
/// ["problem"]}}` or `{"error": "...", "error_description": "..."}`.
fn error_text(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return body.chars().take(200).collect();
    };
    let describe = |m: &Value| match m {
        Value::String(s) => s.clone(),
        Value::Object(fields) => fields
            .iter()
            .map(|(field, problems)| {
                let problems = match problems {
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                    other => other.to_string(),
                };
                format!("{field} {problems}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    match (v.get("message"), v.get("error"), v.get("error_description")) {
        (Some(m), _, _) => describe(m),
        (None, Some(e), Some(d)) => format!("{}: {}", describe(e), describe(d)),
        (None, Some(e), None) => describe(e),
        _ => v.to_string(),
    }
}

impl Gitlab {
    /// `ca_pem`: the only CA trusted for this GitLab; `None` uses the system roots.
    pub fn new(url: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Gitlab, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| format!("the GitLab CA is not PEM: {e}"))?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Gitlab {
            base: url.trim_end_matches('/').to_string(),
            client,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// One request to `/api/v4/<path>`. Reads are retried on 5xx and
    /// transport errors (a GitLab that is still starting answers 502); writes
    /// are not, since GitLab has no idempotency keys.
    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, HeaderMap, String), GitlabError> {
        let url = format!("{}/api/v4/{path}", self.base);
        let attempts = if method == Method::GET { 4 } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last_try = attempt == attempts;
            let mut req = self.client.request(method.clone(), &url);
            req = match auth {
                Auth::Token(t) => req.header("PRIVATE-TOKEN", t.expose()),
                Auth::Bearer(t) => req.bearer_auth(t.expose()),
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                // The last answer, 5xx or not, goes back to the caller to judge.
                Ok(resp) if last_try || !resp.status().is_server_error() => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let text = resp.text().await.unwrap_or_default();
                    return Ok((status, headers, text));
                }
                Ok(_) => {}
                Err(e) if last_try => {
                    return Err(GitlabError::Transport {
                        method: method.clone(),
                        url: url.clone(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, HeaderMap, Value), GitlabError> {
        let (status, headers, text) = self.send(method.clone(), path, auth, body).await?;
        if !status.is_success() {
            return Err(GitlabError::Status {
                method,
                path: path.to_string(),
                status: status.as_u16(),
                message: error_text(&text),
            });
        }
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| GitlabError::Status {
                method,
                path: path.to_string(),
                status: status.as_u16(),
                message: format!("the answer is not JSON: {e}"),
            })?
        };
        Ok((status, headers, value))
    }

    /// A single object; `None` when GitLab says 404.
    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Result<Option<Value>, GitlabError> {
        match self.call(Method::GET, path, auth, None).await {
            Ok((_, _, v)) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a list, following `X-Next-Page` 100 at a time.
    pub async fn list(&self, path: &str, auth: Auth<'_>) -> Result<Vec<Value>, GitlabError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut page = String::from("1");
        loop {
            let (_, headers, v) = self
                .call(Method::GET, &format!("{path}{sep}per_page=100&page={page}"), auth, None)
                .await?;
            match v {
                Value::Array(a) => items.extend(a),
                other => {
                    return Err(GitlabError::Status {
                        method: Method::GET,
                        path: path.to_string(),
                        status: 200,
                        message: format!("expected a list, got {}", kind_of(&other)),
                    })
                }
            }
            match headers.get("x-next-page").and_then(|h| h.to_str().ok()) {
                Some(next) if !next.trim().is_empty() => page = next.trim().to_string(),
                _ => return Ok(items),
            }
        }
    }

    pub async fn post(&self, path: &str, auth: Auth<'_>, body: &Value) -> Result<Value, GitlabError> {
        Ok(self.call(Method::POST, path, auth, Some(body)).await?.2)
    }

    /// `false` when it was already gone.
    pub async fn delete(&self, path: &str, auth: Auth<'_>) -> Result<bool, GitlabError> {
        match self.call(Method::DELETE, path, auth, None).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// An OAuth access token for a user from their password (the resource
    /// owner password grant GitLab enables by default).
    pub async fn password_grant(&self, username: &str, password: &Secret) -> Result<Secret, GitlabError> {
        let url = format!("{}/oauth/token", self.base);
        let body = json!({"grant_type": "password", "username": username, "password": password.expose()});
        let resp = self
            .client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| GitlabError::Transport {
                method: Method::POST,
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(GitlabError::Status {
                method: Method::POST,
                path: "/oauth/token".into(),
                status: status.as_u16(),
                message: error_text(&text),
            });
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        v["access_token"]
            .as_str()
            .map(Secret::new)
            .ok_or_else(|| GitlabError::Status {
                method: Method::POST,
                path: "/oauth/token".into(),
                status: status.as_u16(),
                message: "no access_token in the answer".into(),
            })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_for_gitlab_ids() {
        assert_eq!(encode("nautes/management"), "nautes%2Fmanagement");
        assert_eq!(encode("dir/a b.yaml"), "dir%2Fa%20b.yaml");
        assert_eq!(encode("plain-name_1.x"), "plain-name_1.x");
    }

    #[test]
    fn gitlab_error_shapes_become_sentences() {
        assert_eq!(
            error_text(r#"{"message":"You are not allowed to push into this branch"}"#),
            "You are not allowed to push into this branch"
        );
        assert_eq!(
            error_text(r#"{"message":{"path":["has already been taken"]}}"#),
            "path has already been taken"
        );
        assert_eq!(
            error_text(r#"{"error":"insufficient_scope","error_description":"needs api"}"#),
            "insufficient_scope: needs api"
        );
        assert_eq!(error_text("<html>bad gateway</html>"), "<html>bad gateway</html>");
    }
}
