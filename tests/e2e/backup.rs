//! `backup` and `restore` by the real binary against a real OpenBao 2.7.2
//! the installer initialised and configured (tests/support/vault.rs): a KV
//! secret written, backed up, the storage wiped (OpenBao comes back
//! uninitialised) and restored onto a new workdir from the archive alone;
//! the secret deleted and restored in place; damaged, truncated and
//! wrongly-keyed archives refused before anything (OpenBao included) is
//! touched; no secret readable in the archive's bytes; the archive 0600.

use crate::support::{cli, vault};

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use cli::{code, stderr, stdout, Scratch};
use serde_json::json;
use vault::{installer_inventory, OpenBao};

const PASSPHRASE: &str = "correct horse battery staple";
const SECRET_PATH: &str = "/v1/tenant/data/backup-probe";

fn passphrase_file(s: &Scratch) -> PathBuf {
    let p = s.path().join("passphrase");
    std::fs::write(&p, format!("{PASSPHRASE}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn backup(s: &Scratch, out: &Path) -> Output {
    let pass = passphrase_file(s);
    let started = Instant::now();
    let o = s
        .command(&["backup", "-i", "inventory.yaml", "--out"])
        .arg(out)
        .arg("--passphrase-file")
        .arg(pass)
        .output()
        .unwrap();
    eprintln!(
        "backup: {:?}, archive {} bytes",
        started.elapsed(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
    );
    o
}

fn restore(s: &Scratch, archive: &Path, extra: &[&str]) -> Output {
    let started = Instant::now();
    let o = s
        .command(&["restore", "-i", "inventory.yaml", "--from"])
        .arg(archive)
        .args(extra)
        .env("BACKUP_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    eprintln!("restore: {:?}", started.elapsed());
    o
}

/// Install and configure OpenBao through the installer, then write a KV
/// secret with a value no one could guess; returns it and the root token.
fn installed(v: &OpenBao, s: &Scratch) -> (String, String) {
    s.write_inventory(&installer_inventory(&v.url()));
    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let root = std::fs::read_to_string(s.workdir().join("outputs/vault/root-token"))
        .unwrap()
        .trim()
        .to_string();
    let value = format!("probe-{}", std::process::id() as u64 * 7919 + 12345);
    let (status, body) = v.api_as(&root, "POST", SECRET_PATH, Some(&json!({"data": {"password": value}})));
    assert_eq!(status, 200, "{body}");
    (value, root)
}

fn secret_value(v: &OpenBao, root: &str) -> Option<String> {
    let (status, body) = v.api_as(root, "GET", SECRET_PATH, None);
    (status == 200).then(|| {
        body["data"]["data"]["password"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The archive with one byte of `member`'s stored content flipped,
/// gzip'd again so only that member is wrong.
fn with_member_byte_flipped(archive: &[u8], member: &str) -> Vec<u8> {
    let mut tar_bytes = gunzip(archive);
    let mut at = None;
    let mut a = tar::Archive::new(tar_bytes.as_slice());
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == member {
            at = Some(e.raw_file_position() as usize + e.size() as usize / 2);
        }
    }
    let at = at.unwrap_or_else(|| panic!("no member {member} in the archive"));
    tar_bytes[at] ^= 0x01;
    gzip(&tar_bytes)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_wiped_openbao_is_restored_onto_a_new_workdir_from_the_archive_alone() {
    if vault::skip_unless_available() {
        return;
    }
    let mut v = OpenBao::start();
    let s = Scratch::new();
    let (value, root) = installed(&v, &s);
    let keys: Vec<String> = (1..=5)
        .map(|i| std::fs::read_to_string(s.workdir().join(format!("outputs/vault/unseal-key-{i}"))).unwrap())
        .collect();

    let archive = s.path().join("backup.tar.gz");
    let out = backup(&s, &archive);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("raft snapshot included"), "{}", stdout(&out));
    assert_eq!(std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777, 0o600);
    // Without the passphrase, neither the archive nor its gunzipped tar
    // shows the secret, an unseal key or the root token.
    let raw = std::fs::read(&archive).unwrap();
    let tar_bytes = gunzip(&raw);
    for needle in keys.iter().map(|k| k.trim()).chain([root.as_str(), value.as_str()]) {
        assert!(
            !contains(&raw, needle) && !contains(&tar_bytes, needle),
            "a secret is readable in the archive"
        );
    }
    assert!(contains(&tar_bytes, "manifest.json"), "the scan reads the real tar");

    // Everything lost: OpenBao's storage, the workdir, the inventory.
    v.wipe();
    assert_eq!(v.api_as("", "GET", "/v1/sys/seal-status", None).1["initialized"], false);
    let fresh = Scratch::new();
    let restored = restore(&fresh, &archive, &["--passphrase-env", "BACKUP_PASSPHRASE"]);
    assert_eq!(code(&restored), 0, "{}", stderr(&restored));
    let said = stdout(&restored);
    assert!(said.contains("OpenBao") && said.contains("apply"), "{said}");

    let status = v.api_as("", "GET", "/v1/sys/seal-status", None).1;
    assert_eq!(status["sealed"], false, "{status}");
    assert_eq!(status["t"], 3, "the archived seal configuration is back: {status}");
    assert_eq!(secret_value(&v, &root).as_deref(), Some(value.as_str()));
    let restored_root = fresh.workdir().join("outputs/vault/root-token");
    assert_eq!(std::fs::read_to_string(&restored_root).unwrap().trim(), root);
    assert_eq!(
        std::fs::metadata(&restored_root).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fresh.read("inventory.yaml"), s.read("inventory.yaml"));

    // The restored workdir converges with nothing to write.
    v.reset_log();
    let again = fresh.run("apply", &["--yes"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(v.writes().is_empty(), "writes after a restore: {:?}", v.writes());
}

#[test]
fn a_damaged_or_wrongly_keyed_archive_changes_nothing_and_a_good_one_restores_in_place() {
    if vault::skip_unless_available() {
        return;
    }
    let v = OpenBao::start();
    let s = Scratch::new();
    let (value, root) = installed(&v, &s);
    let archive = s.path().join("backup.tar.gz");
    let out = backup(&s, &archive);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The secret is deleted after the backup.
    assert_eq!(
        v.api_as(&root, "DELETE", "/v1/tenant/metadata/backup-probe", None).0,
        204
    );
    assert_eq!(secret_value(&v, &root), None);
    let state_before = std::fs::read(s.workdir().join("state.json")).unwrap();

    let good = std::fs::read(&archive).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = s.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let refused = |path: &Path, wants: &[&str]| {
        v.reset_log();
        let out = restore(&s, path, &["--passphrase-env", "BACKUP_PASSPHRASE", "--force"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 7, "{}: {err}", path.display());
        for w in wants {
            assert!(err.contains(w), "{w} in: {err}");
        }
        assert!(v.requests().is_empty(), "OpenBao was contacted: {:?}", v.requests());
        assert_eq!(std::fs::read(s.workdir().join("state.json")).unwrap(), state_before);
        assert_eq!(secret_value(&v, &root), None);
    };
    // Encrypted members, and the plain inventory that only the sha256 guards.
    for member in [
        "outputs/vault/root-token",
        "openbao/raft.snap",
        "state.json",
        "inventory/inventory.yaml",
    ] {
        let bad = write("flipped.tar.gz", &with_member_byte_flipped(&good, member));
        refused(&bad, &[&format!("`{member}`"), "nothing was restored"]);
    }
    let truncated = write("truncated.tar.gz", &good[..good.len() * 2 / 3]);
    refused(&truncated, &["nothing was restored"]);
    let mut flipped_raw = good.clone();
    let mid = flipped_raw.len() / 2;
    flipped_raw[mid] ^= 0x40;
    let raw_bad = write("raw-flipped.tar.gz", &flipped_raw);
    refused(&raw_bad, &["nothing was restored"]);
    // The right archive with the wrong passphrase.
    v.reset_log();
    let wrong = s
        .command(&[
            "restore",
            "-i",
            "inventory.yaml",
            "--force",
            "--passphrase-env",
            "WRONG",
            "--from",
        ])
        .arg(&archive)
        .env("WRONG", "not the passphrase")
        .output()
        .unwrap();
    assert_eq!(code(&wrong), 7, "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("passphrase"), "{}", stderr(&wrong));
    assert!(v.requests().is_empty());

    // The workdir still has its state: a restore needs --force to replace it.
    let unforced = restore(&s, &archive, &["--passphrase-env", "BACKUP_PASSPHRASE"]);
    assert_eq!(code(&unforced), 2, "{}", stderr(&unforced));
    assert!(stderr(&unforced).contains("--force"), "{}", stderr(&unforced));

    // In place, on the same OpenBao: the secret is back, still unsealed.
    let ok = restore(
        &s,
        &archive,
        &["--passphrase-env", "BACKUP_PASSPHRASE", "--force", "--output", "json"],
    );
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let event: serde_json::Value = serde_json::from_str(stdout(&ok).trim()).expect("one JSON line");
    assert_eq!(event["event"], "restore_done", "{event}");
    assert!(event["restored"].to_string().contains("OpenBao"), "{event}");
    assert_eq!(secret_value(&v, &root).as_deref(), Some(value.as_str()));
    assert_eq!(v.api_as("", "GET", "/v1/sys/seal-status", None).1["sealed"], false);
}
