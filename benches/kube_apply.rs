//! The apply engine on 100 and 1 000 objects against the Kubernetes API
//! stand-in: requests made and wall time for a first apply and for a
//! re-apply of the same set, per object, so growth is visible. A re-apply
//! must write nothing. Run: `cargo bench --bench kube_apply`.

#[path = "../tests/support/kube_api.rs"]
mod kube_api;
#[path = "../tests/support/port_file.rs"]
mod port_file;

use std::time::{Duration, Instant};

use nautes_install::drivers::kube::apply::{apply_set, ApplyOptions};
use nautes_install::drivers::kube::KubeClient;
use serde_json::{json, Value};

const NAMESPACES: usize = 10;

fn objects(n: usize) -> Vec<Value> {
    let mut out: Vec<Value> = (0..NAMESPACES)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("bench-{i}")}}))
        .collect();
    for i in 0..n - NAMESPACES {
        let ns = format!("bench-{}", i % NAMESPACES);
        out.push(if i % 10 == 0 {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("d{i}"), "namespace": ns},
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
        } else {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "namespace": ns}, "data": {"i": i.to_string()}})
        });
    }
    out
}

fn quiet(_: String) {}

async fn run(n: usize) {
    let api = kube_api::KubeApiStandin::start_with(&["--ready-delay", "0.05"]);
    let client = KubeClient::from_kubeconfig_text(&api.kubeconfig(), None, Duration::from_secs(60))
        .await
        .expect("client");
    let opts = ApplyOptions {
        set: "bench".into(),
        default_namespace: None,
        force_conflicts: false,
        timeout: Duration::from_secs(300),
        previous: Vec::new(),
        concurrency: 8,
        progress: &quiet,
    };
    let mut row = format!("{n:>8}");
    for pass in ["first", "re-apply"] {
        api.reset_log();
        let start = Instant::now();
        let report = apply_set(&client, objects(n), &opts).await.expect("apply");
        let took = start.elapsed();
        let log = api.requests();
        let writes = log.iter().filter(|r| r["method"] != "GET").count();
        if pass == "re-apply" {
            assert_eq!(writes, 0, "a re-apply of an unchanged set must not write");
            assert_eq!(report.written, 0);
        }
        row.push_str(&format!(
            " {:>9} {:>7} {:>7} {:>10.2?} {:>9.2?}",
            pass,
            log.len(),
            writes,
            took,
            took / n as u32
        ));
    }
    println!("{row}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "{:>8} {:>9} {:>7} {:>7} {:>10} {:>9} {:>9} {:>7} {:>7} {:>10} {:>9}",
        "objects", "pass", "reqs", "writes", "wall", "per obj", "pass", "reqs", "writes", "wall", "per obj"
    );
    // Without `--bench` (under `cargo test --all-targets`) a smoke run is enough.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[100, 1_000] } else { &[30] };
    for &n in sizes {
        run(n).await;
    }
}
