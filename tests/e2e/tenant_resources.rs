//! Tenants owning their resources, end to end through the real binary: two
//! tenants, each with its own Harbor instance (the Harbor stand-in, twice)
//! and its own GitLab group (the GitLab stand-in), on a real OpenBao whose
//! `tenant` engine holds each tenant's secrets under its own path, and a
//! real kube-apiserver (each tenant's Kubernetes auth mount). A re-run
//! writes nothing anywhere; removing a tenant whose resources hold data is
//! refused by the data-loss guard, naming what holds it, and removes
//! nothing; with `allowDataLoss` the tenant's resources — exactly those —
//! go, the other tenant's stay.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use crate::support::cli::{code, stderr, stdout, Scratch};
use crate::support::controlplane::{self, ControlPlane};
use crate::support::gitlab::GitlabStandin;
use crate::support::registries::Standin;
use crate::support::vault::{self, OpenBao};
use nautes_install::components::vault_oidc::{policy_hcl, policy_name};
use nautes_install::inventory::TenantRole;

const HARBOR_DEFAULT: &str = "Harbor12345";
const BOOTSTRAP: &str = "glpat-bootstrapKnownValue1";

fn write_secret(path: &Path, value: &str) {
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn tenant(name: &str, harbor_url: &str, allow: bool) -> String {
    format!(
        "  - name: {name}\n    cluster: byo\n    allowDataLoss: {allow}\n    gitlab: {{ group: {name}-team }}\n    harborInstances:\n      - name: harbor-{name}\n        placement: external\n        external:\n          url: {harbor_url}\n          token: {{ file: harbor-initial }}\n    harbor:\n      - instance: harbor-{name}\n        projects: [{name}-app]\n"
    )
}

fn inventory(vault_url: &str, gitlab_url: &str, tenants: &str) -> String {
    format!(
        "settings:\n  domain: nautes.example.com\n{}  gitlab:\n    placement: external\n    external:\n      url: {gitlab_url}\n      token: {{ file: gitlab-token }}\n    values:\n      group: platform\n\
clusters:\n  - name: byo\n    type: external\n    external:\n      kubeconfig: kubeconfig\n    usage: [host]\ntenants:\n{tenants}",
        vault::installer_inventory(vault_url)
    )
}

fn groups(g: &GitlabStandin) -> Vec<String> {
    let mut out: Vec<String> = g.dump()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["full_path"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

fn projects(h: &Standin) -> Vec<String> {
    h.state()["projects"].as_object().unwrap().keys().cloned().collect()
}

fn apply(s: &Scratch) -> std::process::Output {
    s.run("apply", &["--yes"])
}

#[test]
fn two_tenants_own_harbor_instances_gitlab_groups_and_vault_paths_and_one_goes_alone() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    let cp = ControlPlane::start();
    let v = OpenBao::start();
    let g = GitlabStandin::start_with("root-password-not-used", BOOTSTRAP);
    let (ha, hb) = (Standin::harbor(HARBOR_DEFAULT), Standin::harbor(HARBOR_DEFAULT));
    let s = Scratch::new();
    write_secret(&s.path().join("kubeconfig"), &cp.kubeconfig());
    write_secret(&s.path().join("harbor-initial"), HARBOR_DEFAULT);
    write_secret(&s.path().join("gitlab-token"), BOOTSTRAP);
    let both = |allow_a: bool| format!("{}{}", tenant("a", &ha.url(), allow_a), tenant("b", &hb.url(), false));
    s.write_inventory(&inventory(&v.url(), &g.url(), &both(false)));
    let out = apply(&s);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));

    // Each tenant's group, next to the platform's; each Harbor its own project.
    assert_eq!(groups(&g), ["a-team", "b-team", "platform"]);
    assert_eq!(projects(&ha), ["a-app"]);
    assert_eq!(projects(&hb), ["b-app"]);

    // Each tenant's Vault path is its own: a's policies (as vault_oidc
    // writes them for a's groups) reach a's path and not b's, on OpenBao.
    for (t, role) in [("a", TenantRole::Developer), ("b", TenantRole::Admin)] {
        let name = policy_name(t, role);
        let (status, body) = v.api(
            "PUT",
            &format!("/v1/sys/policies/acl/{name}"),
            Some(&json!({"policy": policy_hcl(t, role)})),
        );
        assert!(status < 300, "{body}");
    }
    let (status, made) = v.api(
        "POST",
        "/v1/auth/token/create",
        Some(&json!({"policies": [policy_name("a", TenantRole::Developer)], "ttl": "10m"})),
    );
    assert_eq!(status, 200, "{made}");
    let a_token = made["auth"]["client_token"].as_str().unwrap().to_string();
    let secret = json!({"data": {"password": "tenant-a-db-password"}});
    assert_eq!(v.api_as(&a_token, "POST", "/v1/tenant/data/a/db", Some(&secret)).0, 200);
    let b_secret = json!({"data": {"password": "tenant-b-db-password"}});
    assert_eq!(v.api("POST", "/v1/tenant/data/b/db", Some(&b_secret)).0, 200);
    assert_eq!(v.api_as(&a_token, "GET", "/v1/tenant/data/b/db", None).0, 403);
    assert_eq!(v.api_as(&a_token, "POST", "/v1/tenant/data/b/x", Some(&secret)).0, 403);
    // A neighbour whose name starts with a's is not a's either.
    assert_eq!(v.api_as(&a_token, "GET", "/v1/tenant/data/ab/db", None).0, 403);

    // Re-run: nothing written to GitLab, either Harbor or OpenBao.
    g.reset_log();
    v.reset_log();
    let harbor_writes = (ha.writes().len(), hb.writes().len());
    let again = apply(&s);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(g.writes().is_empty(), "GitLab writes on a re-run: {:?}", g.writes());
    assert!(v.writes().is_empty(), "OpenBao writes on a re-run: {:?}", v.writes());
    assert_eq!((ha.writes().len(), hb.writes().len()), harbor_writes);

    // a's resources hold data: an image, a project in its group, a secret.
    assert_eq!(
        ha.control("POST", "projects/a-app/push", r#"{"repository": "web/frontend"}"#),
        200
    );
    let group_id = g.dump()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["full_path"] == "a-team")
        .unwrap()["id"]
        .clone();
    let (status, _, made) = g.call(
        "POST",
        "/api/v4/projects",
        Some(BOOTSTRAP),
        Some(&json!({"name": "shop", "path": "shop", "namespace_id": group_id})),
    );
    assert_eq!(status, 201, "{made}");

    // a removed without its consent: refused, naming what holds data and
    // the way out; nothing of a's (or b's) is gone.
    s.write_inventory(&inventory(&v.url(), &g.url(), &tenant("b", &hb.url(), false)));
    let refused = apply(&s);
    assert_ne!(code(&refused), 0, "{}", stdout(&refused));
    let said = format!("{}{}", stdout(&refused), stderr(&refused));
    for what in [
        "GitLab group a-team (1 project(s): a-team/shop)",
        "Harbor project a-app (1 repositories: web/frontend)",
        "Vault path tenant/a/ (1 secrets: db)",
        "allowDataLoss: true",
    ] {
        assert!(said.contains(what), "missing `{what}` in:\n{said}");
    }
    assert_eq!(groups(&g), ["a-team", "b-team", "platform"]);
    assert_eq!(projects(&ha), ["a-app"]);
    assert_eq!(v.api("GET", "/v1/tenant/data/a/db", None).0, 200);

    // With a's consent (applied first, kept in its steps), a goes: exactly
    // its group, its Harbor project with its image, its secrets.
    s.write_inventory(&inventory(&v.url(), &g.url(), &both(true)));
    let consent = apply(&s);
    assert_eq!(code(&consent), 0, "{}", stderr(&consent));
    s.write_inventory(&inventory(&v.url(), &g.url(), &tenant("b", &hb.url(), false)));
    let removed = apply(&s);
    assert_eq!(code(&removed), 0, "{}\n{}", stdout(&removed), stderr(&removed));
    assert_eq!(groups(&g), ["b-team", "platform"]);
    assert!(projects(&ha).is_empty(), "{:?}", ha.state());
    assert_eq!(projects(&hb), ["b-app"]);
    assert_eq!(v.api("GET", "/v1/tenant/metadata/a/db", None).0, 404);
    assert_eq!(v.api("GET", "/v1/tenant/data/b/db", None).0, 200);
    assert_eq!(
        v.api("GET", "/v1/sys/auth", None).1["data"]
            .as_object()
            .map(|m| (m.contains_key("kubernetes-a/"), m.contains_key("kubernetes-b/"))),
        Some((false, true))
    );
    // No tenant secret in the state, the output or a log.
    let mut seen = format!("{}{}", stdout(&removed), stderr(&removed));
    seen.push_str(&std::fs::read_to_string(s.workdir().join("state.json")).unwrap());
    assert!(!seen.contains("tenant-a-db-password") && !seen.contains("tenant-b-db-password"));

    // And again: nothing to do, nothing written.
    g.reset_log();
    v.reset_log();
    let writes = hb.writes().len();
    let last = apply(&s);
    assert_eq!(code(&last), 0, "{}", stderr(&last));
    assert!(g.writes().is_empty(), "{:?}", g.writes());
    assert!(v.writes().is_empty(), "{:?}", v.writes());
    assert_eq!(hb.writes().len(), writes);
}
