//! `backup` and `restore` refuse, with a usage or archive error and a
//! hint, what they cannot work with: no passphrase, a passphrase file
//! others can read, an archive that is not there, a workdir with no state.
//! (Against real OpenBao: tests/e2e/backup.rs.)

use crate::support::cli;

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
