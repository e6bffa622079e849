//! Unified sign-in, the Kubernetes half (issue 19): the real Dex on the
//! config the installer renders, its GitLab connector signing users in
//! through the GitLab stand-in's OAuth endpoints, and the real
//! kube-apiserver with the OIDC flags the installer renders for K3s.

use serde_json::{json, Value};

use crate::support::cli::{code, stderr, Scratch};
use crate::support::controlplane::{self, ApiserverExtras, ControlPlane};
use crate::support::dex::{self, Dex, DexOptions};
use crate::support::gitlab::GitlabStandin;
use crate::support::http;
use crate::support::standin_controllers::{hnc_manager, Api};

/// The id_token Dex issues after the whole login carries the user's GitLab
/// groups as GitLab's userinfo reports them, for the client that asked.
#[test]
fn dex_issues_an_id_token_with_the_gitlab_groups_of_the_user() {
    if dex::skip_unless_available() {
        return;
    }
    let gitlab = GitlabStandin::start();
    let dex = Dex::start(&gitlab, "sso.test");
    let login = dex.login("kubernetes", "alice", &["acme-dev"]);
    let c = &login.claims;
    assert_eq!(c["iss"], json!("https://dex.sso.test"));
    assert_eq!(c["aud"], json!("kubernetes"));
    assert_eq!(c["groups"], json!(["acme-dev"]));
    assert_eq!(c["email"], json!("alice@example.com"));
    assert_eq!(c["email_verified"], json!(true));
    assert_eq!(c["name"], json!("User alice"));

    // A confidential client (Argo CD's) gets its own token the same way;
    // a subgroup of a group the user is in is in the claim too.
    dex.gitlab_user("carol", &["acme/web"]);
    let login = dex.login("argocd", "bob", &["acme"]);
    assert_eq!(login.claims["aud"], json!("argocd"));
    assert_eq!(login.claims["groups"], json!(["acme", "acme/web"]));

    // Dex asked GitLab for exactly what its connector reads.
    let paths: Vec<String> = gitlab
        .requests()
        .iter()
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    for expected in ["POST /oauth/token", "GET /api/v4/user", "GET /oauth/userinfo"] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not in {paths:?}");
    }
}

const DOMAIN: &str = "sso.test";

/// The tenants and the clusters the installer makes their access on (the
/// control plane, brought in), with Dex signing in through GitLab.
fn inventory(gitlab: &str, acme_groups: &str) -> String {
    format!(
        "settings:
  domain: {DOMAIN}
artifacts:
  mode: airgap
  bundle: bundle
clusters:
  - name: host
    type: external
    external:
      kubeconfig: host.kubeconfig
    usage: [host]
tenants:
  - name: acme
    cluster: host
    namespaces:
      - name: acme
        children:
          - name: acme-dev
    groups:
{acme_groups}  - name: globex
    cluster: host
    namespaces:
      - name: globex
    groups:
      - {{name: globex-dev, role: developer}}
components:
  gitlab:
    placement: external
    external:
      url: {gitlab}
      token: {{ file: gitlab-token }}
    values:
      group: acme
  dex: {{}}
"
    )
}

const ACME_GROUPS: &str = "      - {name: acme-dev, role: developer}\n      - {name: acme-admins, role: admin}\n";

/// The `kube-apiserver-arg` entries the installer renders for a K3s server
/// of this inventory (with a K3s cluster added), as the node step sends them.
fn k3s_apiserver_args(dir: &std::path::Path, inventory: &str) -> Vec<String> {
    let text = format!(
        "{}{}hosts:\n  - name: edge-1\n    address: 192.0.2.10\n",
        crate::support::cli::HEADER,
        inventory
            .replace("mode: airgap\n  bundle: bundle\n", "mode: online\n")
            .replace(
                "    usage: [host]\n",
                "    usage: [host]\n  - name: edge\n    type: k3s\n    k3s:\n      version: v1.27.4+k3s1\n      servers: [edge-1]\n"
            )
    );
    let path = dir.join("render.yaml");
    let loaded = nautes_install::inventory::load_str(&path, &text).unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
    let mut steps = Vec::new();
    nautes_install::components::k3s::plan(&loaded, &mut steps).unwrap_or_else(|d| panic!("{d:?}"));
    let server = steps
        .iter()
        .find(|s| s.id == "k3s/edge/server/edge-1")
        .expect("the server's step");
    let config: serde_yaml::Value = serde_yaml::from_str(server.spec["config"].as_str().unwrap()).unwrap();
    config["kube-apiserver-arg"]
        .as_sequence()
        .expect("kube-apiserver-arg in the server's config")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// A request to the apiserver with an id_token: status and JSON body.
fn as_user(kube: &ControlPlane, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut call = http::Call::new(method, format!("{}{path}", kube.url()))
        .header("Authorization", format!("Bearer {token}"))
        .trust(kube.ca_pem());
    if let Some(b) = body {
        call = call.header("Content-Type", "application/json").body(b.to_string());
    }
    let (status, text) = call.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// What the apiserver makes of a token: SelfSubjectReview's user, or the status.
fn who(kube: &ControlPlane, token: &str) -> (u16, Value) {
    let (status, body) = as_user(
        kube,
        token,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
    );
    (status, body["status"]["userInfo"].clone())
}

fn can(kube: &ControlPlane, token: &str, verb: &str, group: &str, resource: &str, ns: &str) -> bool {
    let (status, body) = as_user(
        kube,
        token,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        Some(
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource, "namespace": ns}}}),
        ),
    );
    assert_eq!(status, 201, "SelfSubjectAccessReview: {body}");
    body["status"]["allowed"] == json!(true)
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}}})
}

/// The Kubernetes half of unified sign-in, end to end: the real apiserver
/// started with the OIDC flags the installer renders for a K3s server, the
/// real Dex on the installer's config signing users in through GitLab, and
/// the RoleBindings the tenants' steps make (propagated by HNC's stand-in).
#[test]
fn a_tenant_group_signs_in_through_dex_and_gets_exactly_its_role() {
    if controlplane::skip_unless_available() || dex::skip_unless_available() {
        return;
    }
    let s = Scratch::new();
    let gitlab = GitlabStandin::start_with("unused", BOOTSTRAP);
    // The files the inventory names (the kubeconfig's content comes later).
    private(&s.path().join("host.kubeconfig"), "");
    private(&s.path().join("gitlab-token"), BOOTSTRAP);
    make_bundle(&s);
    s.write_inventory(&inventory(&gitlab.url(), ACME_GROUPS));
    // The installer's GitLab step makes Dex's OAuth application; Dex uses it.
    let out = s
        .command(&["apply", "--yes", "-i", "inventory.yaml", "--only", "gitlab/configure"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "gitlab: {}", stderr(&out));
    let app: Value =
        serde_json::from_str(&std::fs::read_to_string(s.workdir().join("outputs/gitlab/dex-oauth-app.json")).unwrap())
            .unwrap();
    let mut opts = DexOptions::new(DOMAIN);
    opts.gitlab_app = Some((
        app["clientId"].as_str().unwrap().into(),
        app["clientSecret"].as_str().unwrap().into(),
    ));
    // Long enough for the checks below; one token is kept until it lapses.
    opts.id_token_expiry = Some("60s".into());
    let dex = Dex::start_with(&gitlab, opts);
    // Another issuer: a Dex of its own for another domain, keys and all.
    let stranger = Dex::start(&gitlab, "elsewhere.test");

    let args = k3s_apiserver_args(s.path(), &inventory(&gitlab.url(), ACME_GROUPS));
    let ca_at = args
        .iter()
        .find_map(|a| a.strip_prefix("oidc-ca-file="))
        .expect("oidc-ca-file")
        .to_string();
    assert!(args.contains(&format!("oidc-issuer-url={}", dex.issuer())), "{args:?}");
    // The apiserver finds dex.<domain> at Dex's address and our CA where
    // the node step lays it (a private /etc/rancher for it alone).
    let rancher = s.path().join("etc-rancher");
    let relative = ca_at.strip_prefix("/etc/rancher/").expect("the CA under /etc/rancher");
    std::fs::create_dir_all(rancher.join(relative).parent().unwrap()).unwrap();
    std::fs::copy(dex.ca_path(), rancher.join(relative)).unwrap();
    std::fs::create_dir_all("/etc/rancher").unwrap();
    let mut kube = ControlPlane::start_with_apiserver(&ApiserverExtras {
        args: args.clone(),
        hosts: Some(dex.hosts_file()),
        binds: vec![(rancher, "/etc/rancher".into())],
    });
    kube.start_standin_controllers("webhooks");
    let _hnc = hnc_manager(Api::of(&kube));

    // The installer makes the tenants' trees and access.
    private(&s.path().join("host.kubeconfig"), &kube.kubeconfig());
    let apply = |s: &Scratch| {
        s.command(&[
            "apply",
            "--yes",
            "-i",
            "inventory.yaml",
            "--only",
            "tenant/acme/namespaces",
            "tenant/globex/namespaces",
        ])
        .output()
        .unwrap()
    };
    let out = apply(&s);
    assert_eq!(code(&out), 0, "apply: {}", stderr(&out));
    let binding = "/apis/rbac.authorization.k8s.io/v1/namespaces/acme/rolebindings/nautes:developer:acme-dev";
    let rb = kube.get(binding);
    assert_eq!(rb["roleRef"]["name"], json!("edit"), "{rb}");
    assert_eq!(
        rb["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "acme-dev"}])
    );
    // HNC copies it into the subnamespace.
    wait_for("the binding propagated to acme-dev", || {
        kube.get("/apis/rbac.authorization.k8s.io/v1/namespaces/acme-dev/rolebindings/nautes:developer:acme-dev")
            ["roleRef"]["name"]
            == json!("edit")
    });

    // Kept until it has expired, at the end.
    let lapsing = dex.login("kubernetes", "erin", &["acme-dev"]);

    let alice = dex.id_token("kubernetes", "alice", &["acme-dev"]);
    // The apiserver reads Dex's discovery and keys in the background.
    wait_for("the apiserver to accept Dex's tokens", || who(&kube, &alice).0 == 201);
    // Checked here, soon after the login: the rest of the test may take
    // longer than the token lives on a loaded machine.
    assert_eq!(who(&kube, &lapsing.id_token).0, 201, "valid before it expires");
    let (_, user) = who(&kube, &alice);
    assert_eq!(user["username"], json!("alice@example.com"));
    let groups: Vec<&str> = user["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(groups, ["acme-dev", "system:authenticated"]);

    // A developer of acme: workloads in acme's namespaces, nothing of globex's, no grants.
    assert!(can(&kube, &alice, "create", "apps", "deployments", "acme-dev"));
    assert!(can(&kube, &alice, "get", "", "secrets", "acme-dev"));
    assert!(!can(
        &kube,
        &alice,
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "acme-dev"
    ));
    assert!(!can(&kube, &alice, "get", "", "secrets", "globex"));
    assert!(!can(&kube, &alice, "list", "", "namespaces", ""));
    let (status, body) = as_user(
        &kube,
        &alice,
        "POST",
        "/apis/apps/v1/namespaces/acme-dev/deployments",
        Some(deployment("web")),
    );
    assert_eq!(status, 201, "alice creates a Deployment in acme-dev: {body}");
    let (status, body) = as_user(&kube, &alice, "GET", "/api/v1/namespaces/globex/secrets", None);
    assert_eq!(status, 403, "alice reads globex's secrets: {body}");
    assert_eq!(body["reason"], json!("Forbidden"));
    let (status, _) = as_user(
        &kube,
        &alice,
        "POST",
        "/apis/apps/v1/namespaces/globex/deployments",
        Some(deployment("web")),
    );
    assert_eq!(status, 403);

    // An admin of acme may grant; a member of no group is known and may nothing.
    let ada = dex.id_token("kubernetes", "ada", &["acme-admins"]);
    assert!(can(
        &kube,
        &ada,
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "acme-dev"
    ));
    let nobody = dex.id_token("kubernetes", "dave", &[]);
    let (status, user) = who(&kube, &nobody);
    assert_eq!((status, &user["username"]), (201, &json!("dave@example.com")));
    assert_eq!(user["groups"], json!(["system:authenticated"]));
    let (status, _) = as_user(
        &kube,
        &nobody,
        "POST",
        "/apis/apps/v1/namespaces/acme-dev/deployments",
        Some(deployment("x")),
    );
    assert_eq!(status, 403);

    // Another issuer's token, though well formed, signed and for the same client: not authenticated.
    let foreign = stranger.id_token("kubernetes", "alice", &["acme-dev"]);
    let (status, body) = as_user(&kube, &foreign, "GET", "/api/v1/namespaces/acme-dev/pods", None);
    assert_eq!((status, &body["reason"]), (401, &json!("Unauthorized")), "{body}");
    // A token for another client of the same Dex (Argo CD's): not for this audience.
    let argocd = dex.id_token("argocd", "alice", &["acme-dev"]);
    assert_eq!(who(&kube, &argocd).0, 401);

    // Re-run: nothing to write.
    kube.reset_log();
    let out = apply(&s);
    assert_eq!(code(&out), 0, "re-run: {}", stderr(&out));
    assert_eq!(kube.writes(), Vec::<Value>::new());

    // acme drops its admins: exactly that binding goes (and HNC's copy after it).
    s.write_inventory(&inventory(&gitlab.url(), "      - {name: acme-dev, role: developer}\n"));
    kube.reset_log();
    let out = apply(&s);
    assert_eq!(code(&out), 0, "group removed: {}", stderr(&out));
    let writes: Vec<String> = kube
        .writes()
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w["method"].as_str().unwrap(),
                w["path"].as_str().unwrap().replace("%3A", ":")
            )
        })
        .collect();
    assert_eq!(
        writes,
        ["DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/acme/rolebindings/nautes:admin:acme-admins"]
    );
    wait_for("HNC's copy of the admins' binding to go", || {
        kube.get("/apis/rbac.authorization.k8s.io/v1/namespaces/acme-dev/rolebindings/nautes:admin:acme-admins")["code"]
            == json!(404)
    });
    assert!(!can(
        &kube,
        &ada,
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "acme-dev"
    ));
    assert!(can(&kube, &alice, "create", "apps", "deployments", "acme-dev"));

    // The kept token, once past its expiry: refused like a stranger.
    let exp = lapsing.claims["exp"].as_u64().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while now() <= exp + 2 {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let (status, body) = as_user(
        &kube,
        &lapsing.id_token,
        "GET",
        "/api/v1/namespaces/acme-dev/pods",
        None,
    );
    assert_eq!((status, &body["reason"]), (401, &json!("Unauthorized")), "{body}");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const BOOTSTRAP: &str = "glpat-ssoBootstrapToken01";

/// The air-gap bundle with HNC's manifest (its stand-in).
fn make_bundle(s: &Scratch) {
    let hnc = s.path().join("bundle/hnc/v1.0.0");
    std::fs::create_dir_all(&hnc).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube/hnc-default.yaml"),
        hnc.join("default.yaml"),
    )
    .unwrap();
    crate::support::platform::overlay_real_releases(&s.path().join("bundle"));
    let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
}

/// Dex keeps its state in the cluster, as the installer runs it: its
/// kubernetes storage acting as the `dex` ServiceAccount with exactly the
/// ClusterRole the Dex step binds (here through a kubeconfig holding that
/// account's token instead of `inCluster`); it creates its CRDs and stores
/// its signing keys there, and a login works.
#[test]
fn dex_keeps_its_state_in_the_cluster_as_the_service_account_the_installer_binds() {
    if controlplane::skip_unless_available() || dex::skip_unless_available() {
        return;
    }
    use nautes_install::components::stack::runtime::{dex_identity_objects, DEX_NAMESPACE};
    let kube = ControlPlane::start();
    for object in dex_identity_objects() {
        kube.apply_as_test(&object);
    }
    let (status, body) = kube.request(
        "POST",
        &format!("/api/v1/namespaces/{DEX_NAMESPACE}/serviceaccounts/dex/token"),
        "application/json",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}),
    );
    assert_eq!(status, 201, "TokenRequest: {body}");
    let token = body["status"]["token"].as_str().unwrap();
    let s = Scratch::new();
    let kubeconfig = s.path().join("dex.kubeconfig");
    private(
        &kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: dex\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: dex\n    \
             namespace: {DEX_NAMESPACE}\ncurrent-context: c\n",
            kube.url(),
            kube.ca_b64()
        ),
    );
    let gitlab = GitlabStandin::start();
    let mut opts = DexOptions::new("kube.test");
    opts.kubeconfig = Some(kubeconfig);
    let dex = Dex::start_with(&gitlab, opts);
    let login = dex.login("kubernetes", "alice", &["acme-dev"]);
    assert_eq!(login.claims["groups"], json!(["acme-dev"]));
    let keys = kube.get(&format!(
        "/apis/dex.coreos.com/v1/namespaces/{DEX_NAMESPACE}/signingkeies"
    ));
    assert_eq!(keys["items"].as_array().map(Vec::len), Some(1), "{}", dex.log_tail());
    let crds = kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions");
    let dex_crds = crds["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["spec"]["group"] == "dex.coreos.com")
        .count();
    assert!(dex_crds >= 8, "Dex made its CRDs: {dex_crds}");
}
