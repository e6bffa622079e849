//! The apply engine against `kubectl apply --server-side` on one real
//! kube-apiserver (tests/support/controlplane.rs), side by side in one run:
//! N objects (ConfigMaps, Deployments, a CRD and its custom resources, in 10
//! namespaces), a first apply and a re-apply of each. Requests and writes
//! are counted per client from the apiserver's audit log. The engine also
//! waits for its Deployments to roll out, so kubectl is timed twice: the
//! applies alone (with the `kubectl wait` for the CRD a user must run before
//! the custom resources can be applied), and with `kubectl wait` for every
//! Deployment after them. A re-apply by the engine must write nothing. Run: `cargo bench --bench kube_apply` (1 000 objects).

#[path = "../tests/support/mod.rs"]
mod support;
use support::controlplane;

use std::time::{Duration, Instant};

use controlplane::ControlPlane;
use nautes_install::drivers::kube::apply::{apply_set, ApplyOptions};
use nautes_install::drivers::kube::KubeClient;
use serde_json::{json, Value};

const NAMESPACES: usize = 10;

/// The set, for one client: its names carry `who` so two sets share a server.
fn objects(who: &str, n: usize) -> (Vec<Value>, Vec<Value>) {
    let group = format!("{who}.bench.io");
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let mut base = vec![crd];
    base.extend(
        (0..NAMESPACES)
            .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("{who}-{i}")}})),
    );
    let custom = n / 5;
    let mut rest = Vec::new();
    for i in 0..n - NAMESPACES - 1 - custom {
        let ns = format!("{who}-{}", i % NAMESPACES);
        base.push(if i % 10 == 0 {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("d{i}"), "namespace": ns},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": format!("d{i}")}},
                            "template": {"metadata": {"labels": {"app": format!("d{i}")}},
                                         "spec": {"containers": [{"name": "c", "image": "registry.local/x:1"}]}}}})
        } else {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "namespace": ns}, "data": {"i": i.to_string()}})
        });
    }
    for i in 0..custom {
        rest.push(json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
                         "metadata": {"name": format!("w{i}"), "namespace": format!("{who}-{}", i % NAMESPACES)},
                         "spec": {"size": i}}));
    }
    (base, rest)
}

fn quiet(_: String) {}

fn counts(cp: &ControlPlane, user: &str) -> (usize, usize) {
    let log = cp.requests_of(user);
    (log.len(), log.iter().filter(|r| r["method"] != "GET").count())
}

fn yaml_stream(objects: &[Value]) -> String {
    objects.iter().map(|o| format!("---\n{o}\n")).collect()
}

fn kubectl_apply(cp: &ControlPlane, objects: &[Value]) {
    let out = cp.kubectl(
        &["apply", "--server-side", "--field-manager", "bench", "-f", "-"],
        Some(&yaml_stream(objects)),
    );
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn run(n: usize) {
    let cp = ControlPlane::start();
    let client = KubeClient::from_kubeconfig_text(&cp.kubeconfig(), None, Duration::from_secs(60))
        .await
        .expect("client");
    let opts = ApplyOptions {
        set: "bench".into(),
        default_namespace: None,
        force_conflicts: false,
        timeout: Duration::from_secs(600),
        previous: Vec::new(),
        concurrency: 8,
        progress: &quiet,
    };
    let (ours_base, ours_custom) = objects("ours", n);
    let (theirs_base, theirs_custom) = objects("kubectl", n);
    let ours: Vec<Value> = ours_base.into_iter().chain(ours_custom).collect();
    println!(
        "{:>8} {:>9} {:>10} {:>7} {:>7} {:>10}",
        "objects", "pass", "client", "reqs", "writes", "wall"
    );
    for pass in ["first", "re-apply"] {
        cp.reset_log();
        let start = Instant::now();
        let report = apply_set(&client, ours.clone(), &opts).await.expect("apply");
        let engine = start.elapsed();
        let (reqs, writes) = counts(&cp, "admin");
        if pass == "re-apply" {
            assert_eq!(writes, 0, "a re-apply of an unchanged set must not write");
            assert_eq!(report.written, 0);
        }
        println!(
            "{n:>8} {pass:>9} {:>10} {reqs:>7} {writes:>7} {engine:>10.2?}",
            "engine"
        );

        cp.reset_log();
        let start = Instant::now();
        kubectl_apply(&cp, &theirs_base);
        let wait = cp.kubectl(
            &["wait", "--for=condition=Established", "crd/widgets.kubectl.bench.io"],
            None,
        );
        assert!(wait.status.success());
        kubectl_apply(&cp, &theirs_custom);
        let kubectl = start.elapsed();
        let (reqs, writes) = counts(&cp, "test");
        println!(
            "{n:>8} {pass:>9} {:>10} {reqs:>7} {writes:>7} {kubectl:>10.2?}",
            "kubectl"
        );
        // What the engine also does: wait until the Deployments are available.
        let wait = cp.kubectl(
            &[
                "wait",
                "deployment",
                "--all",
                "--all-namespaces",
                "--for=condition=Available",
                "--timeout=600s",
            ],
            None,
        );
        assert!(wait.status.success(), "{}", String::from_utf8_lossy(&wait.stderr));
        let kubectl_ready = start.elapsed();
        println!(
            "{n:>8} {pass:>9} {:>10} {:>7} {:>7} {kubectl_ready:>10.2?}",
            "+wait", "", ""
        );
        println!(
            "{n:>8} {pass:>9} {:>10} kubectl / engine wall = {:.2} (apply only), {:.2} (apply + wait for rollout)",
            "ratio",
            kubectl.as_secs_f64() / engine.as_secs_f64(),
            kubectl_ready.as_secs_f64() / engine.as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if controlplane::skip_unless_available() {
        return;
    }
    // Without `--bench` (under `cargo test --all-targets`) a smoke run is enough.
    let full = std::env::args().any(|a| a == "--bench");
    run(if full { 1_000 } else { 40 }).await;
}
