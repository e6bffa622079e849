//! The GitLab API stand-in keeps GitLab 15.10's contract: these checks fail
//! if it starts accepting what a real server refuses, or answers in another
//! shape.

use std::collections::BTreeMap;

use crate::support::{gitlab, http};

use base64::Engine as _;
use gitlab::GitlabStandin;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ADMIN: &str = "glpat-standinBootstrap01";

fn standin() -> GitlabStandin {
    GitlabStandin::start_with("s3cret-root", ADMIN)
}

/// POST as the admin and insist on 201.
fn create(gl: &GitlabStandin, path: &str, body: Value) -> Value {
    let (status, _, reply) = gl.call("POST", path, Some(ADMIN), Some(&body));
    assert_eq!(status, 201, "POST {path} {body}: {reply}");
    reply
}

fn pat(gl: &GitlabStandin, name: &str, scopes: &[&str], expires_at: Option<&str>) -> Value {
    let mut body = json!({"name": name, "scopes": scopes});
    if let Some(date) = expires_at {
        body["expires_at"] = json!(date);
    }
    create(gl, "/api/v4/users/1/personal_access_tokens", body)
}

fn group_and_project(gl: &GitlabStandin, readme: bool) -> (Value, Value) {
    let group = create(gl, "/api/v4/groups", json!({"name": "Nautes", "path": "nautes"}));
    let project = create(
        gl,
        "/api/v4/projects",
        json!({"name": "runtime", "namespace_id": group["id"], "initialize_with_readme": readme}),
    );
    (group, project)
}

fn commit(gl: &GitlabStandin, token: &str, project: &str, body: Value) -> (u16, Value) {
    let (status, _, reply) = gl.call(
        "POST",
        &format!("/api/v4/projects/{project}/repository/commits"),
        Some(token),
        Some(&body),
    );
    (status, reply)
}

fn file(gl: &GitlabStandin, project: &str, path: &str, reference: &str) -> (u16, Value) {
    let (status, _, reply) = gl.call(
        "GET",
        &format!("/api/v4/projects/{project}/repository/files/{path}?ref={reference}"),
        Some(ADMIN),
        None,
    );
    (status, reply)
}

fn decoded(file: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(file["content"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn ed25519_key(seed: u8, comment: &str) -> String {
    let mut blob = vec![0, 0, 0, 11];
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&[0, 0, 0, 32]);
    blob.extend_from_slice(&[seed; 32]);
    format!(
        "ssh-ed25519 {} {comment}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

#[test]
fn auth_answers_401_403_and_insufficient_scope_as_gitlab_does() {
    let gl = standin();
    let (status, _, body) = gl.call("GET", "/api/v4/user", None, None);
    assert_eq!((status, &body), (401, &json!({"message": "401 Unauthorized"})));
    let (status, _, body) = gl.call("GET", "/api/v4/user", Some("glpat-nosuchtoken0000000"), None);
    assert_eq!((status, &body), (401, &json!({"message": "401 Unauthorized"})));
    let (status, _, body) = gl.call_bearer("GET", "/api/v4/user", ADMIN, None);
    assert_eq!(status, 200);
    assert_eq!(body["username"], "root");
    assert_eq!(body["is_admin"], true);

    let read_api = pat(&gl, "reader", &["read_api"], None)["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(read_api.starts_with("glpat-") && read_api.len() == 26, "{read_api}");
    assert_eq!(gl.call("GET", "/api/v4/groups", Some(&read_api), None).0, 200);
    let (status, headers, body) = gl.call(
        "POST",
        "/api/v4/groups",
        Some(&read_api),
        Some(&json!({"name": "g", "path": "g"})),
    );
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"error": "insufficient_scope",
               "error_description": "The request requires higher privileges than provided by the access token.",
               "scope": "api"})
    );
    assert!(headers["www-authenticate"].contains("insufficient_scope"));

    let read_user = pat(&gl, "profile", &["read_user"], None)["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(gl.call("GET", "/api/v4/user", Some(&read_user), None).0, 200);
    let (status, _, body) = gl.call("GET", "/api/v4/groups", Some(&read_user), None);
    assert_eq!(status, 403);
    assert_eq!(body["scope"], "api read_api");
    let git_only = pat(&gl, "git", &["read_repository", "write_repository"], None);
    let (status, _, body) = gl.call("GET", "/api/v4/user", git_only["token"].as_str(), None);
    assert_eq!((status, body["error"].as_str()), (403, Some("insufficient_scope")));

    // Admin-only routes refuse a logged-in non-admin (a project bot here).
    let (_, project) = group_and_project(&gl, false);
    let bot = create(
        &gl,
        &format!("/api/v4/projects/{}/access_tokens", project["id"]),
        json!({"name": "ci", "scopes": ["api"]}),
    );
    let (status, _, body) = gl.call("GET", "/api/v4/applications", bot["token"].as_str(), None);
    assert_eq!((status, &body), (403, &json!({"message": "403 Forbidden"})));
    let (status, _, body) = gl.call("GET", "/api/v4/user", bot["token"].as_str(), None);
    assert_eq!(status, 200);
    assert!(body.get("is_admin").is_none(), "only admins see is_admin: {body}");

    // Routing: unknown path 404, known path with a wrong method 405.
    let (status, _, body) = gl.call("GET", "/api/v4/no/such/route", Some(ADMIN), None);
    assert_eq!((status, &body), (404, &json!({"error": "404 Not Found"})));
    let (status, headers, _) = gl.call("PATCH", "/api/v4/user", Some(ADMIN), Some(&json!({})));
    assert_eq!(status, 405);
    assert!(headers["allow"].contains("GET"));
}

#[test]
fn oauth_password_grant_gives_a_two_hour_root_token() {
    let gl = GitlabStandin::start();
    let (status, body) = gl.oauth_password("root", "wrong");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, body) = gl.oauth_password("root", "standin-root-password");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], "api");
    let token = body["access_token"].as_str().unwrap();
    let (status, _, me) = gl.call_bearer("GET", "/api/v4/user", token, None);
    assert_eq!((status, me["id"].as_u64()), (200, Some(1)));
    // An OAuth token is not a personal access token.
    let (status, _, body) = gl.call_bearer("GET", "/api/v4/personal_access_tokens/self", token, None);
    assert_eq!((status, &body), (404, &json!({"message": "404 Not Found"})));
    let (status, _, _) = gl.call_bearer(
        "POST",
        "/api/v4/groups",
        token,
        Some(&json!({"name": "tenant", "path": "tenant"})),
    );
    assert_eq!(status, 201, "OAuth token has scope api");
    gl.shift_days(1);
    let (status, _, body) = gl.call_bearer("GET", "/api/v4/user", token, None);
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")));
}

#[test]
fn lists_are_paginated_with_gitlab_headers() {
    let gl = standin();
    for i in 0..25 {
        create(
            &gl,
            "/api/v4/groups",
            json!({"name": format!("g{i:02}"), "path": format!("g{i:02}")}),
        );
    }
    let (status, headers, body) = gl.call("GET", "/api/v4/groups?per_page=10&page=2", Some(ADMIN), None);
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 10);
    assert_eq!(body[0]["path"], "g10", "groups are ordered by name");
    for (name, value) in [
        ("x-total", "25"),
        ("x-total-pages", "3"),
        ("x-page", "2"),
        ("x-per-page", "10"),
        ("x-next-page", "3"),
        ("x-prev-page", "1"),
    ] {
        assert_eq!(headers[name], value, "{name}");
    }
    let link = &headers["link"];
    assert!(link.contains("page=3&per_page=10>; rel=\"next\""), "{link}");
    assert!(link.contains("page=1&per_page=10>; rel=\"first\""), "{link}");
    assert!(link.contains("page=3&per_page=10>; rel=\"last\""), "{link}");

    let (_, headers, body) = gl.call("GET", "/api/v4/groups", Some(ADMIN), None);
    assert_eq!(body.as_array().unwrap().len(), 20, "default per_page is 20");
    assert_eq!(headers["x-next-page"], "2");
    let (_, headers, body) = gl.call("GET", "/api/v4/groups?per_page=1000&page=1", Some(ADMIN), None);
    assert_eq!(
        (headers["x-per-page"].as_str(), body.as_array().unwrap().len()),
        ("100", 25)
    );
    assert_eq!(headers["x-next-page"], "");
    let (status, _, body) = gl.call("GET", "/api/v4/groups?page=two", Some(ADMIN), None);
    assert_eq!((status, &body), (400, &json!({"error": "page is invalid"})));
}

#[test]
fn groups_and_projects_create_find_by_path_refuse_duplicates_and_delete() {
    let gl = standin();
    let (status, _, body) = gl.call("POST", "/api/v4/groups", Some(ADMIN), Some(&json!({})));
    assert_eq!(
        (status, &body),
        (400, &json!({"error": "name is missing, path is missing"}))
    );
    let (group, project) = group_and_project(&gl, false);
    let (status, _, body) = gl.call(
        "POST",
        "/api/v4/groups",
        Some(ADMIN),
        Some(&json!({"name": "Other", "path": "nautes"})),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"message": "Failed to save group {:path=>[\"has already been taken\"]}"})
    );
    // The same path under another parent is fine; nested groups are found by encoded full path.
    let sub = create(
        &gl,
        "/api/v4/groups",
        json!({"name": "nautes", "path": "nautes", "parent_id": group["id"]}),
    );
    assert_eq!(sub["full_path"], "nautes/nautes");
    let (status, _, found) = gl.call("GET", "/api/v4/groups/nautes%2Fnautes", Some(ADMIN), None);
    assert_eq!((status, &found["id"]), (200, &sub["id"]));
    let (status, _, body) = gl.call("GET", "/api/v4/groups/nautes/nautes", Some(ADMIN), None);
    assert_eq!(
        (status, &body),
        (404, &json!({"error": "404 Not Found"})),
        "unencoded slash"
    );
    let (status, _, body) = gl.call("GET", "/api/v4/groups/missing", Some(ADMIN), None);
    assert_eq!((status, &body), (404, &json!({"message": "404 Group Not Found"})));

    assert_eq!(project["path_with_namespace"], "nautes/runtime");
    assert_eq!(project["empty_repo"], true);
    assert_eq!(project["default_branch"], "main");
    let (status, _, body) = gl.call(
        "POST",
        "/api/v4/projects",
        Some(ADMIN),
        Some(&json!({"name": "runtime", "namespace_id": group["id"]})),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"message": {"name": ["has already been taken"], "path": ["has already been taken"]}})
    );
    let (status, _, found) = gl.call("GET", "/api/v4/projects/nautes%2Fruntime", Some(ADMIN), None);
    assert_eq!((status, &found["id"]), (200, &project["id"]));
    let (status, _, body) = gl.call("GET", "/api/v4/projects/nautes%2Fnope", Some(ADMIN), None);
    assert_eq!((status, &body), (404, &json!({"message": "404 Project Not Found"})));
    // A private project is invisible (404, not 401) without a token.
    assert_eq!(gl.call("GET", "/api/v4/projects/nautes%2Fruntime", None, None).0, 404);

    let (status, _, body) = gl.call("DELETE", "/api/v4/groups/nautes", Some(ADMIN), None);
    assert_eq!((status, &body), (202, &json!({"message": "202 Accepted"})));
    assert_eq!(
        gl.call("GET", "/api/v4/projects/nautes%2Fruntime", Some(ADMIN), None).0,
        404
    );
    assert_eq!(
        gl.call("GET", "/api/v4/groups/nautes%2Fnautes", Some(ADMIN), None).0,
        404
    );
    assert_eq!(gl.dump()["projects"], json!([]));
}

/// What a tenant's group relies on: a top-level path GitLab keeps for its
/// routes is refused (a subgroup may take it), and a group's projects with
/// `include_subgroups=true` are those of every group below too.
#[test]
fn groups_refuse_reserved_top_level_paths_and_list_projects_of_subgroups() {
    let gl = standin();
    for reserved in ["admin", "API", "groups", "-"] {
        let (status, _, body) = gl.call(
            "POST",
            "/api/v4/groups",
            Some(ADMIN),
            Some(&json!({"name": reserved, "path": reserved})),
        );
        assert_eq!(status, 400, "{reserved}: {body}");
        if reserved != "-" {
            assert_eq!(
                body,
                json!({"message": format!("Failed to save group {{:path=>[\"{reserved} is a reserved name\"]}}")})
            );
        }
    }
    let (group, _) = group_and_project(&gl, false);
    let sub = create(
        &gl,
        "/api/v4/groups",
        json!({"name": "admin", "path": "admin", "parent_id": group["id"]}),
    );
    create(
        &gl,
        "/api/v4/projects",
        json!({"name": "deep", "namespace_id": sub["id"]}),
    );
    let paths = |query: &str| -> Vec<String> {
        let (status, _, list) = gl.call(
            "GET",
            &format!("/api/v4/groups/{}/projects{query}", group["id"]),
            Some(ADMIN),
            None,
        );
        assert_eq!(status, 200, "{list}");
        let mut out: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path_with_namespace"].as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    };
    assert_eq!(paths(""), ["nautes/runtime"]);
    assert_eq!(
        paths("?include_subgroups=true"),
        ["nautes/admin/deep", "nautes/runtime"]
    );
}

#[test]
fn commits_api_creates_updates_refuses_conflicts_and_rejected_pushes() {
    let gl = standin();
    let (_, project) = group_and_project(&gl, false);
    let p = "nautes%2Fruntime";
    let (status, _, body) = gl.call(
        "GET",
        &format!("/api/v4/projects/{p}/repository/tree"),
        Some(ADMIN),
        None,
    );
    assert_eq!((status, &body), (404, &json!({"message": "404 Tree Not Found"})));

    // An empty repository takes a commit to any branch.
    let (status, first) = commit(
        &gl,
        ADMIN,
        p,
        json!({"branch": "main", "commit_message": "seed\n\nbody", "actions": [
            {"action": "create", "file_path": "tenants/a.yaml", "content": "a: 1\n"},
            {"action": "create", "file_path": "README.md", "content": "IyBoaQo=", "encoding": "base64"}]}),
    );
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["title"], "seed");
    assert_eq!(first["parent_ids"], json!([]));
    assert_eq!(first["stats"], json!({"additions": 2, "deletions": 0, "total": 2}));
    let id = first["id"].as_str().unwrap();
    assert!(id.len() == 40 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");

    let (status, readme) = file(&gl, p, "README.md", "main");
    assert_eq!(status, 200);
    assert_eq!(decoded(&readme), "# hi\n");
    assert_eq!(
        readme["content_sha256"].as_str().unwrap(),
        format!("{:x}", Sha256::digest(b"# hi\n"))
    );
    assert_eq!(readme["last_commit_id"], first["id"]);
    assert_eq!(file(&gl, p, "tenants%2Fa.yaml", "main").0, 200);
    assert_eq!(
        file(&gl, p, "nope.txt", "main").1,
        json!({"message": "404 File Not Found"})
    );
    assert_eq!(
        file(&gl, p, "README.md", "dev").1,
        json!({"message": "404 Commit Not Found"})
    );
    let (status, _, body) = gl.call(
        "GET",
        &format!("/api/v4/projects/{p}/repository/files/README.md"),
        Some(ADMIN),
        None,
    );
    assert_eq!((status, &body), (400, &json!({"error": "ref is missing"})));

    // Conflicts and mistakes: 400, and the branch does not move.
    let bad = [
        (
            json!([{"action": "create", "file_path": "README.md", "content": "x"}]),
            json!({"message": "A file with this name already exists"}),
        ),
        (
            json!([{"action": "update", "file_path": "gone.md", "content": "x"}]),
            json!({"message": "A file with this name doesn't exist"}),
        ),
        (
            json!([{"action": "delete", "file_path": "gone.md"}]),
            json!({"message": "A file with this name doesn't exist"}),
        ),
        (
            json!([{"action": "update", "file_path": "README.md", "content": "new"},
                {"action": "create", "file_path": "tenants/a.yaml", "content": "x"}]),
            json!({"message": "A file with this name already exists"}),
        ),
        (json!([]), json!({"error": "actions is empty"})),
        (
            json!([{"action": "replace", "file_path": "README.md", "content": "x"}]),
            json!({"error": "actions[0][action] does not have a valid value"}),
        ),
        (
            json!([{"action": "update", "file_path": "README.md"}]),
            json!({"error": "actions[0][content] is missing"}),
        ),
    ];
    for (actions, expected) in bad {
        let (status, body) = commit(
            &gl,
            ADMIN,
            p,
            json!({"branch": "main", "commit_message": "m", "actions": actions}),
        );
        assert_eq!((status, &body), (400, &expected), "{actions}");
    }
    let (status, _, branch) = gl.call(
        "GET",
        &format!("/api/v4/projects/{p}/repository/branches/main"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(branch["commit"]["id"], first["id"], "failed commits are atomic");
    assert_eq!(decoded(&file(&gl, p, "README.md", "main").1), "# hi\n");

    let (status, second) = commit(
        &gl,
        ADMIN,
        p,
        json!({"branch": "main", "commit_message": "update", "actions": [
            {"action": "update", "file_path": "README.md", "content": "# hello\n"}]}),
    );
    assert_eq!(status, 201);
    assert_eq!(second["parent_ids"], json!([first["id"]]));
    assert_eq!(decoded(&file(&gl, p, "README.md", "main").1), "# hello\n");
    assert_eq!(
        file(&gl, p, "tenants%2Fa.yaml", "main").1["last_commit_id"],
        first["id"]
    );

    // A new branch of a non-empty repository needs a start_branch.
    let (status, body) = commit(
        &gl,
        ADMIN,
        p,
        json!({"branch": "feature", "commit_message": "m", "actions": [
            {"action": "create", "file_path": "f.txt", "content": "f"}]}),
    );
    assert_eq!(
        (status, &body),
        (
            400,
            &json!({"message": "You can only create or edit files when you are on a branch"})
        )
    );
    let (status, _) = commit(
        &gl,
        ADMIN,
        p,
        json!({"branch": "feature", "start_branch": "main", "commit_message": "m", "actions": [
            {"action": "create", "file_path": "f.txt", "content": "f"}]}),
    );
    assert_eq!(status, 201);
    assert_eq!(file(&gl, p, "f.txt", "feature").0, 200);
    assert_eq!(file(&gl, p, "f.txt", "main").0, 404);

    // A rejected push changes nothing.
    gl.reject_push("nautes/runtime", true);
    let (status, body) = commit(
        &gl,
        ADMIN,
        &project["id"].to_string(),
        json!({"branch": "main", "commit_message": "m", "actions": [
            {"action": "delete", "file_path": "README.md"}]}),
    );
    assert_eq!(
        (status, &body),
        (
            403,
            &json!({"message": "403 Forbidden - You are not allowed to push into this branch"})
        )
    );
    assert_eq!(
        gl.dump()["projects"][0]["branches"]["main"]["files"]["README.md"],
        "# hello\n"
    );
    gl.reject_push("nautes/runtime", false);

    let (status, headers, tree) = gl.call(
        "GET",
        &format!("/api/v4/projects/{p}/repository/tree?recursive=true"),
        Some(ADMIN),
        None,
    );
    assert_eq!((status, headers["x-total"].as_str()), (200, "3"));
    let paths: Vec<_> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].clone(), e["path"].clone()))
        .collect();
    assert_eq!(
        paths,
        vec![
            (json!("tree"), json!("tenants")),
            (json!("blob"), json!("README.md")),
            (json!("blob"), json!("tenants/a.yaml")),
        ]
    );
}

#[test]
fn applications_create_list_delete_and_have_no_update_endpoint() {
    let gl = standin();
    let (status, _, body) = gl.call(
        "POST",
        "/api/v4/applications",
        Some(ADMIN),
        Some(&json!({"redirect_uri": "https://dex/callback", "scopes": "openid"})),
    );
    assert_eq!((status, &body), (400, &json!({"error": "name is missing"})));
    let (status, _, body) = gl.call(
        "POST",
        "/api/v4/applications",
        Some(ADMIN),
        Some(&json!({"name": "dex", "redirect_uri": "https://dex/callback", "scopes": "openid everything"})),
    );
    assert_eq!(
        (status, &body),
        (
            400,
            &json!({"message": {"scopes": ["doesn't match configured on the server."]}})
        )
    );
    let app = create(
        &gl,
        "/api/v4/applications",
        json!({"name": "dex", "redirect_uri": "https://dex.example/callback", "scopes": "openid profile email"}),
    );
    let uid = app["application_id"].as_str().unwrap().to_string();
    let hex64 = |s: &str| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
    assert!(hex64(&uid) && hex64(app["secret"].as_str().unwrap()), "{app}");
    assert_eq!(app["confidential"], true);
    assert_eq!(app["callback_url"], "https://dex.example/callback");

    let (status, _, list) = gl.call("GET", "/api/v4/applications", Some(ADMIN), None);
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!([{"id": app["id"], "application_id": uid, "application_name": "dex",
                "callback_url": "https://dex.example/callback", "confidential": true}]),
        "15.10 lists neither secret nor scopes"
    );
    for method in ["PUT", "PATCH"] {
        let (status, _, _) = gl.call(
            method,
            &format!("/api/v4/applications/{}", app["id"]),
            Some(ADMIN),
            Some(&json!({"redirect_uri": "https://other/callback"})),
        );
        assert_eq!(status, 405, "{method}: no update API in 15.10");
    }

    // Someone edits the app in the admin UI; then the runner puts it back by uid.
    let id = app["id"].as_u64().unwrap();
    gl.edit_application(id, Some("https://wrong/callback"), Some("api"), None);
    let stored = &gl.dump()["applications"][0];
    assert_eq!(
        (stored["redirect_uri"].as_str(), stored["scopes"].as_str()),
        (Some("https://wrong/callback"), Some("api"))
    );
    assert_eq!(
        (stored["uid"].as_str(), &stored["secret"]),
        (Some(uid.as_str()), &app["secret"])
    );
    let (status, _) = gl.runner_update_application(&uid, "https://dex.example/callback", "openid profile email", true);
    assert_eq!(status, 200);
    let stored = &gl.dump()["applications"][0];
    assert_eq!(stored["scopes"], "openid profile email");
    assert_eq!(
        gl.call("GET", "/api/v4/applications", Some(ADMIN), None).2[0]["callback_url"],
        "https://dex.example/callback"
    );
    assert_eq!(
        gl.runner_update_application("0".repeat(64).as_str(), "https://x/cb", "openid", true)
            .0,
        404
    );

    assert_eq!(
        gl.call("DELETE", &format!("/api/v4/applications/{id}"), Some(ADMIN), None)
            .0,
        204
    );
    let (status, _, body) = gl.call("DELETE", &format!("/api/v4/applications/{id}"), Some(ADMIN), None);
    assert_eq!((status, &body), (404, &json!({"message": "404 Application Not Found"})));
    assert_eq!(gl.call("GET", "/api/v4/applications", Some(ADMIN), None).2, json!([]));
}

#[test]
fn personal_access_tokens_create_self_revoke_and_expire() {
    let gl = standin();
    let path = "/api/v4/users/1/personal_access_tokens";
    let cases = [
        (json!({"scopes": ["api"]}), json!({"error": "name is missing"})),
        (json!({"name": "t"}), json!({"error": "scopes is missing"})),
        (
            json!({"name": "t", "scopes": ["api", "write_everything"]}),
            json!({"error": "scopes does not have a valid value"}),
        ),
        (
            json!({"name": "t", "scopes": ["api"], "expires_at": "31/12/2030"}),
            json!({"error": "expires_at is invalid"}),
        ),
        (
            json!({"name": "t", "scopes": ["api"], "expires_at": "2000-01-01"}),
            json!({"message": {"expires_at": ["cannot be a date in the past"]}}),
        ),
    ];
    for (body, expected) in cases {
        let (status, _, reply) = gl.call("POST", path, Some(ADMIN), Some(&body));
        assert_eq!((status, &reply), (400, &expected), "{body}");
    }
    let (status, _, body) = gl.call(
        "POST",
        "/api/v4/users/99/personal_access_tokens",
        Some(ADMIN),
        Some(&json!({"name": "t", "scopes": ["api"]})),
    );
    assert_eq!((status, &body), (404, &json!({"message": "404 User Not Found"})));

    let today = gl.dump()["today"].as_str().unwrap().to_string();
    let (y, rest) = today.split_once('-').unwrap();
    let next_year = format!("{}-{rest}", y.parse::<u32>().unwrap() + 1).replace("-02-29", "-02-28");
    let created = pat(&gl, "installer", &["api"], Some(&next_year));
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["expires_at"], next_year.as_str());
    assert_eq!(created["active"], true);

    let (status, _, me) = gl.call("GET", "/api/v4/personal_access_tokens/self", Some(&token), None);
    assert_eq!(status, 200);
    assert_eq!(me["id"], created["id"]);
    assert_eq!(me["scopes"], json!(["api"]));
    assert_eq!(me["user_id"], 1);
    assert!(me.get("token").is_none(), "the value is shown only at creation");
    assert!(me["last_used_at"].is_string());

    // It dies at 00:00 UTC of its expiry date.
    gl.set_token_expiry(created["id"].as_u64().unwrap(), Some(&today));
    let (status, _, body) = gl.call("GET", "/api/v4/user", Some(&token), None);
    assert_eq!(status, 401);
    assert_eq!(
        body["error_description"],
        "Token is expired. You can either do re-authorization or token refresh."
    );
    let (_, _, inactive) = gl.call(
        "GET",
        "/api/v4/personal_access_tokens?state=inactive",
        Some(ADMIN),
        None,
    );
    assert_eq!(inactive.as_array().unwrap().len(), 1);
    assert_eq!(inactive[0]["id"], created["id"]);
    gl.set_token_expiry_by_value(&token, None);
    assert_eq!(gl.call("GET", "/api/v4/user", Some(&token), None).0, 200);

    // Revoke: 204, then the token is refused and listed as inactive.
    let tid = created["id"].as_u64().unwrap();
    let (status, _, _) = gl.call(
        "DELETE",
        &format!("/api/v4/personal_access_tokens/{tid}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(status, 204);
    let (status, _, body) = gl.call("GET", "/api/v4/user", Some(&token), None);
    assert_eq!(status, 401);
    assert_eq!(
        body["error_description"],
        "Token was revoked. You have to re-authorize from the user."
    );
    let (status, _, body) = gl.call("DELETE", "/api/v4/personal_access_tokens/999", Some(ADMIN), None);
    assert_eq!((status, &body), (404, &json!({"message": "404 Not found"})));

    // The bootstrap token ages with the clock as well.
    let (status, _, boot) = gl.call("GET", "/api/v4/personal_access_tokens/self", Some(ADMIN), None);
    assert_eq!((status, &boot["name"]), (200, &json!("bootstrap")));
    gl.shift_days(365);
    assert_eq!(gl.call("GET", "/api/v4/user", Some(ADMIN), None).0, 401);
}

#[test]
fn deploy_keys_and_project_access_tokens_follow_gitlab() {
    let gl = standin();
    let (_, project) = group_and_project(&gl, true);
    let keys = format!("/api/v4/projects/{}/deploy_keys", project["id"]);
    let (status, _, body) = gl.call(
        "POST",
        &keys,
        Some(ADMIN),
        Some(&json!({"title": "argocd", "key": "ssh-ed25519 bm90IGEga2V5 me"})),
    );
    assert_eq!(status, 400);
    assert_eq!(body["message"]["key"], json!(["is invalid"]));
    let key = ed25519_key(7, "argocd@nautes");
    let added = create(&gl, &keys, json!({"title": "argocd", "key": key, "can_push": false}));
    assert!(added["fingerprint_sha256"].as_str().unwrap().starts_with("SHA256:"));
    // The exact same key again: GitLab returns the entry it has (no second key).
    let again = create(&gl, &keys, json!({"title": "other title", "key": key}));
    assert_eq!((&again["id"], &again["title"]), (&added["id"], &json!("argocd")));
    let (status, _, body) = gl.call(
        "POST",
        &keys,
        Some(ADMIN),
        Some(&json!({"title": "x", "key": ed25519_key(7, "another-comment")})),
    );
    assert_eq!(
        (status, &body),
        (
            400,
            &json!({"message": {"fingerprint_sha256": ["has already been taken"]}})
        )
    );
    let (_, headers, list) = gl.call("GET", &keys, Some(ADMIN), None);
    assert_eq!((list.as_array().unwrap().len(), headers["x-total"].as_str()), (1, "1"));
    assert_eq!(
        gl.call("DELETE", &format!("{keys}/{}", added["id"]), Some(ADMIN), None)
            .0,
        204
    );
    let (status, _, body) = gl.call("DELETE", &format!("{keys}/{}", added["id"]), Some(ADMIN), None);
    assert_eq!((status, &body), (404, &json!({"message": "404 Deploy Key Not Found"})));

    // Project access tokens act as a bot confined to that project.
    let tokens = format!("/api/v4/projects/{}/access_tokens", project["id"]);
    let (status, _, body) = gl.call(
        "POST",
        &tokens,
        Some(ADMIN),
        Some(&json!({"name": "ci", "scopes": ["api"], "access_level": 35})),
    );
    assert_eq!(
        (status, &body),
        (400, &json!({"error": "access_level does not have a valid value"}))
    );
    let reader = create(&gl, &tokens, json!({"name": "reader", "scopes": ["read_api"]}));
    assert_eq!(reader["access_level"], 40);
    let reader_token = reader["token"].as_str().unwrap();
    assert_eq!(
        gl.call("GET", "/api/v4/projects/nautes%2Fruntime", Some(reader_token), None)
            .0,
        200
    );
    let (status, body) = commit(
        &gl,
        reader_token,
        "nautes%2Fruntime",
        json!({"branch": "main", "commit_message": "m", "actions": [
            {"action": "create", "file_path": "x", "content": "x"}]}),
    );
    assert_eq!((status, body["error"].as_str()), (403, Some("insufficient_scope")));
    let other = create(&gl, "/api/v4/projects", json!({"name": "elsewhere"}));
    let (status, _, body) = gl.call(
        "GET",
        &format!("/api/v4/projects/{}", other["id"]),
        Some(reader_token),
        None,
    );
    assert_eq!((status, &body), (404, &json!({"message": "404 Project Not Found"})));

    // A developer cannot push to the protected default branch, but can to others.
    let dev = create(
        &gl,
        &tokens,
        json!({"name": "dev", "scopes": ["api"], "access_level": 30}),
    );
    let dev_token = dev["token"].as_str().unwrap();
    let body = |branch: &str| {
        json!({"branch": branch, "start_branch": "main", "commit_message": "m", "actions": [
            {"action": "create", "file_path": "dev.txt", "content": "d"}]})
    };
    assert_eq!(commit(&gl, dev_token, "nautes%2Fruntime", body("main")).0, 403);
    assert_eq!(commit(&gl, dev_token, "nautes%2Fruntime", body("dev")).0, 201);

    let (_, _, live) = gl.call("GET", &tokens, Some(ADMIN), None);
    assert_eq!(live.as_array().unwrap().len(), 2);
    assert_eq!(
        gl.call("DELETE", &format!("{tokens}/{}", reader["id"]), Some(ADMIN), None)
            .0,
        204
    );
    assert_eq!(
        gl.call("GET", "/api/v4/projects/nautes%2Fruntime", Some(reader_token), None)
            .0,
        401
    );
    let (_, _, live) = gl.call("GET", &tokens, Some(ADMIN), None);
    assert_eq!(live.as_array().unwrap().len(), 1);
    let (status, _, body) = gl.call("DELETE", &format!("{tokens}/999"), Some(ADMIN), None);
    assert_eq!(
        (status, &body),
        (
            404,
            &json!({"message": "404 Could not find project access token with token_id: 999 Not Found"})
        )
    );
}

#[test]
fn request_log_records_calls_and_writes_skip_reads_and_token_grants() {
    let gl = standin();
    gl.root_oauth_token();
    gl.call("GET", "/api/v4/groups?search=x", Some(ADMIN), None);
    create(&gl, "/api/v4/groups", json!({"name": "t", "path": "t"}));
    gl.call("DELETE", "/api/v4/groups/t", Some(ADMIN), None);
    let log = gl.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(
        (&log[1]["method"], &log[1]["path"], &log[1]["query"], &log[1]["status"]),
        (&json!("GET"), &json!("/api/v4/groups"), &json!("search=x"), &json!(200))
    );
    assert_eq!(gl.writes(), vec!["POST /api/v4/groups", "DELETE /api/v4/groups/t"]);
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(ADMIN), "the log never holds tokens");
    gl.reset_log();
    assert!(gl.requests().is_empty());
}

#[test]
fn a_held_request_is_carried_out_and_answered_only_on_release() {
    let gl = standin();
    gl.hold_next("POST", r"/api/v4/groups");
    let url = format!("{}/api/v4/groups", gl.url());
    // The client, in a thread of its own: it waits while the answer is held.
    let client = std::thread::spawn(move || {
        http::Call::new("POST", url)
            .header("PRIVATE-TOKEN", ADMIN)
            .header("Content-Type", "application/json")
            .body(r#"{"name": "held", "path": "held"}"#)
            .send()
    });
    let start = std::time::Instant::now();
    while gl.held().is_empty() {
        assert!(start.elapsed().as_secs() < 20, "the request was never held");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        gl.held(),
        vec![json!({"method": "POST", "path": "/api/v4/groups", "status": 201})]
    );
    // Done already, though the client has heard nothing.
    let groups = gl.dump()["groups"].clone();
    assert!(
        groups.as_array().unwrap().iter().any(|g| g["full_path"] == "held"),
        "{groups}"
    );
    assert!(!client.is_finished(), "the answer was sent before release");
    // Only the next matching request is held: this one is answered at once.
    let (status, _, _) = gl.call(
        "POST",
        "/api/v4/groups",
        Some(ADMIN),
        Some(&json!({"name": "later", "path": "later"})),
    );
    assert_eq!(status, 201);
    gl.release();
    let (status, _) = client.join().unwrap().expect("the held request is answered on release");
    assert_eq!(status, 201);
}

/// A browser step against the stand-in: no redirect followed.
fn browse(
    gl: &GitlabStandin,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, BTreeMap<String, String>, String) {
    let mut call = http::Call::new(method, format!("{}{path}", gl.url())).no_redirects();
    if let Some(c) = cookie {
        call = call.header("Cookie", c);
    }
    if let Some(f) = form {
        call = call.header("Content-Type", "application/x-www-form-urlencoded").body(f);
    }
    call.exchange().unwrap()
}

fn query_of(location: &str) -> BTreeMap<String, String> {
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The authorization-code flow Dex's GitLab connector drives: a signed-in
/// session is needed, the application must know the client and redirect
/// URI and have the scopes, the user authorizes once, a code is single-use
/// and bound to its client and redirect URI, the client secret is checked,
/// and userinfo needs `openid` and reports the user's membership groups.
#[test]
fn oauth_authorization_code_flow_refuses_what_gitlab_refuses() {
    let gl = standin();
    let (_, _, app) = gl.call(
        "POST",
        "/api/v4/applications",
        Some(ADMIN),
        Some(
            &json!({"name": "dex", "redirect_uri": "https://dex.example.com/callback",
                     "scopes": "openid profile email read_user", "confidential": true}),
        ),
    );
    let (id, secret) = (app["application_id"].as_str().unwrap(), app["secret"].as_str().unwrap());
    let (status, reply) = gl.control(
        "POST",
        "/_standin/add-user",
        &json!({"username": "alice", "password": "pw-alice", "groups": ["acme", "other/dev"]}),
    );
    assert_eq!(status, 200, "{reply}");
    // A subgroup of one of hers, made by someone else.
    gl.control(
        "POST",
        "/_standin/add-user",
        &json!({"username": "x", "password": "p", "groups": ["acme/web"]}),
    );

    // Sign-in: a wrong password gets no session.
    let (status, headers, _) = browse(
        &gl,
        "POST",
        "/users/sign_in",
        None,
        Some("user%5Blogin%5D=alice&user%5Bpassword%5D=wrong"),
    );
    assert_eq!(status, 302);
    assert!(!headers.contains_key("set-cookie"));
    assert!(headers["location"].ends_with("/users/sign_in"));
    let (status, headers, _) = browse(
        &gl,
        "POST",
        "/users/sign_in",
        None,
        Some("user%5Blogin%5D=alice&user%5Bpassword%5D=pw-alice"),
    );
    assert_eq!(status, 302);
    let cookie = headers["set-cookie"].split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("_gitlab_session="));

    let authorize = |client: &str, redirect: &str, scope: &str| {
        format!(
            "/oauth/authorize?client_id={client}&redirect_uri={}&response_type=code&scope={}&state=st8",
            redirect.replace(':', "%3A").replace('/', "%2F"),
            scope.replace(' ', "+")
        )
    };
    let good = authorize(id, "https://dex.example.com/callback", "read_user openid");
    // No session: to the sign-in page.
    let (status, headers, _) = browse(&gl, "GET", &good, None, None);
    assert_eq!((status, headers["location"].ends_with("/users/sign_in")), (302, true));
    // Unknown client, a redirect URI the application lacks: error pages, never redirected to.
    assert_eq!(
        browse(
            &gl,
            "GET",
            &authorize("nope", "https://dex.example.com/callback", "openid"),
            Some(&cookie),
            None
        )
        .0,
        401
    );
    let (status, headers, _) = browse(
        &gl,
        "GET",
        &authorize(id, "https://evil.example.com/callback", "openid"),
        Some(&cookie),
        None,
    );
    assert_eq!(status, 400);
    assert!(!headers.contains_key("location"));
    // A scope the application lacks: back to the client with the error.
    let (status, headers, _) = browse(
        &gl,
        "GET",
        &authorize(id, "https://dex.example.com/callback", "api"),
        Some(&cookie),
        None,
    );
    assert_eq!(status, 302);
    let q = query_of(&headers["location"]);
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("invalid_scope", "st8"));
    // First time: the authorization page; its form posts the request back.
    let (status, _, page) = browse(&gl, "GET", &good, Some(&cookie), None);
    assert_eq!(status, 200);
    assert!(page.contains("Authorize dex"), "{page}");
    let form = good.split_once('?').unwrap().1;
    let (status, headers, _) = browse(&gl, "POST", "/oauth/authorize", Some(&cookie), Some(form));
    assert_eq!(status, 302);
    assert!(headers["location"].starts_with("https://dex.example.com/callback?"));
    let code = query_of(&headers["location"])["code"].clone();
    // Authorized once: the next request is redirected straight away.
    let (status, headers, _) = browse(&gl, "GET", &good, Some(&cookie), None);
    assert_eq!(status, 302);
    let code2 = query_of(&headers["location"])["code"].clone();

    let exchange = |code: &str, client_secret: &str, redirect: &str| {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{client_secret}"));
        let form = format!(
            "grant_type=authorization_code&code={code}&redirect_uri={}",
            redirect.replace(':', "%3A").replace('/', "%2F")
        );
        let auth = format!("Basic {basic}");
        let (status, _, body) = gl.request(
            "POST",
            "/oauth/token",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&form),
        );
        (status, body)
    };
    let (status, body) = exchange(&code, "wrong-secret", "https://dex.example.com/callback");
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let (status, body) = exchange(&code2, secret, "https://dex.example.com/other");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, body) = exchange(&code, secret, "https://dex.example.com/callback");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], json!("read_user openid"));
    let access = body["access_token"].as_str().unwrap().to_string();
    // Single use.
    let (status, body) = exchange(&code, secret, "https://dex.example.com/callback");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));

    let (status, _, user) = gl.call_bearer("GET", "/api/v4/user", &access, None);
    assert_eq!((status, user["username"].as_str()), (200, Some("alice")));
    let (status, _, info) = gl.call_bearer("GET", "/oauth/userinfo", &access, None);
    assert_eq!(status, 200);
    assert_eq!(info["groups"], json!(["acme", "acme/web", "other/dev"]));
    assert_eq!(info["nickname"], json!("alice"));
    // Without `openid`, no userinfo (a root token from the password grant has `api` only).
    let (status, _, body) = gl.call_bearer("GET", "/oauth/userinfo", &gl.root_oauth_token(), None);
    assert_eq!((status, body["error"].as_str()), (403, Some("insufficient_scope")));
    let (status, _, _) = gl.call_bearer("GET", "/oauth/userinfo", "not-a-token", None);
    assert_eq!(status, 401);
}
