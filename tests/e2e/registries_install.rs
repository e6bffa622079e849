//! Harbor and Nexus installed in the cluster (`placement: cluster`) by the
//! real binary: their stand-in charts (tests/charts, shaped like the real
//! 1.9.1 and 39.0.0 charts) applied to the real control plane after Traefik,
//! Dex and Vault, their pods Ready through kwok, their volumes bound by the
//! real PV controller; then their configure steps reach them through the
//! ingress stand-in at harbor.<domain> and nexus.<domain> (forwarded to the
//! Harbor and Nexus API stand-ins only once the Ingress exists), with our
//! CA. Harbor starts with the admin password from the harbor-core Secret we
//! merged over the chart's (the `registries` stand-in controller hands it to
//! the Harbor stand-in once harbor-core is available, as the pod's env);
//! Nexus starts with its default because of the env we set, and the
//! configure step replaces it. A re-run writes nothing anywhere; a teardown
//! removes the projects, repositories and releases.

use crate::support::registries::{sonarqube_missing, Sonarqube, Standin};
use crate::support::{cli, controlplane, platform, vault};

use cli::{code, stderr, stdout};
use platform::{helm_package, platform_with, Platform, DOMAIN};
use serde_json::{json, Value};

/// The platform's inventory for registries in the cluster: tenant acme's
/// lines `tenant` (after its namespace) and the registries `registries`
/// (after Traefik and Dex), each as YAML at their indentation.
fn inventory_with(p: &Platform, tenant: &str, registries: &str) -> String {
    format!(
        "settings:
  domain: {DOMAIN}
  timeouts:
    rollout: 180s
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
    usage: [host]
tenants:
  - name: acme
    cluster: host
    namespaces:
      - name: acme
{tenant}components:
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
  dex: {{}}
{registries}",
        vault = p.vault.url(),
        gitlab = p.gitlab.url(),
        port = p.ingress.port,
    )
}

fn inventory(p: &Platform) -> String {
    inventory_with(
        p,
        "    harbor:\n      - projects: [acme-apps]\n    nexus:\n      repositories:\n        - { name: acme-maven, format: maven, type: hosted }\n",
        "  harbor:\n    placement: cluster\n  nexus:\n    placement: cluster\n",
    )
}

/// `count` volumes `<name>-<i>` of `size`, as a cluster's provisioner would
/// have made them: the charts' claims bind to them through the real PV
/// controller.
fn make_volumes(p: &Platform, name: &str, count: usize, size: &str) {
    for i in 0..count {
        let (status, body) = p.kube.request(
            "POST",
            "/api/v1/persistentvolumes",
            "application/json",
            &json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("{name}-{i}")},
                    "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                             "hostPath": {"path": format!("/tmp/{name}-{i}")}}}),
        );
        assert_eq!(status, 201, "{body}");
    }
}

fn first_write(log: &[Value], part: &str) -> f64 {
    log.iter()
        .find(|r| {
            !matches!(r["method"].as_str(), Some("GET" | "LIST" | "HEAD"))
                && r["path"].as_str().is_some_and(|x| x.contains(part))
        })
        .and_then(|r| r["time"].as_f64())
        .unwrap_or_else(|| panic!("no write to {part}"))
}

fn kept(p: &Platform, path: &str) -> String {
    let (status, body) = p.vault.api("GET", &format!("/v1/repo/data/{path}"), None);
    assert_eq!(status, 200, "{path} is not in Vault: {body}");
    body["data"]["data"]["password"].as_str().unwrap().to_string()
}

#[test]
fn harbor_and_nexus_installed_in_the_cluster_configured_through_the_ingress_rerun_and_teardown() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    let links = tempfile::tempdir().unwrap();
    let harbor_password = links.path().join("harbor-admin-password");
    let nexus_env = links.path().join("nexus-env.json");
    let harbor = Standin::harbor_installed(&harbor_password);
    let nexus = Standin::nexus_installed(&nexus_env);
    let p = platform_with(None, |kube, s| {
        let standins = kube.dir().join("standins");
        std::fs::create_dir_all(&standins).unwrap();
        std::os::unix::fs::symlink(standins.join("harbor-admin-password"), &harbor_password).unwrap();
        std::os::unix::fs::symlink(standins.join("nexus-env.json"), &nexus_env).unwrap();
        let bundle = s.path().join("bundle");
        let home = s.path().join("helm");
        helm_package("harbor-standin", "1.9.1", &bundle.join("harbor/1.9.1"), &home);
        helm_package("nexus-standin", "39.0.0", &bundle.join("nexus/39.0.0"), &home);
        let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
        assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
        let routes = standins.join("ingress-hosts.json");
        (
            "ingresses,registries".into(),
            vec![
                "--forward".into(),
                format!("harbor.{DOMAIN}={}", harbor.url()),
                "--forward".into(),
                format!("nexus.{DOMAIN}={}", nexus.url()),
                "--routes-file".into(),
                routes.to_str().unwrap().into(),
            ],
        )
    });
    p.s.write_inventory(&inventory(&p));
    // Storage, as a cluster's provisioner would have made it: the claims
    // of both charts bind to these through the real PV controller.
    make_volumes(&p, "pv", 6, "10Gi");

    let first = p.s.run("apply", &["--yes"]);
    assert_eq!(
        code(&first),
        0,
        "{}\n{}\n{}",
        stdout(&first),
        stderr(&first),
        p.kube.report()
    );
    assert_eq!(p.s.step_status("health").as_deref(), Some("done"));

    // Installed after Traefik, Dex and Vault's configuration; configured
    // through the ingress only once its release was ready.
    let kube = p.kube.requests();
    let traefik = first_write(&kube, "/namespaces/traefik/deployments");
    let dex = first_write(&kube, "/namespaces/dex/");
    let harbor_release = first_write(&kube, "/namespaces/harbor/");
    let nexus_release = first_write(&kube, "/namespaces/nexus/");
    assert!(
        traefik < harbor_release && dex < harbor_release,
        "Harbor came before Traefik or Dex"
    );
    assert!(
        traefik < nexus_release && dex < nexus_release,
        "Nexus came before Traefik or Dex"
    );
    let vault_repo = p
        .vault
        .requests()
        .iter()
        .find(|r| r["method"] == "POST" && r["path"] == "/v1/sys/mounts/repo")
        .and_then(|r| r["time"].as_f64())
        .expect("the repo engine is mounted");
    assert!(vault_repo < harbor_release, "Harbor came before Vault's repo engine");
    let through_ingress = |host: &str| -> Vec<Value> {
        p.ingress
            .log()
            .into_iter()
            .filter(|r| r["host"] == format!("{host}.{DOMAIN}") && r["path"] != "/api/v2.0/ping")
            .filter(|r| r["path"] != "/service/rest/v1/status")
            .collect()
    };
    let harbor_calls = through_ingress("harbor");
    assert!(
        !harbor_calls.is_empty(),
        "Harbor was not configured through the ingress"
    );
    assert!(harbor_calls.iter().any(|r| r["status"] == 200), "{harbor_calls:?}");
    let ingress_made = first_write(&kube, "/namespaces/harbor/ingresses");
    assert!(
        harbor_calls[0]["time"].as_f64().unwrap() > ingress_made,
        "Harbor was configured before its Ingress existed"
    );

    // Harbor started with the password we keep, so it was never changed.
    let ours = kept(&p, "harbor/harbor/admin");
    assert_eq!(std::fs::read_to_string(&harbor_password).unwrap(), ours);
    let harbor_writes = harbor.writes();
    assert!(
        !harbor_writes.iter().any(|(_, path)| path.contains("/password")),
        "{harbor_writes:?}"
    );
    let state = harbor.state();
    assert!(state["projects"].to_string().contains("acme-apps"), "{state}");
    // Nexus started with its default (our env) and got ours once.
    let env: Value = serde_json::from_str(&std::fs::read_to_string(&nexus_env).unwrap()).unwrap();
    assert_eq!(env["NEXUS_SECURITY_RANDOMPASSWORD"], "false");
    let nexus_ours = kept(&p, "nexus/nexus/admin");
    assert_eq!(
        nexus
            .call(
                "GET",
                "/service/rest/v1/status/check",
                Some(("admin", &nexus_ours)),
                None
            )
            .0,
        200
    );
    let changes = nexus
        .writes()
        .into_iter()
        .filter(|(_, path)| path.ends_with("/change-password"))
        .count();
    assert_eq!(changes, 1);
    assert!(nexus.state()["repositories"].to_string().contains("acme-maven"));

    // Neither password is in the state, the outputs' plain files or what we printed.
    let state_text = std::fs::read_to_string(p.s.workdir().join("state.json")).unwrap_or_default();
    for secret in [&ours, &nexus_ours] {
        assert!(!state_text.contains(secret.as_str()), "a password in the state");
        assert!(!stdout(&first).contains(secret.as_str()) && !stderr(&first).contains(secret.as_str()));
    }

    // A re-run writes nothing anywhere.
    p.kube.reset_log();
    p.vault.reset_log();
    let (harbor_before, nexus_before) = (harbor.writes().len(), nexus.writes().len());
    let again = p.s.run("apply", &["--yes"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let kube_writes = p.kube.installer_writes();
    assert!(kube_writes.is_empty(), "{kube_writes:#?}");
    assert!(p.vault.writes().is_empty(), "{:?}", p.vault.writes());
    assert_eq!(harbor.writes().len(), harbor_before, "{:?}", harbor.writes());
    assert_eq!(nexus.writes().len(), nexus_before, "{:?}", nexus.writes());

    // Teardown: the tenant's project and repository through the API, then
    // the releases.
    let down =
        p.s.command(&["destroy", "-i", "inventory.yaml", "--yes"])
            .output()
            .unwrap();
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    assert!(!harbor.state()["projects"].to_string().contains("acme-apps"));
    assert!(!nexus.state()["repositories"].to_string().contains("acme-maven"));
    for ns in ["harbor", "nexus"] {
        let d = p.kube.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments"));
        assert!(d["items"].as_array().is_none_or(|i| i.is_empty()), "{ns}: {d}");
    }
}

fn sonarqube_inventory(p: &Platform) -> String {
    inventory_with(p, "    sonarqube: {}\n", "  sonarqube:\n    placement: cluster\n")
}

/// SonarQube installed in the cluster: its stand-in chart (shaped like the
/// real 4.0.0, with its PostgreSQL) applied after Traefik, Dex and Vault,
/// and the **real** SonarQube 9.9 behind the ingress at
/// sonarqube.<domain> (reachable only once the Ingress exists): the default
/// `admin/admin` replaced once through the ingress, the tenant's pipeline
/// token and GitLab sign-in made there, a re-run sending SonarQube no
/// write, a teardown removing the release.
#[test]
fn sonarqube_installed_in_the_cluster_is_the_real_one_configured_through_the_ingress() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() || sonarqube_missing() {
        return;
    }
    let sonar = Sonarqube::start();
    let p = platform_with(None, |kube, s| {
        let standins = kube.dir().join("standins");
        std::fs::create_dir_all(&standins).unwrap();
        let bundle = s.path().join("bundle");
        let home = s.path().join("helm");
        helm_package("sonarqube-standin", "4.0.0", &bundle.join("sonarqube/4.0.0"), &home);
        let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
        assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
        (
            "ingresses".into(),
            vec![
                "--forward".into(),
                format!("sonarqube.{DOMAIN}={}", sonar.url()),
                "--routes-file".into(),
                standins.join("ingress-hosts.json").to_str().unwrap().into(),
            ],
        )
    });
    p.s.write_inventory(&sonarqube_inventory(&p));
    make_volumes(&p, "pv-sq", 4, "20Gi");

    let first = p.s.run("apply", &["--yes"]);
    assert_eq!(
        code(&first),
        0,
        "{}\n{}\n{}",
        stdout(&first),
        stderr(&first),
        p.kube.report()
    );
    let kube = p.kube.requests();
    let traefik = first_write(&kube, "/namespaces/traefik/deployments");
    let dex = first_write(&kube, "/namespaces/dex/");
    let release = first_write(&kube, "/namespaces/sonarqube/");
    assert!(
        traefik < release && dex < release,
        "SonarQube came before Traefik or Dex"
    );
    let ingress_made = first_write(&kube, "/namespaces/sonarqube/ingresses");
    let calls: Vec<Value> = p
        .ingress
        .log()
        .into_iter()
        .filter(|r| r["host"] == format!("sonarqube.{DOMAIN}"))
        .collect();
    assert!(
        calls.iter().any(|r| r["status"] == 200),
        "not configured through the ingress: {calls:?}"
    );
    assert!(
        calls[0]["time"].as_f64().unwrap() > ingress_made,
        "SonarQube was reached before its Ingress existed"
    );

    // admin/admin is gone, ours works; the tenant's token is real.
    let ours = kept(&p, "sonarqube/sonarqube/admin");
    let valid = |pw: &str| {
        sonar
            .call("GET", "/api/authentication/validate", Some(("admin", pw)), None)
            .1["valid"]
            .clone()
    };
    assert_eq!(valid("admin"), json!(false));
    assert_eq!(valid(&ours), json!(true));
    let (status, token) = p
        .vault
        .api("GET", "/v1/repo/data/sonarqube/sonarqube/tenants/acme", None);
    assert_eq!(status, 200, "{token}");
    let token = token["data"]["data"]["token"].as_str().expect("a token").to_string();
    assert_eq!(
        sonar
            .call("GET", "/api/authentication/validate", Some((&token, "")), None)
            .1["valid"],
        json!(true)
    );
    let state_text = std::fs::read_to_string(p.s.workdir().join("state.json")).unwrap_or_default();
    for secret in [&ours, &token] {
        assert!(
            !state_text.contains(secret.as_str()),
            "a SonarQube credential in the state"
        );
        assert!(!stdout(&first).contains(secret.as_str()) && !stderr(&first).contains(secret.as_str()));
    }

    // A re-run: no write to SonarQube, the cluster or Vault.
    p.kube.reset_log();
    p.vault.reset_log();
    let before = sonar.writes().len();
    let again = p.s.run("apply", &["--yes"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(
        sonar.writes()[before..],
        [] as [String; 0],
        "SonarQube writes on a re-run"
    );
    assert!(p.vault.writes().is_empty(), "{:?}", p.vault.writes());
    let kube_writes = p.kube.installer_writes();
    assert!(kube_writes.is_empty(), "{kube_writes:#?}");

    let down =
        p.s.command(&["destroy", "-i", "inventory.yaml", "--yes"])
            .output()
            .unwrap();
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    let left = p.kube.get("/apis/apps/v1/namespaces/sonarqube/statefulsets");
    assert!(left["items"].as_array().is_none_or(|i| i.is_empty()), "{left}");
}
