//! `drift` on the whole platform (real API server, real OpenBao) plus a K3s
//! cluster on a real sshd test host (the stand-in k3s binary): after an
//! install it finds nothing and writes nothing; after a Deployment is
//! changed by another field manager (the real kubectl), an object of a set
//! deleted, K3s's config edited on the host, the deploy key removed from
//! GitLab (the API stand-in) and a policy the installer wrote edited in
//! OpenBao, it lists exactly those (the changed field by
//! its path), still writing nothing, having run one remote script on the
//! host; `apply` puts them back and `drift` finds nothing again. Prints
//! (does not assert) what drift costs at the API server.

use std::collections::BTreeMap;

use crate::support::{cli, controlplane, hosts, platform, vault};

use cli::{code, stderr, stdout};
use platform::{inventory, platform, Platform};
use serde_json::{json, Value};

const CHANGED: &str = "Deployment argocd/argocd-server";
const CHANGED_FIELD: &str = "spec.template.spec.containers[0].image";
const DELETED: &str = "Service argo-rollouts/argo-rollouts-metrics";
const POLICY: &str = "argo-operator";
const K3S: &str = "v1.27.4+k3s1";
const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";

/// The platform's inventory with a K3s cluster `edge` on test host
/// `edge-1`, its node registering in the platform's API server.
fn with_edge(p: &Platform, h: &hosts::TestHosts, body: &str) -> String {
    let ssh = format!(
        "ssh:\n  identityFile: {}\n  knownHosts: known_hosts\n{}",
        h.client_key().display(),
        h.inventory_hosts()
    );
    let edge = format!(
        "  - name: edge\n    type: k3s\n    k3s:\n      version: {K3S}\n      servers: [edge-1]\n      apiEndpoint: {}\n",
        p.kube.url()
    );
    body.replacen("clusters:\n", &format!("{ssh}clusters:\n{edge}"), 1)
}

/// The stand-in K3s release in the platform's bundle, sealed again.
fn add_k3s_to_bundle(p: &Platform) {
    let standin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/k3s_standin");
    let d = p.s.path().join("bundle/k3s").join(K3S);
    std::fs::create_dir_all(&d).unwrap();
    let k3s = std::fs::read_to_string(standin.join("k3s"))
        .unwrap()
        .replace("@VERSION@", K3S);
    std::fs::write(d.join("k3s"), k3s).unwrap();
    std::fs::copy(standin.join("install.sh"), d.join("install.sh")).unwrap();
    std::fs::write(d.join("k3s-airgap-images-amd64.tar.zst"), b"images").unwrap();
    let sealed = p.s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
}

/// `drift --output json`: exit code and the document.
fn drift(p: &Platform) -> (i32, Value) {
    let out = p.s.run("drift", &["--output", "json"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "drift printed no JSON document ({e}): {}\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (code(&out), doc)
}

/// Every difference as "step: change object [field]".
fn differences(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for step in doc["steps"].as_array().unwrap() {
        match step["result"].as_str().unwrap() {
            "checked" => {
                for d in step["differences"].as_array().unwrap() {
                    let field = d["field"].as_str().map(|f| format!(" {f}")).unwrap_or_default();
                    out.push(format!(
                        "{}: {} {}{field}",
                        step["id"].as_str().unwrap(),
                        d["change"].as_str().unwrap(),
                        d["object"].as_str().unwrap()
                    ));
                }
            }
            "notChecked" => {}
            other => out.push(format!("{}: {other} {step}", step["id"].as_str().unwrap())),
        }
    }
    out
}

fn differing_steps(doc: &Value) -> Vec<&str> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["differences"].as_array().is_some_and(|d| !d.is_empty()))
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

/// Requests per resource (the path without object names), for the figures.
fn per_kind(requests: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        let path = r["path"].as_str().unwrap_or("");
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // /api/v1/<plural>, /apis/<group>/<version>/<plural>, and the same under namespaces/<ns>/.
        let base = if parts.first() == Some(&"api") { 2 } else { 3 };
        let rest = &parts[base.min(parts.len())..];
        let kind = match rest {
            ["namespaces", _, plural, ..] => format!("{} {plural} (namespaced)", parts[..base].join("/")),
            [plural, ..] => format!("{} {plural}", parts[..base].join("/")),
            [] => format!("{} (discovery)", parts[..base.min(parts.len())].join("/")),
        };
        *out.entry(format!("{} {kind}", r["verb"].as_str().unwrap_or("")))
            .or_insert(0) += 1;
    }
    out
}

fn no_writes(p: &Platform, when: &str) {
    let kube: Vec<Value> = p.kube.writes();
    assert!(kube.is_empty(), "drift wrote to the API server {when}: {kube:?}");
    let bao = p.vault.writes();
    assert!(bao.is_empty(), "drift wrote to OpenBao {when}: {bao:?}");
    let gitlab = p.gitlab.writes();
    assert!(gitlab.is_empty(), "drift wrote to GitLab {when}: {gitlab:?}");
}

#[test]
fn drift_finds_exactly_what_was_changed_by_hand_and_writes_nothing() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() || hosts::skip_unless_available() {
        return;
    }
    let p = platform(None);
    let h = hosts::TestHosts::start_named(&[("edge-1".to_string(), "edge-1".to_string())]);
    std::fs::write(h.host_path(0, "/etc/rancher/standin-api.env"), p.kube.env_file()).unwrap();
    std::fs::write(p.s.path().join("known_hosts"), h.known_hosts()).unwrap();
    add_k3s_to_bundle(&p);
    p.s.write_inventory(&with_edge(&p, &h, &inventory(&p, "v1.8.0", "180s")));
    let installed = p.s.run("apply", &["--yes"]);
    assert_eq!(code(&installed), 0, "{}\n{}", stdout(&installed), stderr(&installed));

    let state = std::fs::read(p.s.workdir().join("state.json")).unwrap();
    p.kube.reset_log();
    p.vault.reset_log();
    p.gitlab.reset_log();
    let started = std::time::Instant::now();
    let (status, doc) = drift(&p);
    let wall = started.elapsed();
    let requests = p.kube.requests();
    assert_eq!(differences(&doc), Vec::<String>::new(), "{doc:#}");
    assert_eq!(status, 0, "{doc:#}");
    assert_eq!(doc["differs"], json!(false));
    no_writes(&p, "after a clean install");
    // Every file the installer manages on the host, in one remote script.
    assert_eq!(doc["hostRoundTrips"], json!({"edge-1": 1}), "{doc:#}");
    eprintln!(
        "drift of the installed platform: {:.2} s wall, {} API requests ({} to OpenBao):",
        wall.as_secs_f64(),
        requests.len(),
        p.vault.requests().len()
    );
    for (kind, n) in per_kind(&requests) {
        eprintln!("  {n:>4}  {kind}");
    }
    // Every set's objects of a kind come from one LIST on the cluster,
    // however many sets hold that kind.
    let mut lists: BTreeMap<&str, usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| r["verb"] == "list") {
        *lists.entry(r["path"].as_str().unwrap_or("")).or_insert(0) += 1;
    }
    let repeated: Vec<_> = lists.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "kinds listed more than once: {repeated:?}");
    let checked: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["result"] == "checked")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    eprintln!("steps checked: {checked:?}");
    for step in [
        "stack/argocd/host",
        "stack/argo-rollouts/host",
        "vault/configure",
        "hnc/host",
        "tenant/acme/namespaces",
        "k3s/edge/server/edge-1",
        "gitlab/configure",
    ] {
        assert!(checked.contains(&step), "{step} was not checked: {checked:?}");
    }

    // By hand: another field manager changes an image, a Service of a set
    // goes, a policy the installer wrote is edited.
    let set_image = p.kube.kubectl(
        &[
            "-n",
            "argocd",
            "set",
            "image",
            "deployment/argocd-server",
            "argocd-server=example.com/argocd:edited",
        ],
        None,
    );
    assert!(
        set_image.status.success(),
        "{}",
        String::from_utf8_lossy(&set_image.stderr)
    );
    let delete = p.kube.kubectl(
        &["-n", "argo-rollouts", "delete", "service", "argo-rollouts-metrics"],
        None,
    );
    assert!(delete.status.success(), "{}", String::from_utf8_lossy(&delete.stderr));
    let config = h.host_path(0, K3S_CONFIG);
    let mut edited = std::fs::read_to_string(&config).unwrap();
    edited.push_str("node-label:\n  - edited=by-hand\n");
    std::fs::write(&config, edited).unwrap();
    // Someone removes the deploy key Argo CD reads the tenant repository with.
    let gitlab_out = &p.s.state()["steps"]["gitlab/configure"]["outputs"];
    let (project_id, key_id) = (
        gitlab_out["project"]["id"].as_u64().unwrap(),
        gitlab_out["deployKey"]["id"].as_u64().unwrap(),
    );
    let (status_key, _, reply) = p.gitlab.call(
        "DELETE",
        &format!("/api/v4/projects/{project_id}/deploy_keys/{key_id}"),
        Some(platform::BOOTSTRAP),
        None,
    );
    assert!(status_key < 300, "removing the deploy key: {status_key} {reply}");
    let (code_put, body) = p.vault.api(
        "PUT",
        &format!("/v1/sys/policies/acl/{POLICY}"),
        Some(&json!({"policy": "path \"secret/*\" { capabilities = [\"read\"] }"})),
    );
    assert!(code_put < 300, "editing the policy: {body}");

    p.kube.reset_log();
    p.vault.reset_log();
    p.gitlab.reset_log();
    let (status, doc) = drift(&p);
    let mut found = differences(&doc);
    found.sort();
    assert_eq!(
        found,
        [
            "gitlab/configure: missing deploy key of acme/management".to_string(),
            format!("k3s/edge/server/edge-1: changed file {K3S_CONFIG} on edge-1 content"),
            format!("stack/argo-rollouts/host: missing {DELETED}"),
            format!("stack/argocd/host: changed {CHANGED} {CHANGED_FIELD}"),
            format!("vault/configure: changed Vault policy {POLICY} policy"),
        ],
        "{doc:#}"
    );
    assert_eq!(status, 2, "{doc:#}");
    assert_eq!(doc["hostRoundTrips"], json!({"edge-1": 1}), "{doc:#}");
    no_writes(&p, "after the edits");
    let text = p.s.run("drift", &[]);
    assert_eq!(code(&text), 2, "{}", stderr(&text));
    assert!(
        stdout(&text).contains(&format!("changed   {CHANGED} (at {CHANGED_FIELD})")),
        "{}",
        stdout(&text)
    );
    let hint = stderr(&text);
    let hint = hint.split("apply -i inventory.yaml --only ").nth(1).unwrap_or("");
    for step in differing_steps(&doc) {
        assert!(hint.contains(step), "the hint misses {step}: {}", stderr(&text));
    }
    assert_eq!(
        std::fs::read(p.s.workdir().join("state.json")).unwrap(),
        state,
        "drift changed the state file"
    );

    // plan trusts the state: nothing to do. plan --refresh reads the live
    // systems (the same one script on the host) and plans exactly the
    // steps drift named, answering like terraform plan -detailed-exitcode.
    let trusting = p.s.run("plan", &["--detailed-exitcode"]);
    assert_eq!(code(&trusting), 0, "{}\n{}", stdout(&trusting), stderr(&trusting));
    let (status, planned) = refreshed_plan(&p);
    assert_eq!(status, 2, "{planned:#}");
    let mut want = differing_steps(&doc);
    want.sort();
    assert_eq!(drifted(&planned), want, "{planned:#}");
    assert_eq!(planned["hostRoundTrips"], json!({"edge-1": 1}), "{planned:#}");
    no_writes(&p, "by plan --refresh");
    let text = p.s.run("plan", &["--refresh"]);
    assert_eq!(code(&text), 0, "{}", stderr(&text));
    assert!(
        stdout(&text).contains("! k3s/edge/server/edge-1")
            && stdout(&text).contains(&format!(
                "changed outside nautes-install: changed file {K3S_CONFIG} on edge-1"
            )),
        "{}",
        stdout(&text)
    );

    // kubectl now owns the image: apply takes it back only when told to.
    p.s.write_inventory(&with_edge(
        &p,
        &h,
        &inventory(&p, "v1.8.0", "180s").replace("  argocd: {}\n", "  argocd:\n    forceConflicts: true\n"),
    ));
    // apply trusts the state for steps whose inputs did not change: the
    // steps drift named are the ones to run.
    let mut only = vec!["--yes", "--only"];
    only.extend(differing_steps(&doc));
    let again = p.s.run("apply", &only);
    assert_eq!(code(&again), 0, "{}\n{}", stdout(&again), stderr(&again));
    let (status, doc) = drift(&p);
    assert_eq!(differences(&doc), Vec::<String>::new(), "{doc:#}");
    assert_eq!(status, 0, "{doc:#}");
    // What needs the re-applied steps runs once more on the next apply;
    // then there is nothing left to do, live or recorded.
    let converged = p.s.run("apply", &["--yes"]);
    assert_eq!(code(&converged), 0, "{}\n{}", stdout(&converged), stderr(&converged));
    let (status, planned) = refreshed_plan(&p);
    assert_eq!(status, 0, "{planned:#}");
    assert_eq!(drifted(&planned), Vec::<String>::new(), "{planned:#}");
}

/// `plan --refresh --detailed-exitcode --output json`: exit code and document.
fn refreshed_plan(p: &Platform) -> (i32, Value) {
    let out =
        p.s.run("plan", &["--refresh", "--detailed-exitcode", "--output", "json"]);
    let doc: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("plan printed no JSON ({e}): {}\n{}", stdout(&out), stderr(&out)));
    (code(&out), doc)
}

/// The steps plan --refresh plans because the live systems differ, sorted.
fn drifted(plan: &Value) -> Vec<String> {
    let mut ids: Vec<String> = plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["reason"] == "drifted")
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}
