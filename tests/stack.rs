//! The whole platform by the real binary from one inventory, against the
//! stand-ins (Kubernetes API with its emulated controllers, Vault, GitLab,
//! an HTTPS ingress) and an air-gap bundle of stand-in upstream releases:
//! a full install reaches the health step; the order of the API calls
//! follows the dependencies (read from the stand-ins' request logs, not
//! from our output); a re-run writes nothing anywhere; a version bump
//! re-applies just that component and its dependents; an endpoint that
//! never answers fails the health step naming it; destroy leaves nothing.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/gitlab.rs"]
mod gitlab;
#[path = "support/kube_api.rs"]
mod kube_api;
#[path = "support/vault.rs"]
mod vault;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::{code, stderr, stdout, Scratch};
use gitlab::GitlabStandin;
use kube_api::KubeApiStandin;
use serde_json::Value;
use vault::VaultStandin;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BOOTSTRAP: &str = "glpat-stackBootstrap0001";
const DOMAIN: &str = "nautes.test";

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
fn make_ca(dir: &Path) {
    let d = dir.to_str().unwrap();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=stack test CA",
        "-keyout",
        &format!("{d}/ca.key"),
        "-out",
        &format!("{d}/ca.crt"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]));
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
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=*.nautes.test",
        "-keyout",
        &format!("{d}/ingress.key"),
        "-out",
        &format!("{d}/ingress.csr"),
    ]));
    std::fs::write(
        dir.join("ingress.ext"),
        "subjectAltName=DNS:*.nautes.test,DNS:nautes.test\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &format!("{d}/ingress.csr"),
        "-CA",
        &format!("{d}/ca.crt"),
        "-CAkey",
        &format!("{d}/ca.key"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &format!("{d}/ingress.ext"),
        "-out",
        &format!("{d}/ingress.crt"),
    ]));
}

fn helm_package(chart: &str, version: &str, into: &Path, home: &Path) {
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
fn make_bundle(s: &Scratch) {
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
    let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
}

struct Ingress {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ingress(s: &Scratch, fail_host: Option<&str>) -> Ingress {
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
        .arg("--log")
        .arg(dir.path().join("log"));
    if let Some(h) = fail_host {
        cmd.args(["--fail-host", h]);
    }
    let child = cmd.stdin(Stdio::null()).spawn().expect("python3");
    let started = Instant::now();
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ingress stand-in did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Ingress { child, port, _dir: dir }
}

struct Platform {
    kube: KubeApiStandin,
    vault: VaultStandin,
    gitlab: GitlabStandin,
    ingress: Ingress,
    s: Scratch,
}

fn inventory(p: &Platform, cert_manager: &str, rollout: &str) -> String {
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
components:
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
  argocd: {{}}
  nautes: {{}}
  argoRollouts: {{}}
  argoEvents: {{}}
  tekton: {{}}
  externalSecrets: {{}}
",
        vault = p.vault.url(),
        gitlab = p.gitlab.url(),
        port = p.ingress.port,
    )
}

fn platform(fail_host: Option<&str>) -> Platform {
    let s = Scratch::new();
    make_ca(s.path());
    make_bundle(&s);
    let kube = KubeApiStandin::start();
    private(&s.path().join("host.kubeconfig"), &kube.kubeconfig());
    private(&s.path().join("gitlab-token"), BOOTSTRAP);
    let ingress = start_ingress(&s, fail_host);
    let p = Platform {
        kube,
        vault: VaultStandin::start(),
        gitlab: GitlabStandin::start_with("unused", BOOTSTRAP),
        ingress,
        s,
    };
    p.s.write_inventory(&inventory(&p, "v1.8.0", "60s"));
    p
}

fn apply(s: &Scratch) -> std::process::Output {
    s.run("apply", &["--yes"])
}

/// When the first request matching `pred` reached a stand-in.
fn first_time(log: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> f64 {
    log.iter()
        .find(|r| pred(r))
        .and_then(|r| r["time"].as_f64())
        .unwrap_or_else(|| panic!("no request for {what}"))
}

fn is_write(r: &Value) -> bool {
    !matches!(r["method"].as_str(), Some("GET") | Some("HEAD") | Some("LIST"))
}

fn kube_write_to(log: &[Value], path_part: &str) -> f64 {
    first_time(log, path_part, |r| {
        is_write(r) && r["path"].as_str().is_some_and(|p| p.contains(path_part))
    })
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()));
        }
    }
    out
}

/// The secrets of an install, each with what it is: tokens, keys, passwords.
fn known_secrets(p: &Platform) -> Vec<(String, String)> {
    let mut out = vec![("the bootstrap token".to_string(), BOOTSTRAP.to_string())];
    let outputs = p.s.workdir().join("outputs");
    for entry in std::fs::read_dir(outputs.join("vault")).unwrap().flatten() {
        let v = std::fs::read_to_string(entry.path()).unwrap();
        out.push((
            format!("vault {}", entry.file_name().to_string_lossy()),
            v.trim().to_string(),
        ));
    }
    out.push((
        "Argo CD's Dex client secret".into(),
        std::fs::read_to_string(outputs.join("argocd/dex-client-secret"))
            .unwrap()
            .trim()
            .to_string(),
    ));
    let dump = p.gitlab.dump();
    for t in dump["tokens"].as_array().unwrap() {
        if t["name"] != "bootstrap" {
            out.push((
                format!("GitLab token {}", t["name"]),
                t["token"].as_str().unwrap().to_string(),
            ));
        }
    }
    for a in dump["applications"].as_array().unwrap() {
        out.push(("the OAuth app secret".into(), a["secret"].as_str().unwrap().to_string()));
    }
    // A line from the middle of each private key (PEM lines are unique).
    for key in [p.s.path().join("ca.pk8"), outputs.join("pki/ingress.key")] {
        let text = std::fs::read_to_string(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        let line = text.lines().nth(1).unwrap().to_string();
        out.push((format!("private key {}", key.display()), line));
    }
    out
}

#[test]
fn full_install_in_dependency_order_rerun_upgrade_and_teardown() {
    let p = platform(None);
    let first = apply(&p.s);
    assert_eq!(code(&first), 0, "{}\n{}", stdout(&first), stderr(&first));
    assert_eq!(p.s.step_status("health").as_deref(), Some("done"));
    let summary = std::fs::read_to_string(p.s.workdir().join("outputs/summary.txt")).unwrap();
    assert!(summary.contains(&format!("https://dex.{DOMAIN}")), "{summary}");

    // The order of the calls follows the dependencies.
    let kube = p.kube.requests();
    let vault = p.vault.requests();
    let gitlab = p.gitlab.requests();
    let cert_manager = kube_write_to(&kube, "/namespaces/cert-manager/deployments");
    let issuer = kube_write_to(&kube, "/clusterissuers/nautes-ca");
    assert!(cert_manager < issuer, "the ClusterIssuer came before cert-manager");
    let oauth_app = first_time(&gitlab, "the OAuth app", |r| {
        r["method"] == "POST" && r["path"] == "/api/v4/applications"
    });
    let dex_config = kube_write_to(&kube, "/namespaces/dex/secrets/dex-config");
    assert!(
        oauth_app < dex_config,
        "Dex was configured before its OAuth application existed"
    );
    let argocd_cm = kube_write_to(&kube, "/namespaces/argocd/configmaps/argocd-cm");
    assert!(dex_config < argocd_cm, "Argo CD's OIDC came before Dex");
    let k8s_auth = first_time(&vault, "the tenant's Kubernetes auth", |r| {
        is_write(r) && r["path"] == "/v1/auth/kubernetes-acme/config"
    });
    let nautes_app = kube_write_to(&kube, "/namespaces/argocd/applications/nautes");
    assert!(
        argocd_cm < nautes_app && k8s_auth < nautes_app,
        "Nautes was delivered before Argo CD or Vault auth"
    );

    // Nautes reached the tenant repository, for Argo CD to deliver.
    let dump = p.gitlab.dump();
    let project = dump["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["path_with_namespace"] == "acme/management")
        .unwrap()
        .clone();
    let fixture = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/stack/nautes/v0.3.8/nautes.yaml")).unwrap();
    assert_eq!(
        project["branches"]["main"]["files"]["nautes/nautes.yaml"],
        fixture.as_str()
    );

    let proxy = kube_write_to(&kube, "/namespaces/nautes/deployments/vault-proxy");
    assert!(proxy < nautes_app, "Nautes was delivered before vault-proxy");
    let secrets = known_secrets(&p);

    // A re-run writes nothing anywhere.
    p.kube.reset_log();
    p.vault.reset_log();
    p.gitlab.reset_log();
    let again = apply(&p.s);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let kube_writes: Vec<Value> = p
        .kube
        .writes()
        .into_iter()
        .filter(|r| !r["path"].as_str().unwrap_or("").contains("_standin"))
        .collect();
    assert!(kube_writes.is_empty(), "Kubernetes writes on a re-run: {kube_writes:?}");
    assert!(
        p.vault.writes().is_empty(),
        "Vault writes on a re-run: {:?}",
        p.vault.writes()
    );
    assert!(
        p.gitlab.writes().is_empty(),
        "GitLab writes on a re-run: {:?}",
        p.gitlab.writes()
    );

    // No secret in anything we printed, logged or recorded.
    let mut seen = String::new();
    for out in [&first, &again] {
        seen.push_str(&stdout(out));
        seen.push_str(&stderr(out));
    }
    seen.push_str(&std::fs::read_to_string(p.s.workdir().join("state.json")).unwrap());
    seen.push_str(&all_text(&p.s.workdir().join("logs")));
    assert!(
        secrets.len() >= 8,
        "too few secrets collected to mean anything: {}",
        secrets.len()
    );
    for (what, value) in &secrets {
        assert!(
            !seen.contains(value.as_str()),
            "{what} leaked into output, log or state"
        );
    }

    // cert-manager v1.8.1: plan shows it and its dependents only; the apply writes only its changed objects.
    p.s.write_inventory(&inventory(&p, "v1.8.1", "60s"));
    let plan = p.s.run("plan", &[]);
    let text = stdout(&plan);
    assert!(
        text.contains("stack/cert-manager/host") && text.contains("stack/ca-issuer/host"),
        "{text}"
    );
    for untouched in ["stack/dex/host", "stack/traefik/host", "stack/argo-rollouts/host"] {
        let line = text.lines().find(|l| l.contains(untouched)).unwrap_or("");
        assert!(
            !line.contains('+') && !line.contains('~'),
            "{untouched} should not change: {text}"
        );
    }
    p.kube.reset_log();
    let upgraded = apply(&p.s);
    assert_eq!(code(&upgraded), 0, "{}", stderr(&upgraded));
    let writes: Vec<String> = p
        .kube
        .writes()
        .iter()
        .map(|r| r["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        !writes.is_empty() && writes.iter().all(|w| w.contains("cert-manager")),
        "{writes:?}"
    );

    // A component removed from the inventory is pruned, and only it.
    p.s.write_inventory(&inventory(&p, "v1.8.1", "60s").replace("  argoRollouts: {}\n", ""));
    let plan = p.s.run("plan", &[]);
    assert!(stdout(&plan).contains("stack/argo-rollouts/host"), "{}", stdout(&plan));
    p.kube.reset_log();
    let pruned = apply(&p.s);
    assert_eq!(code(&pruned), 0, "{}", stderr(&pruned));
    let deletes: Vec<String> = p
        .kube
        .writes()
        .iter()
        .filter(|r| r["method"] == "DELETE")
        .map(|r| r["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        deletes.iter().any(|d| d.ends_with("/namespaces/argo-rollouts")),
        "{deletes:?}"
    );
    for other in [
        "cert-manager",
        "argocd",
        "/dex",
        "tekton",
        "traefik",
        "nautes",
        "external-secrets",
        "vault",
    ] {
        assert!(
            deletes.iter().all(|d| !d.contains(other)),
            "{other} touched by the prune: {deletes:?}"
        );
    }
    assert!(
        p.kube
            .get("/apis/apps/v1/namespaces/argo-rollouts/deployments/argo-rollouts")["kind"]
            != "Deployment"
    );

    // Destroy: everything we applied is gone, the Nautes Application before Argo CD.
    p.kube.reset_log();
    let down =
        p.s.command(&["destroy", "-i", "inventory.yaml", "--yes"])
            .output()
            .unwrap();
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    let log = p.kube.requests();
    let deleted = |part: &str| {
        first_time(&log, part, |r| {
            r["method"] == "DELETE" && r["path"].as_str().is_some_and(|x| x.contains(part))
        })
    };
    assert!(deleted("/applications/nautes") < deleted("/namespaces/argocd/deployments/argocd-server"));
    assert!(deleted("/clusterissuers/nautes-ca") < deleted("/namespaces/cert-manager/deployments/cert-manager"));
    let namespaces: Vec<String> = p.kube.get("/api/v1/namespaces")["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    for ns in [
        "cert-manager",
        "argocd",
        "dex",
        "traefik",
        "tekton-pipelines",
        "argo-rollouts",
        "nautes",
    ] {
        assert!(
            !namespaces.contains(&ns.to_string()),
            "{ns} left behind: {namespaces:?}"
        );
    }
}

#[test]
fn an_endpoint_that_never_answers_fails_the_health_step_naming_it() {
    let p = platform(Some(&format!("argocd.{DOMAIN}")));
    p.s.write_inventory(&inventory(&p, "v1.8.0", "4s"));
    let out = apply(&p.s);
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.contains("Argo CD") && err.contains("503"), "{err}");
    assert_ne!(p.s.step_status("health").as_deref(), Some("done"));
    // Everything before the health step is done and stays done.
    assert_eq!(p.s.step_status("stack/nautes/host").as_deref(), Some("done"));
}
