//! Crash safety of every create the GitLab step makes. For each kind of
//! create, the GitLab stand-in carries the request out and holds back its
//! answer; the installer's whole process group is then SIGKILLed — exactly
//! "GitLab did it, we never heard" — and one re-run must converge: the
//! objects of an uninterrupted install, no extra live credential, the
//! user's own objects (including a token with our token's name) untouched,
//! and a teardown that removes everything we made. A kill during teardown
//! is covered too.

use crate::support::{cli, gitlab};

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cli::{code, stderr, Scratch};
use gitlab::GitlabStandin;
use serde_json::{json, Value};

const BOOTSTRAP: &str = "glpat-bootstrapKnownValue1";

fn setup() -> (GitlabStandin, Scratch) {
    let g = GitlabStandin::start_with("root-password-not-used", BOOTSTRAP);
    let s = Scratch::new();
    let token = s.path().join("gitlab-token");
    std::fs::write(&token, BOOTSTRAP).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    s.write_inventory(&format!(
        "settings:\n  domain: nautes.example.com\ncomponents:\n  gitlab:\n    placement: external\n    external:\n      url: {}\n      token: {{ file: gitlab-token }}\n    values:\n      group: acme\n",
        g.url()
    ));
    (g, s)
}

/// What the user has in GitLab before we come: a group, an OAuth
/// application and a token of root named exactly like ours. None of it may
/// be touched by a recovery or a teardown.
fn users_objects(g: &GitlabStandin) -> Value {
    let post = |path: &str, body: Value| {
        let (st, _, v) = g.call("POST", path, Some(BOOTSTRAP), Some(&body));
        assert_eq!(st, 201, "{path}: {v}");
        v
    };
    let group = post("/api/v4/groups", json!({"name": "theirs", "path": "theirs"}));
    let app = post(
        "/api/v4/applications",
        json!({"name": "their-app", "redirect_uri": "https://x.example.com/cb", "scopes": "read_user"}),
    );
    let token = post(
        "/api/v4/users/1/personal_access_tokens",
        json!({"name": "nautes-install", "scopes": ["read_api"]}),
    );
    json!({"group": group["id"], "app": app["id"], "token": token["id"]})
}

fn users_objects_untouched(g: &GitlabStandin, theirs: &Value) {
    let dump = g.dump();
    assert!(
        dump["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == theirs["group"]),
        "the user's group is gone"
    );
    assert!(
        dump["applications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == theirs["app"]),
        "the user's application is gone"
    );
    for id in [theirs["token"].clone(), json!(1)] {
        let t = dump["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap();
        assert_eq!(t["active"], true, "the user's token {t} was revoked");
    }
}

fn credential(s: &Scratch, name: &str) -> Value {
    let path = s.workdir().join(format!("outputs/gitlab/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Live tokens named `base` (as older versions named ours) or `base [marker]`,
/// other than the user's own token of that name.
fn active_tokens<'a>(dump: &'a Value, base: &str, theirs: &Value) -> Vec<&'a Value> {
    dump["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"] != theirs["token"] && t["active"] == true)
        .filter(|t| {
            let name = t["name"].as_str().unwrap_or_default();
            name == base || name.starts_with(&format!("{base} ["))
        })
        .collect()
}

/// Run `args` in its own process group; once the stand-in holds the answer
/// to the armed request, SIGKILL the whole group.
fn kill_at_held_answer(g: &GitlabStandin, s: &Scratch, args: &[&str]) {
    let mut run = s.watch(args);
    run.wait_until("the held request", Duration::from_secs(120), |_| !g.held().is_empty());
    run.kill_group();
    run.finish();
    g.release();
}

/// Exactly what an uninterrupted install leaves, credentials matching
/// GitLab, nothing extra alive.
fn converged(g: &GitlabStandin, s: &Scratch, theirs: &Value) {
    assert_eq!(s.step_status("gitlab/configure").as_deref(), Some("done"));
    let dump = g.dump();
    let groups: Vec<_> = dump["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["full_path"] == "acme")
        .collect();
    assert_eq!(groups.len(), 1);
    let projects: Vec<_> = dump["projects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["path_with_namespace"] == "acme/management")
        .collect();
    assert_eq!(projects.len(), 1);
    let p = projects[0];
    assert_eq!(p["commits"], 1, "one commit of the tenant repository");
    assert_eq!(p["deploy_keys"].as_array().unwrap().len(), 1, "{}", p["deploy_keys"]);
    let apps: Vec<_> = dump["applications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "nautes-dex")
        .collect();
    assert_eq!(apps.len(), 1, "exactly one Dex application: {apps:?}");
    assert_eq!(credential(s, "dex-oauth-app")["clientSecret"], apps[0]["secret"]);
    let admin = active_tokens(&dump, "nautes-install", theirs);
    assert_eq!(admin.len(), 1, "exactly one live admin token of ours: {admin:?}");
    assert_eq!(credential(s, "admin-token")["token"], admin[0]["token"]);
    let reader = active_tokens(&dump, "nautes-base-operator", theirs);
    assert_eq!(reader.len(), 1, "exactly one live base-operator token: {reader:?}");
    assert_eq!(credential(s, "base-operator-token")["token"], reader[0]["token"]);
    let bots: Vec<_> = dump["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["bot"].is_object() && u["state"] == "active")
        .collect();
    assert_eq!(bots.len(), 1, "one active bot user: {bots:?}");
}

/// A teardown leaves nothing of ours: no group, project or application,
/// no live token.
fn torn_down(g: &GitlabStandin, theirs: &Value) {
    let dump = g.dump();
    assert!(!dump["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["full_path"] == "acme"));
    assert!(!dump["projects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["path_with_namespace"] == "acme/management"));
    assert!(!dump["applications"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "nautes-dex"));
    for base in ["nautes-install", "nautes-base-operator"] {
        let live = active_tokens(&dump, base, theirs);
        assert!(live.is_empty(), "live tokens of ours after teardown: {live:?}");
    }
}

fn destroy(s: &Scratch) -> std::process::Output {
    s.command(&["destroy", "-i", "inventory.yaml", "--yes"])
        .output()
        .unwrap()
}

/// Kill right after GitLab carried out `method path`, re-run, compare, tear down.
fn crash_after(method: &str, path: &str) {
    let (g, s) = setup();
    let theirs = users_objects(&g);
    g.hold_next(method, path);
    kill_at_held_answer(&g, &s, &["apply", "-i", "inventory.yaml", "--yes"]);
    assert_eq!(g.held().len(), 1);

    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "the re-run must converge: {}", stderr(&out));
    converged(&g, &s, &theirs);
    users_objects_untouched(&g, &theirs);
    // The records name ids and markers, never a value.
    let state = std::fs::read_to_string(s.workdir().join("state.json")).unwrap();
    for secret in [
        BOOTSTRAP.to_string(),
        credential(&s, "admin-token")["token"].as_str().unwrap().to_string(),
        credential(&s, "base-operator-token")["token"]
            .as_str()
            .unwrap()
            .to_string(),
        credential(&s, "dex-oauth-app")["clientSecret"]
            .as_str()
            .unwrap()
            .to_string(),
    ] {
        assert!(
            !state.contains(&secret) && !stderr(&out).contains(&secret),
            "a secret leaked"
        );
    }

    let down = destroy(&s);
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    torn_down(&g, &theirs);
    users_objects_untouched(&g, &theirs);
    assert!(
        s.state()["intents"].is_null(),
        "records left after teardown: {}",
        s.state()["intents"]
    );
}

#[test]
fn killed_after_the_group_is_created() {
    crash_after("POST", r"/api/v4/groups");
}

#[test]
fn killed_after_the_project_is_created() {
    crash_after("POST", r"/api/v4/projects");
}

#[test]
fn killed_after_the_deploy_key_is_added() {
    crash_after("POST", r"/api/v4/projects/\d+/deploy_keys");
}

#[test]
fn killed_after_the_commit_lands() {
    crash_after("POST", r"/api/v4/projects/\d+/repository/commits");
}

#[test]
fn killed_after_the_oauth_application_is_created() {
    crash_after("POST", r"/api/v4/applications");
}

#[test]
fn killed_after_the_admin_token_is_created() {
    crash_after("POST", r"/api/v4/users/\d+/personal_access_tokens");
}

#[test]
fn killed_after_the_base_operator_token_is_created() {
    crash_after("POST", r"/api/v4/projects/\d+/access_tokens");
}

/// Our `base` token near expiry; the run replacing it is killed once the
/// replacement exists (`path` is its create). One re-run must end with
/// exactly one live token of that kind, not the old one.
fn crash_during_rotation(base: &str, path: &str) {
    let (g, s) = setup();
    let theirs = users_objects(&g);
    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let old = active_tokens(&g.dump(), base, &theirs)[0].clone();
    let soon = std::process::Command::new("date")
        .args(["-u", "-d", "+5 days", "+%Y-%m-%d"])
        .output()
        .unwrap();
    g.set_token_expiry(
        old["id"].as_u64().unwrap(),
        Some(String::from_utf8_lossy(&soon.stdout).trim()),
    );
    g.hold_next("POST", path);
    kill_at_held_answer(&g, &s, &["apply", "-i", "inventory.yaml", "--yes"]);

    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    converged(&g, &s, &theirs);
    let dump = g.dump();
    let now = active_tokens(&dump, base, &theirs);
    assert_ne!(now[0]["id"], old["id"], "the old token was replaced");
    users_objects_untouched(&g, &theirs);
}

#[test]
fn killed_after_the_replacement_admin_token_is_created() {
    crash_during_rotation("nautes-install", r"/api/v4/users/\d+/personal_access_tokens");
}

#[test]
fn killed_after_the_replacement_base_operator_token_is_created() {
    crash_during_rotation("nautes-base-operator", r"/api/v4/projects/\d+/access_tokens");
}

#[test]
fn killed_during_teardown_a_second_teardown_finishes() {
    let (g, s) = setup();
    let theirs = users_objects(&g);
    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    g.hold_next("DELETE", r"/api/v4/projects/\d+");
    kill_at_held_answer(&g, &s, &["destroy", "-i", "inventory.yaml", "--yes"]);

    let down = destroy(&s);
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    torn_down(&g, &theirs);
    users_objects_untouched(&g, &theirs);
}

#[test]
fn a_teardown_right_after_a_killed_first_install_removes_what_it_made() {
    // No re-run of apply: the teardown alone must find the group, project
    // and tokens from the records.
    let (g, s) = setup();
    let theirs = users_objects(&g);
    g.hold_next("POST", r"/api/v4/projects/\d+/repository/commits");
    kill_at_held_answer(&g, &s, &["apply", "-i", "inventory.yaml", "--yes"]);

    let down = destroy(&s);
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    torn_down(&g, &theirs);
    users_objects_untouched(&g, &theirs);
}

#[test]
fn a_state_from_before_the_records_still_tears_down_what_it_made() {
    let (g, s) = setup();
    let theirs = users_objects(&g);
    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // What an older version left: outputs only, no records.
    let path = s.workdir().join("state.json");
    let mut state = s.state();
    state.as_object_mut().unwrap().remove("intents");
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    let down = destroy(&s);
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    torn_down(&g, &theirs);
    users_objects_untouched(&g, &theirs);
}
