//! Starts the GitLab API stand-in (tests/support/gitlab_standin.py) on a free
//! loopback port for one test, calls it, and drives its control endpoints.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::http::Call;

pub type Headers = BTreeMap<String, String>;

pub struct GitlabStandin {
    child: Child,
    pub port: u16,
    pub root_password: String,
    pub admin_token: Option<String>,
    _dir: tempfile::TempDir,
}

impl GitlabStandin {
    /// root with the default password and no personal access token yet.
    pub fn start() -> GitlabStandin {
        Self::launch("standin-root-password", None)
    }

    /// root with this password and, unless `admin_token` is empty, a PAT
    /// `bootstrap` [api, sudo] of root with that value.
    pub fn start_with(root_password: &str, admin_token: &str) -> GitlabStandin {
        Self::launch(root_password, Some(admin_token).filter(|t| !t.is_empty()))
    }

    fn launch(root_password: &str, admin_token: Option<&str>) -> GitlabStandin {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/gitlab_standin.py");
        let mut cmd = Command::new("python3");
        cmd.args([
            script,
            "--port-file",
            port_file.to_str().unwrap(),
            "--root-password",
            root_password,
        ]);
        if let Some(token) = admin_token {
            cmd.args(["--admin-token", token]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .expect("start the GitLab stand-in (python3)");
        let port = super::port_file::wait_for_port(&port_file, "GitLab stand-in");
        GitlabStandin {
            child,
            port,
            root_password: root_password.to_string(),
            admin_token: admin_token.map(str::to_string),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Any request: `path` includes the query; `body` is sent as is. The
    /// reply body is parsed as JSON, else returned as a JSON string.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Headers, Value) {
        let mut call = Call::new(method, format!("{}{path}", self.url()));
        for (name, value) in headers {
            call = call.header(name, *value);
        }
        if let Some(body) = body {
            // What urllib, which these tests used before, sent for a body
            // without a type: the stand-in reads form bodies by it.
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
                call = call.header("Content-Type", "application/x-www-form-urlencoded");
            }
            call = call.body(body);
        }
        let (status, headers, text) = call
            .exchange()
            .unwrap_or_else(|e| panic!("no reply from the stand-in for {method} {path}: {e}"));
        let parsed = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, parsed)
    }

    /// An API call with `PRIVATE-TOKEN: token` (if any) and a JSON body (if any).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        json_body: Option<&Value>,
    ) -> (u16, Headers, Value) {
        let mut headers = vec![];
        if let Some(t) = token {
            headers.push(("PRIVATE-TOKEN", t));
        }
        let body = json_body.map(Value::to_string);
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.request(method, path, &headers, body.as_deref())
    }

    /// Like `call`, with `Authorization: Bearer token` (PAT or OAuth token).
    pub fn call_bearer(
        &self,
        method: &str,
        path: &str,
        token: &str,
        json_body: Option<&Value>,
    ) -> (u16, Headers, Value) {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        let body = json_body.map(Value::to_string);
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.request(method, path, &headers, body.as_deref())
    }

    /// POST /oauth/token with the password grant (form-encoded, as curl sends it).
    pub fn oauth_password(&self, username: &str, password: &str) -> (u16, Value) {
        let form = format!(
            "grant_type=password&username={}&password={}",
            form_escape(username),
            form_escape(password)
        );
        let (status, _, body) = self.request(
            "POST",
            "/oauth/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&form),
        );
        (status, body)
    }

    /// An OAuth access token for root (acts as root with scope api for 7200 s).
    pub fn root_oauth_token(&self) -> String {
        let (status, body) = self.oauth_password("root", &self.root_password);
        assert_eq!(status, 200, "password grant failed: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// A control call (`/_standin/...`, no auth): status and JSON body.
    pub fn control(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, reply) = self.call(method, path, None, Some(body).filter(|_| method != "GET"));
        (status, reply)
    }

    fn control_ok(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.control("POST", path, &body);
        assert_eq!(status, 200, "stand-in control {path} failed: {reply}");
        reply
    }

    /// Every API request since the start or the last reset: method, path (as
    /// sent, percent-encoded), query, status, time.
    pub fn requests(&self) -> Vec<Value> {
        self.control("GET", "/_standin/requests", &Value::Null)
            .1
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// "METHOD /path" of the requests that may change something: not GET or
    /// HEAD, and not POST /oauth/token.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| !matches!(r["method"].as_str(), Some("GET") | Some("HEAD")))
            .filter(|r| !(r["method"] == "POST" && r["path"] == "/oauth/token"))
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    pub fn reset_log(&self) {
        self.control_ok("/_standin/reset-log", json!({}));
    }

    /// The whole store: users, tokens (with values, expiry, revoked), OAuth
    /// tokens, groups, projects (branches with file contents, deploy keys),
    /// deploy keys, applications (with scopes and secret), today.
    pub fn dump(&self) -> Value {
        self.control("GET", "/_standin/dump", &Value::Null).1
    }

    /// Make every push to `project` (full path) fail with 403, or stop that.
    pub fn reject_push(&self, project: &str, reject: bool) {
        self.control_ok("/_standin/reject-push", json!({"project": project, "reject": reject}));
    }

    /// Someone edits OAuth application `id` in the admin UI (application_id
    /// and secret stay).
    pub fn edit_application(&self, id: u64, callback_url: Option<&str>, scopes: Option<&str>, name: Option<&str>) {
        let mut body = json!({"id": id});
        for (key, value) in [("callback_url", callback_url), ("scopes", scopes), ("name", name)] {
            if let Some(v) = value {
                body[key] = json!(v);
            }
        }
        self.control_ok("/_standin/edit-application", body);
    }

    /// Set the expiry date (YYYY-MM-DD, or None for never) of token `id`.
    pub fn set_token_expiry(&self, id: u64, expires_at: Option<&str>) {
        self.control_ok(
            "/_standin/set-token-expiry",
            json!({"id": id, "expires_at": expires_at}),
        );
    }

    /// Set the expiry date of the token with this value.
    pub fn set_token_expiry_by_value(&self, token: &str, expires_at: Option<&str>) {
        self.control_ok(
            "/_standin/set-token-expiry",
            json!({"token": token, "expires_at": expires_at}),
        );
    }

    /// Move the stand-in's "today" (and its clock) by `days`.
    pub fn shift_days(&self, days: i64) {
        self.control_ok("/_standin/shift-days", json!({"days": days}));
    }

    /// Crash injection: the next `method` request whose path (as sent,
    /// percent-encoded) matches the regex `path` is carried out, then its
    /// answer is held back until `release`.
    pub fn hold_next(&self, method: &str, path: &str) {
        self.control_ok("/_standin/hold", json!({"method": method, "path": path}));
    }

    /// The requests whose answer is (or was) held back: method, path, status.
    pub fn held(&self) -> Vec<Value> {
        self.control("GET", "/_standin/held", &Value::Null)
            .1
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Let held answers go (to a client that is usually dead by then).
    pub fn release(&self) {
        self.control_ok("/_standin/release", json!({}));
    }

    /// What `gitlab-rails runner` on the GitLab host does to update an OAuth
    /// application in place by its application_id: 200, 404 unknown uid, 400
    /// invalid values.
    pub fn runner_update_application(
        &self,
        uid: &str,
        redirect_uri: &str,
        scopes: &str,
        confidential: bool,
    ) -> (u16, Value) {
        self.control(
            "POST",
            "/_standin/runner",
            &json!({"script": "update-application", "uid": uid, "redirect_uri": redirect_uri,
                    "scopes": scopes, "confidential": confidential}),
        )
    }
}

/// application/x-www-form-urlencoded escaping of one value.
fn form_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for GitlabStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
