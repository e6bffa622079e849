//! CLI conventions: completion scripts that work when run by the real
//! shells, JSON output from every command, help that says things once,
//! plurals, and "did you mean" for step ids.

use crate::support::cli;
use crate::support::inventory::InventoryBuilder;

use std::path::Path;
use std::process::Command;

use cli::{code, stderr, stdout, Scratch};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nautes-install"));
    c.env_remove("NAUTES_WORKDIR");
    c
}

/// The completion script for `shell`, written to a file in `dir`.
fn script(shell: &str, dir: &Path) -> std::path::PathBuf {
    let out = bin().args(["completions", shell]).output().unwrap();
    assert_eq!(code(&out), 0);
    let path = dir.join(format!("completion.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn have(shell: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {shell}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{shell} is not installed (.ci/install.d/15-shells.sh installs it)");
        }
        eprintln!("SKIPPED: {shell} is not installed");
    }
    found
}

/// What bash's completion function offers for `words` (the last is completed).
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let n = words.len();
    let prog = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _nautes__install nautes-install '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        n - 1,
        words[n - 1],
        words[n - 2],
    );
    let out = Command::new("bash").args(["--norc", "-c", &prog]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_after_a_subcommand() {
    if !have("bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = script("bash", dir.path());
    let plan = bash_complete(&s, &["nautes-install", "plan", "--"]);
    assert!(plan.contains(&"--destroy".to_string()), "{plan:?}");
    assert!(plan.contains(&"--inventory".to_string()), "{plan:?}");
    let bundle = bash_complete(&s, &["nautes-install", "bundle", ""]);
    for sub in ["fetch", "verify", "seal"] {
        assert!(bundle.contains(&sub.to_string()), "{bundle:?}");
    }
    let verify = bash_complete(&s, &["nautes-install", "bundle", "verify", "--"]);
    assert!(verify.contains(&"--dir".to_string()), "{verify:?}");
}

#[test]
fn zsh_completes_after_a_subcommand() {
    if !have("zsh") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = script("zsh", dir.path());
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/zsh_complete.zsh");
    let offer = |line: &str| {
        let out = Command::new("zsh")
            .arg("-f")
            .arg(&harness)
            .arg(line)
            .arg(&s)
            .output()
            .unwrap();
        stdout(&out)
    };
    let plan = offer("nautes-install plan --");
    assert!(plan.contains("--destroy") && plan.contains("--inventory"), "{plan}");
    let bundle = offer("nautes-install bundle ");
    assert!(
        bundle.contains("fetch") && bundle.contains("verify") && bundle.contains("seal"),
        "{bundle}"
    );
}

#[test]
fn fish_completes_after_a_subcommand() {
    if !have("fish") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = script("fish", dir.path());
    let offer = |line: &str| {
        let out = Command::new("fish")
            .args([
                "--no-config",
                "-c",
                &format!("source '{}'; complete -C '{line}'", s.display()),
            ])
            .output()
            .unwrap();
        stdout(&out)
    };
    let plan = offer("nautes-install plan --");
    assert!(plan.contains("--destroy") && plan.contains("--inventory"), "{plan}");
    let bundle = offer("nautes-install bundle ");
    assert!(
        bundle.contains("fetch") && bundle.contains("verify") && bundle.contains("seal"),
        "{bundle}"
    );
}

#[test]
fn subcommand_help_does_not_repeat_the_global_options() {
    let out = bin().args(["plan", "--help"]).output().unwrap();
    let help = stdout(&out);
    assert!(help.contains("--destroy"), "{help}");
    assert!(
        !help.contains("--accept-new-host-keys  "),
        "globals listed once, at the top: {help}"
    );
    assert!(help.contains("see `nautes-install --help`"), "{help}");
    let top = stdout(&bin().arg("--help").output().unwrap());
    assert!(top.contains("--accept-new-host-keys"), "{top}");
    // Still accepted after the subcommand.
    let s = Scratch::new();
    s.write(&InventoryBuilder::new().hook("a", "true", &[], None));
    let out = s
        .command(&["plan", "-i", "inventory.yaml", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON after the subcommand");
    let verify = stdout(&bin().args(["bundle", "verify", "--help"]).output().unwrap());
    assert!(verify.contains("--dir <DIR>  The bundle directory"), "{verify}");
}

#[test]
fn render_and_bundle_verify_honour_json_and_count_files_in_words() {
    let s = Scratch::new();
    s.write(&InventoryBuilder::new().hook("a", "true", &[], None));
    let out = s
        .command(&["--output", "json", "render", "-i", "inventory.yaml", "--out", "r"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("render prints JSON");
    assert_eq!(v["files"], 2, "{v}");

    let bundle = s.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("one"), "1").unwrap();
    let seal = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert!(stderr(&seal).contains("(1 file listed"), "{}", stderr(&seal));
    let verify = s.command(&["bundle", "verify", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&verify), 0, "{}", stderr(&verify));
    assert!(stderr(&verify).contains("all 1 file match"), "{}", stderr(&verify));

    // A file nothing vouches for is reported, by name.
    std::fs::write(bundle.join("stray"), "?").unwrap();
    let verify = s.command(&["bundle", "verify", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&verify), 1);
    assert!(
        stderr(&verify).contains("stray is in the bundle but not in checksums.sha256"),
        "{}",
        stderr(&verify)
    );
    let json = s
        .command(&["--output", "json", "bundle", "verify", "--dir", "bundle"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("verify prints JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["unlisted"], serde_json::json!(["stray"]));
}

#[test]
fn an_unknown_step_id_gets_a_did_you_mean() {
    let s = Scratch::new();
    s.write(&InventoryBuilder::new().hook("notify", "true", &[], None));
    let out = s.run("apply", &["--only", "hook/notfy"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no such step: hook/notfy (did you mean hook/notify?)"),
        "{}",
        stderr(&out)
    );
}
