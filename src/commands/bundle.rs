//! `bundle`: make an air-gap bundle on a connected machine, seal a bundle
//! assembled by hand, or verify one after carrying it across the gap.

use std::path::Path;
use std::time::Duration;

use crate::artifacts::{write_checksums, Bundle};
use serde_json::json;

use crate::cli::{BundleAction, GlobalArgs, Output};
use crate::exit;
use crate::inventory::ArtifactMode;
use crate::steps::release_files::{self, ArtifactsSpec};

pub fn bundle(g: &GlobalArgs, action: &BundleAction) -> u8 {
    match action {
        BundleAction::Verify { dir } => verify(g, dir),
        BundleAction::Seal { dir } => match write_checksums(dir) {
            Ok(n) => {
                if g.output == Output::Json {
                    println!("{}", json!({ "bundle": dir, "sealed": true, "files": n }));
                } else {
                    eprintln!(
                        "sealed {} ({} listed in checksums.sha256)",
                        dir.display(),
                        super::count(n, "file", "files")
                    );
                }
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::STEP_FAILED
            }
        },
        BundleAction::Fetch { inventory, dir } => fetch(g, &inventory.inventory, dir),
    }
}

fn verify(g: &GlobalArgs, dir: &Path) -> u8 {
    let bundle = match Bundle::open(dir) {
        Ok(b) => b,
        Err(e) => {
            if g.output == Output::Json {
                println!("{}", json!({ "bundle": dir, "ok": false, "error": e.to_string() }));
            }
            eprintln!("error: {e}");
            return exit::STEP_FAILED;
        }
    };
    let problems: Vec<String> = bundle.verify_all().iter().map(|p| p.to_string()).collect();
    let unlisted = match bundle.unlisted() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: cannot list {}: {e}", dir.display());
            return exit::STEP_FAILED;
        }
    };
    let ok = problems.is_empty() && unlisted.is_empty();
    if g.output == Output::Json {
        println!(
            "{}",
            json!({
                "bundle": dir,
                "ok": ok,
                "listed": bundle.checksums.len(),
                "problems": problems,
                "unlisted": unlisted,
            })
        );
        return if ok { exit::OK } else { exit::STEP_FAILED };
    }
    let listed = super::count(bundle.checksums.len(), "file", "files");
    if ok {
        eprintln!("{}: all {listed} match their checksums", dir.display());
        return exit::OK;
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    for u in &unlisted {
        eprintln!("error: {u} is in the bundle but not in checksums.sha256 (a run would refuse it)");
    }
    if !problems.is_empty() {
        eprintln!("{}: {} of {listed} missing or corrupt", dir.display(), problems.len());
    }
    if !unlisted.is_empty() {
        eprintln!(
            "{}: {} not listed in checksums.sha256; if they belong, run `nautes-install bundle seal --dir {}` where the bundle was made",
            dir.display(),
            super::count(unlisted.len(), "file", "files"),
            dir.display()
        );
    }
    exit::STEP_FAILED
}

fn fetch(g: &GlobalArgs, file: &Path, dir: &Path) -> u8 {
    // Only the file's shape matters here: its bundle may not exist yet.
    let mut loaded = match crate::inventory::load_file(file) {
        Ok(l) => l,
        Err(report) => {
            super::print_report(g, &report);
            return exit::INVALID_INVENTORY;
        }
    };
    let mirror = loaded.inventory.artifacts.download_mirror.clone();
    let mut versions: Vec<String> = loaded
        .inventory
        .clusters
        .iter()
        .filter_map(|c| c.k3s.as_ref().map(|k| k.version.clone()))
        .collect();
    versions.sort();
    versions.dedup();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::STEP_FAILED;
        }
    };
    // Into <bundle>/<component>/<version>/, where the bundle paths point.
    let download = |spec: &ArtifactsSpec| {
        let target = dir.join(&spec.component).join(&spec.version);
        runtime.block_on(release_files::download_into(
            spec,
            &target,
            Duration::from_secs(600),
            &|m| eprintln!("{m}"),
        ))
    };
    for version in versions {
        let spec = ArtifactsSpec {
            component: "k3s".into(),
            version: version.clone(),
            mode: ArtifactMode::Online,
            bundle: None,
            files: release_files::k3s_files(mirror.as_deref(), &version),
        };
        if let Err(e) = download(&spec) {
            eprintln!("error: {e}");
            return exit::STEP_FAILED;
        }
    }
    // Everything else comes from the plan's artifacts steps, planned as if
    // online (the bundle being built cannot be checked yet). K3s is fetched
    // above, with the images tarball only air-gapped nodes need.
    loaded.inventory.artifacts.mode = ArtifactMode::Online;
    let steps = match crate::components::plan_steps(&loaded) {
        Ok(s) => s,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {}: {}", p.path, p.message);
            }
            return exit::INVALID_INVENTORY;
        }
    };
    for step in steps.iter().filter(|s| s.kind == release_files::KIND) {
        let Ok(spec) = serde_json::from_value::<ArtifactsSpec>(step.spec.clone()) else {
            continue;
        };
        if spec.component == "k3s" {
            continue;
        }
        if let Err(e) = download(&spec) {
            eprintln!("error: {e}");
            return exit::STEP_FAILED;
        }
    }
    match write_checksums(dir) {
        Ok(n) => {
            if g.output == Output::Json {
                println!("{}", json!({ "bundle": dir, "sealed": true, "files": n }));
            } else {
                eprintln!(
                    "bundle {} ready: {}; carry it over and set `artifacts.bundle`",
                    dir.display(),
                    super::count(n, "file", "files")
                );
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::STEP_FAILED
        }
    }
}
