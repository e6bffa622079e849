//! `backup` and `restore` refuse, with a usage or archive error and a
//! hint, what they cannot work with: no passphrase, a passphrase file
//! others can read, an archive that is not there, a workdir with no state.
//! (Against real OpenBao: tests/e2e/backup.rs.)

use crate::support::cli;
use crate::support::inventory::InventoryBuilder;

use std::os::unix::fs::PermissionsExt;

use cli::{code, stderr, Scratch};

const INVENTORY: &str = "settings:\n  domain: example.com\n";

#[test]
fn without_a_passphrase_both_commands_are_usage_errors() {
    let s = Scratch::new();
    s.write_inventory(INVENTORY);
    for args in [
        vec!["backup", "-i", "inventory.yaml"],
        vec!["restore", "-i", "inventory.yaml", "--from", "x.tar.gz"],
    ] {
        let out = s.command(&args).output().unwrap();
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains("--passphrase-env"), "{}", stderr(&out));
    }
    let out = s
        .command(&[
            "backup",
            "-i",
            "inventory.yaml",
            "--passphrase-env",
            "NO_SUCH_VAR_NAUTES",
        ])
        .env_remove("NO_SUCH_VAR_NAUTES")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("NO_SUCH_VAR_NAUTES"), "{}", stderr(&out));
}

#[test]
fn a_passphrase_file_others_can_read_is_refused() {
    let s = Scratch::new();
    s.write_inventory(INVENTORY);
    let p = s.path().join("pass");
    std::fs::write(&p, "pw").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s
        .command(&["backup", "-i", "inventory.yaml", "--passphrase-file", "pass"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn a_missing_archive_is_an_archive_error_naming_it() {
    let s = Scratch::new();
    s.write_inventory(INVENTORY);
    let out = s
        .command(&[
            "restore",
            "-i",
            "inventory.yaml",
            "--from",
            "gone.tar.gz",
            "--passphrase-env",
            "P",
        ])
        .env("P", "pw")
        .output()
        .unwrap();
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("gone.tar.gz"), "{}", stderr(&out));
    assert!(!s.workdir().join("state.json").exists(), "nothing written");
}

#[test]
fn a_backup_without_state_says_there_is_nothing_to_back_up() {
    let s = Scratch::new();
    s.write_inventory(INVENTORY);
    let out = s
        .command(&[
            "backup",
            "-i",
            "inventory.yaml",
            "--out",
            "b.tar.gz",
            "--passphrase-env",
            "P",
        ])
        .env("P", "pw")
        .output()
        .unwrap();
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to back up"), "{}", stderr(&out));
    assert!(!s.path().join("b.tar.gz").exists());
}

/// An inventory whose one hook appends `word` to `log`, backing up before
/// any upgrade with the passphrase in NAUTES_TEST_BACKUP_PASSPHRASE.
fn upgradable(log: &std::path::Path, word: &str) -> InventoryBuilder {
    InventoryBuilder::new()
        .set(
            "settings.backupBeforeUpgrade.passphrase.env",
            "NAUTES_TEST_BACKUP_PASSPHRASE",
        )
        .hook("note", &format!("echo {word} >> {}", log.display()), &[], None)
}

fn backups(s: &Scratch) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(s.workdir().join("backups"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn an_apply_that_changes_what_is_installed_backs_it_up_first_and_a_first_install_does_not() {
    const PASS: &str = "NAUTES_TEST_BACKUP_PASSPHRASE";
    let s = Scratch::new();
    let log = s.path().join("log");
    s.write(&upgradable(&log, "one"));
    let out = s
        .command(&["apply", "--yes", "-i", "inventory.yaml"])
        .env(PASS, "pass one")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(backups(&s).is_empty(), "a first install has nothing to back up");

    // The hook changes: its step was done and will run again.
    s.write(&upgradable(&log, "two"));
    let out = s
        .command(&["apply", "--yes", "-i", "inventory.yaml"])
        .env_remove(PASS)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "no passphrase, no upgrade: {}", stderr(&out));
    assert!(
        stderr(&out).contains("backupBeforeUpgrade.passphrase"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\n", "nothing ran");

    let out = s
        .command(&["apply", "--yes", "-i", "inventory.yaml"])
        .env(PASS, "pass one")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    let archives = backups(&s);
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert_eq!(
        std::fs::metadata(&archives[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // It holds the state from before the upgrade: restored elsewhere, the
    // hook is recorded with its old command.
    let elsewhere = Scratch::new();
    elsewhere.write(&upgradable(&log, "two"));
    let out = elsewhere
        .command(&["restore", "-i", "inventory.yaml", "--passphrase-env", PASS, "--from"])
        .arg(&archives[0])
        .env(PASS, "pass one")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let state = std::fs::read_to_string(elsewhere.workdir().join("state.json")).unwrap();
    assert!(state.contains("echo one") && !state.contains("echo two"), "{state}");
}

/// A run killed mid-way leaves its latest step records as journal lines
/// beside `state.json`: a backup taken then holds them (the state as a
/// re-run would load it), not the older `state.json` alone.
#[test]
fn a_backup_after_a_crash_holds_the_steps_the_journal_recorded() {
    const PASS: &str = "NAUTES_TEST_BACKUP_PASSPHRASE";
    let s = Scratch::new();
    let hooks = InventoryBuilder::new()
        .hook("first", "true", &[], None)
        .hook("second", "true", &["first"], None)
        // Keeps the run alive until the test kills it.
        .hook("long", "sleep 20", &["second"], None);
    s.write(&hooks);
    let mut child = s.spawn("apply", &[]);
    cli::wait_for(
        "hook/second done while hook/long runs",
        std::time::Duration::from_secs(20),
        || s.workdir().join("state.json").exists() && s.step_status("hook/second").as_deref() == Some("done"),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        s.workdir().join("state.json.journal").exists(),
        "the killed run left journal lines (else this test shows nothing)"
    );
    let archive = s.path().join("b.tar.gz");
    let out = s
        .command(&["backup", "-i", "inventory.yaml", "--passphrase-env", PASS, "--out"])
        .arg(&archive)
        .env(PASS, "pass one")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let elsewhere = Scratch::new();
    elsewhere.write(&hooks);
    let out = elsewhere
        .command(&["restore", "-i", "inventory.yaml", "--passphrase-env", PASS, "--from"])
        .arg(&archive)
        .env(PASS, "pass one")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !elsewhere.workdir().join("state.json.journal").exists(),
        "restored as one file"
    );
    assert_eq!(elsewhere.step_status("hook/first").as_deref(), Some("done"));
    assert_eq!(elsewhere.step_status("hook/second").as_deref(), Some("done"));
}
