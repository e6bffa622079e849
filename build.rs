//! Finds the stack's run-time configurations, so adding one is its file
//! and nothing else: every `src/components/stack/runtime/<name>.rs` (but
//! `mod.rs`) becomes a module of `stack::runtime`, and every
//! `impl Configure for <Type>` at the start of a line in it joins the list
//! of configurations the planner and the stack step's handler use
//! (`$OUT_DIR/configurations.rs`, included by runtime/mod.rs). The order of
//! the list means nothing: the planner orders configurations by what they
//! declare they need (`Configure::NEEDS`).

use std::fmt::Write;
use std::path::Path;

const DIR: &str = "src/components/stack/runtime";

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&root).join(DIR);
    // A directory: cargo re-runs this when any file in it changes, or one is added or removed.
    println!("cargo:rerun-if-changed={DIR}");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && p.file_name().is_some_and(|n| n != "mod.rs"))
        .collect();
    files.sort();
    let mut modules = String::new();
    let mut list = String::new();
    for path in &files {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 file name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{}: a configuration's file name must be a module name (lowercase, digits, _)",
            path.display()
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        writeln!(modules, "#[path = {:?}]\nmod {name};", path.display().to_string()).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some(rest) = line.strip_prefix("impl Configure for ") else {
                // Another spelling would be missed: refuse it rather than leave a configuration out.
                assert!(
                    !(line.contains("impl") && line.contains(" Configure for ")),
                    "{}:{}: write `impl Configure for <Type> {{` at the start of the line so the build finds it",
                    path.display(),
                    n + 1
                );
                continue;
            };
            let ty: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(
                !ty.is_empty(),
                "{}:{}: no type after `impl Configure for`",
                path.display(),
                n + 1
            );
            writeln!(list, "    &{name}::{ty},").unwrap();
        }
    }
    let out = format!(
        "{modules}\n/// Every run-time configuration (found by build.rs; in no particular order).\n\
         pub(super) const CONFIGURATIONS: &[&dyn Configuration] = &[\n{list}];\n"
    );
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("configurations.rs"), out).expect("write configurations.rs");
}
