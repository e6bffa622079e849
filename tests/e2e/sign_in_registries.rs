//! Unified sign-in, the registries' half (issue 19): Harbor signs in
//! through the real Dex when Dex is installed (its client derived from the
//! Harbor instances the inventory configures, one callback per instance
//! URL), and a tenant's groups become members of the tenant's Harbor
//! projects with their role. Harbor is the stand-in (its member and
//! configuration contract from Harbor v2.5.1's source, checked here to
//! fail when made lenient); Dex is real.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::dex::{self, Dex, DexOptions};
use crate::support::gitlab::GitlabStandin;
use crate::support::registries::{sonarqube_missing, Sonarqube, Standin};
use nautes_install::components::gitlab::credentials::CredentialStore;
use nautes_install::components::registries::{harbor, sonarqube, Report};
use nautes_install::drivers::harbor::Harbor;
use nautes_install::drivers::sonarqube::Sonarqube as SonarClient;
use nautes_install::plan::Step;
use nautes_install::secret::Secret;

const HARBOR_DEFAULT: &str = "Harbor12345";
const JSON: &str = "application/json";
const DOMAIN: &str = "sso.test";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The members of a project as the stand-in holds them: name -> [type, role].
fn members(h: &Standin, project: &str) -> Value {
    h.state()["members"][project].clone()
}

#[test]
fn harbor_standin_onboards_oidc_groups_only_in_oidc_mode_and_refuses_duplicates_and_unknown_roles() {
    let h = Standin::harbor(HARBOR_DEFAULT);
    let admin = Some(("admin", HARBOR_DEFAULT));
    let named = [("X-Is-Resource-Name", "true")];
    let body = json!({"project_name": "p1", "metadata": {"public": "false"}}).to_string();
    assert_eq!(h.call("POST", "/api/v2.0/projects", admin, Some((JSON, &body))).0, 201);
    // The creator is a member (ProjectAdmin) from the start.
    assert_eq!(members(&h, "p1"), json!({"admin": ["u", 1]}));
    let add = |group: &str, role: u64| {
        let b = json!({"role_id": role, "member_group": {"group_name": group, "group_type": 3}}).to_string();
        h.call_with("POST", "/api/v2.0/projects/p1/members", admin, Some((JSON, &b)), &named)
    };
    // Harbor's DB authenticator searches no groups: an unknown group is 404.
    let (status, v) = add("acme/dev", 2);
    assert_eq!(status, 404, "{v}");
    let oidc = json!({"auth_mode": "oidc_auth"}).to_string();
    assert_eq!(
        h.call("PUT", "/api/v2.0/configurations", admin, Some((JSON, &oidc))).0,
        200
    );
    assert_eq!(add("acme/dev", 9).0, 400, "a role Harbor does not have");
    assert_eq!(add("acme/dev", 2).0, 201);
    assert_eq!(add("acme/dev", 3).0, 409, "the same group twice");
    let (status, list) = h.call_with("GET", "/api/v2.0/projects/p1/members", admin, None, &named);
    assert_eq!(status, 200);
    let group = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["entity_type"] == "g")
        .unwrap();
    assert_eq!(
        (group["entity_name"].as_str(), group["role_id"].as_u64()),
        (Some("acme/dev"), Some(2))
    );
    assert_eq!(group["role_name"], "developer");
    let path = format!("/api/v2.0/projects/p1/members/{}", group["id"]);
    let bad = json!({"role_id": 0}).to_string();
    assert_eq!(h.call_with("PUT", &path, admin, Some((JSON, &bad)), &named).0, 400);
    assert_eq!(h.call_with("DELETE", &path, admin, None, &named).0, 200);
    assert_eq!(h.call_with("DELETE", &path, admin, None, &named).0, 404);
    // Without the resource-name header the segment must be an id.
    assert_eq!(h.call("GET", "/api/v2.0/projects/p1/members", admin, None).0, 400);
}

/// The inventory: Dex (through GitLab), the shared Harbor the stand-in
/// plays, and tenant acme with two groups and two projects on it.
fn loaded(harbor_url: &str, groups: &str) -> nautes_install::inventory::Loaded {
    let text = format!(
        "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n\
         settings:\n  domain: {DOMAIN}\n\
         clusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n    usage: [host]\n\
         tenants:\n  - name: acme\n    cluster: host\n    groups:\n{groups}    harbor:\n      - projects: [acme-app, acme-lib]\n\
         components:\n\
         \x20 gitlab:\n    placement: external\n    external:\n      url: https://gitlab.{DOMAIN}\n      token: {{ file: t }}\n    values:\n      group: acme\n\
         \x20 dex: {{}}\n\
         \x20 harbor:\n    placement: external\n    external:\n      url: {harbor_url}\n      token: {{ file: harbor-initial }}\n"
    );
    nautes_install::inventory::load_str(Path::new("inventory.yaml"), &text).unwrap_or_else(|r| panic!("{r:?}"))
}

fn plan(harbor_url: &str, groups: &str) -> Vec<Step> {
    nautes_install::components::plan_steps(&loaded(harbor_url, groups)).unwrap_or_else(|d| panic!("{d:?}"))
}

fn spec<T: serde::de::DeserializeOwned>(steps: &[Step], id: &str) -> T {
    let step = steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id}"));
    serde_json::from_value(step.spec.clone()).unwrap()
}

const BOTH: &str = "      - {name: acme/dev, role: developer}\n      - {name: acme/ops, role: admin}\n";
const DEV_ONLY: &str = "      - {name: acme/dev, role: viewer}\n";

/// Harbor's client is derived from the Harbor it configures: Dex gets the
/// callback below the instance's own URL, Harbor's configure step the
/// Dex issuer and client (and waits for Dex). Run against the stand-in
/// with the secret the real Dex holds, a user of group acme/dev gets an
/// id_token from the real Dex for Harbor's client at that callback whose
/// issuer, audience and group are exactly what Harbor is configured with
/// and the project members Harbor keeps. A re-run writes nothing; a group
/// removed or changed loses exactly its membership or role.
#[test]
fn harbor_signs_in_through_dex_and_the_tenants_groups_become_project_members() {
    if dex::skip_unless_available() {
        return;
    }
    let h = Standin::harbor(HARBOR_DEFAULT);
    let steps = plan(&h.url(), BOTH);
    let dex_step = steps.iter().find(|s| s.id == "stack/dex/host").expect("Dex planned");
    let callback = format!("{}/c/oidc/callback", h.url());
    assert!(dex_step.spec["runtime"]["clients"]
        .as_array()
        .unwrap()
        .contains(&json!("harbor")));
    assert_eq!(dex_step.spec["runtime"]["redirectUris"]["harbor"], json!([callback]));
    let configure = steps.iter().find(|s| s.id == "harbor/harbor/configure").unwrap();
    assert!(
        configure.needs.iter().any(|n| n == "stack/dex/host"),
        "{:?}",
        configure.needs
    );
    let instance: harbor::InstanceSpec = spec(&steps, "harbor/harbor/configure");
    let oidc = instance.oidc.clone().expect("Harbor signs in through Dex");
    let tenant: harbor::TenantSpec = spec(&steps, "harbor/harbor/tenant/acme");
    assert_eq!(tenant.groups.len(), 2);

    // The real Dex with the clients and redirect URIs the Dex step has.
    let gitlab = GitlabStandin::start();
    let mut opts = DexOptions::new(DOMAIN);
    opts.clients = serde_json::from_value(dex_step.spec["runtime"]["clients"].clone()).unwrap();
    opts.redirect_uris = serde_json::from_value(dex_step.spec["runtime"]["redirectUris"].clone()).unwrap();
    let dex = Dex::start_with(&gitlab, opts);
    // Dex and Harbor share the secret kept at the client's file: the one
    // this Dex holds.
    let dex_secret = Secret::new(dex.client_secret("harbor").unwrap());

    let out = tempfile::tempdir().unwrap();
    let store = CredentialStore::Files(out.path().join("harbor"));
    let client = Harbor::new(&h.url(), None, std::time::Duration::from_secs(30)).unwrap();
    let initial = Secret::new(HARBOR_DEFAULT);
    let run = |tenant: &harbor::TenantSpec, granted: &[String]| {
        rt().block_on(async {
            let mut report = Report::default();
            let pw = harbor::admin_password(&client, &store, &instance.endpoint, Some(&initial), &mut report)
                .await
                .unwrap();
            harbor::converge_oidc(&client, &store, "harbor", &pw, &oidc, &dex_secret, &mut report)
                .await
                .unwrap();
            harbor::converge_tenant(&client, &store, "harbor", &pw, &tenant.projects, &mut report)
                .await
                .unwrap();
            harbor::converge_groups(&client, &pw, &tenant.projects, &tenant.groups, granted, &mut report)
                .await
                .unwrap();
            report
        })
    };
    let first = run(&tenant, &[]);
    let state = h.state();
    assert_eq!(state["config"]["auth_mode"], "oidc_auth");
    assert_eq!(state["config"]["oidc_endpoint"], json!(dex.issuer()));
    assert_eq!(state["config"]["oidc_client_id"], "harbor");
    assert_eq!(state["config"]["oidc_groups_claim"], "groups");
    assert_eq!(
        state["clientSecretSha256"],
        json!(nautes_install::util::sha256_hex(dex_secret.expose().as_bytes())),
        "Harbor holds another client secret than Dex"
    );
    for project in ["acme-app", "acme-lib"] {
        assert_eq!(
            members(&h, project),
            json!({"admin": ["u", 1], "acme/dev": ["g", 2], "acme/ops": ["g", 1]}),
            "{project}"
        );
    }
    assert!(
        !format!("{:?}", first.writes).contains(dex_secret.expose()),
        "the client secret in the report"
    );

    // The real login, as Harbor's callback would receive it.
    let login = dex.login("harbor", "alice", &["acme/dev"]);
    assert_eq!(login.claims["iss"], state["config"]["oidc_endpoint"]);
    assert_eq!(login.claims["aud"], state["config"]["oidc_client_id"]);
    let groups = login.claims["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("acme/dev")), "{groups:?}");
    assert!(members(&h, "acme-app")[groups[0].as_str().unwrap()].is_array());

    // Re-run: zero writes.
    let granted: Vec<String> = tenant.groups.iter().map(|g| g.name.clone()).collect();
    let before = h.writes().len();
    let again = run(&tenant, &granted);
    assert!(again.writes.is_empty(), "{:?}", again.writes);
    assert_eq!(h.writes().len(), before, "{:?}", &h.writes()[before..]);

    // Someone adds a group by hand; acme/ops goes from the inventory and
    // acme/dev becomes viewer: exactly ops' memberships go, dev's role
    // changes, the hand-added group and the creator stay.
    let named = [("X-Is-Resource-Name", "true")];
    let b = json!({"role_id": 3, "member_group": {"group_name": "auditors", "group_type": 3}}).to_string();
    let admin_pw =
        serde_json::from_str::<Value>(&std::fs::read_to_string(out.path().join("harbor/harbor-admin.json")).unwrap())
            .unwrap()["password"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(
        h.call_with(
            "POST",
            "/api/v2.0/projects/acme-app/members",
            Some(("admin", &admin_pw)),
            Some((JSON, &b)),
            &named
        )
        .0,
        201
    );
    let fewer: harbor::TenantSpec = spec(&plan(&h.url(), DEV_ONLY), "harbor/harbor/tenant/acme");
    run(&fewer, &granted);
    assert_eq!(
        members(&h, "acme-app"),
        json!({"admin": ["u", 1], "acme/dev": ["g", 3], "auditors": ["g", 3]})
    );
    assert_eq!(
        members(&h, "acme-lib"),
        json!({"admin": ["u", 1], "acme/dev": ["g", 3]})
    );
}

/// Without Dex, Harbor keeps its own accounts: no OIDC, no groups, and
/// Dex — absent — has nothing to derive.
#[test]
fn without_dex_harbor_is_configured_without_sign_in_or_group_members() {
    let text = "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n\
         clusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n    usage: [host]\n\
         tenants:\n  - name: acme\n    cluster: host\n    harbor:\n      - projects: [acme-app]\n\
         components:\n  harbor:\n    placement: external\n    external:\n      url: https://registry.example.com\n";
    let loaded = nautes_install::inventory::load_str(Path::new("inventory.yaml"), text)
        .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
    let steps = nautes_install::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
    let instance: harbor::InstanceSpec = spec(&steps, "harbor/harbor/configure");
    assert!(instance.oidc.is_none());
    assert!(!steps.iter().any(|s| s.id.starts_with("stack/dex/")));
}

// ---- SonarQube, real ------------------------------------------------------

/// The permissions `group` holds on a project, or on the tenant's template.
fn sonar_permissions(s: &Sonarqube, admin_pw: &str, query: &str, group: &str) -> Vec<String> {
    let (status, v) = s.call(
        "GET",
        &format!("/api/permissions/{query}&ps=100"),
        Some(("admin", admin_pw)),
        None,
    );
    assert_eq!(status, 200, "{v}");
    let mut p: Vec<String> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == group)
        .flat_map(|g| g["permissions"].as_array().unwrap().clone())
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

/// On the real SonarQube 9.9: a tenant's groups get their role's
/// permissions on the tenant's permission template (key pattern
/// `<tenant>:.*`) and on the tenant's existing projects (less what a public
/// project gives everyone), and a project created afterwards starts with
/// them (SonarQube applies the template); another tenant's project and a
/// group granted by hand are not touched; a re-run writes nothing; a
/// removed group loses exactly its permissions; the tenant's removal takes
/// the template. Then GitLab sign-in, set through the settings API, makes
/// SonarQube list GitLab as its identity provider.
#[test]
fn sonarqube_tenant_groups_get_exactly_their_roles_permissions_and_gitlab_is_its_identity_provider() {
    if sonarqube_missing() {
        return;
    }
    let s = Sonarqube::start();
    let out = tempfile::tempdir().unwrap();
    let store = CredentialStore::Files(out.path().join("sonarqube"));
    let client = SonarClient::new(&s.url(), None, std::time::Duration::from_secs(60)).unwrap();
    let ep = nautes_install::components::registries::Endpoint {
        instance: "sonarqube".into(),
        url: s.url(),
        ca_file: None,
        initial_password: None,
        vault: None,
        installed: false,
        pki_ca: false,
        resolve: None,
    };
    let pw = rt().block_on(async {
        let mut report = Report::default();
        sonarqube::admin_password(
            &client,
            &store,
            &ep,
            &Secret::new(sonarqube::DEFAULT_ADMIN_PASSWORD),
            &mut report,
        )
        .await
        .unwrap()
    });
    let admin_pw = pw.expose().to_string();
    let admin = Some(("admin", admin_pw.as_str()));
    for (key, visibility) in [
        ("acme:priv", "private"),
        ("acme:pub", "public"),
        ("other:app", "private"),
    ] {
        let form = format!("project={key}&name={key}&visibility={visibility}");
        assert_eq!(s.call("POST", "/api/projects/create", admin, Some(&form)).0, 200);
    }
    assert_eq!(
        s.call("POST", "/api/user_groups/create", admin, Some("name=auditors"))
            .0,
        200
    );
    assert_eq!(
        s.call(
            "POST",
            "/api/permissions/add_group",
            admin,
            Some("projectKey=acme:priv&groupName=auditors&permission=codeviewer")
        )
        .0,
        204
    );
    let group = |name: &str, role| sonarqube::Group {
        name: name.into(),
        role,
    };
    use nautes_install::inventory::TenantRole::{Admin, Developer, Viewer};
    let run = |groups: &[sonarqube::Group], granted: &[String]| {
        rt().block_on(async {
            let mut report = Report::default();
            sonarqube::converge_groups(&client, &pw, "acme", groups, granted, &mut report)
                .await
                .unwrap();
            report
        })
    };
    let both = [group("acme/dev", Developer), group("acme/ops", Admin)];
    run(&both, &[]);
    let dev = ["codeviewer", "issueadmin", "securityhotspotadmin", "user"];
    let ops = ["admin", "codeviewer", "issueadmin", "securityhotspotadmin", "user"];
    let on_template = |g: &str| sonar_permissions(&s, &admin_pw, "template_groups?templateName=nautes-acme", g);
    let on = |p: &str, g: &str| sonar_permissions(&s, &admin_pw, &format!("groups?projectKey={p}"), g);
    assert_eq!(on_template("acme/dev"), dev);
    assert_eq!(on_template("acme/ops"), ops);
    assert_eq!(on("acme:priv", "acme/dev"), dev);
    assert_eq!(on("acme:priv", "acme/ops"), ops);
    assert_eq!(on("acme:pub", "acme/dev"), ["issueadmin", "securityhotspotadmin"]);
    assert!(on("other:app", "acme/dev").is_empty() && on("other:app", "acme/ops").is_empty());
    assert_eq!(on("acme:priv", "auditors"), ["codeviewer"]);
    let (_, t) = s.call("GET", "/api/permissions/search_templates?q=nautes-acme", admin, None);
    assert_eq!(t["permissionTemplates"][0]["projectKeyPattern"], "acme:.*");
    // A project the tenant's pipelines create later starts with them.
    let form = "project=acme:later&name=later&visibility=private";
    assert_eq!(s.call("POST", "/api/projects/create", admin, Some(form)).0, 200);
    assert_eq!(on("acme:later", "acme/ops"), ops);

    // Re-run: zero writes at the server.
    let granted: Vec<String> = both.iter().map(|g| g.name.clone()).collect();
    let before = s.writes().len();
    let again = run(&both, &granted);
    assert!(again.writes.is_empty(), "{:?}", again.writes);
    assert_eq!(s.writes().len(), before, "{:?}", &s.writes()[before..]);

    // acme/ops leaves the inventory, acme/dev becomes viewer.
    run(&[group("acme/dev", Viewer)], &granted);
    for p in ["acme:priv", "acme:later"] {
        assert!(on(p, "acme/ops").is_empty(), "{p}");
        assert_eq!(on(p, "acme/dev"), ["codeviewer", "user"], "{p}");
    }
    assert!(on_template("acme/ops").is_empty());
    assert!(on("acme:pub", "acme/dev").is_empty());
    assert_eq!(
        on("acme:priv", "auditors"),
        ["codeviewer"],
        "a hand-made grant was touched"
    );

    // The tenant goes: its template and its groups' grants.
    rt().block_on(async {
        let mut report = Report::default();
        sonarqube::remove_groups(&client, &pw, "acme", &["acme/dev".to_string()], &mut report)
            .await
            .unwrap();
    });
    let (_, t) = s.call("GET", "/api/permissions/search_templates?q=nautes-acme", admin, None);
    assert!(t["permissionTemplates"].as_array().unwrap().is_empty(), "{t}");
    assert!(on("acme:priv", "acme/dev").is_empty());
    assert_eq!(on("acme:priv", "auditors"), ["codeviewer"]);

    // Sign-in through GitLab (Dex's upstream): SonarQube lists it.
    let (_, v) = s.call("GET", "/api/users/identity_providers", None, None);
    assert_eq!(v["identityProviders"], json!([]));
    let sign_in = sonarqube::GitlabSignIn {
        server_base_url: s.url(),
        gitlab_url: "https://gitlab.sso.test".into(),
        application_id: "sonarqube-app-id".into(),
        secret: nautes_install::inventory::SecretRef { env: None, file: None },
    };
    let sign_in_run = || {
        rt().block_on(async {
            let mut report = Report::default();
            sonarqube::converge_sign_in(
                &client,
                &store,
                "sonarqube",
                &pw,
                &sign_in,
                &Secret::new("gitlab-app-secret"),
                &mut report,
            )
            .await
            .unwrap();
            report
        })
    };
    let first = sign_in_run();
    assert!(
        !format!("{:?}", first.writes).contains("gitlab-app-secret"),
        "the secret in the report"
    );
    let (_, v) = s.call(
        "GET",
        "/api/settings/values?keys=sonar.auth.gitlab.enabled,sonar.auth.gitlab.groupsSync,sonar.auth.gitlab.url",
        admin,
        None,
    );
    let values: Vec<&str> = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["true", "true", "https://gitlab.sso.test"], "{v}");
    let before = s.writes().len();
    assert!(sign_in_run().writes.is_empty());
    assert_eq!(s.writes().len(), before, "{:?}", &s.writes()[before..]);
    let (_, v) = s.call("GET", "/api/users/identity_providers", None, None);
    let keys: Vec<&str> = v["identityProviders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["key"].as_str())
        .collect();
    assert_eq!(keys, ["gitlab"], "{v}");
}

/// SonarQube's OAuth application in GitLab (the stand-in's 15.10 API):
/// made once with SonarQube's callback and the scopes group sync needs,
/// its secret kept 0600 and never in the report; a re-run makes no call
/// that writes; an application whose secret we lost, or whose callback
/// someone changed, is replaced. And the plan: with GitLab configured
/// here, SonarQube's configure step signs in through it and waits for it.
#[test]
fn sonarqubes_gitlab_application_is_made_once_and_replaced_when_lost_or_changed() {
    let gitlab = GitlabStandin::start_with("root-password-1", "admin-token-for-sonarqube");
    let token = Secret::new("admin-token-for-sonarqube");
    let gl =
        nautes_install::drivers::gitlab::Gitlab::new(&gitlab.url(), None, std::time::Duration::from_secs(30)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let creds = out.path().join("sonarqube");
    let store = CredentialStore::Files(creds.clone());
    let callback = sonarqube::gitlab_callback("https://sonarqube.sso.test/");
    assert_eq!(callback, "https://sonarqube.sso.test/oauth2/callback/gitlab");
    let run = || {
        rt().block_on(async {
            let mut report = Report::default();
            let app = sonarqube::ensure_gitlab_app(&gl, &token, &store, "sonarqube", &callback, &mut report)
                .await
                .unwrap();
            (app, report)
        })
    };
    let apps = || {
        let (status, _, v) = gitlab.call_bearer("GET", "/api/v4/applications", &gitlab.root_oauth_token(), None);
        assert_eq!(status, 200);
        v.as_array().unwrap().clone()
    };
    let ((id, secret), first) = run();
    assert_eq!(first.writes, ["GitLab application nautes-sonarqube-sonarqube"]);
    assert!(!format!("{:?}", first.writes).contains(secret.expose()));
    let live = apps();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["application_id"], json!(id));
    assert_eq!(live[0]["callback_url"], json!(callback));
    let file = creds.join("sonarqube-gitlab-application.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // The secret kept is the one GitLab holds for the application.
    let dump = gitlab.dump();
    let held = dump["applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["uid"] == json!(id))
        .unwrap();
    assert_eq!(held["secret"], json!(secret.expose()));

    let writes = gitlab.writes().len();
    let ((again_id, _), again) = run();
    assert_eq!(again_id, id);
    assert!(again.writes.is_empty(), "{:?}", again.writes);
    assert_eq!(gitlab.writes().len(), writes, "{:?}", &gitlab.writes()[writes..]);

    // Someone points it elsewhere: replaced (GitLab cannot edit one).
    gitlab.edit_application(
        live[0]["id"].as_u64().unwrap(),
        Some("https://evil.test/cb"),
        None,
        None,
    );
    let ((new_id, _), healed) = run();
    assert_ne!(new_id, id);
    assert_eq!(healed.writes.len(), 2, "{:?}", healed.writes);
    assert_eq!(apps().len(), 1);
    // Its secret lost: replaced too.
    std::fs::remove_file(&file).unwrap();
    let ((newer_id, _), _) = run();
    assert_ne!(newer_id, new_id);
    assert_eq!(apps().len(), 1);
    // Teardown: ours goes, someone else's stays.
    let (status, _, _) = gitlab.call_bearer(
        "POST",
        "/api/v4/applications",
        &gitlab.root_oauth_token(),
        Some(&json!({"name": "someone-elses", "redirect_uri": "https://x.test/cb", "scopes": "read_user"})),
    );
    assert_eq!(status, 201);
    rt().block_on(sonarqube::remove_gitlab_app(&gl, &token, &store, "sonarqube"))
        .unwrap();
    let left = apps();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["application_name"], "someone-elses");
    assert!(!file.exists());

    // The plan: GitLab configured here -> SonarQube signs in through it.
    let text = format!(
        "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n\
         settings:\n  domain: {DOMAIN}\n\
         clusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n    usage: [host]\n\
         components:\n\
         \x20 gitlab:\n    placement: external\n    external:\n      url: https://gitlab.{DOMAIN}\n      token: {{ file: t }}\n    values:\n      group: acme\n\
         \x20 sonarqube:\n    placement: external\n    external:\n      url: https://sonarqube.{DOMAIN}\n"
    );
    let loaded = nautes_install::inventory::load_str(Path::new("inventory.yaml"), &text)
        .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
    let steps = nautes_install::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
    let instance: sonarqube::InstanceSpec = spec(&steps, "sonarqube/sonarqube/configure");
    assert_eq!(
        instance.gitlab_app,
        Some(sonarqube::GitlabApp {
            ca_file: None,
            ours: false
        })
    );
    let step = steps.iter().find(|s| s.id == "sonarqube/sonarqube/configure").unwrap();
    assert!(step.needs.iter().any(|n| n == "gitlab/configure"), "{:?}", step.needs);
    for need in &step.needs {
        assert!(steps.iter().any(|s| &s.id == need), "needs unplanned {need}");
    }
}

// ---- The Tekton Dashboard behind oauth2-proxy ------------------------------

fn platform_plan(clusters: &str) -> Vec<Step> {
    let text = format!(
        "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n\
         settings:\n  domain: {DOMAIN}\n\
         clusters:\n{clusters}\
         components:\n\
         \x20 gitlab:\n    placement: external\n    external:\n      url: https://gitlab.{DOMAIN}\n      token: {{ file: t }}\n    values:\n      group: acme\n\
         \x20 traefik: {{}}\n  certManager: {{}}\n  dex: {{}}\n  oauth2Proxy: {{}}\n  tekton: {{}}\n"
    );
    let loaded = nautes_install::inventory::load_str(Path::new("inventory.yaml"), &text)
        .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
    nautes_install::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"))
}

/// Where Tekton runs behind Traefik, oauth2-proxy's step routes
/// `tekton.<domain>` to the dashboard through a forwardAuth (and waits for
/// the dashboard's step); where Tekton runs on another cluster, no route.
/// The objects are accepted by the real kube-apiserver with the Traefik
/// chart's CRDs (traefik.containo.us/v1alpha1, Traefik 2.8).
#[test]
fn the_tekton_dashboard_is_routed_only_through_oauth2_proxys_forward_auth() {
    use crate::support::controlplane::{self, ControlPlane};
    let one = "  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n    usage: [host, pipeline]\n";
    let steps = platform_plan(one);
    let proxy = steps
        .iter()
        .find(|s| s.id == "stack/oauth2-proxy/host")
        .expect("oauth2-proxy planned");
    assert!(
        proxy.spec.to_string().contains("\"tektonDashboard\":true"),
        "{}",
        proxy.spec
    );
    assert!(
        proxy.needs.iter().any(|n| n == "stack/tekton-dashboard/host"),
        "{:?}",
        proxy.needs
    );
    let two = format!("{one}  - name: ci\n    type: external\n    external:\n      kubeconfig: ci.kubeconfig\n    usage: [pipeline]\n")
        .replace("usage: [host, pipeline]", "usage: [host]");
    let steps = platform_plan(&two);
    assert!(steps.iter().any(|s| s.id == "stack/tekton-dashboard/ci"));
    let proxy = steps.iter().find(|s| s.id == "stack/oauth2-proxy/host").unwrap();
    assert!(!proxy.spec.to_string().contains("tektonDashboard"), "{}", proxy.spec);

    let objects = nautes_install::components::stack::runtime::tekton_dashboard_route(DOMAIN);
    let route = &objects[1];
    assert_eq!(route["spec"]["routes"][0]["match"], "Host(`tekton.sso.test`)");
    assert_eq!(
        route["spec"]["routes"][0]["middlewares"][0]["name"],
        objects[0]["metadata"]["name"]
    );
    assert_eq!(route["metadata"]["namespace"], objects[0]["metadata"]["namespace"]);
    let auth = &objects[0]["spec"]["forwardAuth"];
    assert_eq!(auth["address"], "http://oauth2-proxy.oauth2-proxy.svc:4180/oauth2/auth");
    assert_eq!(auth["trustForwardHeader"], true);

    if controlplane::skip_unless_available() {
        return;
    }
    let cp = ControlPlane::start();
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/charts/traefik-standin/crds");
    let out = cp.kubectl(&["apply", "-f", crds], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for crd in ["middlewares.traefik.containo.us", "ingressroutes.traefik.containo.us"] {
        let out = cp.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=60s",
            ],
            None,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = cp.kubectl(&["create", "namespace", "tekton-pipelines"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let out = cp.kubectl(&["apply", "--server-side", "-f", "-"], Some(&list.to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = cp.get("/apis/traefik.containo.us/v1alpha1/namespaces/tekton-pipelines/ingressroutes/tekton-dashboard");
    assert_eq!(
        v["spec"]["routes"][0]["middlewares"][0]["name"],
        "tekton-dashboard-sign-in"
    );
    let v =
        cp.get("/apis/traefik.containo.us/v1alpha1/namespaces/tekton-pipelines/middlewares/tekton-dashboard-sign-in");
    assert_eq!(
        v["spec"]["forwardAuth"]["authResponseHeaders"][0],
        "X-Auth-Request-User"
    );
}
