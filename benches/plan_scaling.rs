//! validate + plan on generated inventories with 10, 1 000 and 10 000
//! tenants, reported as time per tenant so growth is visible: flat means
//! linear. Each tenant owns what a tenant can: a namespace tree of three,
//! two groups, a GitLab group, a Harbor instance of its own with a project
//! and a project on the shared Harbor, a Nexus repository, a SonarQube
//! token and its Vault path (Vault, GitLab, Dex, Harbor, Nexus and
//! SonarQube are all configured). Run: `cargo bench --bench plan_scaling`.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nautes_install::inventory::{load_str, validate::validate};

/// `owning`: tenants carry every resource a tenant can own; otherwise only
/// their namespace trees (the figure before tenants owned resources).
fn inventory(tenants: usize, owning: bool) -> String {
    let mut s = String::from(
        "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: bench\n\
         hosts:\n  - name: node-1\n    address: 10.0.0.1\n\
         clusters:\n  - name: host\n    type: k3s\n    k3s:\n      version: v1.27.4+k3s1\n      servers: [node-1]\n\
         virtualClusters:\n  - name: vc\n    hostCluster: host\n",
    );
    if !owning {
        s.push_str("tenants:\n");
        for t in 0..tenants {
            let _ = write!(
                s,
                "  - name: tenant-{t}\n    cluster: vc\n    namespaces:\n      - name: t{t}\n        labels: {{team: t{t}}}\n        children:\n          - name: t{t}-dev\n          - name: t{t}-prod\n"
            );
        }
        return s;
    }
    s.push_str(
        "settings:\n  domain: bench.example.com\n\
         components:\n  vault:\n    placement: external\n    external: {url: \"https://vault.example.com\"}\n\
         \x20 gitlab:\n    placement: external\n    external: {url: \"https://gitlab.example.com\", token: {env: BENCH_TOKEN}}\n\
         \x20 dex: {}\n\
         \x20 harbor:\n    placement: external\n    external: {url: \"https://harbor.example.com\"}\n\
         \x20 nexus:\n    placement: external\n    external: {url: \"https://nexus.example.com\"}\n\
         \x20 sonarqube:\n    placement: external\n    external: {url: \"https://sonarqube.example.com\"}\n\
         tenants:\n",
    );
    for t in 0..tenants {
        let _ = write!(
            s,
            "  - name: tenant-{t}\n    cluster: vc\n    namespaces:\n      - name: t{t}\n        labels: {{team: t{t}}}\n        children:\n          - name: t{t}-dev\n          - name: t{t}-prod\n\
             \x20   groups:\n      - {{name: t{t}/dev, role: developer}}\n      - {{name: t{t}/ops, role: admin}}\n\
             \x20   gitlab: {{group: team-{t}}}\n\
             \x20   harborInstances:\n      - name: harbor-{t}\n        placement: external\n        external: {{url: \"https://harbor-{t}.example.com\"}}\n\
             \x20   harbor:\n      - instance: harbor-{t}\n        projects: [app-{t}]\n      - projects: [shared-{t}]\n\
             \x20   nexus:\n      repositories:\n        - {{name: maven-{t}, format: maven, type: hosted}}\n\
             \x20   sonarqube: {{}}\n"
        );
    }
    s
}

fn measure(text: &str) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let loaded = load_str(Path::new("bench.yaml"), text).expect("generated inventory loads");
    let report = validate(&loaded);
    assert_eq!(report.errors(), 0, "generated inventory is valid");
    let validated = start.elapsed();
    let start = Instant::now();
    let plan = nautes_install::components::plan(&loaded).expect("generated inventory plans");
    (validated, start.elapsed(), plan.steps.len())
}

fn main() {
    println!(
        "{:>8} {:>8} {:>10} {:>12} {:>12} {:>8} {:>14}",
        "tenants", "owning", "yaml KiB", "validate", "plan", "steps", "per tenant"
    );
    // `cargo test --all-targets` runs this binary without `--bench`: a smoke
    // run is enough there, the full sizes are for `cargo bench`.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[10, 1_000, 10_000] } else { &[10] };
    for (n, owning) in sizes.iter().flat_map(|&n| [(n, false), (n, true)]) {
        let text = inventory(n, owning);
        // Best of three runs, so one slow scheduling hiccup does not skew the figure.
        let best = (0..3)
            .map(|_| measure(&text))
            .min_by_key(|(v, p, _)| *v + *p)
            .expect("three runs");
        let total = best.0 + best.1;
        println!(
            "{n:>8} {owning:>8} {:>10} {:>12?} {:>12?} {:>8} {:>14?}",
            text.len() / 1024,
            best.0,
            best.1,
            best.2,
            total / n as u32
        );
    }
}
