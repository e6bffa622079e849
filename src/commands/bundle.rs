//! `bundle`: make an air-gap bundle on a connected machine, seal a bundle
//! assembled by hand, or verify one after carrying it across the gap.

use std::path::Path;
use std::time::Duration;

use crate::artifacts::{write_checksums, Bundle};
use crate::cli::{BundleAction, GlobalArgs};
use crate::components::artifacts::{self, ArtifactsSpec};
use crate::exit;
use crate::inventory::ArtifactMode;

pub fn bundle(g: &GlobalArgs, action: &BundleAction) -> u8 {
    match action {
        BundleAction::Verify { dir } => verify(dir),
        BundleAction::Seal { dir } => match write_checksums(dir) {
            Ok(n) => {
                eprintln!("sealed {} ({n} files listed in checksums.sha256)", dir.display());
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

fn verify(dir: &Path) -> u8 {
    let bundle = match Bundle::open(dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::STEP_FAILED;
        }
    };
    let problems = bundle.verify_all();
    if problems.is_empty() {
        eprintln!(
            "{}: all {} files match their checksums",
            dir.display(),
            bundle.checksums.len()
        );
        return exit::OK;
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    eprintln!(
        "{}: {} of {} files are missing or corrupt",
        dir.display(),
        problems.len(),
        bundle.checksums.len()
    );
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
        runtime.block_on(artifacts::download_into(
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
            files: artifacts::k3s_files(mirror.as_deref(), &version),
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
    for step in steps.iter().filter(|s| s.kind == artifacts::KIND) {
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
            eprintln!(
                "bundle {} ready: {n} files; carry it over and set `artifacts.bundle`",
                dir.display()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::STEP_FAILED
        }
    }
}
