//! Vault's sign-in through Dex, end to end on real systems: the installer
//! configures a real OpenBao (`vault/oidc`, with everything it needs: our
//! PKI, Vault's own configuration, GitLab's stand-in and Dex's step on the
//! real control plane); the real Dex, on the config the installer renders
//! with Vault's client, signs users in through the GitLab stand-in; OpenBao
//! reads Dex's discovery and keys over our CA at `https://dex.<domain>`
//! (it resolves the name in a mount namespace of its own, see
//! `dex::private_hosts`). Tokens log in through `auth/jwt/login`, and the
//! browser flow of `vault login -method=oidc` runs through `auth/oidc`.

use crate::support::cli::{code, stderr, Scratch};
use crate::support::controlplane::{self, ControlPlane};
use crate::support::dex::{self, Dex, DexOptions};
use crate::support::gitlab::GitlabStandin;
use crate::support::http;
use crate::support::platform;
use crate::support::vault::{self, OpenBao};

use serde_json::{json, Value};

const DOMAIN: &str = "vault-sso.test";
const BOOTSTRAP: &str = "glpat-vaultSsoBootstrap1";

const ACME: &str = "    groups:\n      - {name: acme/dev, role: developer}\n      - {name: acme/ops, role: admin}\n      - {name: acme/qa, role: viewer}\n";
const OTHER: &str = "  - name: other\n    cluster: host\n    groups:\n      - {name: other/dev, role: developer}\n";

fn inventory(vault: &str, gitlab: &str, acme_groups: &str, other: &str) -> String {
    format!(
        "settings:\n  domain: {DOMAIN}\n\
         pki:\n  ca:\n    cert: ca.crt\n    key: {{ file: ca.pk8 }}\n\
         clusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n    usage: [host]\n\
         tenants:\n  - name: acme\n    cluster: host\n{acme_groups}{other}\
         components:\n  vault:\n    placement: external\n    external:\n      url: {vault}\n\
         \x20 gitlab:\n    placement: external\n    external:\n      url: {gitlab}\n      token: {{ file: gitlab-token }}\n    values:\n      group: acme\n\
         \x20 dex: {{}}\n"
    )
}

fn private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `apply --only vault/oidc`: the step and whatever it needs not yet done.
/// What it printed.
fn apply(s: &Scratch, extra: &[&str]) -> String {
    let mut args = vec!["apply", "--yes", "-i", "inventory.yaml", "--only", "vault/oidc"];
    args.extend_from_slice(extra);
    let out = s.command(&args).output().unwrap();
    assert_eq!(code(&out), 0, "apply: {}", stderr(&out));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out))
}

/// A JWT login: status and answer.
fn jwt_login(bao: &OpenBao, role: &str, jwt: &str) -> (u16, Value) {
    http::Call::new("POST", format!("http://127.0.0.1:{}/v1/auth/jwt/login", bao.bao_port))
        .header("Content-Type", "application/json")
        .body(json!({"role": role, "jwt": jwt}).to_string())
        .json()
}

fn policies(login: &Value) -> Vec<String> {
    let mut p: Vec<String> = login["auth"]["token_policies"]
        .as_array()
        .unwrap_or_else(|| panic!("no policies in {login}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

/// What `drift` finds for vault/oidc, as "change object [field]".
fn drift_of_step(s: &Scratch) -> Vec<String> {
    let out = s.run("drift", &["--output", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("drift: {e}: {}", stderr(&out)));
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["id"] == "vault/oidc")
        .unwrap_or_else(|| panic!("no vault/oidc in {doc}"));
    assert_eq!(step["result"], "checked", "{step}");
    step["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let field = d["field"].as_str().map(|f| format!(" {f}")).unwrap_or_default();
            format!(
                "{} {}{field}",
                d["change"].as_str().unwrap(),
                d["object"].as_str().unwrap()
            )
        })
        .collect()
}

/// OpenBao refused a login (400 with its reason; no token), for `why`.
fn refused(status: u16, body: &Value, what: &str, why: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert!(body["auth"].is_null(), "{what}: {body}");
    assert!(body["errors"].to_string().contains(why), "{what}: {body}");
}

/// The writes to OpenBao as "METHOD /v1/path", sorted.
fn writes(bao: &OpenBao) -> Vec<String> {
    let mut w = bao.writes();
    w.sort();
    w
}

#[test]
fn dex_tokens_log_in_to_vault_with_exactly_their_groups_policies() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() || dex::skip_unless_available() {
        return;
    }
    let s = Scratch::new();
    // Our CA (the user's, to the installer) signs Dex's serving certificate.
    platform::make_ca(s.path());
    // The GitLab the installer configures (Dex's step needs its OAuth
    // application), and the one the test's Dex signs users in through: the
    // Dex support makes its own application there, which the installer
    // would refuse as not its own.
    let gitlab = GitlabStandin::start_with("unused", BOOTSTRAP);
    let users = GitlabStandin::start();
    // OpenBao must exist before Dex (Vault's client redirects to it), and
    // find Dex: its /etc/hosts is the one Dex's support writes. Dex's
    // address is leased when it starts, so the file is made first and
    // filled in below.
    let hosts = s.path().join("bao-hosts");
    std::fs::write(&hosts, std::fs::read_to_string("/etc/hosts").unwrap_or_default()).unwrap();
    let bao = OpenBao::start_with_hosts(&hosts);
    let mut opts = DexOptions::new(DOMAIN);
    opts.clients.push("vault".into());
    opts.vault_url = Some(bao.url());
    opts.ca = Some((s.path().join("ca.key"), s.path().join("ca.crt")));
    let dex = Dex::start_with(&users, opts);
    std::fs::copy(dex.hosts_file(), &hosts).unwrap();
    // Another issuer, with a Vault client of the same name and its own keys.
    let mut opts = DexOptions::new("elsewhere.test");
    opts.clients = vec!["vault".into()];
    opts.vault_url = Some(bao.url());
    let stranger = Dex::start_with(&users, opts);

    let kube = ControlPlane::start();
    private(&s.path().join("host.kubeconfig"), &kube.kubeconfig());
    private(&s.path().join("gitlab-token"), BOOTSTRAP);
    // The client secret Dex was started with, where the installer keeps it
    // (made once by whichever of Dex and Vault's step runs first).
    let secret_file = s.workdir().join("outputs/vault/dex-client-secret");
    std::fs::create_dir_all(secret_file.parent().unwrap()).unwrap();
    private(&secret_file, &dex.client_secret("vault").unwrap());

    s.write_inventory(&inventory(&bao.url(), &gitlab.url(), ACME, OTHER));
    // Someone's own jwt/ sign-in (with keys of its own) is not taken over.
    // (OpenBao is initialised by the installer: its configuration first.)
    let out = s
        .command(&["apply", "--yes", "-i", "inventory.yaml", "--only", "vault/configure"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (status, body) = bao.api("POST", "/v1/sys/auth/jwt", Some(&json!({"type": "jwt"})));
    assert!(status < 300, "{body}");
    let key = std::process::Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(s.path().join("ca.crt"))
        .output()
        .unwrap();
    let (status, body) = bao.api(
        "POST",
        "/v1/auth/jwt/config",
        Some(&json!({"jwt_validation_pubkeys": [String::from_utf8_lossy(&key.stdout)]})),
    );
    assert!(status < 300, "{body}");
    let out = s
        .command(&["apply", "--yes", "-i", "inventory.yaml", "--only", "vault/oidc"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Vault auth path jwt/ already signs users in against public keys of its own"),
        "{}",
        stderr(&out)
    );
    let (_, config) = bao.api("GET", "/v1/auth/jwt/config", None);
    assert!(
        config["data"]["oidc_discovery_url"].as_str().unwrap_or("").is_empty(),
        "{config}"
    );
    // Once it is gone, the step makes its own.
    let (status, _) = bao.api("DELETE", "/v1/sys/auth/jwt", None);
    assert!(status < 300);
    let mut printed = apply(&s, &[]);

    // The roles, as configured: a developer of acme gets exactly acme's
    // developer policy, through the token Dex issued to Vault's client.
    let alice = dex.id_token("vault", "alice", &["acme/dev"]);
    let (status, login) = jwt_login(&bao, "acme.dev", &alice);
    assert_eq!(status, 200, "alice's login: {login}");
    assert_eq!(policies(&login), ["default", "tenant-acme-developer"]);
    assert_eq!(login["auth"]["metadata"]["email"], json!("alice@example.com"));
    let token = login["auth"]["client_token"].as_str().unwrap().to_string();
    // What the policy lets her do, on the real KV engine.
    let kv = |token: &str, method: &str, path: &str, body: Option<Value>| {
        bao.api_as(token, method, &format!("/v1/tenant/{path}"), body.as_ref())
            .0
    };
    let secret = Some(json!({"data": {"password": "s3cret"}}));
    assert_eq!(kv(&token, "POST", "data/acme/db", secret.clone()), 200);
    assert_eq!(kv(&token, "GET", "data/acme/db", None), 200);
    assert_eq!(kv(&token, "DELETE", "metadata/acme/db", None), 403);
    assert_eq!(kv(&token, "POST", "data/other/db", secret.clone()), 403);
    assert_eq!(kv(&token, "GET", "data/other/db", None), 403);

    // A viewer lists and reads metadata, never a value; an admin destroys.
    let vera = dex.id_token("vault", "vera", &["acme/qa"]);
    let (status, login) = jwt_login(&bao, "acme.qa", &vera);
    assert_eq!(status, 200, "{login}");
    assert_eq!(policies(&login), ["default", "tenant-acme-viewer"]);
    let viewer = login["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(kv(&viewer, "LIST", "metadata/acme", None), 200);
    assert_eq!(kv(&viewer, "GET", "metadata/acme/db", None), 200);
    assert_eq!(kv(&viewer, "GET", "data/acme/db", None), 403);
    assert_eq!(kv(&viewer, "POST", "data/acme/db", secret.clone()), 403);
    let ada = dex.id_token("vault", "ada", &["acme/ops"]);
    let (status, login) = jwt_login(&bao, "acme.ops", &ada);
    assert_eq!(status, 200, "{login}");
    let admin = login["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(kv(&admin, "DELETE", "metadata/acme/db", None), 204);

    // A member of both tenants' groups takes either role; each gives its own.
    let bob = dex.id_token("vault", "bob", &["acme/qa", "other/dev"]);
    let (status, login) = jwt_login(&bao, "other.dev", &bob);
    assert_eq!(status, 200, "{login}");
    assert_eq!(policies(&login), ["default", "tenant-other-developer"]);

    // Refused: a user in no group; a group's role by someone not in it; a
    // token from another issuer (same client id, its own keys); a token of
    // this Dex for another client (Argo CD's).
    let dave = dex.id_token("vault", "dave", &[]);
    let (status, body) = jwt_login(&bao, "acme.dev", &dave);
    refused(status, &body, "a user in no group", "groups");
    for role in ["acme.qa", "acme.ops", "other.dev"] {
        let (status, body) = jwt_login(&bao, role, &alice);
        refused(status, &body, &format!("alice as {role}"), "groups");
    }
    let foreign = stranger.id_token("vault", "alice", &["acme/dev"]);
    let (status, body) = jwt_login(&bao, "acme.dev", &foreign);
    refused(status, &body, "another issuer's token", "error validating token");
    let for_argocd = dex.id_token("argocd", "alice", &["acme/dev"]);
    let (status, body) = jwt_login(&bao, "acme.dev", &for_argocd);
    refused(status, &body, "a token for Argo CD", "aud");
    // The browser flow's roles do not take tokens.
    let (status, body) = http::Call::new("POST", format!("http://127.0.0.1:{}/v1/auth/oidc/login", bao.bao_port))
        .header("Content-Type", "application/json")
        .body(json!({"role": "acme.dev", "jwt": alice}).to_string())
        .json();
    refused(
        status,
        &body,
        "a token at the browser flow's mount",
        "role with oidc role_type is not allowed",
    );

    // `vault login -method=oidc role=acme.dev`: the CLI asks Vault for Dex's
    // authorization URL for its listener, the browser signs in, and Dex's
    // code goes back to Vault, which exchanges it with Vault's client
    // secret and reads the groups from the id_token.
    let (status, body) = bao.api_as(
        "",
        "POST",
        "/v1/auth/oidc/oidc/auth_url",
        Some(&json!({"role": "acme.dev", "redirect_uri": "http://localhost:8250/oidc/callback"})),
    );
    assert_eq!(status, 200, "auth_url: {body}");
    let auth_url = body["data"]["auth_url"].as_str().unwrap().to_string();
    assert!(auth_url.starts_with(&format!("{}/auth?", dex.issuer())), "{auth_url}");
    let back = dex.authorize(&auth_url, "http://localhost:8250/oidc/callback", "carol", &["acme/dev"]);
    let get = |k: &str| back.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let (status, login) = http::Call::new(
        "GET",
        format!(
            "http://127.0.0.1:{}/v1/auth/oidc/oidc/callback?state={}&code={}",
            bao.bao_port,
            get("state"),
            get("code")
        ),
    )
    .json();
    assert_eq!(status, 200, "the OIDC callback: {login}");
    assert_eq!(policies(&login), ["default", "tenant-acme-developer"]);
    assert_eq!(login["auth"]["metadata"]["email"], json!("carol@example.com"));
    // Someone outside the group gets through Dex but not into Vault.
    let (_, body) = bao.api_as(
        "",
        "POST",
        "/v1/auth/oidc/oidc/auth_url",
        Some(&json!({"role": "acme.dev", "redirect_uri": "http://localhost:8250/oidc/callback"})),
    );
    let back = dex.authorize(
        body["data"]["auth_url"].as_str().unwrap(),
        "http://localhost:8250/oidc/callback",
        "erin",
        &["acme/qa"],
    );
    let get = |k: &str| back.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let (status, body) = http::Call::new(
        "GET",
        format!(
            "http://127.0.0.1:{}/v1/auth/oidc/oidc/callback?state={}&code={}",
            bao.bao_port,
            get("state"),
            get("code")
        ),
    )
    .json();
    refused(status, &body, "a viewer through the developers' role", "groups");

    // A re-run re-checks the step (as Vault's own configuration): it reads
    // everything and writes nothing.
    bao.reset_log();
    printed.push_str(&apply(&s, &[]));
    let w: Vec<String> = writes(&bao);
    assert!(w.is_empty(), "OpenBao writes on a re-run: {w:?}");
    assert!(
        bao.requests().iter().any(|r| r["path"] == "/v1/auth/jwt/role/acme.dev"),
        "the re-run did not read the roles"
    );
    // A role someone widened is put back, alone.
    let (status, body) = bao.api(
        "POST",
        "/v1/auth/jwt/role/acme.dev",
        Some(
            &json!({"role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
                     "bound_claims": {"groups": ["acme/dev"]}, "token_policies": ["tenant-acme-admin"]}),
        ),
    );
    assert!(status < 300, "{body}");
    // `drift` names it (and writes nothing); then a re-run puts it back, alone.
    bao.reset_log();
    assert_eq!(drift_of_step(&s), ["changed Vault role jwt/acme.dev token_policies"]);
    assert!(writes(&bao).is_empty(), "drift wrote to OpenBao");
    bao.reset_log();
    apply(&s, &[]);
    assert_eq!(writes(&bao), ["POST /v1/auth/jwt/role/acme.dev"]);
    assert!(drift_of_step(&s).is_empty());
    let (_, login) = jwt_login(&bao, "acme.dev", &alice);
    assert_eq!(policies(&login), ["default", "tenant-acme-developer"]);

    // A group removed: exactly its role goes, on both mounts.
    bao.reset_log();
    let without_qa = ACME.replace("      - {name: acme/qa, role: viewer}\n", "");
    s.write_inventory(&inventory(&bao.url(), &gitlab.url(), &without_qa, OTHER));
    apply(&s, &[]);
    assert_eq!(
        writes(&bao),
        ["DELETE /v1/auth/jwt/role/acme.qa", "DELETE /v1/auth/oidc/role/acme.qa"]
    );
    let (status, body) = jwt_login(&bao, "acme.qa", &vera);
    refused(status, &body, "the removed group's role", "could not be found");
    let (status, body) = jwt_login(&bao, "acme.dev", &alice);
    assert_eq!(status, 200, "the others stay: {body}");

    // A tenant removed: its roles and its policies go, nothing else.
    bao.reset_log();
    s.write_inventory(&inventory(&bao.url(), &gitlab.url(), &without_qa, ""));
    apply(&s, &[]);
    assert_eq!(
        writes(&bao),
        [
            "DELETE /v1/auth/jwt/role/other.dev",
            "DELETE /v1/auth/oidc/role/other.dev",
            "DELETE /v1/sys/policies/acl/tenant-other-admin",
            "DELETE /v1/sys/policies/acl/tenant-other-developer",
            "DELETE /v1/sys/policies/acl/tenant-other-viewer",
        ]
    );
    let (status, _) = bao.api("GET", "/v1/sys/policies/acl/tenant-acme-developer", None);
    assert_eq!(status, 200);

    // Dex's client secret appears in nothing the installer printed or recorded.
    let secret = dex.client_secret("vault").unwrap();
    assert!(!printed.contains(&secret), "Dex's client secret printed");
    for f in walk(&s.workdir()) {
        if f.ends_with("outputs/vault/dex-client-secret") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(&secret), "Dex's client secret in {}", f.display());
    }

    // A teardown takes the mounts it enabled and its policies with it.
    teardown_leaves_nothing(&s, &bao);
}

/// What a teardown leaves of the sign-in in OpenBao.
fn teardown_leaves_nothing(s: &Scratch, bao: &OpenBao) {
    let out = s
        .command(&["destroy", "--yes", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "destroy: {}", stderr(&out));
    let (_, auths) = bao.api("GET", "/v1/sys/auth", None);
    for mount in ["oidc/", "jwt/"] {
        assert!(auths["data"][mount].is_null(), "{mount} left: {auths}");
    }
    let (_, list) = bao.api("LIST", "/v1/sys/policies/acl", None);
    let left: Vec<&Value> = list["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k.as_str().unwrap().starts_with("tenant-"))
        .collect();
    assert!(left.is_empty(), "policies left: {left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
