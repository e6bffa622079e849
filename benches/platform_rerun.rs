//! A complete install on a real control plane and real OpenBao, with the
//! GitLab and ingress stand-ins (see tests/support/platform.rs), then a
//! no-op re-run of it: wall
//! time, requests and writes per API, and the re-run as a ratio of the
//! first install. A re-run must write nothing anywhere.
//! Run (with Helm and OpenSSL on PATH, as `.ci/run` installs them):
//! `cargo bench --bench platform_rerun`.

#[path = "../tests/support/mod.rs"]
mod support;
use support::{cli, controlplane, platform, vault};

use std::time::Instant;

use serde_json::Value;

struct Counts {
    secs: f64,
    kube: (usize, usize),
    vault: (usize, usize),
    gitlab: (usize, usize),
}

fn writes(log: &[Value]) -> usize {
    log.iter()
        .filter(|r| !matches!(r["method"].as_str(), Some("GET") | Some("HEAD") | Some("LIST")))
        .filter(|r| !r["path"].as_str().unwrap_or("").starts_with("/_standin"))
        .count()
}

fn measure(p: &platform::Platform) -> Counts {
    p.kube.reset_log();
    p.vault.reset_log();
    p.gitlab.reset_log();
    let started = Instant::now();
    let out = p.s.run("apply", &["--yes"]);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(cli::code(&out), 0, "{}", cli::stderr(&out));
    let kube = p.kube.requests();
    let vault = p.vault.requests();
    let gitlab = p.gitlab.requests();
    Counts {
        secs,
        kube: (kube.len(), writes(&kube)),
        vault: (vault.len(), writes(&vault)),
        gitlab: (gitlab.len(), writes(&gitlab)),
    }
}

fn main() {
    // `cargo test --benches` runs this once as a smoke test; it is the same run.
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    let p = platform::platform(None);
    let first = measure(&p);
    let again = measure(&p);
    println!("| run | wall | Kubernetes requests (writes) | Vault requests (writes) | GitLab requests (writes) |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, c) in [("first install", &first), ("re-run", &again)] {
        println!(
            "| {name} | {:.2} s | {} ({}) | {} ({}) | {} ({}) |",
            c.secs, c.kube.0, c.kube.1, c.vault.0, c.vault.1, c.gitlab.0, c.gitlab.1
        );
    }
    println!(
        "re-run / first install: {:.2} of the wall time",
        again.secs / first.secs
    );
    assert_eq!(
        (again.kube.1, again.vault.1, again.gitlab.1),
        (0, 0, 0),
        "a re-run must write nothing"
    );
}
