//! Argo CD RBAC from the tenants' groups, checked against Argo CD's own
//! semantics: the `policy.csv` the installer plans for `argocd-rbac-cm`
//! (taken from `nautes-install render`, the real planner) is loaded into the
//! real casbin library with Argo CD 2.4's model and glob matching, and asked
//! what signed-in users may do, in the order Argo CD's API server asks
//! (policy.default, the user, then each of the user's groups named by a `g`
//! line). See tests/casbin.

use crate::support::{casbin, cli};

use std::os::unix::fs::PermissionsExt;

use casbin::Ask;
use cli::{code, stderr, Scratch};
use serde_json::Value;

const ACME: &str = "    groups:\n      - name: acme/dev\n        role: developer\n      - name: acme/ops\n        role: admin\n      - name: acme/qa\n        role: viewer\n";
const OTHER: &str = "    groups:\n      - name: other/dev\n        role: developer\n";

fn inventory(acme_groups: &str) -> String {
    format!(
        "settings:\n  domain: nautes.test\n\
         clusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n    usage: [host, deployment]\n\
         tenants:\n  - name: acme\n    cluster: host\n{acme_groups}  - name: other\n    cluster: host\n{OTHER}\
         components:\n  gitlab:\n    placement: external\n    external:\n      url: https://gitlab.nautes.test\n      token: {{ file: gitlab-token }}\n    values:\n      group: acme\n\
         \x20 dex: {{}}\n  argocd: {{}}\n"
    )
}

/// The policy.csv and policy.default the installer plans for Argo CD.
fn rendered(acme_groups: &str) -> (String, String) {
    let s = Scratch::new();
    for (name, text) in [
        ("host.kubeconfig", "apiVersion: v1\nkind: Config\n"),
        ("gitlab-token", "t"),
    ] {
        let path = s.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    s.write_inventory(&inventory(acme_groups));
    let out = s.run("render", &["--out", "rendered"]);
    assert_eq!(code(&out), 0, "render: {}", stderr(&out));
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join("rendered/steps/stack__argocd__host.json")).unwrap(),
    )
    .unwrap();
    let rbac = &spec["runtime"]["rbac"];
    assert_eq!(rbac["scopes"], "[groups]", "Argo CD must read Dex's groups claim");
    let policy = rbac["policy.csv"]
        .as_str()
        .expect("the Argo CD step plans a policy.csv");
    let default_role = rbac["policy.default"].as_str().expect("and a policy.default");
    (policy.to_string(), default_role.to_string())
}

fn ask<'a>(sub: &'a str, groups: &'a [&'a str], res: &'a str, act: &'a str, obj: &'a str) -> Ask<'a> {
    Ask {
        sub,
        groups,
        res,
        act,
        obj,
    }
}

#[test]
fn tenant_groups_get_exactly_their_roles_on_their_own_project() {
    if casbin::skip_unless_available() {
        return;
    }
    let (policy, default_role) = rendered(ACME);
    let dev: &[&str] = &["acme/dev"];
    let viewer: &[&str] = &["acme/qa"];
    let admin: &[&str] = &["acme/ops"];
    let nobody: &[&str] = &[];
    let stranger: &[&str] = &["someone/else"];
    let questions = [
        // A developer of acme syncs acme's applications, runs their actions,
        // reads their logs, and nothing of another tenant.
        (ask("alice", dev, "applications", "sync", "acme/app"), true),
        (ask("alice", dev, "applications", "get", "acme/app"), true),
        (
            ask(
                "alice",
                dev,
                "applications",
                "action/apps/Deployment/restart",
                "acme/app",
            ),
            true,
        ),
        (ask("alice", dev, "logs", "get", "acme/app"), true),
        (ask("alice", dev, "projects", "get", "acme"), true),
        (ask("alice", dev, "applications", "sync", "other/app"), false),
        (ask("alice", dev, "applications", "get", "other/app"), false),
        (ask("alice", dev, "applications", "delete", "acme/app"), false),
        (ask("alice", dev, "applications", "create", "acme/app"), false),
        (ask("alice", dev, "exec", "create", "acme/app"), false),
        (ask("alice", dev, "projects", "get", "other"), false),
        (
            ask("alice", dev, "clusters", "get", "https://kubernetes.default.svc"),
            false,
        ),
        // A viewer gets, never syncs.
        (ask("vera", viewer, "applications", "get", "acme/app"), true),
        (ask("vera", viewer, "logs", "get", "acme/app"), true),
        (ask("vera", viewer, "applications", "sync", "acme/app"), false),
        (
            ask(
                "vera",
                viewer,
                "applications",
                "action/apps/Deployment/restart",
                "acme/app",
            ),
            false,
        ),
        // An admin manages acme's applications, not the project itself.
        (ask("ada", admin, "applications", "delete", "acme/app"), true),
        (ask("ada", admin, "applications", "create", "acme/app"), true),
        (ask("ada", admin, "exec", "create", "acme/app"), true),
        (ask("ada", admin, "applications", "delete", "other/app"), false),
        (ask("ada", admin, "projects", "update", "acme"), false),
        // No group, or a group no tenant lists: nothing at all.
        (ask("nick", nobody, "applications", "get", "acme/app"), false),
        (ask("nick", nobody, "projects", "get", "acme"), false),
        (ask("sam", stranger, "applications", "get", "acme/app"), false),
        // Argo CD enforces the subject itself too, so a subject spelled like
        // a role has that role (casbin taught us this). Harmless here: Dex's
        // subjects are base64url and cannot hold the `:`, and the admin
        // account is disabled.
        (
            ask("role:acme-admin", nobody, "applications", "delete", "acme/app"),
            true,
        ),
        // So does a subject spelled like a group (the `g` lines apply to
        // subjects too): a Dex subject (base64url of the connector's user
        // id) can never hold the `/` of a GitLab subgroup's path.
        (ask("acme/ops", nobody, "applications", "delete", "acme/app"), true),
        // Another tenant's developer stays in its own project.
        (ask("otto", &["other/dev"], "applications", "sync", "other/app"), true),
        (ask("otto", &["other/dev"], "applications", "sync", "acme/app"), false),
    ];
    let asks: Vec<Ask> = questions
        .iter()
        .map(|(q, _)| ask(q.sub, q.groups, q.res, q.act, q.obj))
        .collect();
    let got = casbin::answers(&policy, &default_role, &asks);
    let wrong: Vec<String> = questions
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| want != *got)
        .map(|((q, want), _)| format!("{} {:?} {} {} {}: want {want}", q.sub, q.groups, q.act, q.res, q.obj))
        .collect();
    assert!(
        wrong.is_empty(),
        "Argo CD would answer otherwise:\n{}\n{policy}",
        wrong.join("\n")
    );
}

#[test]
fn removing_a_group_removes_exactly_its_binding() {
    if casbin::skip_unless_available() {
        return;
    }
    let (before, default_role) = rendered(ACME);
    let without_dev = ACME.replace("      - name: acme/dev\n        role: developer\n", "");
    let (after, _) = rendered(&without_dev);
    let gone: Vec<&str> = before.lines().filter(|l| !after.lines().any(|a| a == *l)).collect();
    let added: Vec<&str> = after.lines().filter(|l| !before.lines().any(|b| b == *l)).collect();
    assert_eq!(gone, ["g, acme/dev, role:acme-developer"]);
    assert!(added.is_empty(), "{added:?}");
    // And Argo CD takes the developer's rights away, and no one else's.
    let q = [
        ask("alice", &["acme/dev"], "applications", "sync", "acme/app"),
        ask("ada", &["acme/ops"], "applications", "sync", "acme/app"),
    ];
    assert_eq!(casbin::answers(&before, &default_role, &q), [true, true]);
    assert_eq!(casbin::answers(&after, &default_role, &q), [false, true]);
}

/// Why `policy.default` stays empty: with Argo CD's built-in
/// `role:readonly` as the default, which the checker loads as Argo CD does,
/// anyone signed in would see every tenant's applications.
#[test]
fn a_readonly_default_would_show_every_tenant_to_everyone() {
    if casbin::skip_unless_available() {
        return;
    }
    let (policy, default_role) = rendered(ACME);
    assert_eq!(default_role, "");
    let q = [
        ask("nick", &[], "applications", "get", "other/app"),
        ask("alice", &["acme/dev"], "applications", "get", "other/app"),
        ask("nick", &[], "applications", "sync", "other/app"),
    ];
    assert_eq!(casbin::answers(&policy, "role:readonly", &q), [true, true, false]);
    assert_eq!(casbin::answers(&policy, &default_role, &q), [false, false, false]);
}

/// The checker is strict where Argo CD is: a policy line Argo CD would
/// misread is refused, so a malformed rendering cannot pass as "no access".
#[test]
fn the_checker_refuses_a_policy_argo_cd_would_not_load() {
    if casbin::skip_unless_available() {
        return;
    }
    let q = [ask("a", &["g"], "applications", "get", "acme/app")];
    let err = casbin::try_answers("p, role:x, applications, get, acme/*\n", "", &q).unwrap_err();
    assert!(err.contains("invalid RBAC policy line"), "{err}");
    let err = casbin::try_answers("x, role:x, g\n", "", &q).unwrap_err();
    assert!(err.contains("invalid RBAC policy line"), "{err}");
}
