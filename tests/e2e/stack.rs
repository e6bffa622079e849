//! The whole platform by the real binary from one inventory, on a real
//! control plane (with stand-in controllers where the real ones cannot run),
//! real OpenBao, the GitLab and ingress stand-ins, and an air-gap bundle of
//! stand-in upstream releases:
//! a full install reaches the health step; the order of the API calls
//! follows the dependencies (read from the stand-ins' request logs, not
//! from our output); a re-run writes nothing anywhere; a version bump
//! re-applies just that component and its dependents; an endpoint that
//! never answers fails the health step naming it; destroy leaves nothing.

use crate::support::{cli, controlplane, platform, vault};

use cli::{all_text, code, stderr, stdout, Scratch};
use platform::{inventory, platform, Platform, BOOTSTRAP, DOMAIN, ROOT};
use serde_json::Value;

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
    for entry in std::fs::read_dir(outputs.join("oauth2-proxy")).unwrap().flatten() {
        let v = std::fs::read_to_string(entry.path()).unwrap();
        out.push((
            format!("oauth2-proxy {}", entry.file_name().to_string_lossy()),
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
    // Every credential in Vault's `repo` engine: Harbor's admin password and
    // robot secrets, Nexus' admin and tenant user passwords (and SonarQube's
    // tokens when it is part of the install) — each field of each secret.
    let repo = repo_secrets(p, "");
    assert!(
        repo.iter().any(|(w, _)| w.starts_with("harbor/harbor/robots/"))
            && repo.iter().any(|(w, _)| w.starts_with("nexus/nexus/tenants/")),
        "Harbor's robots and Nexus' tenant users are in Vault: {:?}",
        repo.iter().map(|(w, _)| w).collect::<Vec<_>>()
    );
    out.extend(repo);
    // The first-run passwords the installer replaced.
    out.push((
        "Harbor's first-run admin password".into(),
        platform::HARBOR_INITIAL.into(),
    ));
    let nexus_first = std::fs::read_to_string(p.s.path().join("nexus-data/admin.password")).unwrap();
    out.push(("Nexus' first-run admin password".into(), nexus_first.trim().to_string()));
    // A line from the middle of each private key (PEM lines are unique).
    for key in [p.s.path().join("ca.pk8"), outputs.join("pki/ingress.key")] {
        let text = std::fs::read_to_string(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        let line = text.lines().nth(1).unwrap().to_string();
        out.push((format!("private key {}", key.display()), line));
    }
    out
}

/// Each string field of each secret under `repo/<dir>` in Vault, named
/// by its path and field.
fn repo_secrets(p: &Platform, dir: &str) -> Vec<(String, String)> {
    let (status, listed) = p.vault.api("LIST", &format!("/v1/repo/metadata/{dir}"), None);
    assert_eq!(status, 200, "listing repo/{dir}: {listed}");
    let mut out = Vec::new();
    for key in listed["data"]["keys"].as_array().unwrap() {
        let key = format!("{dir}{}", key.as_str().unwrap());
        if key.ends_with('/') {
            out.extend(repo_secrets(p, &key));
            continue;
        }
        let (_, secret) = p.vault.api("GET", &format!("/v1/repo/data/{key}"), None);
        // Names and addresses are kept beside the credentials, and are no secret.
        let public = |field: &str| matches!(field, "username" | "user" | "url");
        for (field, value) in secret["data"]["data"].as_object().into_iter().flatten() {
            if public(field) {
                continue;
            }
            if let Some(v) = value.as_str().filter(|v| v.len() >= 8) {
                out.push((format!("{key} {field}"), v.to_string()));
            }
        }
    }
    out
}

#[test]
fn full_install_in_dependency_order_rerun_upgrade_and_teardown() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    let p = platform(None);
    let first = apply(&p.s);
    assert_eq!(
        code(&first),
        0,
        "{}\n{}\n{}",
        stdout(&first),
        stderr(&first),
        p.kube.report()
    );
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
    let oauth2_proxy = kube_write_to(&kube, "/namespaces/oauth2-proxy/deployments/oauth2-proxy");
    assert!(
        dex_config < oauth2_proxy,
        "oauth2-proxy came before its Dex client existed"
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

    // Tekton's namespace is Tekton Pipelines' alone, with its release's labels;
    // the dashboard, which lives in it, did not claim it.
    let tekton_ns = p.kube.get("/api/v1/namespaces/tekton-pipelines");
    let labels = &tekton_ns["metadata"]["labels"];
    assert_eq!(labels["install.nautes.io/set"], "stack.tekton.host", "{tekton_ns}");
    assert_eq!(labels["app.kubernetes.io/part-of"], "tekton-pipelines", "{tekton_ns}");

    let proxy = kube_write_to(&kube, "/namespaces/nautes/deployments/vault-proxy");
    assert!(proxy < nautes_app, "Nautes was delivered before vault-proxy");
    let secrets = known_secrets(&p);
    // The state as the first run left it (a re-run replaces the outputs).
    let first_state = std::fs::read_to_string(p.s.workdir().join("state.json")).unwrap();
    assert!(
        p.vault.dump()["auth"].get("kubernetes-acme/").is_some(),
        "the tenant's Kubernetes auth is mounted"
    );
    let registered = p
        .ingress
        .log()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/api/v1/clusters/host" && r["status"] == 200)
        .count();
    assert_eq!(registered, 1, "the runtime cluster is registered with Nautes once");
    let ingress_requests = p.ingress.log().len();

    // The tenant's own GitLab group, Harbor project and Nexus repository.
    assert!(
        dump["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["full_path"] == "acme-team"),
        "the tenant's GitLab group"
    );
    assert!(p.harbor.state()["projects"]["acme-app"].is_object());
    assert_eq!(p.nexus.state()["repositories"], serde_json::json!(["acme-maven"]));

    // A re-run writes nothing anywhere.
    p.kube.reset_log();
    p.vault.reset_log();
    p.gitlab.reset_log();
    let registry_writes = (p.harbor.writes().len(), p.nexus.writes().len());
    let again = apply(&p.s);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(
        (p.harbor.writes().len(), p.nexus.writes().len()),
        registry_writes,
        "Harbor or Nexus writes on a re-run"
    );
    let kube_writes = p.kube.installer_writes();
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
    let ingress_writes: Vec<Value> = p.ingress.log()[ingress_requests..]
        .iter()
        .filter(|r| r["method"] != "GET" && r["method"] != "HEAD")
        .cloned()
        .collect();
    assert!(
        ingress_writes.is_empty(),
        "Nautes API writes on a re-run: {ingress_writes:?}"
    );

    // Every stack set applied again (not skipped as done): still no write.
    let state = p.s.state();
    let stack_steps: Vec<&str> = state["steps"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|id| id.starts_with("stack/"))
        .map(String::as_str)
        .collect();
    assert!(stack_steps.len() >= 10, "{stack_steps:?}");
    p.kube.reset_log();
    let mut args = vec!["apply", "--yes", "-i", "inventory.yaml", "--only"];
    args.extend(&stack_steps);
    let reapplied = p.s.command(&args).output().unwrap();
    assert_eq!(code(&reapplied), 0, "{}", stderr(&reapplied));
    let kube_writes = p.kube.installer_writes();
    assert!(
        kube_writes.is_empty(),
        "Kubernetes writes re-applying every set: {kube_writes:?}"
    );

    // No secret in anything we printed, logged or recorded.
    let mut seen = String::new();
    for out in [&first, &again] {
        seen.push_str(&stdout(out));
        seen.push_str(&stderr(out));
    }
    seen.push_str(&first_state);
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
    p.s.write_inventory(&inventory(&p, "v1.8.1", "180s"));
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
    p.s.write_inventory(&inventory(&p, "v1.8.1", "180s").replace("  argoRollouts: {}\n", ""));
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
    assert!(
        p.ingress
            .log()
            .iter()
            .any(|r| r["method"] == "DELETE" && r["path"] == "/api/v1/clusters/host"),
        "the runtime cluster is unregistered"
    );
    p.assert_torn_down(&down);
}

#[test]
fn an_endpoint_that_never_answers_fails_the_health_step_naming_it() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    let p = platform(Some(&format!("argocd.{DOMAIN}")));
    // Real controllers take their time to roll the stack out (and a real
    // release's large CRDs seconds to be Established): install every step
    // but the health check first with the platform's generous limit, then
    // let only the health step meet the short one.
    let planned =
        p.s.command(&["--output", "json", "plan", "-i", "inventory.yaml"])
            .output()
            .unwrap();
    let planned: Value = serde_json::from_slice(&planned.stdout).expect("plan --output json");
    let mut args = vec!["--yes".to_string()];
    for step in planned["decisions"].as_array().unwrap() {
        let id = step["id"].as_str().unwrap();
        if id != "health" {
            args.extend(["--only".to_string(), id.to_string()]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let installed = p.s.run("apply", &args);
    assert_eq!(code(&installed), 0, "{}\n{}", stderr(&installed), p.kube.report());
    p.s.write_inventory(&inventory(&p, "v1.8.0", "4s"));
    let out = apply(&p.s);
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.contains("Argo CD") && err.contains("503"), "{err}");
    assert_ne!(p.s.step_status("health").as_deref(), Some("done"));
    // Everything before the health step is done and stays done.
    assert_eq!(p.s.step_status("stack/nautes/host").as_deref(), Some("done"));
}

#[test]
fn an_application_that_never_becomes_healthy_fails_the_health_step_with_its_state() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    let p = platform(None);
    let installed = apply(&p.s);
    assert_eq!(code(&installed), 0, "{}\n{}", stderr(&installed), p.kube.report());
    // `outputs` lists the endpoints the health step checked, and where credentials are.
    let shown = p.s.command(&["outputs"]).output().unwrap();
    let text = stdout(&shown);
    assert!(
        text.contains(&format!("https://dex.{DOMAIN}")) && text.contains("GitLab: ") && text.contains("Vault: "),
        "{text}"
    );

    // Argo CD reports the Nautes application Degraded from now on.
    let (st, body) = p.kube.request(
        "PATCH",
        "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/nautes",
        "application/merge-patch+json",
        &serde_json::json!({"metadata": {"annotations": {"standin.nautes.io/health": "Degraded"}}}),
    );
    assert_eq!(st, 200, "{body}");
    p.s.write_inventory(&inventory(&p, "v1.8.0", "3s"));
    let out = apply(&p.s);
    assert_ne!(code(&out), 0, "a degraded application must fail the health step");
    let err = stderr(&out);
    assert!(err.contains("Application nautes: Synced/Degraded"), "{err}");
    assert!(
        err.contains("stand-in: forced Degraded"),
        "the last state is shown: {err}"
    );
    assert_ne!(p.s.step_status("health").as_deref(), Some("done"));
}
