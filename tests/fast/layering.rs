//! The crate's modules form layers, and a module may use only modules of
//! lower layers: utilities, secrets, drivers and file formats know nothing
//! of the inventory; the inventory knows nothing of plans; the planner
//! nothing of the engine; the engine nothing of components; commands sit
//! on top. This reads every source file and fails on any `crate::X` that
//! points sideways or up, naming the file, so a back-edge cannot creep in
//! unnoticed (and a new top-level module must be given its layer here).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. Modules in one layer may not use each other either.
const LAYERS: &[&[&str]] = &[
    &["util", "wait", "exit", "versions", "templates"],
    // What each component is, as data: the inventory validates against it.
    &["catalog"],
    &["secret"],
    &["drivers", "pki", "artifacts", "archive"],
    &["inventory"],
    &["state"],
    &["plan"],
    &["engine"],
    &["steps"],
    &["components"],
    &["cli"],
    &["commands"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/engine/lock.rs` -> engine).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a file's code names as `crate::X`, comments aside.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let name: String = rest[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
            rest = &rest[i + 7..];
        }
    }
    used
}

/// Every use of a module that is not in a lower layer, as messages.
fn back_edges(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no layer in tests/layering.rs",
                file.display()
            ));
            continue;
        };
        for used in used_modules(&std::fs::read_to_string(&file).unwrap()) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < own => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` uses `crate::{used}`, which is not below it",
                    file.display()
                )),
                None => problems.push(format!("{}: uses `crate::{used}`, which has no layer", file.display())),
            }
        }
    }
    problems
}

#[test]
fn no_module_uses_one_of_its_own_or_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = back_edges(&src);
    assert!(problems.is_empty(), "back-edges:\n{}", problems.join("\n"));
}

#[test]
fn the_check_sees_a_back_edge_and_ignores_comments() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("plan")).unwrap();
    std::fs::write(
        src.join("plan/diff.rs"),
        "//! see crate::components\nuse crate::state::State;\nuse crate::engine::Engine;\n",
    )
    .unwrap();
    std::fs::write(src.join("state.rs"), "pub fn f() { crate::util::hex(&[]); }\n").unwrap();
    std::fs::write(src.join("newthing.rs"), "\n").unwrap();
    let problems = back_edges(src);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`newthing` has no layer"), "{problems:?}");
    assert!(problems[1].contains("`plan` uses `crate::engine`"), "{problems:?}");
}
