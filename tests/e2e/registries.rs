//! Harbor, Nexus and SonarQube configured through their APIs: the Harbor
//! and Nexus stand-ins' contracts (each test here fails against a lenient
//! stand-in), the installer's converge functions against them — first run,
//! a re-run with zero writes counted at the server, credentials stored 0600
//! and working, a tenant's removal taking exactly its resources — and the
//! same for SonarQube against the real SonarQube 9.9.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};

use crate::support::registries::{sonarqube_missing, Sonarqube, Standin};
use nautes_install::components::gitlab::credentials::CredentialStore;
use nautes_install::components::registries::{self, harbor, nexus, sonarqube, Endpoint, Report};
use nautes_install::drivers::harbor::Harbor;
use nautes_install::drivers::nexus::Nexus;
use nautes_install::drivers::sonarqube::Sonarqube as SonarClient;
use nautes_install::secret::Secret;

const HARBOR_DEFAULT: &str = "Harbor12345";
const JSON: &str = "application/json";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn endpoint(instance: &str, url: &str) -> Endpoint {
    Endpoint {
        instance: instance.into(),
        url: url.into(),
        ca_file: None,
        initial_password: None,
        vault: None,
        installed: false,
        pki_ca: false,
        resolve: None,
    }
}

/// Every file under `dir`, its mode and text.
fn files(dir: &Path) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            out.push((p.display().to_string(), mode, std::fs::read_to_string(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn stored(dir: &Path, name: &str) -> Value {
    let path = dir.join(format!("{}.json", name.replace('/', "-")));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn no_secret_in(report: &Report, secrets: &[&str]) {
    let text = format!("{:?} {:?}", report.writes, report.notes);
    for s in secrets {
        assert!(!text.contains(s), "a secret in the report: {text}");
    }
}

// ---- Harbor stand-in contract -------------------------------------------

#[test]
fn harbor_standin_requires_credentials_and_the_resource_name_header() {
    let h = Standin::harbor(HARBOR_DEFAULT);
    let admin = Some(("admin", HARBOR_DEFAULT));
    assert_eq!(h.call("GET", "/api/v2.0/ping", None, None).0, 200);
    assert_eq!(h.call("GET", "/api/v2.0/projects", None, None).0, 401);
    assert_eq!(
        h.call("GET", "/api/v2.0/projects", Some(("admin", "wrong")), None).0,
        401
    );
    let (status, v) = h.call("GET", "/api/v2.0/users/current", admin, None);
    assert_eq!((status, v["user_id"].as_u64()), (200, Some(1)));
    let body = r#"{"project_name":"team-a","metadata":{"public":"false"},"storage_limit":-1}"#;
    assert_eq!(h.call("POST", "/api/v2.0/projects", admin, Some((JSON, body))).0, 201);
    assert_eq!(h.call("POST", "/api/v2.0/projects", admin, Some((JSON, body))).0, 409);
    let upper = r#"{"project_name":"Team-A"}"#;
    assert_eq!(h.call("POST", "/api/v2.0/projects", admin, Some((JSON, upper))).0, 400);
    // A name in the path needs X-Is-Resource-Name; without it the segment is an id.
    assert_eq!(h.call("GET", "/api/v2.0/projects/team-a", admin, None).0, 400);
    let named = [("X-Is-Resource-Name", "true")];
    let (status, p) = h.call_with("GET", "/api/v2.0/projects/team-a", admin, None, &named);
    assert_eq!((status, p["metadata"]["public"].as_str()), (200, Some("false")));
    assert_eq!(
        h.call_with("GET", "/api/v2.0/projects/nope", admin, None, &named).0,
        404
    );
    // A project holding images is kept.
    assert_eq!(h.control("POST", "projects/team-a/push", "{}"), 200);
    assert_eq!(
        h.call_with("DELETE", "/api/v2.0/projects/team-a", admin, None, &named)
            .0,
        412
    );
}

/// A project's repositories, as the data-loss guard reads and deletes them:
/// listed by page with the project's name in front, deleted by a name
/// encoded twice (once is 404, as Harbor's router splits it at the `/`);
/// the project can go once they are gone.
#[test]
fn harbor_standin_lists_and_deletes_a_projects_repositories() {
    let h = Standin::harbor(HARBOR_DEFAULT);
    let admin = Some(("admin", HARBOR_DEFAULT));
    let body = r#"{"project_name":"team-a","metadata":{"public":"false"}}"#;
    assert_eq!(h.call("POST", "/api/v2.0/projects", admin, Some((JSON, body))).0, 201);
    assert_eq!(
        h.call("GET", "/api/v2.0/projects/nope/repositories", admin, None).0,
        404
    );
    for r in ["web/frontend", "api"] {
        let push = json!({"repository": r}).to_string();
        assert_eq!(h.control("POST", "projects/team-a/push", &push), 200);
    }
    let (status, page) = h.call(
        "GET",
        "/api/v2.0/projects/team-a/repositories?page=1&page_size=1",
        admin,
        None,
    );
    assert_eq!((status, page.as_array().map(Vec::len)), (200, Some(1)), "{page}");
    assert_eq!(page[0]["name"], "team-a/web/frontend");
    assert_eq!(
        h.call("GET", "/api/v2.0/projects/team-a/repositories", None, None).0,
        401
    );
    let client = Harbor::new(&h.url(), None, std::time::Duration::from_secs(30)).unwrap();
    let pw = Secret::new(HARBOR_DEFAULT);
    let auth = nautes_install::drivers::rest::Auth::Basic("admin", &pw);
    let names = rt().block_on(client.repositories(auth, "team-a")).unwrap();
    assert_eq!(names, ["web/frontend", "api"]);
    assert_eq!(
        h.call(
            "DELETE",
            "/api/v2.0/projects/team-a/repositories/web%2Ffrontend",
            admin,
            None
        )
        .0,
        404,
        "a name encoded once"
    );
    let named = [("X-Is-Resource-Name", "true")];
    assert_eq!(
        h.call_with("DELETE", "/api/v2.0/projects/team-a", admin, None, &named)
            .0,
        412
    );
    for r in ["web/frontend", "api"] {
        assert!(
            rt().block_on(client.delete_repository(auth, "team-a", r)).unwrap(),
            "{r}"
        );
    }
    assert!(!rt().block_on(client.delete_repository(auth, "team-a", "api")).unwrap());
    assert_eq!(
        h.call_with("DELETE", "/api/v2.0/projects/team-a", admin, None, &named)
            .0,
        200
    );
}

#[test]
fn harbor_standin_tells_a_robot_secret_once_and_prefixes_its_name() {
    let h = Standin::harbor(HARBOR_DEFAULT);
    let admin = Some(("admin", HARBOR_DEFAULT));
    let named = [("X-Is-Resource-Name", "true")];
    let body = r#"{"project_name":"team-a","metadata":{"public":"false"}}"#;
    assert_eq!(h.call("POST", "/api/v2.0/projects", admin, Some((JSON, body))).0, 201);
    let (_, p) = h.call_with("GET", "/api/v2.0/projects/team-a", admin, None, &named);
    let pid = p["project_id"].as_u64().unwrap();
    let robot = json!({"name": "pipeline", "level": "project", "duration": -1, "permissions": [
        {"kind": "project", "namespace": "team-a", "access": [{"resource": "repository", "action": "pull"}]}]});
    let (status, made) = h.call("POST", "/api/v2.0/robots", admin, Some((JSON, &robot.to_string())));
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["name"], "robot$team-a+pipeline");
    let secret = made["secret"].as_str().unwrap().to_string();
    assert!(!secret.is_empty());
    assert_eq!(
        h.call("POST", "/api/v2.0/robots", admin, Some((JSON, &robot.to_string())))
            .0,
        409
    );
    // Never again: not in the list, not in the robot.
    let (status, list) = h.call(
        "GET",
        &format!("/api/v2.0/robots?q=Level%3Dproject%2CProjectID%3D{pid}"),
        admin,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&secret), "the list shows the secret");
    let id = made["id"].as_u64().unwrap();
    let (_, one) = h.call("GET", &format!("/api/v2.0/robots/{id}"), admin, None);
    assert!(!one.to_string().contains(&secret), "the robot shows its secret");
    assert_eq!(h.call("GET", "/api/v2.0/robots?q=Level%3Dproject", admin, None).0, 400);
    // The robot logs in with it, for its own project only.
    let robot_auth = Some(("robot$team-a+pipeline", secret.as_str()));
    assert_eq!(
        h.call_with("GET", "/api/v2.0/projects/team-a", robot_auth, None, &named)
            .0,
        200
    );
    assert_eq!(h.call("GET", "/api/v2.0/configurations", robot_auth, None).0, 403);
    // Two permission scopes, or an upper-case name, are refused.
    let two = json!({"name": "x", "level": "project", "duration": -1, "permissions": [
        {"kind": "project", "namespace": "team-a", "access": [{"resource": "repository", "action": "pull"}]},
        {"kind": "project", "namespace": "team-a", "access": [{"resource": "repository", "action": "push"}]}]});
    assert_eq!(
        h.call("POST", "/api/v2.0/robots", admin, Some((JSON, &two.to_string())))
            .0,
        400
    );
    let upper = robot.to_string().replace("\"pipeline\"", "\"Pipeline\"");
    assert_eq!(h.call("POST", "/api/v2.0/robots", admin, Some((JSON, &upper))).0, 400);
}

#[test]
fn harbor_standin_guards_the_password_and_the_auth_mode() {
    let h = Standin::harbor(HARBOR_DEFAULT);
    let admin = Some(("admin", HARBOR_DEFAULT));
    let change = |old: &str, new: &str| {
        let body = json!({"old_password": old, "new_password": new}).to_string();
        h.call("PUT", "/api/v2.0/users/1/password", admin, Some((JSON, &body)))
            .0
    };
    assert_eq!(change("wrong", "Better-pw-1"), 403);
    assert_eq!(change(HARBOR_DEFAULT, "alllowercase1"), 400);
    assert_eq!(change(HARBOR_DEFAULT, HARBOR_DEFAULT), 400);
    let (_, conf) = h.call("GET", "/api/v2.0/configurations", admin, None);
    assert_eq!(conf["auth_mode"]["editable"], true);
    let oidc =
        json!({"auth_mode": "oidc_auth", "oidc_endpoint": "https://dex.example", "oidc_client_secret": "s3cret"});
    assert_eq!(
        h.call(
            "PUT",
            "/api/v2.0/configurations",
            admin,
            Some((JSON, &oidc.to_string()))
        )
        .0,
        200
    );
    let (_, conf) = h.call("GET", "/api/v2.0/configurations", admin, None);
    assert_eq!(conf["auth_mode"]["value"], "oidc_auth");
    assert!(!conf.to_string().contains("s3cret"), "the client secret is read back");
    let unknown = json!({"no_such_key": "x"});
    assert_eq!(
        h.call(
            "PUT",
            "/api/v2.0/configurations",
            admin,
            Some((JSON, &unknown.to_string()))
        )
        .0,
        400
    );
    // Once someone else has signed in, the mode is fixed.
    h.control("POST", "users", r#"{"username":"alice"}"#);
    let back = json!({"auth_mode": "db_auth"});
    assert_eq!(
        h.call(
            "PUT",
            "/api/v2.0/configurations",
            admin,
            Some((JSON, &back.to_string()))
        )
        .0,
        400
    );
    let (_, conf) = h.call("GET", "/api/v2.0/configurations", admin, None);
    assert_eq!(conf["auth_mode"]["editable"], false);
    assert_eq!(change(HARBOR_DEFAULT, "Better-pw-1"), 200);
    assert_eq!(h.call("GET", "/api/v2.0/users/current", admin, None).0, 401);
}

// ---- Nexus stand-in contract --------------------------------------------

#[test]
fn nexus_standin_writes_its_first_password_and_forgets_it_once_changed() {
    let n = Standin::nexus();
    let file = n.admin_password_file();
    let first = std::fs::read_to_string(&file).expect("admin.password written on first run");
    let admin = Some(("admin", first.as_str()));
    assert_eq!(n.call("GET", "/service/rest/v1/status", None, None).0, 200);
    assert_eq!(n.call("GET", "/service/rest/v1/status/check", None, None).0, 401);
    assert_eq!(n.call("GET", "/service/rest/v1/status/check", admin, None).0, 200);
    let path = "/service/rest/v1/security/users/admin/change-password";
    assert_eq!(n.call("PUT", path, admin, Some((JSON, "\"new-one\""))).0, 415);
    assert_eq!(n.call("PUT", path, admin, Some(("text/plain", ""))).0, 400);
    assert_eq!(n.call("PUT", path, admin, Some(("text/plain", "new-one"))).0, 204);
    assert!(!file.exists(), "admin.password outlived the change");
    assert_eq!(n.call("GET", "/service/rest/v1/status/check", admin, None).0, 401);
    assert_eq!(
        n.call("GET", "/service/rest/v1/status/check", Some(("admin", "new-one")), None)
            .0,
        200
    );
}

/// A repository's components, as the data-loss guard reads them: the
/// repository is required (422) and must exist (404), pages of 10 are
/// chained by a continuation token; deleting the repository deletes them.
#[test]
fn nexus_standin_lists_a_repositorys_components_in_pages() {
    let n = Standin::nexus();
    let first = std::fs::read_to_string(n.admin_password_file()).unwrap();
    let admin = Some(("admin", first.as_str()));
    let base = "/service/rest/v1";
    let repo = nexus::Repository {
        name: "a-maven".into(),
        format: nexus::Format::Maven,
        kind: nexus::Kind::Hosted,
        remote_url: None,
    };
    let body = repo.settings().to_string();
    let made = n.call(
        "POST",
        &format!("{base}/repositories/maven/hosted"),
        admin,
        Some((JSON, &body)),
    );
    assert_eq!(made.0, 201, "{}", made.1);
    assert_eq!(n.call("GET", &format!("{base}/components"), admin, None).0, 422);
    assert_eq!(
        n.call("GET", &format!("{base}/components?repository=nope"), admin, None)
            .0,
        404
    );
    for i in 0..12 {
        let c = json!({"group": "com.acme", "name": "lib", "version": format!("1.{i}")}).to_string();
        assert_eq!(n.control("POST", "repositories/a-maven/components", &c), 200);
    }
    let (status, page) = n.call("GET", &format!("{base}/components?repository=a-maven"), admin, None);
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let token = page["continuationToken"].as_str().unwrap().to_string();
    let (_, rest) = n.call(
        "GET",
        &format!("{base}/components?repository=a-maven&continuationToken={token}"),
        admin,
        None,
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["continuationToken"].is_null());
    let client = Nexus::new(&n.url(), None, std::time::Duration::from_secs(30)).unwrap();
    let pw = Secret::new(first.trim());
    let auth = nautes_install::drivers::rest::Auth::Basic("admin", &pw);
    let (all, more) = rt().block_on(client.components(auth, "a-maven", 100)).unwrap();
    assert_eq!((all.len(), more), (12, false));
    assert_eq!(all[0], "com.acme:lib:1.0");
    let (some, more) = rt().block_on(client.components(auth, "a-maven", 5)).unwrap();
    assert_eq!((some.len(), more), (10, true));
    assert_eq!(
        n.call("DELETE", &format!("{base}/repositories/a-maven"), admin, None).0,
        204
    );
    assert!(n.state()["components"]["a-maven"].is_null());
}

#[test]
fn nexus_standin_validates_repositories_roles_and_users() {
    let n = Standin::nexus();
    let first = std::fs::read_to_string(n.admin_password_file()).unwrap();
    let admin = Some(("admin", first.as_str()));
    let base = "/service/rest/v1";
    let incomplete = json!({"name": "a-maven", "online": true, "storage": {"blobStoreName": "default", "strictContentTypeValidation": true}});
    let (status, err) = n.call(
        "POST",
        &format!("{base}/repositories/maven/hosted"),
        admin,
        Some((JSON, &incomplete.to_string())),
    );
    assert_eq!(status, 400);
    assert!(err.to_string().contains("PARAMETER storage.writePolicy"), "{err}");
    let repo = nexus::Repository {
        name: "a-maven".into(),
        format: nexus::Format::Maven,
        kind: nexus::Kind::Hosted,
        remote_url: None,
    };
    let body = repo.settings().to_string();
    assert_eq!(
        n.call(
            "POST",
            &format!("{base}/repositories/maven/hosted"),
            admin,
            Some((JSON, &body))
        )
        .0,
        201
    );
    assert_eq!(
        n.call(
            "POST",
            &format!("{base}/repositories/maven/hosted"),
            admin,
            Some((JSON, &body))
        )
        .0,
        400
    );
    let (status, live) = n.call("GET", &format!("{base}/repositories/maven/hosted/a-maven"), admin, None);
    assert_eq!((status, live["format"].as_str()), (200, Some("maven2")));
    assert_eq!(
        n.call("GET", &format!("{base}/repositories/npm/hosted/a-maven"), admin, None)
            .0,
        404
    );
    let role = |privilege: &str| json!({"id": "r", "name": "r", "privileges": [privilege], "roles": []}).to_string();
    let roles = format!("{base}/security/roles");
    assert_eq!(
        n.call(
            "POST",
            &roles,
            admin,
            Some((JSON, &role("nx-repository-view-maven2-nope-*")))
        )
        .0,
        400
    );
    assert_eq!(
        n.call("POST", &roles, admin, Some((JSON, &role(&repo.privilege())))).0,
        200
    );
    let user = json!({"userId": "u", "firstName": "U", "lastName": "U", "emailAddress": "u@example.org",
        "password": "pw-u", "status": "active", "roles": ["nope"]});
    assert_eq!(
        n.call(
            "POST",
            &format!("{base}/security/users"),
            admin,
            Some((JSON, &user.to_string()))
        )
        .0,
        400
    );
    let user = user.to_string().replace("\"nope\"", "\"r\"");
    assert_eq!(
        n.call("POST", &format!("{base}/security/users"), admin, Some((JSON, &user)))
            .0,
        200
    );
    // The user browses exactly what its role grants and administers nothing.
    let (status, seen) = n.call("GET", &format!("{base}/repositories"), Some(("u", "pw-u")), None);
    assert_eq!((status, seen.as_array().map(Vec::len)), (200, Some(1)));
    assert_eq!(n.call("GET", &roles, Some(("u", "pw-u")), None).0, 403);
}

// ---- Harbor: the installer's converge -----------------------------------

fn harbor_projects(names: &[&str]) -> Vec<harbor::Project> {
    names
        .iter()
        .map(|n| harbor::Project {
            name: n.to_string(),
            public: false,
        })
        .collect()
}

#[test]
fn harbor_converges_once_then_writes_nothing_and_removes_exactly_a_tenants_projects() {
    let h = Standin::harbor(HARBOR_DEFAULT);
    let out = tempfile::tempdir().unwrap();
    let creds = out.path().join("harbor");
    let store = CredentialStore::Files(creds.clone());
    let client = Harbor::new(&h.url(), None, std::time::Duration::from_secs(30)).unwrap();
    let ep = endpoint("harbor", &h.url());
    let initial = Secret::new(HARBOR_DEFAULT);
    let dex_secret = Secret::new("dex-client-secret-for-harbor");
    let oidc = harbor::Oidc {
        endpoint: "https://dex.example.test".into(),
        client_id: "harbor".into(),
        client_secret_file: "harbor/dex-client-secret".into(),
        verify_cert: true,
    };
    let run = |tenants: &[(&str, &[&str])], removed: &[(&str, &[&str])]| {
        rt().block_on(async {
            let mut report = Report::default();
            let pw = harbor::admin_password(&client, &store, &ep, Some(&initial), &mut report)
                .await
                .unwrap();
            harbor::converge_oidc(&client, &store, "harbor", &pw, &oidc, &dex_secret, &mut report)
                .await
                .unwrap();
            for (_, projects) in tenants {
                harbor::converge_tenant(&client, &store, "harbor", &pw, &harbor_projects(projects), &mut report)
                    .await
                    .unwrap();
            }
            for (_, projects) in removed {
                harbor::remove_tenant(&client, &store, "harbor", &pw, &harbor_projects(projects), &mut report)
                    .await
                    .unwrap();
            }
            report
        })
    };
    let a: (&str, &[&str]) = ("a", &["a-app", "a-base"]);
    let b: (&str, &[&str]) = ("b", &["b-app"]);
    let first = run(&[a, b], &[]);
    assert!(!first.writes.is_empty());
    let writes = h.writes().len();
    // admin password, OIDC, 3 projects, 3 robots.
    assert_eq!(writes, 8, "{:?}", h.writes());
    let state = h.state();
    assert_eq!(state["config"]["auth_mode"], "oidc_auth");
    assert_eq!(state["config"]["oidc_client_id"], "harbor");
    assert_eq!(state["secretsSet"], json!(["oidc_client_secret"]));
    assert_eq!(
        state["robots"],
        json!(["robot$a-app+pipeline", "robot$a-base+pipeline", "robot$b-app+pipeline"])
    );
    // Ours logs in; the default no longer does.
    let admin_pw = stored(&creds, "harbor/admin")["password"].as_str().unwrap().to_string();
    assert_ne!(admin_pw, HARBOR_DEFAULT);
    assert_eq!(
        h.call("GET", "/api/v2.0/users/current", Some(("admin", HARBOR_DEFAULT)), None)
            .0,
        401
    );
    let robot = stored(&creds, &harbor::robot_record("harbor", "a-app"));
    let (user, secret) = (robot["username"].as_str().unwrap(), robot["password"].as_str().unwrap());
    assert_eq!(user, "robot$a-app+pipeline");
    let named = [("X-Is-Resource-Name", "true")];
    assert_eq!(
        h.call_with("GET", "/api/v2.0/projects/a-app", Some((user, secret)), None, &named)
            .0,
        200
    );
    no_secret_in(&first, &[&admin_pw, secret, dex_secret.expose()]);

    // The re-run reads and writes nothing.
    let again = run(&[a, b], &[]);
    assert_eq!(h.writes().len(), writes, "a re-run wrote: {:?}", &h.writes()[writes..]);
    assert!(again.writes.is_empty(), "{:?}", again.writes);

    // drift finds nothing, reading only; then names the robot someone deletes.
    let drift = || {
        let before = h.writes().len();
        let found: Vec<String> = rt().block_on(async {
            let mut all = Vec::new();
            for (_, projects) in [a, b] {
                let d = harbor::tenant_drift(&client, &store, "harbor", &harbor_projects(projects))
                    .await
                    .unwrap();
                all.extend(d.into_iter().map(|d| format!("{:?} {}", d.change, d.object)));
            }
            all
        });
        assert_eq!(h.writes().len(), before, "drift wrote: {:?}", &h.writes()[before..]);
        found
    };
    assert_eq!(drift(), Vec::<String>::new());

    // A robot someone deleted is made again (its old secret is gone with it).
    let (_, list) = h.call(
        "GET",
        "/api/v2.0/robots?q=Level%3Dproject%2CProjectID%3D2",
        Some(("admin", &admin_pw)),
        None,
    );
    let id = list[0]["id"].as_u64().unwrap();
    assert_eq!(
        h.call(
            "DELETE",
            &format!("/api/v2.0/robots/{id}"),
            Some(("admin", &admin_pw)),
            None
        )
        .0,
        200
    );
    let robot_project = list[0]["name"]
        .as_str()
        .unwrap()
        .trim_start_matches("robot$")
        .trim_end_matches("+pipeline")
        .to_string();
    assert_eq!(
        drift(),
        [format!("Missing Harbor robot pipeline of project {robot_project}")]
    );
    let healed = run(&[a, b], &[]);
    assert_eq!(healed.writes.len(), 1, "{:?}", healed.writes);
    assert_eq!(drift(), Vec::<String>::new());

    // Tenant b goes: its project and robot, and its stored credential; a's stay.
    let before = h.writes().len();
    let removed = run(&[a], &[b]);
    assert_eq!(removed.writes.len(), 2, "{:?}", removed.writes);
    assert_eq!(h.writes().len(), before + 2);
    let state = h.state();
    assert_eq!(
        state["projects"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["a-app", "a-base"]
    );
    assert_eq!(
        state["robots"],
        json!(["robot$a-app+pipeline", "robot$a-base+pipeline"])
    );
    assert!(!creds.join("harbor-robots-b-app.json").exists());
    assert!(creds.join("harbor-robots-a-app.json").exists());
    for (path, mode, _) in files(&creds) {
        assert_eq!(mode, 0o600, "{path}");
    }
}

#[test]
fn harbor_keeps_a_project_that_holds_images_and_says_why() {
    let h = Standin::harbor(HARBOR_DEFAULT);
    let out = tempfile::tempdir().unwrap();
    let store = CredentialStore::Files(out.path().join("harbor"));
    let client = Harbor::new(&h.url(), None, std::time::Duration::from_secs(30)).unwrap();
    let ep = endpoint("harbor", &h.url());
    let projects = harbor_projects(&["c-app"]);
    let err = rt().block_on(async {
        let mut report = Report::default();
        let pw = harbor::admin_password(&client, &store, &ep, Some(&Secret::new(HARBOR_DEFAULT)), &mut report)
            .await
            .unwrap();
        harbor::converge_tenant(&client, &store, "harbor", &pw, &projects, &mut report)
            .await
            .unwrap();
        h.control("POST", "projects/c-app/push", "{}");
        harbor::remove_tenant(&client, &store, "harbor", &pw, &projects, &mut report)
            .await
            .unwrap_err()
    });
    assert!(
        err.message.contains("412") && err.message.contains("c-app"),
        "{}",
        err.message
    );
    assert!(h.state()["projects"]["c-app"].is_object());
}

// ---- Nexus: the installer's converge ------------------------------------

#[test]
fn nexus_takes_over_admin_converges_tenants_and_rereruns_with_zero_writes() {
    let n = Standin::nexus();
    let out = tempfile::tempdir().unwrap();
    let creds = out.path().join("nexus");
    let store = CredentialStore::Files(creds.clone());
    let client = Nexus::new(&n.url(), None, std::time::Duration::from_secs(30)).unwrap();
    let ep = endpoint("nexus", &n.url());
    let file = n.admin_password_file();
    let first_pw = std::fs::read_to_string(&file).unwrap();
    let repos = |t: &str| {
        vec![
            nexus::Repository {
                name: format!("{t}-maven"),
                format: nexus::Format::Maven,
                kind: nexus::Kind::Hosted,
                remote_url: None,
            },
            nexus::Repository {
                name: format!("{t}-npm-proxy"),
                format: nexus::Format::Npm,
                kind: nexus::Kind::Proxy,
                remote_url: Some("https://registry.npmjs.org".into()),
            },
            nexus::Repository {
                name: format!("{t}-docker"),
                format: nexus::Format::Docker,
                kind: nexus::Kind::Hosted,
                remote_url: None,
            },
            nexus::Repository {
                name: format!("{t}-pypi"),
                format: nexus::Format::Pypi,
                kind: nexus::Kind::Hosted,
                remote_url: None,
            },
        ]
    };
    let run = |tenants: &[&str], removed: &[&str]| {
        rt().block_on(async {
            let mut report = Report::default();
            // The file is read while it exists, as the handler does.
            let initial = std::fs::read_to_string(&file).ok().map(Secret::new);
            let pw = nexus::admin_password(&client, &store, &ep, initial.as_ref(), &mut report)
                .await
                .unwrap();
            nexus::converge_anonymous(&client, &pw, false, &mut report)
                .await
                .unwrap();
            for t in tenants {
                nexus::converge_tenant(&client, &store, "nexus", &pw, t, &repos(t), &mut report)
                    .await
                    .unwrap();
            }
            for t in removed {
                nexus::remove_tenant(&client, &store, "nexus", &pw, t, &repos(t), &mut report)
                    .await
                    .unwrap();
            }
            report
        })
    };
    let first = run(&["a", "b"], &[]);
    // password, anonymous, 2 x (4 repositories, role, user)
    assert_eq!(n.writes().len(), 14, "{:?}", n.writes());
    assert!(!file.exists(), "Nexus keeps admin.password until the change");
    let admin_pw = stored(&creds, "nexus/admin")["password"].as_str().unwrap().to_string();
    assert_eq!(
        n.call("GET", "/service/rest/v1/status/check", Some(("admin", &first_pw)), None)
            .0,
        401
    );
    let state = n.state();
    assert_eq!(state["anonymous"], false);
    assert_eq!(
        state["roles"]["nautes-a"],
        json!([
            "nx-repository-view-docker-a-docker-*",
            "nx-repository-view-maven2-a-maven-*",
            "nx-repository-view-npm-a-npm-proxy-*",
            "nx-repository-view-pypi-a-pypi-*"
        ])
    );
    // The tenant's stored user browses its own repositories, not b's.
    let user = stored(&creds, &registries::tenant_record("nexus", "a"));
    let (u, p) = (user["username"].as_str().unwrap(), user["password"].as_str().unwrap());
    let (status, seen) = n.call("GET", "/service/rest/v1/repositories", Some((u, p)), None);
    assert_eq!(status, 200);
    let mut names: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a-docker", "a-maven", "a-npm-proxy", "a-pypi"]);
    no_secret_in(&first, &[&admin_pw, p, &first_pw]);

    let writes = n.writes().len();
    let again = run(&["a", "b"], &[]);
    assert_eq!(n.writes().len(), writes, "a re-run wrote: {:?}", &n.writes()[writes..]);
    assert!(again.writes.is_empty());
    // drift reads, writes nothing, and finds what someone changed.
    let drift = || {
        let before = n.writes().len();
        let found: Vec<String> = rt().block_on(async {
            let mut all = Vec::new();
            for t in ["a", "b"] {
                let d = nexus::tenant_drift(&client, &store, "nexus", t, &repos(t))
                    .await
                    .unwrap();
                all.extend(
                    d.into_iter()
                        .map(|d| format!("{:?} {} {:?}", d.change, d.object, d.field)),
                );
            }
            all
        });
        assert_eq!(n.writes().len(), before, "drift wrote: {:?}", &n.writes()[before..]);
        found
    };
    assert_eq!(drift(), Vec::<String>::new());

    // A repository setting someone changed is named by drift and put back, alone.
    let mut changed = repos("a")[0].settings();
    changed["storage"]["writePolicy"] = json!("allow");
    let (status, _) = n.call(
        "PUT",
        "/service/rest/v1/repositories/maven/hosted/a-maven",
        Some(("admin", &admin_pw)),
        Some((JSON, &changed.to_string())),
    );
    assert_eq!(status, 204);
    assert_eq!(drift(), ["Changed Nexus repository a-maven Some(\"settings\")"]);
    let healed = run(&["a", "b"], &[]);
    assert_eq!(healed.writes, ["repository a-maven settings"]);
    assert_eq!(drift(), Vec::<String>::new());

    // b goes, exactly.
    run(&["a"], &["b"]);
    let state = n.state();
    assert_eq!(
        state["repositories"],
        json!(["a-docker", "a-maven", "a-npm-proxy", "a-pypi"])
    );
    assert!(state["roles"]["nautes-b"].is_null() && state["users"]["nautes-b"].is_null());
    assert!(state["users"]["nautes-a"].is_array());
    assert!(!creds.join("nexus-tenants-b.json").exists());
}

// ---- SonarQube, real ------------------------------------------------------

#[test]
fn real_sonarqube_contract_and_converge() {
    if sonarqube_missing() {
        return;
    }
    let s = Sonarqube::start();
    // The contract we rely on, as 9.9 answers it.
    assert_eq!(s.call("GET", "/api/user_tokens/search", None, None).0, 401);
    let (status, v) = s.call("GET", "/api/authentication/validate", Some(("admin", "wrong")), None);
    assert_eq!((status, &v["valid"]), (200, &json!(false)));
    assert_eq!(
        s.call("GET", "/api/user_tokens/revoke?name=x", Some(("admin", "admin")), None)
            .0,
        405
    );

    let out = tempfile::tempdir().unwrap();
    let creds = out.path().join("sonarqube");
    let store = CredentialStore::Files(creds.clone());
    let client = SonarClient::new(&s.url(), None, std::time::Duration::from_secs(60)).unwrap();
    let ep = endpoint("sonarqube", &s.url());
    let default = Secret::new(sonarqube::DEFAULT_ADMIN_PASSWORD);
    let app_secret = Secret::new("gitlab-application-secret-for-sonarqube");
    let sign_in = sonarqube::GitlabSignIn {
        server_base_url: "https://sonarqube.example.test".into(),
        gitlab_url: "https://gitlab.example.test".into(),
        application_id: "sonar-app-id".into(),
        secret: nautes_install::inventory::SecretRef { env: None, file: None },
    };
    let run = |tenants: &[&str], removed: &[&str]| {
        rt().block_on(async {
            let mut report = Report::default();
            let pw = sonarqube::admin_password(&client, &store, &ep, &default, &mut report)
                .await
                .unwrap();
            sonarqube::converge_sign_in(&client, &store, "sonarqube", &pw, &sign_in, &app_secret, &mut report)
                .await
                .unwrap();
            for t in tenants {
                sonarqube::converge_tenant(&client, &store, "sonarqube", &pw, t, &mut report)
                    .await
                    .unwrap();
            }
            for t in removed {
                sonarqube::remove_tenant(&client, &store, "sonarqube", &pw, t, &mut report)
                    .await
                    .unwrap();
            }
            report
        })
    };
    let first = run(&["a", "b"], &[]);
    let writes = s.writes();
    // password, 4 settings + the secured application id and secret, 2 x (user, token)
    assert_eq!(writes.len(), 11, "{writes:#?}");
    assert_eq!(first.writes.len(), 11);
    let admin_pw = stored(&creds, "sonarqube/admin")["password"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = s.call("GET", "/api/authentication/validate", Some(("admin", "admin")), None);
    assert_eq!(v["valid"], false, "admin/admin still logs in");
    // The stored token works, as its user.
    let token = stored(&creds, &registries::tenant_record("sonarqube", "a"));
    let t = token["token"].as_str().unwrap();
    let (_, v) = s.call("GET", "/api/authentication/validate", Some((t, "")), None);
    assert_eq!(v["valid"], true);
    no_secret_in(&first, &[&admin_pw, t, app_secret.expose()]);
    let (_, v) = s.call(
        "GET",
        "/api/settings/values?keys=sonar.auth.gitlab.enabled,sonar.auth.gitlab.secret.secured",
        Some(("admin", &admin_pw)),
        None,
    );
    assert_eq!(v["settings"][0]["value"], "true", "{v}");
    assert!(
        v["setSecuredSettings"]
            .to_string()
            .contains("sonar.auth.gitlab.secret.secured"),
        "{v}"
    );

    let again = run(&["a", "b"], &[]);
    assert_eq!(
        s.writes().len(),
        writes.len(),
        "a re-run wrote: {:?}",
        &s.writes()[writes.len()..]
    );
    assert!(again.writes.is_empty());

    // A token whose value we lost is replaced; the old one stops working.
    std::fs::remove_file(creds.join("sonarqube-tenants-b.json")).unwrap();
    let a_token = t.to_string();
    let healed = run(&["a", "b"], &[]);
    assert_eq!(healed.writes, ["token of nautes-b revoked", "token of nautes-b"]);

    // a goes: its token stops working, b's does not.
    run(&["b"], &["a"]);
    let (_, v) = s.call("GET", "/api/authentication/validate", Some((&a_token, "")), None);
    assert_eq!(v["valid"], false, "a removed tenant's token still works");
    let b_token = stored(&creds, &registries::tenant_record("sonarqube", "b"));
    let (_, v) = s.call(
        "GET",
        "/api/authentication/validate",
        Some((b_token["token"].as_str().unwrap(), "")),
        None,
    );
    assert_eq!(v["valid"], true);
    assert!(!creds.join("sonarqube-tenants-a.json").exists());

    // The same SonarQube through the binary, its outputs where the calls
    // above kept the credentials: b is in place, c is new, then c goes.
    use crate::support::cli::{code, stderr, Scratch};
    let sc = Scratch::new();
    write_secret(&sc.path().join("kubeconfig"), "apiVersion: v1\nkind: Config\n");
    let body = |tenants: &str| {
        format!(
            "outputs:\n  dir: {}\nclusters:\n  - name: byo\n    type: external\n    external:\n      kubeconfig: kubeconfig\n    usage: [host]\n\
components:\n  sonarqube:\n    placement: external\n    external:\n      url: {}\ntenants:\n{tenants}",
            out.path().display(),
            s.url()
        )
    };
    let tenant = |name: &str| format!("  - name: {name}\n    cluster: byo\n    sonarqube: {{}}\n");
    sc.write_inventory(&body(&format!("{}{}", tenant("b"), tenant("c"))));
    let before = s.writes().len();
    let out1 = sc.run("apply", &["--yes"]);
    assert_eq!(code(&out1), 0, "{}", stderr(&out1));
    assert_eq!(s.writes()[before..], ["/api/users/create", "/api/user_tokens/generate"]);
    let c_token = stored(&creds, &registries::tenant_record("sonarqube", "c"))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let state = std::fs::read_to_string(sc.workdir().join("state.json")).unwrap();
    assert!(
        !state.contains(&c_token) && !state.contains(&admin_pw),
        "a credential in the state"
    );
    let before = s.writes().len();
    let out2 = sc.run("apply", &["--yes"]);
    assert_eq!(code(&out2), 0, "{}", stderr(&out2));
    assert_eq!(s.writes().len(), before, "a re-run wrote: {:?}", &s.writes()[before..]);
    sc.write_inventory(&body(&tenant("b")));
    let out3 = sc.run("apply", &["--yes"]);
    assert_eq!(code(&out3), 0, "{}", stderr(&out3));
    let (_, v) = s.call("GET", "/api/authentication/validate", Some((&c_token, "")), None);
    assert_eq!(v["valid"], false, "a removed tenant's token still works");
    assert!(!creds.join("sonarqube-tenants-c.json").exists());
}

// ---- Through the binary: inventory -> plan -> steps ----------------------

fn write_secret(path: &Path, value: &str) {
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn inventory(shared: &str, own: &str, nexus: &str, tenants: &str) -> String {
    format!(
        "clusters:\n  - name: byo\n    type: external\n    external:\n      kubeconfig: kubeconfig\n    usage: [host]\ncomponents:\n  harbor:\n    placement: external\n    external:\n      url: {shared}\n      token: {{ file: harbor-initial }}\n  nexus:\n    placement: external\n    external:\n      url: {nexus}\n      token: {{ file: nexus-data/admin.password }}\n    values:\n      anonymous: false\ntenants:\n{tenants}",
        tenants = tenants.replace("OWN_URL", own),
    )
}

const TENANT_A: &str = "  - name: a\n    cluster: byo\n    harborInstances:\n      - name: harbor-a\n        placement: external\n        external:\n          url: OWN_URL\n          token: { file: harbor-initial }\n    harbor:\n      - instance: harbor-a\n        projects: [a-app]\n      - projects: [a-shared]\n    nexus:\n      repositories:\n        - { name: a-maven, format: maven, type: hosted }\n";
const TENANT_B: &str = "  - name: b\n    cluster: byo\n    harbor:\n      - projects: [b-app]\n    nexus:\n      repositories:\n        - { name: b-npm, format: npm, type: proxy, remoteUrl: \"https://registry.npmjs.org\" }\n";

#[test]
fn apply_configures_shared_and_tenant_instances_reruns_with_zero_writes_and_removes_a_tenant() {
    use crate::support::cli::{code, stderr, stdout, Scratch};
    let shared = Standin::harbor(HARBOR_DEFAULT);
    let own = Standin::harbor(HARBOR_DEFAULT);
    let n = Standin::nexus();
    let s = Scratch::new();
    write_secret(&s.path().join("kubeconfig"), "apiVersion: v1\nkind: Config\n");
    write_secret(&s.path().join("harbor-initial"), HARBOR_DEFAULT);
    std::fs::create_dir(s.path().join("nexus-data")).unwrap();
    let first_nexus = std::fs::read_to_string(n.admin_password_file()).unwrap();
    write_secret(&s.path().join("nexus-data/admin.password"), &first_nexus);
    let both = format!("{TENANT_A}{TENANT_B}");
    s.write_inventory(&inventory(&shared.url(), &own.url(), &n.url(), &both));

    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    // The shared Harbor holds a-shared and b-app, a's own Harbor a-app alone.
    let keys = |v: &Value| v["projects"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&shared.state()), ["a-shared", "b-app"]);
    assert_eq!(keys(&own.state()), ["a-app"]);
    assert_eq!(n.state()["repositories"], json!(["a-maven", "b-npm"]));
    let outputs = s.workdir().join("outputs");
    let outputs = if outputs.is_dir() {
        outputs
    } else {
        s.path().join("outputs")
    };
    let creds = files(&outputs);
    assert!(!creds.is_empty(), "no credential stored under {}", outputs.display());
    let robot_files: Vec<_> = creds.iter().filter(|(p, _, _)| p.contains("robots")).collect();
    assert_eq!(robot_files.len(), 3, "{creds:#?}");
    // No credential in the state, the output or the log.
    let secrets: Vec<String> = creds
        .iter()
        .filter(|(p, _, _)| p.ends_with(".json"))
        .flat_map(|(_, _, text)| {
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            v.as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k == "password" || *k == "token")
                .filter_map(|(_, v)| v.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(secrets.len() >= 6, "{secrets:?}");
    let mut seen = format!("{}{}", stdout(&out), stderr(&out));
    seen.push_str(&std::fs::read_to_string(s.workdir().join("state.json")).unwrap());
    for (path, _, text) in files(&s.workdir()) {
        if !path.starts_with(&outputs.display().to_string()) {
            seen.push_str(&text);
        }
    }
    for secret in secrets.iter().chain([&first_nexus]) {
        assert!(
            !seen.contains(secret.as_str()),
            "a credential leaked into the state, a log or the output"
        );
    }

    // Re-run: every step re-checks its instance and writes nothing.
    let writes = (shared.writes().len(), own.writes().len(), n.writes().len());
    let reads = shared.requests().len();
    let again = s.run("apply", &["--yes"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(shared.requests().len() > reads, "the re-run did not re-check Harbor");
    assert_eq!(
        (shared.writes().len(), own.writes().len(), n.writes().len()),
        writes,
        "a re-run wrote: {:?} {:?} {:?}",
        &shared.writes()[writes.0..],
        &own.writes()[writes.1..],
        &n.writes()[writes.2..]
    );

    // Tenant a goes: its own Harbor's project, its shared project, its
    // Nexus repository, role and user; b keeps everything.
    s.write_inventory(&inventory(&shared.url(), &own.url(), &n.url(), TENANT_B));
    let removed = s.run("apply", &["--yes"]);
    assert_eq!(code(&removed), 0, "{}\n{}", stdout(&removed), stderr(&removed));
    assert_eq!(keys(&shared.state()), ["b-app"]);
    assert!(keys(&own.state()).is_empty());
    let state = n.state();
    assert_eq!(state["repositories"], json!(["b-npm"]));
    assert!(state["users"]["nautes-a"].is_null() && state["users"]["nautes-b"].is_array());
    assert_eq!(shared.state()["robots"], json!(["robot$b-app+pipeline"]));
    let left: Vec<String> = files(&outputs).into_iter().map(|(p, _, _)| p).collect();
    assert!(
        !left
            .iter()
            .any(|p| p.contains("tenants-a") || p.contains("a-app") || p.contains("a-shared")),
        "{left:#?}"
    );
}

/// With Vault installed, the credentials go to its `repo` KV engine on the
/// real OpenBao — the robot's secret there logs in to Harbor — and nothing
/// of theirs is left in the outputs; a re-run writes neither to Harbor nor
/// to OpenBao; the tenant's removal deletes its secrets there.
#[test]
fn with_vault_the_credentials_live_in_its_repo_engine() {
    use crate::support::cli::{code, stderr, Scratch};
    use crate::support::controlplane::{self, ControlPlane};
    use crate::support::vault::{self, OpenBao};
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    // Each tenant gets a Kubernetes auth mount in Vault: a real cluster API.
    let cp = ControlPlane::start();
    let v = OpenBao::start();
    let h = Standin::harbor(HARBOR_DEFAULT);
    let s = Scratch::new();
    write_secret(&s.path().join("kubeconfig"), &cp.kubeconfig());
    write_secret(&s.path().join("harbor-initial"), HARBOR_DEFAULT);
    let body = |tenants: &str| {
        format!(
            "{}  harbor:\n    placement: external\n    external:\n      url: {}\n      token: {{ file: harbor-initial }}\n\
clusters:\n  - name: byo\n    type: external\n    external:\n      kubeconfig: kubeconfig\n    usage: [host]\ntenants:\n{tenants}",
            vault::installer_inventory(&v.url()),
            h.url()
        )
    };
    s.write_inventory(&body(
        "  - name: a\n    cluster: byo\n    harbor:\n      - projects: [a-app]\n",
    ));
    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (status, kv) = v.api("GET", "/v1/repo/data/harbor/harbor/robots/a-app", None);
    assert_eq!(status, 200, "{kv}");
    let robot = &kv["data"]["data"];
    assert_eq!(robot["username"], "robot$a-app+pipeline");
    let named = [("X-Is-Resource-Name", "true")];
    let login = (robot["username"].as_str().unwrap(), robot["password"].as_str().unwrap());
    assert_eq!(
        h.call_with("GET", "/api/v2.0/projects/a-app", Some(login), None, &named)
            .0,
        200
    );
    let (status, admin) = v.api("GET", "/v1/repo/data/harbor/harbor/admin", None);
    assert_eq!(status, 200);
    let admin_pw = admin["data"]["data"]["password"].as_str().unwrap().to_string();
    assert_eq!(
        h.call("GET", "/api/v2.0/users/current", Some(("admin", &admin_pw)), None)
            .0,
        200
    );
    let outputs: String = files(s.path()).into_iter().map(|(_, _, t)| t).collect();
    assert!(
        !outputs.contains(login.1) && !outputs.contains(&admin_pw),
        "a credential outside Vault"
    );

    v.reset_log();
    let harbor_writes = h.writes().len();
    let again = s.run("apply", &["--yes"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(h.writes().len(), harbor_writes, "{:?}", &h.writes()[harbor_writes..]);
    assert!(v.writes().is_empty(), "writes to OpenBao on a re-run: {:?}", v.writes());

    s.write_inventory(&body("  - name: other\n    cluster: byo\n"));
    let removed = s.run("apply", &["--yes"]);
    assert_eq!(code(&removed), 0, "{}", stderr(&removed));
    assert_eq!(v.api("GET", "/v1/repo/data/harbor/harbor/robots/a-app", None).0, 404);
    assert!(h.state()["projects"].as_object().unwrap().is_empty());
}
