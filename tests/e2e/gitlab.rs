//! GitLab configured through its API by the real binary, against the GitLab
//! API stand-in (tests/support/gitlab_standin.py): first install, a re-run
//! that writes nothing, the bootstrap token gone (our own token carries on),
//! our tokens near expiry (rotated, old ones revoked), the OAuth application
//! edited by someone (reported, or replaced when allowed), a rejected push
//! (clear error, step not done), a repository file a user edited (kept), and
//! teardown removing only what we created.

use crate::support::{cli, gitlab, hosts};

use std::os::unix::fs::PermissionsExt;

use cli::{code, stderr, stdout, Scratch};
use gitlab::GitlabStandin;
use serde_json::{json, Value};

const BOOTSTRAP: &str = "glpat-bootstrapKnownValue1";

fn inventory(url: &str, values: &str) -> String {
    format!(
        "settings:\n  domain: nautes.example.com\ncomponents:\n  gitlab:\n    placement: external\n    external:\n      url: {url}\n      token: {{ file: gitlab-token }}\n    values:\n      group: acme\n{values}"
    )
}

fn setup(values: &str) -> (GitlabStandin, Scratch) {
    let g = GitlabStandin::start_with("root-password-not-used", BOOTSTRAP);
    let s = Scratch::new();
    write_token(&s, BOOTSTRAP);
    s.write_inventory(&inventory(&g.url(), values));
    (g, s)
}

/// The bootstrap token file, private as the validator requires.
fn write_token(s: &Scratch, token: &str) {
    let path = s.path().join("gitlab-token");
    std::fs::write(&path, token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn apply(s: &Scratch) -> std::process::Output {
    s.run("apply", &["--yes"])
}

fn credential(s: &Scratch, name: &str) -> Value {
    let path = s.workdir().join(format!("outputs/gitlab/{name}.json"));
    let mode = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} must be private", path.display());
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Tokens named `name`, or `name [marker]` as ours are (the marker finds a
/// token whose create was answered but never recorded).
fn token_named<'a>(dump: &'a Value, name: &str) -> Vec<&'a Value> {
    dump["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            let n = t["name"].as_str().unwrap_or_default();
            n == name || n.starts_with(&format!("{name} ["))
        })
        .collect()
}

fn in_days(n: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("+{n} days"), "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn management(dump: &Value) -> &Value {
    dump["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path_with_namespace"] == "acme/management")
        .expect("acme/management exists")
}

#[test]
fn first_install_rerun_rotation_and_teardown() {
    let (g, s) = setup("");
    let first = apply(&s);
    assert_eq!(code(&first), 0, "{}", stderr(&first));

    let dump = g.dump();
    let project = management(&dump);
    assert_eq!(project["visibility"], "private");
    let files = &project["branches"]["main"]["files"];
    for f in [
        "README.md",
        "tenant/production/tenants.yaml",
        "tenant/production/clusters.yaml",
    ] {
        assert!(files[f].is_string(), "{f} missing from the tenant repo: {files}");
    }
    assert_eq!(project["commits"], 1, "one commit for all files");
    let keys = project["deploy_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["can_push"], false);
    let app = &dump["applications"].as_array().unwrap()[0];
    assert_eq!(app["name"], "nautes-dex");
    assert_eq!(app["redirect_uri"], "https://dex.nautes.example.com/callback");
    let ours = token_named(&dump, "nautes-install");
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["expires_at"], in_days(90), "explicit 90-day expiry");
    assert_eq!(
        token_named(&dump, "nautes-base-operator")[0]["scopes"],
        json!(["read_api", "read_repository"])
    );

    // Credentials in 0600 files, matching what GitLab holds.
    let admin = credential(&s, "admin-token");
    assert_eq!(admin["token"], ours[0]["token"]);
    let oauth = credential(&s, "dex-oauth-app");
    assert_eq!(
        oauth["clientId"],
        app["uid"].as_str().or(app["application_id"].as_str()).unwrap()
    );
    assert_eq!(oauth["clientSecret"], app["secret"]);
    let key = credential(&s, "deploy-key");
    assert!(key["private"].as_str().unwrap().contains("OPENSSH PRIVATE KEY"));

    // A re-run reads and writes nothing, even without the bootstrap token:
    // our own token carries on.
    g.call(
        "DELETE",
        &format!(
            "/api/v4/personal_access_tokens/{}",
            token_named(&dump, "bootstrap")[0]["id"]
        ),
        Some(BOOTSTRAP),
        None,
    );
    g.reset_log();
    let again = apply(&s);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(g.writes().is_empty(), "writes on a re-run: {:?}", g.writes());
    assert!(!g.requests().is_empty(), "the re-run did look at GitLab");

    // Both our tokens near expiry: each replaced, the old ones revoked.
    let reader = token_named(&dump, "nautes-base-operator")[0].clone();
    g.set_token_expiry(ours[0]["id"].as_u64().unwrap(), Some(&in_days(5)));
    g.set_token_expiry(reader["id"].as_u64().unwrap(), Some(&in_days(5)));
    g.reset_log();
    let rotated = apply(&s);
    assert_eq!(code(&rotated), 0, "{}", stderr(&rotated));
    let writes = g.writes();
    assert_eq!(
        writes,
        [
            "POST /api/v4/users/1/personal_access_tokens".to_string(),
            format!("DELETE /api/v4/personal_access_tokens/{}", ours[0]["id"]),
            format!("POST /api/v4/projects/{}/access_tokens", project["id"]),
            format!(
                "DELETE /api/v4/projects/{}/access_tokens/{}",
                project["id"], reader["id"]
            ),
        ],
        "only the two tokens are replaced"
    );
    let after = g.dump();
    let mine = token_named(&after, "nautes-install");
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().any(|t| t["id"] == ours[0]["id"] && t["revoked"] == true));
    let new = mine.iter().find(|t| t["revoked"] == false).unwrap();
    assert_eq!(credential(&s, "admin-token")["token"], new["token"]);
    assert_eq!(new["expires_at"], in_days(90));
    assert!(stdout(&rotated).contains("replacing") || stderr(&rotated).contains("replacing"));

    // `outputs` says where each credential is and hides its value.
    let shown = s.command(&["outputs"]).output().unwrap();
    let text = stdout(&shown);
    assert!(text.contains("GitLab: ") && text.contains("admin-token"), "{text}");
    assert!(
        !text.contains(new["token"].as_str().unwrap()),
        "a token was shown without --show-secrets"
    );

    // Teardown removes what we made and revokes our token; the user's
    // GitLab keeps nothing of ours.
    let down = s
        .command(&["destroy", "-i", "inventory.yaml", "--yes"])
        .output()
        .unwrap();
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    let end = g.dump();
    assert!(
        end["applications"].as_array().unwrap().is_empty(),
        "{}",
        end["applications"]
    );
    assert!(end["projects"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["path_with_namespace"] != "acme/management"));
    assert!(end["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|gr| gr["full_path"] != "acme"));
    assert!(token_named(&end, "nautes-install").iter().all(|t| t["revoked"] == true));
    assert!(!s.workdir().join("outputs/gitlab/admin-token.json").exists());
}

#[test]
fn an_edited_oauth_app_is_reported_then_replaced_when_allowed() {
    let (g, s) = setup("");
    assert_eq!(code(&apply(&s)), 0);
    let app = g.dump()["applications"][0].clone();
    g.edit_application(
        app["id"].as_u64().unwrap(),
        Some("https://evil.example.com/cb"),
        None,
        None,
    );

    let out = apply(&s);
    assert_ne!(code(&out), 0, "a changed OAuth application must not pass silently");
    let err = stderr(&out);
    assert!(
        err.contains("https://evil.example.com/cb") && err.contains("oauthRecreateOnDrift"),
        "{err}"
    );
    assert_ne!(s.step_status("gitlab/configure").as_deref(), Some("done"));

    s.write_inventory(&inventory(&g.url(), "      oauthRecreateOnDrift: true\n"));
    let out = apply(&s);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let apps = g.dump()["applications"].as_array().unwrap().clone();
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(apps[0]["redirect_uri"], "https://dex.nautes.example.com/callback");
    assert_eq!(credential(&s, "dex-oauth-app")["clientSecret"], apps[0]["secret"]);
}

#[test]
fn a_rejected_push_fails_the_step_and_a_later_run_finishes() {
    let (g, s) = setup("");
    // The group and project exist already (someone made them) and refuse pushes.
    let (st, _, group) = g.call(
        "POST",
        "/api/v4/groups",
        Some(BOOTSTRAP),
        Some(&json!({"name": "acme", "path": "acme"})),
    );
    assert_eq!(st, 201);
    let (st, _, _) = g.call(
        "POST",
        "/api/v4/projects",
        Some(BOOTSTRAP),
        Some(&json!({"name": "management", "namespace_id": group["id"]})),
    );
    assert_eq!(st, 201);
    g.reject_push("acme/management", true);

    let out = apply(&s);
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.contains("You are not allowed to push into this branch"), "{err}");
    assert!(err.contains("acme/management"), "{err}");
    assert_ne!(s.step_status("gitlab/configure").as_deref(), Some("done"));
    assert!(management(&g.dump())["branches"]["main"].is_null(), "nothing landed");

    g.reject_push("acme/management", false);
    let out = apply(&s);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(s.step_status("gitlab/configure").as_deref(), Some("done"));

    // They were not ours: teardown leaves group and project.
    let down = s
        .command(&["destroy", "-i", "inventory.yaml", "--yes"])
        .output()
        .unwrap();
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    let end = g.dump();
    assert!(end["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|gr| gr["full_path"] == "acme"));
    assert!(end["projects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["path_with_namespace"] == "acme/management"));
    assert!(end["applications"].as_array().unwrap().is_empty());
}

#[test]
fn a_file_a_user_edited_is_kept_while_untouched_ones_follow_the_template() {
    let (g, s) = setup("");
    assert_eq!(code(&apply(&s)), 0);
    let admin = credential(&s, "admin-token")["token"].as_str().unwrap().to_string();
    let id = management(&g.dump())["id"].clone();
    let (st, _, _) = g.call(
        "POST",
        &format!("/api/v4/projects/{id}/repository/commits"),
        Some(&admin),
        Some(&json!({"branch": "main", "commit_message": "ours now",
                      "actions": [{"action": "update", "file_path": "README.md", "content": "# edited by a person\n"}]})),
    );
    assert_eq!(st, 201);

    // The inventory changes what clusters.yaml renders.
    let body = inventory(&g.url(), "");
    let body = body.replace(
        "components:",
        "clusters:\n  - name: byo\n    type: external\n    external:\n      kubeconfig: kubeconfig\n    usage: [host]\ncomponents:",
    );
    std::fs::write(s.path().join("kubeconfig"), "apiVersion: v1\nkind: Config\n").unwrap();
    std::fs::set_permissions(s.path().join("kubeconfig"), std::fs::Permissions::from_mode(0o600)).unwrap();
    s.write_inventory(&body);
    g.reset_log();
    let out = apply(&s);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let files = management(&g.dump())["branches"]["main"]["files"].clone();
    assert_eq!(files["README.md"], "# edited by a person\n", "the user's edit survives");
    assert!(files["tenant/production/clusters.yaml"]
        .as_str()
        .unwrap()
        .contains("byo"));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("README.md"),
        "the kept edit is reported"
    );
    let commits: Vec<String> = g.writes().into_iter().filter(|w| w.contains("/commits")).collect();
    assert_eq!(commits.len(), 1, "{commits:?}");
}

#[test]
fn a_bootstrap_token_of_a_non_admin_is_refused_with_a_hint() {
    let (g, s) = setup("");
    // A project bot's token: a real user, not an administrator.
    let (st, _, project) = g.call(
        "POST",
        "/api/v4/projects",
        Some(BOOTSTRAP),
        Some(&json!({"name": "other"})),
    );
    assert_eq!(st, 201, "{project}");
    let (st, _, tok) = g.call(
        "POST",
        &format!("/api/v4/projects/{}/access_tokens", project["id"]),
        Some(BOOTSTRAP),
        Some(&json!({"name": "bot", "scopes": ["api"], "expires_at": in_days(10)})),
    );
    assert_eq!(st, 201, "{tok}");
    write_token(&s, tok["token"].as_str().unwrap());
    let out = apply(&s);
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.contains("not an administrator") && err.contains("bot"), "{err}");
    assert!(
        !err.contains(tok["token"].as_str().unwrap()),
        "the token leaked into the error"
    );
}

#[test]
fn an_edited_oauth_app_on_a_gitlab_we_can_reach_is_restored_in_place_with_the_same_client_id() {
    if hosts::skip_unless_available() {
        return;
    }
    let (g, s) = setup("      railsHost: node-1\n");
    let test_hosts = hosts::TestHosts::start(1);
    // The GitLab host's gitlab-rails (stand-in), which reaches the API stand-in.
    let bin = test_hosts.host_path(0, "/usr/local/bin/gitlab-rails");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/gitlab_rails_standin/gitlab-rails"
        ),
        &bin,
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(test_hosts.host_path(0, "/usr/local/bin/gitlab-standin-url"), g.url()).unwrap();
    std::fs::write(s.path().join("known_hosts"), test_hosts.known_hosts()).unwrap();
    let inventory = std::fs::read_to_string(s.inventory()).unwrap();
    let (header, body) = inventory.split_at(inventory.find("settings:").unwrap());
    std::fs::write(
        s.inventory(),
        format!(
            "{header}ssh:\n  identityFile: {}\n  knownHosts: known_hosts\n{}{body}",
            test_hosts.client_key().display(),
            test_hosts.inventory_hosts()
        ),
    )
    .unwrap();
    assert_eq!(code(&apply(&s)), 0);
    let before = g.dump()["applications"][0].clone();

    g.edit_application(
        before["id"].as_u64().unwrap(),
        Some("https://evil.example.com/cb"),
        None,
        None,
    );
    g.reset_log();
    let out = apply(&s);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = g.dump()["applications"].as_array().unwrap().clone();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["uid"], before["uid"], "the client id Dex uses is unchanged");
    assert_eq!(after[0]["secret"], before["secret"]);
    assert_eq!(after[0]["redirect_uri"], "https://dex.nautes.example.com/callback");
    assert!(g.writes().is_empty(), "no API write was needed: {:?}", g.writes());
    assert!(
        test_hosts
            .host_path(0, "/opt/nautes/gitlab/update-oauth-app.rb")
            .exists(),
        "the update script was placed on the host"
    );
}
