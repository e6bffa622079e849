//! The example inventories under inventories/: every one validates (with no
//! warning) and plans with the real binary, in a temp copy of the repository
//! holding what the examples refer to (a Kubespray checkout, a sealed
//! air-gap bundle, a kubeconfig, a token file), with the environment
//! variables their secret references name set here; and each plan holds the
//! steps its scenario is about. A new example is picked up by itself; a
//! missing scenario fails.

use crate::support::cli;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use cli::{code, stderr, stdout, Scratch};

const K3S: &str = "v1.27.4+k3s1";

/// What inventories/ must cover, one example each.
const SCENARIOS: [(&str, &str); 8] = [
    ("starter.yaml", "what `init` prints"),
    ("single-node-k3s.yaml", "single-node K3s, all in one"),
    ("ha-k3s.yaml", "HA K3s with GitLab and Vault on their own hosts"),
    ("kubespray.yaml", "Kubespray"),
    ("hybrid.yaml", "Terraform cloud hosts with bare metal"),
    ("airgap.yaml", "air-gap bundle"),
    (
        "byo-cluster.yaml",
        "a brought-in cluster with an existing GitLab and Vault",
    ),
    (
        "multi-tenant.yaml",
        "two tenants, each with its own vcluster, GitLab group and Harbor instance",
    ),
];

/// Stand-in values for the variables the examples' secret references name.
const SECRET_ENV: [(&str, &str); 3] = [
    (
        "NAUTES_SSH_PUBLIC_KEY",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholderPlaceholderPlaceholderXXXX examples-test",
    ),
    ("NAUTES_VAULT_TOKEN", "hvs.examples-test-placeholder"),
    ("NAUTES_HARBOR_ADMIN_PASSWORD", "Harbor12345"),
];

/// GitLab's Omnibus package and Vault's release zip in the air-gap bundle
/// (`<service>/<version>/<file>`), for the default versions.
const GITLAB_DEB: &str = "gitlab/15.10.8-ce.0/gitlab-ce_15.10.8-ce.0_amd64.deb";
const VAULT_ZIP: &str = "vault/1.10.4/vault_1.10.4_linux_amd64.zip";

/// Files of the air-gap bundle the air-gap example needs (placeholder bytes).
fn bundle_files() -> Vec<String> {
    vec![
        format!("k3s/{K3S}/k3s"),
        format!("k3s/{K3S}/install.sh"),
        format!("k3s/{K3S}/k3s-airgap-images-amd64.tar.zst"),
        "vcluster/0.10.1/vcluster-0.10.1.tgz".into(),
        "hnc/v1.0.0/default.yaml".into(),
        // GitLab and Vault on hosts of their own.
        GITLAB_DEB.into(),
        VAULT_ZIP.into(),
        // The platform stack: `<slug>/<version>/<file>`.
        "traefik/10.24.0/traefik-10.24.0.tgz".into(),
        "cert-manager/v1.8.0/cert-manager.yaml".into(),
        "argocd/v2.4.0/install.yaml".into(),
        "nautes/v0.3.8/nautes.yaml".into(),
        "argo-rollouts/v1.2.1/install.yaml".into(),
        "argo-events/v1.7.1/install.yaml".into(),
        "tekton/v0.37.5/release.yaml".into(),
        "tekton-dashboard/v0.28.0/tekton-dashboard-release.yaml".into(),
        "external-secrets/0.5.7/external-secrets-0.5.7.tgz".into(),
        "vault-injector/0.22.0/vault-0.22.0.tgz".into(),
    ]
}

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n  - name: host\n    cluster: { server: \"https://192.0.2.100:6443\" }\nusers:\n  - name: admin\n    user: { token: placeholder }\ncontexts:\n  - name: admin@host\n    context: { cluster: host, user: admin }\ncurrent-context: admin@host\n";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// File names of the examples, sorted.
fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("inventories"))
        .expect("inventories/ exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == ".terraform" || name == "__pycache__" || name == ".nautes" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A temp copy of the repository's inventories/ and terraform/, with what
/// the examples refer to beside them, as a user would have it.
struct Workspace {
    s: Scratch,
}

impl Workspace {
    fn new() -> Workspace {
        let s = Scratch::new();
        let inv = s.path().join("inventories");
        copy_dir(&repo().join("inventories"), &inv);
        copy_dir(&repo().join("terraform"), &s.path().join("terraform"));
        // The Kubespray checkout (`path: ./kubespray`): the stand-in's playbooks.
        copy_dir(&repo().join("tests/kubespray_standin"), &inv.join("kubespray"));
        // The brought-in cluster's kubeconfig and the GitLab token hold credentials: 0600.
        write_private(&inv.join("host.kubeconfig"), KUBECONFIG);
        write_private(&inv.join("gitlab-token"), "glpat-examples-test-placeholder\n");
        // Terraform finds providers only in an empty mirror: the preview that
        // `plan` asks of it stays off the network.
        let mirror = s.path().join("tf-mirror");
        std::fs::create_dir_all(&mirror).unwrap();
        std::fs::write(
            s.path().join("terraform.rc"),
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n  }}\n}}\n",
                mirror.display()
            ),
        )
        .unwrap();
        let ws = Workspace { s };
        for f in bundle_files() {
            let p = ws.bundle().join(&f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("placeholder for {f}\n")).unwrap();
        }
        ws.seal();
        ws
    }

    fn path(&self) -> &Path {
        self.s.path()
    }

    fn bundle(&self) -> PathBuf {
        self.path().join("inventories/bundle")
    }

    fn seal(&self) {
        let out = self.run(&["bundle", "seal", "--dir", "inventories/bundle"]);
        assert_eq!(code(&out), 0, "bundle seal: {}", stderr(&out));
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.s.command(args);
        for (k, v) in SECRET_ENV {
            c.env(k, v);
        }
        c.env("TF_CLI_CONFIG_FILE", self.path().join("terraform.rc"))
            .env("CHECKPOINT_DISABLE", "1");
        c.output().expect("run nautes-install")
    }

    fn state_file(&self) -> PathBuf {
        self.s.workdir().join("state.json")
    }

    /// `render`'s plan.json: every step with its spec and settings.
    fn rendered_plan(&self, file: &str) -> BTreeMap<String, Value> {
        let out_dir = self.path().join(format!("render-{file}"));
        let out = self.run(&["render", "-i", &inv_path(file), "--out", out_dir.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{file}: render: {}", stderr(&out));
        let plan: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("plan.json")).unwrap()).unwrap();
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["id"].as_str().unwrap().to_string(), s.clone()))
            .collect()
    }
}

fn inv_path(file: &str) -> String {
    format!("inventories/{file}")
}

/// One line of `plan`'s text output: sign, step id, reason.
#[derive(Debug)]
struct Line {
    sign: char,
    id: String,
    reason: String,
}

fn plan_lines(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let mut chars = l.chars();
            let sign = chars.next()?;
            if !"+-=~".contains(sign) || chars.next() != Some(' ') {
                return None;
            }
            let rest = l[2..].trim_start();
            let (id, reason) = rest.split_once(char::is_whitespace)?;
            Some(Line {
                sign,
                id: id.to_string(),
                reason: reason.trim().to_string(),
            })
        })
        .collect()
}

fn ids_of(lines: &[Line]) -> Vec<&str> {
    lines.iter().map(|l| l.id.as_str()).collect()
}

fn assert_has(file: &str, ids: &[&str], wanted: &[&str]) {
    for w in wanted {
        assert!(ids.contains(w), "{file}: the plan lacks `{w}`; it has {ids:?}");
    }
}

fn assert_none_starts_with(file: &str, ids: &[&str], prefixes: &[&str]) {
    for id in ids {
        for p in prefixes {
            assert!(
                !id.starts_with(p),
                "{file}: the plan has `{id}`, unexpected here: {ids:?}"
            );
        }
    }
}

fn position(ids: &[&str], id: &str) -> usize {
    ids.iter()
        .position(|x| *x == id)
        .unwrap_or_else(|| panic!("`{id}` not planned: {ids:?}"))
}

/// The K3s node steps of cluster `cluster`, in plan order.
fn k3s_nodes<'a>(ids: &[&'a str], cluster: &str) -> Vec<&'a str> {
    let server = format!("k3s/{cluster}/server/");
    let agent = format!("k3s/{cluster}/agent/");
    ids.iter()
        .copied()
        .filter(|id| id.starts_with(&server) || id.starts_with(&agent))
        .collect()
}

/// Where an example puts the platform stack.
struct Platform<'a> {
    /// The management (virtual) cluster: cert-manager, Dex, Argo CD, Nautes.
    mgmt: &'a str,
    /// The cluster under it, where Traefik goes.
    ingress: &'a str,
    /// The runtime cluster (usage deployment and pipeline).
    runtime: &'a str,
    /// The tenant Vault's Kubernetes auth is made for.
    tenant: &'a str,
}

/// The whole platform is planned, each part on its cluster, Nautes only once
/// Vault's auth for the tenant and Argo CD exist, and the health check after
/// every stack step.
fn assert_platform(file: &str, ids: &[&str], p: &Platform) {
    let mut wanted = vec![
        "pki".to_string(),
        "vault/configure".into(),
        "gitlab/configure".into(),
        format!("vault/kubernetes-auth/{}", p.tenant),
        format!("stack/traefik/{}", p.ingress),
        "health".into(),
    ];
    for c in ["cert-manager", "ca-issuer", "dex", "vault-proxy", "argocd", "nautes"] {
        wanted.push(format!("stack/{c}/{}", p.mgmt));
    }
    for c in [
        "argocd",
        "argo-rollouts",
        "argo-events",
        "tekton",
        "tekton-dashboard",
        "external-secrets",
        "vault-injector",
    ] {
        wanted.push(format!("stack/{c}/{}", p.runtime));
    }
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    assert_has(file, ids, &wanted);
    let nautes = position(ids, &format!("stack/nautes/{}", p.mgmt));
    for before in [
        format!("vault/kubernetes-auth/{}", p.tenant),
        format!("stack/argocd/{}", p.mgmt),
        "gitlab/configure".into(),
    ] {
        assert!(
            position(ids, &before) < nautes,
            "{file}: Nautes is delivered before `{before}`: {ids:?}"
        );
    }
    let health = position(ids, "health");
    for (i, id) in ids.iter().enumerate() {
        assert!(
            !id.starts_with("stack/") || i < health,
            "{file}: `{id}` comes after the health check: {ids:?}"
        );
    }
}

/// Validate and plan one example with no state; checks that hold for every
/// example; returns the planned step ids in plan order.
fn validate_and_plan(ws: &Workspace, file: &str) -> Vec<String> {
    let path = inv_path(file);
    let v = ws.run(&["validate", "-i", &path]);
    let v_err = stderr(&v);
    assert_eq!(code(&v), 0, "{file}: validate failed:\n{v_err}");
    assert!(
        !v_err.contains("warning"),
        "{file}: validate warns (an example must validate cleanly once its secrets are set):\n{v_err}"
    );
    let counted: usize = v_err
        .split("valid (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{file}: validate did not say how many steps it planned:\n{v_err}"));

    let p = ws.run(&["plan", "-i", &path]);
    let text = stdout(&p);
    assert_eq!(code(&p), 0, "{file}: plan failed:\n{}\n{text}", stderr(&p));
    let lines = plan_lines(&text);
    assert!(!lines.is_empty(), "{file}: plan lists no steps:\n{text}");
    for l in &lines {
        assert!(
            l.sign == '+' && l.reason == "new",
            "{file}: with no state every step is new, not {l:?}:\n{text}"
        );
    }
    let ids = ids_of(&lines);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{file}: a step is listed twice: {ids:?}");
    assert_eq!(
        counted,
        ids.len(),
        "{file}: validate counted {counted} steps, plan lists {}",
        ids.len()
    );
    assert!(
        text.contains(&format!("Plan: {} to apply, 0 to destroy, 0 unchanged.", ids.len())),
        "{file}: {text}"
    );
    assert!(
        !ws.state_file().exists(),
        "{file}: plan wrote a state file; it must change nothing"
    );
    ids.iter().map(|s| s.to_string()).collect()
}

// What each scenario's plan must show, one function per example (each
// its own test below, after the checks every example gets).

/// The starter example is what `init` prints.
fn check_starter(ws: &Workspace, file: &str, ids: &[&str]) {
    assert_has(
        file,
        ids,
        &[
            "pki",
            "k3s/host/server/node-1",
            "k3s/host/agent/node-2",
            "k3s/host/kubeconfig",
            "vcluster/tenant-mgmt",
            "hnc/tenant-mgmt",
            "tenant/team-a/namespaces",
            "hook/announce",
        ],
    );
    let init = ws.run(&["init"]);
    assert_eq!(code(&init), 0);
    let on_disk = std::fs::read(ws.path().join("inventories/starter.yaml")).unwrap();
    assert!(
        init.stdout == on_disk,
        "`init` must print inventories/starter.yaml (rebuild after editing it)"
    );
}

/// single-node K3s installs the whole platform on one node.
fn check_single_node_k3s(ws: &Workspace, file: &str, ids: &[&str]) {
    assert_has(
        file,
        ids,
        &[
            &format!("artifacts/k3s/{K3S}"),
            "k3s/host/token",
            "preflight/host",
            "k3s/host/kubeconfig",
            "vcluster/tenant-mgmt",
            "hnc/tenant-mgmt",
            "tenant/team-a/namespaces",
        ],
    );
    assert_eq!(
        k3s_nodes(ids, "host"),
        ["k3s/host/server/nautes-1"],
        "{file}: one node, a server"
    );
    // The whole platform: the vcluster manages, the K3s cluster runs.
    assert_platform(
        file,
        ids,
        &Platform {
            mgmt: "tenant-mgmt",
            ingress: "host",
            runtime: "host",
            tenant: "team-a",
        },
    );
    assert_has(file, ids, &["vault/host", "gitlab/host"]);
    let plan = ws.rendered_plan(file);
    // Vault and GitLab go onto the K3s node itself.
    for step in ["vault/host", "gitlab/host"] {
        let host = &plan[step]["spec"]["host"];
        assert_eq!(
            (&host["name"], &host["address"]),
            (&json!("nautes-1"), &json!("192.0.2.10")),
            "{file}: {step}"
        );
    }
    // K3s' own Traefik would take :443 from GitLab's nginx; ours listens on NodePorts.
    let config = plan["k3s/host/server/nautes-1"]["spec"]["config"].as_str().unwrap();
    assert!(config.contains("disable:\n  - traefik\n"), "{file}: {config}");
    let traefik = &plan["stack/traefik/host"]["spec"]["sources"][0]["values"];
    assert_eq!(traefik["ports"]["websecure"]["nodePort"], 30443, "{file}: {traefik}");
    assert_eq!(traefik["ports"]["web"]["nodePort"], 30080, "{file}: {traefik}");
    // The health check reaches the ingress at the node, before DNS exists.
    let endpoints = plan["health"]["spec"]["endpoints"].as_array().unwrap();
    let argocd = endpoints
        .iter()
        .find(|e| e["name"] == "Argo CD")
        .expect("Argo CD checked");
    assert_eq!(argocd["resolve"], "192.0.2.10:30443", "{file}: {argocd}");
}

/// HA K3s joins servers one at a time, then agents, with GitLab and Vault on their own hosts.
fn check_ha_k3s(ws: &Workspace, file: &str, ids: &[&str]) {
    // Servers first, one at a time from the one that initialises etcd, then agents.
    assert_eq!(
        k3s_nodes(ids, "host"),
        [
            "k3s/host/server/server-1",
            "k3s/host/server/server-2",
            "k3s/host/server/server-3",
            "k3s/host/agent/agent-1",
            "k3s/host/agent/agent-2",
        ],
        "{file}"
    );
    // GitLab and Vault are installed on their own hosts, then configured.
    assert_has(
        file,
        ids,
        &[
            "pki",
            "k3s/host/kubeconfig",
            "vault/host",
            "vault/configure",
            "gitlab/host",
            "gitlab/configure",
        ],
    );
    assert!(
        position(ids, "vault/host") < position(ids, "vault/configure"),
        "{ids:?}"
    );
    assert!(
        position(ids, "gitlab/host") < position(ids, "gitlab/configure"),
        "{ids:?}"
    );
    // GitLab and Vault on their own hosts get their server certificates.
    let out = ws.run(&["plan", "-i", &inv_path(file), "--output", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("plan --output json is JSON");
    let pki = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "pki")
        .expect("pki planned");
    let what = pki["description"].as_str().unwrap();
    for cert in ["gitlab-server", "vault-server", "ingress"] {
        assert!(what.contains(cert), "{file}: pki issues no {cert}: {what}");
    }
    assert_platform(
        file,
        ids,
        &Platform {
            mgmt: "tenant-mgmt",
            ingress: "host",
            runtime: "host",
            tenant: "team-a",
        },
    );
    assert!(
        position(ids, "gitlab/configure") < position(ids, "stack/dex/tenant-mgmt"),
        "{file}: Dex needs GitLab's OAuth application: {ids:?}"
    );
    // Neither service shares a host with K3s.
    let plan = ws.rendered_plan(file);
    assert_eq!(plan["vault/host"]["spec"]["host"]["name"], "vault-1", "{file}");
    assert_eq!(plan["gitlab/host"]["spec"]["host"]["name"], "gitlab-1", "{file}");
}

/// Kubespray.
fn check_kubespray(ws: &Workspace, file: &str, ids: &[&str]) {
    assert_has(
        file,
        ids,
        &[
            "preflight/main",
            "kubespray/main/cluster",
            "kubespray/main/kubeconfig",
            "vcluster/tenant-mgmt",
            "tenant/team-a/namespaces",
        ],
    );
    assert_none_starts_with(file, ids, &["k3s/", "artifacts/k3s/", "gitlab/host"]);
    assert_platform(
        file,
        ids,
        &Platform {
            mgmt: "tenant-mgmt",
            ingress: "main",
            runtime: "main",
            tenant: "team-a",
        },
    );
    assert_has(file, ids, &["vault/host"]);
    assert!(
        position(ids, "kubespray/main/kubeconfig") < position(ids, "stack/traefik/main"),
        "{file}: {ids:?}"
    );
    assert!(
        position(ids, "kubespray/main/kubeconfig") < position(ids, "vcluster/tenant-mgmt"),
        "{file}: the vcluster goes onto the Kubespray cluster, after its kubeconfig: {ids:?}"
    );
    // The playbooks run from the checkout beside the example.
    let plan = ws.rendered_plan(file);
    let path = plan["kubespray/main/cluster"]["settings"]["path"].as_str().unwrap();
    assert_eq!(
        Path::new(path),
        std::path::absolute(ws.path().join("inventories/kubespray")).unwrap(),
        "{file}"
    );
    // Not a K3s cluster: the health check reaches the ingress at `ingressAddress`,
    // which is ours, not a chart value.
    let endpoints = plan["health"]["spec"]["endpoints"].as_array().unwrap();
    let dex = endpoints.iter().find(|e| e["name"] == "Dex").expect("Dex checked");
    assert_eq!(dex["resolve"], "192.0.2.61:30443", "{file}: {dex}");
    let traefik = &plan["stack/traefik/main"]["spec"]["sources"][0]["values"];
    assert_eq!(traefik["ingressAddress"], Value::Null, "{file}: {traefik}");
}

/// the hybrid example waits for Terraform's hosts.
fn check_hybrid(ws: &Workspace, file: &str, ids: &[&str]) {
    // Nothing can be planned on a host Terraform has not made yet,
    // nor inside the cluster on it: those steps wait for its outputs.
    assert_has(file, ids, &["terraform/cloud", "vault/host", "gitlab/configure"]);
    assert_none_starts_with(
        file,
        ids,
        &["k3s/", "preflight/host", "vcluster/", "stack/", "hnc/", "health"],
    );
    let out = ws.run(&["plan", "-i", &inv_path(file)]);
    assert!(
        stdout(&out).contains("note: nautes-server-1 come from terraform/cloud"),
        "{file}: {}",
        stdout(&out)
    );
}

/// the air-gap example takes every file from its bundle.
fn check_airgap(ws: &Workspace, file: &str, ids: &[&str]) {
    assert_has(
        file,
        ids,
        &[
            &format!("artifacts/k3s/{K3S}"),
            "k3s/host/server/air-1",
            "k3s/host/agent/air-2",
            "artifacts/vcluster/0.10.1",
            "vcluster/tenant-mgmt",
            "artifacts/hnc/v1.0.0",
            "hnc/tenant-mgmt",
            "tenant/team-a/namespaces",
            "vault/host",
            "gitlab/host",
        ],
    );
    assert_platform(
        file,
        ids,
        &Platform {
            mgmt: "tenant-mgmt",
            ingress: "host",
            runtime: "host",
            tenant: "team-a",
        },
    );
    check_airgap_render(ws, file);
}

/// a brought-in cluster bootstraps nothing and reaches it through its kubeconfig.
fn check_byo_cluster(ws: &Workspace, file: &str, ids: &[&str]) {
    assert_has(
        file,
        ids,
        &[
            "vault/configure",
            "gitlab/configure",
            "vcluster/tenant-mgmt",
            "hnc/tenant-mgmt",
            "tenant/team-a/namespaces",
            "harbor/harbor/configure",
            "harbor/harbor/tenant/team-a",
            "nexus/nexus/configure",
            "nexus/nexus/tenant/team-a",
            "sonarqube/sonarqube/configure",
            "sonarqube/sonarqube/tenant/team-a",
        ],
    );
    // A brought-in cluster: nothing is bootstrapped, no host is reached.
    assert_none_starts_with(
        file,
        ids,
        &[
            "k3s/",
            "kubespray/",
            "preflight/",
            "terraform/",
            "artifacts/k3s/",
            "vault/host",
            "gitlab/host",
        ],
    );
    assert_platform(
        file,
        ids,
        &Platform {
            mgmt: "tenant-mgmt",
            ingress: "host",
            runtime: "host",
            tenant: "team-a",
        },
    );
    let plan = ws.rendered_plan(file);
    let vault = &plan["vault/configure"]["spec"];
    assert_eq!(vault["url"], "https://vault.example.com:8200", "{file}");
    assert_eq!(vault["token"]["env"], "NAUTES_VAULT_TOKEN", "{file}");
    assert_eq!(
        plan["gitlab/configure"]["spec"]["url"], "https://gitlab.example.com",
        "{file}"
    );
    // Steps in your cluster go through your kubeconfig.
    for step in ["stack/traefik/host", "stack/tekton/host"] {
        let target = &plan[step]["spec"]["target"];
        assert_eq!(target["from"], "file", "{file}: {step}: {target}");
    }
    let endpoints = plan["health"]["spec"]["endpoints"].as_array().unwrap();
    let argocd = endpoints
        .iter()
        .find(|e| e["name"] == "Argo CD")
        .expect("Argo CD checked");
    assert_eq!(argocd["resolve"], "192.0.2.100:30443", "{file}: {argocd}");
    let host = &plan["vcluster/tenant-mgmt"]["spec"]["host"];
    assert_eq!(
        host["from"], "file",
        "{file}: the vcluster's host is reached through the kubeconfig: {host}"
    );
    assert_eq!(host["context"], "admin@host", "{file}");
}

/// The check of each scenario, by example file.
/// Each tenant: its vcluster and tree, its group, its Harbor, its Vault path.
fn check_multi_tenant(ws: &Workspace, file: &str, ids: &[&str]) {
    let mut wanted = vec!["gitlab/configure", "vault/configure", "nexus/nexus/configure"];
    let per_tenant: Vec<String> = ["team-a", "team-b"]
        .iter()
        .flat_map(|t| {
            [
                format!("vcluster/vc-{t}"),
                format!("hnc/vc-{t}"),
                format!("tenant/{t}/namespaces"),
                format!("gitlab/tenant/{t}"),
                format!("harbor/harbor-{t}/configure"),
                format!("harbor/harbor-{t}/tenant/{t}"),
                format!("nexus/nexus/tenant/{t}"),
                format!("tenant/{t}/vault"),
                format!("vault/kubernetes-auth/{t}"),
            ]
        })
        .collect();
    wanted.extend(per_tenant.iter().map(String::as_str));
    assert_has(file, ids, &wanted);
    // No shared Harbor: each tenant's projects are on its own.
    assert_none_starts_with(file, ids, &["harbor/harbor/"]);
    let plan = ws.rendered_plan(file);
    for t in ["team-a", "team-b"] {
        let group = &plan[&format!("gitlab/tenant/{t}")];
        assert_eq!(group["spec"]["group"], t, "{file}: {group}");
        assert!(
            group["needs"].as_array().unwrap().contains(&json!("gitlab/configure")),
            "{file}: the group is made with gitlab/configure's token: {group}"
        );
        let projects = &plan[&format!("harbor/harbor-{t}/tenant/{t}")]["spec"]["endpoint"]["url"];
        assert_eq!(projects, &json!(format!("https://harbor.{t}.example.com")), "{file}");
    }
    // team-a's application signs in through Dex, with a client of its own.
    let dex = plan
        .iter()
        .find(|(id, _)| id.starts_with("stack/dex/"))
        .map(|(_, s)| s)
        .expect("Dex is planned");
    assert_eq!(
        dex["spec"]["runtime"]["tenantClients"],
        json!([{"tenant": "team-a", "name": "shop",
                "redirectUris": ["https://shop.team-a.example.com/oauth2/callback"]}]),
        "{file}: {dex}"
    );
}

/// A scenario's check: the workspace, the example's file, its planned step ids.
type Check = fn(&Workspace, &str, &[&str]);

const CHECKS: [(&str, Check); 8] = [
    ("starter.yaml", check_starter),
    ("single-node-k3s.yaml", check_single_node_k3s),
    ("ha-k3s.yaml", check_ha_k3s),
    ("kubespray.yaml", check_kubespray),
    ("hybrid.yaml", check_hybrid),
    ("airgap.yaml", check_airgap),
    ("byo-cluster.yaml", check_byo_cluster),
    ("multi-tenant.yaml", check_multi_tenant),
];

/// Validate and plan one example and run its scenario's check.
fn example(file: &str) {
    let ws = Workspace::new();
    let ids = validate_and_plan(&ws, file);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    if let Some((_, check)) = CHECKS.iter().find(|(f, _)| *f == file) {
        check(&ws, file, &ids);
    }
}

#[test]
fn example_starter_validates_and_plans_its_scenario() {
    example("starter.yaml");
}

#[test]
fn example_single_node_k3s_validates_and_plans_its_scenario() {
    example("single-node-k3s.yaml");
}

#[test]
fn example_ha_k3s_validates_and_plans_its_scenario() {
    example("ha-k3s.yaml");
}

#[test]
fn example_kubespray_validates_and_plans_its_scenario() {
    example("kubespray.yaml");
}

#[test]
fn example_hybrid_validates_and_plans_its_scenario() {
    example("hybrid.yaml");
}

#[test]
fn example_airgap_validates_and_plans_its_scenario() {
    example("airgap.yaml");
}

#[test]
fn example_byo_cluster_validates_and_plans_its_scenario() {
    example("byo-cluster.yaml");
}

#[test]
fn example_multi_tenant_validates_and_plans_its_scenario() {
    example("multi-tenant.yaml");
}

/// Air-gap: every file any step uses comes from the bundle, pinned to the
/// bundle's checksums, and containerd pulls through the private mirror.
fn check_airgap_render(ws: &Workspace, file: &str) {
    let sums: BTreeMap<String, String> = std::fs::read_to_string(ws.bundle().join("checksums.sha256"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (sum, name) = l.split_once(char::is_whitespace)?;
            Some((name.trim().trim_start_matches('*').to_string(), sum.to_string()))
        })
        .collect();
    let plan = ws.rendered_plan(file);
    let bundle = std::path::absolute(ws.bundle()).unwrap();
    let artifacts: Vec<&Value> = plan.values().filter(|s| s["kind"] == "artifacts").collect();
    let ids: Vec<&str> = artifacts.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "artifacts/argo-events/v1.7.1",
            "artifacts/argo-rollouts/v1.2.1",
            "artifacts/argocd/v2.4.0",
            "artifacts/cert-manager/v1.8.0",
            "artifacts/external-secrets/0.5.7",
            "artifacts/gitlab/15.10.8-ce.0",
            "artifacts/hnc/v1.0.0",
            &format!("artifacts/k3s/{K3S}"),
            "artifacts/nautes/v0.3.8",
            "artifacts/tekton-dashboard/v0.28.0",
            "artifacts/tekton/v0.37.5",
            "artifacts/traefik/10.24.0",
            "artifacts/vault-injector/0.22.0",
            "artifacts/vault/1.10.4",
            "artifacts/vcluster/0.10.1",
        ],
        "{file}: the files K3s, vcluster, HNC, GitLab, Vault and the stack are made from"
    );
    // GitLab and Vault are installed from the bundle's package, pinned so a
    // rebuilt bundle re-runs the install.
    for (step, at) in [("gitlab/host", GITLAB_DEB), ("vault/host", VAULT_ZIP)] {
        assert_eq!(
            plan[step]["spec"]["packageSha256"].as_str(),
            sums.get(at).map(String::as_str),
            "{file}: {step} is not pinned to `{at}`"
        );
    }
    for step in artifacts {
        let spec = &step["spec"];
        assert_eq!(spec["mode"], "airgap", "{file}: {} would download", step["id"]);
        assert_eq!(Path::new(spec["bundle"].as_str().unwrap()), bundle, "{file}");
        for f in spec["files"].as_array().unwrap() {
            let at = f["bundle_path"].as_str().unwrap();
            assert_eq!(
                f["sha256"].as_str(),
                sums.get(at).map(String::as_str),
                "{file}: `{at}` is not pinned to the bundle's checksum"
            );
        }
    }
    let images = format!("k3s/{K3S}/k3s-airgap-images-amd64.tar.zst");
    let k3s_files = &plan[&format!("artifacts/k3s/{K3S}")]["spec"]["files"];
    assert!(
        k3s_files
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["bundle_path"] == json!(images)),
        "{file}: air-gapped nodes need the K3s images tarball: {k3s_files}"
    );
    for node in ["k3s/host/server/air-1", "k3s/host/agent/air-2"] {
        let registries = plan[node]["spec"]["registries"].as_str().unwrap_or_default();
        assert!(
            registries.contains("https://registry.example.com:5000"),
            "{file}: {node} does not pull through the mirror: {registries:?}"
        );
    }
}

#[test]
fn inventories_cover_every_scenario_and_the_readme_lists_them() {
    let found = examples();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for (file, what) in SCENARIOS {
        assert!(
            found.iter().any(|f| f == file),
            "inventories/{file} ({what}) is missing; found {found:?}"
        );
    }
    for file in &found {
        assert!(
            readme.contains(&format!("`{file}`")),
            "README.md does not list the example `{file}`"
        );
    }
}

/// Every example validates and plans with no state; those of the scenarios
/// above are their own tests, a new one gets the checks every example gets.
#[test]
fn every_other_example_validates_and_plans() {
    let found = examples();
    assert!(!found.is_empty());
    for file in found.iter().filter(|f| !CHECKS.iter().any(|(c, _)| c == f)) {
        example(file);
    }
    for (file, _) in SCENARIOS {
        assert!(CHECKS.iter().any(|(c, _)| *c == file), "{file} has no check");
    }
}

#[test]
fn the_airgap_example_takes_k3s_from_its_bundle_and_refuses_an_incomplete_one() {
    let ws = Workspace::new();
    // Only air-gapped nodes need the images tarball: without it the bundle
    // cannot serve this example, and that is an inventory error.
    std::fs::remove_file(ws.bundle().join(format!("k3s/{K3S}/k3s-airgap-images-amd64.tar.zst"))).unwrap();
    ws.seal();
    let out = ws.run(&["validate", "-i", &inv_path("airgap.yaml")]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("the bundle has no K3s {K3S}")), "{err}");
    assert!(err.contains("k3s-airgap-images-amd64.tar.zst"), "{err}");
}

#[test]
fn the_airgap_example_installs_gitlab_and_vault_only_from_packages_in_its_bundle() {
    let ws = Workspace::new();
    for f in [GITLAB_DEB, VAULT_ZIP] {
        std::fs::remove_file(ws.bundle().join(f)).unwrap();
    }
    ws.seal();
    let out = ws.run(&["validate", "-i", &inv_path("airgap.yaml")]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    for f in [GITLAB_DEB, VAULT_ZIP] {
        assert!(err.contains(&format!("missing {f}")), "{err}");
    }
}

#[test]
fn the_hybrid_example_plans_cloud_and_bare_metal_nodes_once_terraform_made_the_cloud_hosts() {
    let ws = Workspace::new();
    let file = "hybrid.yaml";
    // Record the Terraform step as done, with the host the module outputs,
    // exactly as `apply` would have.
    let plan = ws.rendered_plan(file);
    let tf = &plan["terraform/cloud"];
    let state = json!({
        "version": 1,
        "revision": 1,
        "steps": {
            "terraform/cloud": {
                "kind": tf["kind"], "description": tf["description"], "needs": tf["needs"],
                "spec": tf["spec"], "settings": tf["settings"], "fingerprint": tf["fingerprint"],
                "status": "done", "revision": 1, "needs_revisions": {},
                "outputs": { "hosts": [
                    { "name": "nautes-server-1", "address": "203.0.113.10", "port": 22, "user": "root",
                      "labels": {}, "roles": ["server"] }
                ] },
                "started_at": null, "finished_at": null, "attempts": 1, "last_error": null
            }
        },
        "runs": []
    });
    std::fs::create_dir_all(ws.s.workdir()).unwrap();
    std::fs::write(ws.state_file(), serde_json::to_string_pretty(&state).unwrap()).unwrap();

    let out = ws.run(&["plan", "-i", &inv_path(file)]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{}\n{text}", stderr(&out));
    let lines = plan_lines(&text);
    let tf_line = lines
        .iter()
        .find(|l| l.id == "terraform/cloud")
        .expect("terraform/cloud listed");
    assert_eq!((tf_line.sign, tf_line.reason.as_str()), ('=', "unchanged"), "{text}");
    let ids = ids_of(&lines);
    assert_eq!(
        k3s_nodes(&ids, "host"),
        [
            "k3s/host/server/nautes-server-1",
            "k3s/host/agent/metal-1",
            "k3s/host/agent/metal-2",
        ],
        "{text}"
    );
    assert_has(file, &ids, &["preflight/host", "k3s/host/kubeconfig"]);
    assert!(!text.contains("come from terraform/cloud"), "{text}");
    // The bare-metal agents are reached through the bastion; the cloud server directly.
    let plan = ws.rendered_plan(file);
    let conns = plan["preflight/host"]["settings"]["conns"].as_array().unwrap();
    let conn = |name: &str| conns.iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(conn("metal-1")["bastion"]["address"], "198.51.100.7", "{conns:?}");
    assert_eq!(conn("nautes-server-1")["bastion"], Value::Null, "{conns:?}");
    assert_eq!(conn("nautes-server-1")["user"], "root", "{conns:?}");

    // Once Terraform has made the server, the platform is planned on the cluster.
    let platform = file;
    let v = ws.run(&["validate", "-i", &inv_path(platform)]);
    assert_eq!(code(&v), 0, "{platform}: {}", stderr(&v));
    assert!(!stderr(&v).contains("warning"), "{platform}: {}", stderr(&v));
    let out = ws.run(&["plan", "-i", &inv_path(platform)]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{}\n{text}", stderr(&out));
    let lines = plan_lines(&text);
    let ids = ids_of(&lines);
    assert_platform(
        platform,
        &ids,
        &Platform {
            mgmt: "tenant-mgmt",
            ingress: "host",
            runtime: "host",
            tenant: "team-a",
        },
    );
    assert_has(platform, &ids, &["vault/host", "k3s/host/server/nautes-server-1"]);
    assert_none_starts_with(platform, &ids, &["gitlab/host"]);
    // Vault's bare-metal host is reached through the bastion.
    let plan = ws.rendered_plan(platform);
    let vault_host = &plan["vault/host"]["spec"]["host"];
    assert_eq!(vault_host["name"], "metal-vault", "{vault_host}");
    assert_eq!(vault_host["bastion"]["address"], "198.51.100.7", "{vault_host}");
}
