//! A whole platform for end-to-end runs of the real binary: a real control
//! plane (with the stand-in controllers for webhooks, cert-manager, Argo CD
//! and HNC), a real OpenBao, the GitLab API stand-in, an HTTPS ingress
//! stand-in, a CA made with openssl and an air-gap bundle of stand-in
//! upstream releases, plus the inventory that installs everything on them.
//! Used by tests/e2e/stack.rs and benches/platform_rerun.rs.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::ca;
use super::cli::{code, stderr, Scratch};
use super::controlplane::ControlPlane;
use super::gitlab::GitlabStandin;
use super::registries::Standin as Registry;
use super::standin_controllers::{hnc_manager, Api, Standin};
use super::vault::OpenBao;
use serde_json::{json, Value};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const BOOTSTRAP: &str = "glpat-stackBootstrap0001";
pub const DOMAIN: &str = "nautes.test";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Our CA (given to the installer as the user's CA) and, from it, the
/// certificate the ingress stand-in serves for *.nautes.test.
pub fn make_ca(dir: &Path) {
    let d = dir.to_str().unwrap();
    ca::make_ca(dir, "ca", "stack test CA", 30);
    run(Command::new("openssl").args([
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &format!("{d}/ca.key"),
        "-out",
        &format!("{d}/ca.pk8"),
    ]));
    std::fs::set_permissions(dir.join("ca.pk8"), std::fs::Permissions::from_mode(0o600)).unwrap();
    ca::make_leaf(
        dir,
        "ingress",
        "*.nautes.test",
        "subjectAltName=DNS:*.nautes.test,DNS:nautes.test\nextendedKeyUsage=serverAuth\n",
        "ca",
        30,
    );
}

pub fn helm_package(chart: &str, version: &str, into: &Path, home: &Path) {
    run(Command::new("helm")
        .args([
            "package",
            &format!("{ROOT}/tests/charts/{chart}"),
            "--version",
            version,
            "-d",
        ])
        .arg(into)
        .env("HELM_CACHE_HOME", home)
        .env("HELM_CONFIG_HOME", home)
        .env("HELM_DATA_HOME", home));
}

fn copy(from: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(format!("{ROOT}/{from}"), to).unwrap_or_else(|e| panic!("{from}: {e}"));
}

/// The air-gap bundle: every stand-in release, plus cert-manager v1.8.1 for the upgrade.
pub fn make_bundle(s: &Scratch) {
    let b = s.path().join("bundle");
    for (dir, file) in [
        ("cert-manager/v1.8.0", "cert-manager.yaml"),
        ("argocd/v2.4.0", "install.yaml"),
        ("argo-rollouts/v1.2.1", "install.yaml"),
        ("argo-events/v1.7.1", "install.yaml"),
        ("tekton/v0.37.5", "release.yaml"),
        ("tekton-dashboard/v0.28.0", "tekton-dashboard-release.yaml"),
        ("nautes/v0.3.8", "nautes.yaml"),
    ] {
        copy(&format!("tests/fixtures/stack/{dir}/{file}"), &b.join(dir).join(file));
    }
    let upgraded = std::fs::read_to_string(format!(
        "{ROOT}/tests/fixtures/stack/cert-manager/v1.8.0/cert-manager.yaml"
    ))
    .unwrap()
    .replace("v1.8.0", "v1.8.1");
    std::fs::create_dir_all(b.join("cert-manager/v1.8.1")).unwrap();
    std::fs::write(b.join("cert-manager/v1.8.1/cert-manager.yaml"), upgraded).unwrap();
    copy(
        "tests/fixtures/kube/hnc-default.yaml",
        &b.join("hnc/v1.0.0/default.yaml"),
    );
    let home = s.path().join("helm");
    helm_package("traefik-standin", "10.24.0", &b.join("traefik/10.24.0"), &home);
    helm_package(
        "external-secrets-standin",
        "0.5.7",
        &b.join("external-secrets/0.5.7"),
        &home,
    );
    helm_package("vault-standin", "0.22.0", &b.join("vault-injector/0.22.0"), &home);
    overlay_real_releases(&b);
    let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
}

/// The opt-in run against real upstream releases: `NAUTES_E2E_RELEASES`
/// names a directory laid out like the bundle (`<slug>/<version>/<file>`,
/// e.g. Argo CD's own `argocd/v2.4.0/install.yaml`, a chart packaged from
/// upstream's sources as `traefik/10.24.0/traefik-10.24.0.tgz`); each file
/// there replaces the stand-in at the same path. Release files cannot be
/// committed here, so whoever has them runs the same scenarios on them.
pub fn overlay_real_releases(bundle: &Path) {
    let Some(dir) = std::env::var_os("NAUTES_E2E_RELEASES") else {
        return;
    };
    fn walk(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("NAUTES_E2E_RELEASES {}: {e}", from.display())) {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                walk(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    walk(Path::new(&dir), bundle);
}

pub struct Ingress {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Ingress {
    /// Every request the ingress answered so far (JSON lines of its --log).
    pub fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self._dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ingress(s: &Scratch, fail_host: Option<&str>, extra: &[String]) -> Ingress {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{ROOT}/tests/support/ingress_standin.py"))
        .arg("--cert")
        .arg(s.path().join("ingress.crt"))
        .arg("--key")
        .arg(s.path().join("ingress.key"))
        .arg("--port-file")
        .arg(&port_file)
        // It stands for Traefik's websecure NodePort.
        .arg("--port")
        .arg(super::port_file::free_node_port().to_string())
        .arg("--log")
        .arg(dir.path().join("log"));
    if let Some(h) = fail_host {
        cmd.args(["--fail-host", h]);
    }
    cmd.args(extra);
    let child = cmd.stdin(Stdio::null()).spawn().expect("python3");
    let port = super::port_file::wait_for_port(&port_file, "ingress stand-in");
    Ingress { child, port, _dir: dir }
}

pub struct Platform {
    pub kube: ControlPlane,
    pub vault: OpenBao,
    pub gitlab: GitlabStandin,
    /// The shared Harbor and Nexus (API stand-ins), configured through their
    /// APIs, with a tenant's project and repository: their credentials are
    /// part of what the platform must keep secret.
    pub harbor: Registry,
    pub nexus: Registry,
    pub ingress: Ingress,
    pub s: Scratch,
    _hnc: Standin,
}

/// Harbor's first-run admin password in the platform's Harbor stand-in.
pub const HARBOR_INITIAL: &str = "Harbor12345";

pub fn inventory(p: &Platform, cert_manager: &str, rollout: &str) -> String {
    format!(
        "settings:
  domain: {DOMAIN}
  timeouts:
    rollout: {rollout}
pki:
  ca:
    cert: ca.crt
    key: {{ file: ca.pk8 }}
artifacts:
  mode: airgap
  bundle: bundle
clusters:
  - name: host
    type: external
    external:
      kubeconfig: host.kubeconfig
    usage: [host, deployment, pipeline]
tenants:
  - name: acme
    cluster: host
    namespaces:
      - name: acme
    gitlab:
      group: acme-team
    harbor:
      - projects: [acme-app]
    nexus:
      repositories:
        - {{ name: acme-maven, format: maven, type: hosted }}
components:
  harbor:
    placement: external
    external:
      url: {harbor}
      token: {{ file: harbor-initial }}
  nexus:
    placement: external
    external:
      url: {nexus}
      token: {{ file: nexus-data/admin.password }}
  vault:
    placement: external
    external:
      url: {vault}
  gitlab:
    placement: external
    external:
      url: {gitlab}
      token: {{ file: gitlab-token }}
    values:
      group: acme
  traefik:
    values:
      ingressAddress: 127.0.0.1
      websecureNodePort: {port}
  certManager:
    version: {cert_manager}
  dex: {{}}
  oauth2Proxy: {{}}
  argocd: {{}}
  nautes: {{}}
  argoRollouts: {{}}
  argoEvents: {{}}
  tekton: {{}}
  externalSecrets: {{}}
",
        vault = p.vault.url(),
        gitlab = p.gitlab.url(),
        harbor = p.harbor.url(),
        nexus = p.nexus.url(),
        port = p.ingress.port,
    )
}

pub fn platform(fail_host: Option<&str>) -> Platform {
    platform_with(fail_host, |_, _| (String::new(), Vec::new()))
}

/// As `platform`, with more stand-in controllers (`,`-separated) and
/// ingress arguments, chosen once the control plane and the bundle exist
/// (`extra(kube, scratch)`; the controllers write under
/// `kube.dir()/standins`).
pub fn platform_with(
    fail_host: Option<&str>,
    extra: impl FnOnce(&ControlPlane, &Scratch) -> (String, Vec<String>),
) -> Platform {
    let s = Scratch::new();
    make_ca(s.path());
    make_bundle(&s);
    let mut kube = ControlPlane::start();
    let (controllers, ingress_args) = extra(&kube, &s);
    let mut all = "webhooks,cert-manager,argocd,webhook-gated".to_string();
    if !controllers.is_empty() {
        all = format!("{all},{controllers}");
    }
    kube.start_standin_controllers(&all);
    let hnc = hnc_manager(Api::of(&kube));
    private(&s.path().join("host.kubeconfig"), &kube.kubeconfig());
    private(&s.path().join("gitlab-token"), BOOTSTRAP);
    let ingress = start_ingress(&s, fail_host, &ingress_args);
    private(&s.path().join("harbor-initial"), HARBOR_INITIAL);
    let nexus = Registry::nexus();
    std::fs::create_dir(s.path().join("nexus-data")).unwrap();
    private(
        &s.path().join("nexus-data/admin.password"),
        &std::fs::read_to_string(nexus.admin_password_file()).unwrap(),
    );
    let p = Platform {
        kube,
        vault: OpenBao::start(),
        gitlab: GitlabStandin::start_with("unused", BOOTSTRAP),
        harbor: Registry::harbor(HARBOR_INITIAL),
        nexus,
        ingress,
        s,
        _hnc: hnc,
    };
    // Generous: the stack tests run side by side, each with its own control
    // plane and stand-in controllers, on two cores in CI.
    p.s.write_inventory(&inventory(&p, "v1.8.0", "180s"));
    p
}

/// vault-proxy's AppRole role, as the installer configures it.
pub const PROXY_ROLE: &str = "/v1/auth/approle/role/vault-proxy";

/// A token's name without the marker we add (`nautes-install [3f9c…]`).
fn base_name(name: &str) -> &str {
    name.split(" [").next().unwrap_or(name)
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| match key {
            "namespaced" => format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            ),
            _ => o["metadata"]["name"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    out.sort();
    out
}

impl Platform {
    /// Accessors of every live secret id of vault-proxy's role (as root).
    pub fn proxy_secret_ids(&self) -> Vec<String> {
        let (status, body) = self.vault.api("LIST", &format!("{PROXY_ROLE}/secret-id"), None);
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "listing vault-proxy's secret ids: {body}");
        let mut out: Vec<String> = body["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    /// What Vault knows of a secret id of vault-proxy's role, by accessor.
    pub fn proxy_secret_id_info(&self, accessor: &str) -> Value {
        let (status, body) = self.vault.api(
            "POST",
            &format!("{PROXY_ROLE}/secret-id-accessor/lookup"),
            Some(&json!({ "secret_id_accessor": accessor })),
        );
        assert_eq!(status, 200, "looking up secret id {accessor}: {body}");
        body["data"].clone()
    }

    /// The role id and secret id the installer gave vault-proxy (its Secret in the cluster).
    pub fn proxy_credentials(&self) -> Option<(String, String)> {
        let secret = self.kube.get("/api/v1/namespaces/nautes/secrets/vault-proxy-approle");
        let field = |k: &str| {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(secret["data"][k].as_str()?)
                .ok()?;
            String::from_utf8(raw).ok()
        };
        Some((field("role_id")?, field("secret_id")?))
    }

    /// Whether an AppRole login to vault-proxy's role with this secret id works.
    pub fn approle_login(&self, role_id: &str, secret_id: &str) -> bool {
        let (status, body) = self.vault.api(
            "POST",
            "/v1/auth/approle/login",
            Some(&json!({"role_id": role_id, "secret_id": secret_id})),
        );
        status == 200 && body["auth"]["client_token"].is_string()
    }

    /// What an install left, in terms that do not depend on this platform's
    /// ports or ids, so two installs can be compared: GitLab's groups,
    /// projects (files, commits, deploy keys), applications, live tokens
    /// and bots; Vault's engines, auth methods, policies, roles and
    /// vault-proxy's live secret ids; the cluster's namespaces and
    /// workloads; every step's status and the open records per step.
    pub fn end_state(&self) -> Value {
        let dump = self.gitlab.dump();
        let mut groups: Vec<&str> = dump["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["full_path"].as_str())
            .collect();
        groups.sort();
        let mut projects: Vec<Value> = dump["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let mut keys: Vec<&str> = p["deploy_keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|k| k["title"].as_str())
                    .collect();
                keys.sort();
                let files: Vec<&String> = p["branches"]["main"]["files"]
                    .as_object()
                    .map(|f| f.keys().collect())
                    .unwrap_or_default();
                json!({"path": p["path_with_namespace"], "commits": p["commits"],
                       "files": files, "deploy_keys": keys})
            })
            .collect();
        projects.sort_by_key(|p| p["path"].to_string());
        let mut applications: Vec<Value> = dump["applications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| json!({"name": a["name"], "redirect_uri": a["redirect_uri"], "scopes": a["scopes"]}))
            .collect();
        applications.sort_by_key(|a| a.to_string());
        let mut tokens: Vec<Value> = dump["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["active"] == true)
            .map(|t| {
                json!({"name": base_name(t["name"].as_str().unwrap_or("")),
                       "scopes": t["scopes"], "of_root": t["user_id"] == 1})
            })
            .collect();
        tokens.sort_by_key(|t| t.to_string());
        let bots = dump["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["bot"].is_object() && u["state"] == "active")
            .count();

        let vault = self.vault.dump();
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            k.sort();
            k
        };
        let secret_ids = self.proxy_secret_ids().len();

        let state = self.s.state();
        let steps: serde_json::Map<String, Value> = state["steps"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, st)| (id.clone(), st["status"].clone()))
            .collect();
        let records: serde_json::Map<String, Value> = state["intents"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(step, per)| {
                let per: serde_json::Map<String, Value> = per
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(what, list)| {
                        let list = list.as_array().unwrap();
                        let open = list.iter().filter(|i| i["made"].is_null()).count();
                        (what.clone(), json!({"records": list.len(), "unanswered": open}))
                    })
                    .collect();
                (step.clone(), Value::Object(per))
            })
            .collect();

        json!({
            "gitlab": {"groups": groups, "projects": projects, "applications": applications,
                       "live_tokens": tokens, "active_bots": bots},
            "vault": {"mounts": keys(&vault["mounts"]), "auth": keys(&vault["auth"]),
                      "policies": keys(&vault["policies"]), "approle_roles": vault["approle_roles"],
                      "proxy_secret_ids": secret_ids},
            "live_credentials": tokens.len() + applications.len() + secret_ids,
            "kube": {"namespaces": names(&self.kube.get("/api/v1/namespaces"), "cluster"),
                     "deployments": names(&self.kube.get("/apis/apps/v1/deployments"), "namespaced"),
                     "statefulsets": names(&self.kube.get("/apis/apps/v1/statefulsets"), "namespaced")},
            "steps": steps,
            "records": records,
        })
    }

    /// Every credential the installer handed out is the live one of its
    /// kind: GitLab's admin and base-operator tokens and Dex's application
    /// secret as the installer keeps them (in Vault's `git` engine, where
    /// Nautes reads them), vault-proxy's secret id in the cluster (it logs
    /// in), and in Vault's `repo` engine Harbor's and Nexus' admin
    /// passwords, the tenant's Harbor robot and Nexus user (each logs in).
    pub fn assert_holds_live_credentials(&self) {
        let repo = |name: &str| -> (String, String) {
            let (status, body) = self.vault.api("GET", &format!("/v1/repo/data/{name}"), None);
            assert_eq!(status, 200, "the installer keeps no {name} in Vault: {body}");
            let d = &body["data"]["data"];
            let user = d["username"].as_str().unwrap_or("admin").to_string();
            (user, d["password"].as_str().unwrap().to_string())
        };
        let named = [("X-Is-Resource-Name", "true")];
        for (record, path) in [
            ("harbor/harbor/admin", "/api/v2.0/users/current"),
            ("harbor/harbor/robots/acme-app", "/api/v2.0/projects/acme-app"),
        ] {
            let (user, pw) = repo(record);
            let (status, body) = self.harbor.call_with("GET", path, Some((&user, &pw)), None, &named);
            assert_eq!(status, 200, "Harbor's {record} we hold does not log in: {body}");
        }
        for (record, path) in [
            ("nexus/nexus/admin", "/service/rest/v1/status/check"),
            ("nexus/nexus/tenants/acme", "/service/rest/v1/repositories"),
        ] {
            let (user, pw) = repo(record);
            let (status, body) = self.nexus.call("GET", path, Some((&user, &pw)), None);
            assert_eq!(status, 200, "Nexus' {record} we hold does not log in: {body}");
        }
        let dump = self.gitlab.dump();
        let output = |name: &str| -> Value {
            let (status, body) = self.vault.api("GET", &format!("/v1/git/data/gitlab/{name}"), None);
            assert_eq!(status, 200, "the installer keeps no {name} in Vault");
            body["data"]["data"].clone()
        };
        for (file, base) in [
            ("admin-token", "nautes-install"),
            ("base-operator-token", "nautes-base-operator"),
        ] {
            let held = output(file)["token"].clone();
            let live: Vec<&Value> = dump["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["active"] == true && base_name(t["name"].as_str().unwrap_or("")) == base)
                .collect();
            assert_eq!(live.len(), 1, "one live {base} token: {live:?}");
            assert!(live[0]["token"] == held, "the {base} token we hold is not the live one");
        }
        let apps: Vec<&Value> = dump["applications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"] == "nautes-dex")
            .collect();
        assert_eq!(apps.len(), 1, "one Dex application");
        assert!(
            output("dex-oauth-app")["clientSecret"] == apps[0]["secret"],
            "Dex's secret we hold is not the application's"
        );
        let (role_id, secret_id) = self
            .proxy_credentials()
            .expect("vault-proxy's AppRole Secret is in the cluster");
        assert!(
            self.approle_login(&role_id, &secret_id),
            "vault-proxy's secret id does not log in"
        );
    }

    /// After a teardown: nothing we made is left — the tenant's auth mount
    /// in Vault and vault-proxy's secret ids, GitLab's group, application
    /// and our live tokens, the stack's namespaces — and no record is open.
    /// `down` is the teardown's output, shown when something is left.
    pub fn assert_torn_down(&self, down: &std::process::Output) {
        let shown = format!("{}\n{}", super::cli::stdout(down), stderr(down));
        let vault = self.vault.dump();
        assert!(
            vault["auth"].get("kubernetes-acme/").is_none(),
            "the tenant's auth mount is left: {}\n{shown}",
            vault["auth"]
        );
        let secret_ids = self.proxy_secret_ids();
        let ours: Vec<&String> = secret_ids
            .iter()
            .filter(|a| !self.proxy_secret_id_info(a)["metadata"]["nautes_install_intent"].is_null())
            .collect();
        assert!(
            ours.is_empty(),
            "vault-proxy secret ids of ours left alive: {ours:?}\n{shown}"
        );
        let gitlab = self.gitlab.dump();
        assert!(
            gitlab["groups"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["full_path"] != "acme" && g["full_path"] != "acme-team"),
            "a group we created is left\n{shown}"
        );
        let harbor = self.harbor.state();
        assert!(
            harbor["projects"].as_object().is_some_and(|p| p.is_empty()) && harbor["robots"] == json!([]),
            "the tenant's Harbor project is left: {harbor}\n{shown}"
        );
        let nexus = self.nexus.state();
        assert!(
            nexus["repositories"] == json!([]) && nexus["users"].get("nautes-acme").is_none(),
            "the tenant's Nexus repository or user is left: {nexus}\n{shown}"
        );
        assert!(
            gitlab["applications"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["name"] != "nautes-dex"),
            "Dex's OAuth application is left\n{shown}"
        );
        let live: Vec<&Value> = gitlab["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["active"] == true
                    && t["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("nautes-install [") || n.starts_with("nautes-base-operator ["))
            })
            .collect();
        assert!(live.is_empty(), "live tokens of ours after teardown: {live:?}\n{shown}");
        let namespaces = names(&self.kube.get("/api/v1/namespaces"), "cluster");
        for ns in [
            "cert-manager",
            "argocd",
            "dex",
            "traefik",
            "tekton-pipelines",
            "argo-rollouts",
            "nautes",
        ] {
            if namespaces.iter().any(|n| n == ns) {
                let live = self.kube.get(&format!("/api/v1/namespaces/{ns}"));
                let touched: Vec<Value> = self
                    .kube
                    .requests()
                    .into_iter()
                    .filter(|r| {
                        r["path"]
                            .as_str()
                            .is_some_and(|x| x.contains(&format!("/namespaces/{ns}")))
                    })
                    .collect();
                panic!("{ns} left behind: {live}\nrequests: {touched:?}\n{shown}");
            }
        }
        let state = self.s.state();
        assert!(
            state["intents"].as_object().is_none_or(|m| m.is_empty()),
            "records left after teardown: {}",
            state["intents"]
        );
    }
}
