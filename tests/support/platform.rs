//! A whole platform for end-to-end runs of the real binary: a real control
//! plane (with the stand-in controllers for webhooks, cert-manager, Argo CD
//! and HNC), a real OpenBao, the GitLab API stand-in, an HTTPS ingress
//! stand-in, a CA made with openssl and an air-gap bundle of stand-in
//! upstream releases, plus the inventory that installs everything on them.
//! Used by tests/stack.rs and benches/platform_rerun.rs.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::cli::{code, stderr, Scratch};
use super::controlplane::ControlPlane;
use super::gitlab::GitlabStandin;
use super::standin_controllers::{hnc_manager, Api, Standin};
use super::vault::OpenBao;

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
    let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
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
        // It stands for Traefik's websecure NodePort.
        .arg("--port")
        .arg(crate::port_file::free_node_port().to_string())
        .arg("--log")
        .arg(dir.path().join("log"));
    if let Some(h) = fail_host {
        cmd.args(["--fail-host", h]);
    }
    let child = cmd.stdin(Stdio::null()).spawn().expect("python3");
    let port = crate::port_file::wait_for_port(&port_file, "ingress stand-in");
    Ingress { child, port, _dir: dir }
}

pub struct Platform {
    pub kube: ControlPlane,
    pub vault: OpenBao,
    pub gitlab: GitlabStandin,
    pub ingress: Ingress,
    pub s: Scratch,
    _hnc: Standin,
}

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
        port = p.ingress.port,
    )
}

pub fn platform(fail_host: Option<&str>) -> Platform {
    let s = Scratch::new();
    make_ca(s.path());
    make_bundle(&s);
    let mut kube = ControlPlane::start();
    kube.start_standin_controllers("webhooks,cert-manager,argocd,webhook-gated");
    let hnc = hnc_manager(Api::of(&kube));
    private(&s.path().join("host.kubeconfig"), &kube.kubeconfig());
    private(&s.path().join("gitlab-token"), BOOTSTRAP);
    let ingress = start_ingress(&s, fail_host);
    let p = Platform {
        kube,
        vault: OpenBao::start(),
        gitlab: GitlabStandin::start_with("unused", BOOTSTRAP),
        ingress,
        s,
        _hnc: hnc,
    };
    // Generous: the stack tests run side by side, each with its own control
    // plane and stand-in controllers, on two cores in CI.
    p.s.write_inventory(&inventory(&p, "v1.8.0", "180s"));
    p
}
