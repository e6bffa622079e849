//! Air-gap bundles: fetched from a (loopback) release mirror and checked
//! against the published sums, sealed, verified, and refused when corrupt.

use crate::support::cli;
use crate::support::inventory::InventoryBuilder;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cli::{code, stderr, wait_for, Scratch};

const V: &str = "v1.27.4+k3s1";

/// One K3s node at release `V`, its artifacts as `artifacts` says.
fn one_node(artifacts: serde_json::Value) -> InventoryBuilder {
    InventoryBuilder::new()
        .set("artifacts", artifacts)
        .host("node-1", "10.0.0.1", serde_json::json!({}))
        .k3s_cluster("main", V, &["node-1"])
}

/// `one_node` with a tenant whose tree needs HNC.
fn with_tenant(artifacts: serde_json::Value) -> InventoryBuilder {
    one_node(artifacts).tenant("acme", "main", &["acme"])
}

struct Mirror {
    child: Child,
    port: u16,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory laid out like the upstream release site, served on loopback.
fn mirror(root: &Path, publish_wrong_sum: bool) -> Mirror {
    let rel = root.join(format!("k3s-io/k3s/releases/download/{V}"));
    std::fs::create_dir_all(&rel).unwrap();
    std::fs::create_dir_all(root.join(format!("k3s-io/k3s/raw/{V}"))).unwrap();
    std::fs::write(rel.join("k3s"), b"k3s binary bytes").unwrap();
    std::fs::write(rel.join("k3s-airgap-images-amd64.tar.zst"), vec![7u8; 100_000]).unwrap();
    std::fs::write(root.join(format!("k3s-io/k3s/raw/{V}/install.sh")), b"#!/bin/sh\n").unwrap();
    let hnc = root.join("kubernetes-sigs/hierarchical-namespaces/releases/download/v1.0.0");
    std::fs::create_dir_all(&hnc).unwrap();
    std::fs::write(hnc.join("default.yaml"), b"# HNC manifest\n").unwrap();
    let sum = |p: &Path| nautes_install::util::sha256_file(p).unwrap();
    let k3s_sum = if publish_wrong_sum {
        "0".repeat(64)
    } else {
        sum(&rel.join("k3s"))
    };
    std::fs::write(
        rel.join("sha256sum-amd64.txt"),
        format!(
            "{k3s_sum}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n",
            sum(&rel.join("k3s-airgap-images-amd64.tar.zst"))
        ),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the mirror", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Mirror { child, port }
}

fn inventory(s: &Scratch, port: u16) {
    let mirror = format!("http://127.0.0.1:{port}");
    s.write(&with_tenant(
        serde_json::json!({"mode": "online", "downloadMirror": mirror}),
    ));
}

#[test]
fn fetch_verifies_published_sums_then_seal_and_verify_catch_corruption() {
    let s = Scratch::new();
    let m = mirror(&s.path().join("site"), false);
    inventory(&s, m.port);
    let out = s
        .command(&["bundle", "fetch", "-i", "inventory.yaml", "--dir", "bundle"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let bundle = s.path().join("bundle");
    let list = std::fs::read_to_string(bundle.join("checksums.sha256")).unwrap();
    for f in ["k3s", "install.sh", "k3s-airgap-images-amd64.tar.zst"] {
        assert!(list.contains(&format!("k3s/{V}/{f}")), "{list}");
    }
    // What the tenants need comes along: the HNC release manifest.
    assert!(list.contains("hnc/v1.0.0/default.yaml"), "{list}");
    let ok = s.command(&["bundle", "verify", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));

    // Switch the inventory to the bundle: it validates and plans from it.
    s.write(&with_tenant(serde_json::json!({"mode": "airgap", "bundle": "bundle"})));
    assert_eq!(code(&s.run("validate", &[])), 0);

    std::fs::write(bundle.join(format!("k3s/{V}/k3s")), b"tampered").unwrap();
    std::fs::remove_file(bundle.join(format!("k3s/{V}/install.sh"))).unwrap();
    let bad = s.command(&["bundle", "verify", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&bad), 1);
    let err = stderr(&bad);
    assert!(err.contains(&format!("`k3s/{V}/k3s` is corrupt")), "{err}");
    assert!(err.contains(&format!("`k3s/{V}/install.sh` is missing")), "{err}");
    assert!(err.contains("2 of 4 files"), "{err}");
}

#[test]
fn a_download_that_does_not_match_its_published_sum_is_discarded() {
    let s = Scratch::new();
    let m = mirror(&s.path().join("site"), true);
    inventory(&s, m.port);
    let out = s
        .command(&["bundle", "fetch", "-i", "inventory.yaml", "--dir", "bundle"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("does not match its published sha256"),
        "{}",
        stderr(&out)
    );
    assert!(
        !s.path().join(format!("bundle/k3s/{V}/k3s")).exists(),
        "the bad download is not kept"
    );
}

#[test]
fn an_airgap_inventory_whose_bundle_lacks_the_version_is_an_error_before_any_host() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("bundle")).unwrap();
    nautes_install::artifacts::write_checksums(&s.path().join("bundle")).unwrap();
    s.write(&one_node(serde_json::json!({"mode": "airgap", "bundle": "bundle"})));
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(err.contains(&format!("the bundle has no K3s {V}")), "{err}");
    assert!(err.contains("clusters[0].k3s.version"), "{err}");
}
