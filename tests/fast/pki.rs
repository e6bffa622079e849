//! The PKI step through the real binary, with the certificates checked by
//! the real `openssl` (a tool that shares none of our code): chains, names
//! and usages; re-issue only on change or near expiry; a user's own CA; the
//! CA key private and never printed or recorded.

use crate::support::inventory::InventoryBuilder;
use crate::support::{ca, cli};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use cli::{code, stderr, stdout, Scratch};

/// Vault on a host of its own under `domain`: the certificates the PKI
/// step issues for it and the ingress; `pki` as given.
fn inventory(domain: &str, pki: serde_json::Value) -> InventoryBuilder {
    InventoryBuilder::new()
        .domain(domain)
        .host("vault-1", "10.0.0.5", serde_json::json!({}))
        .component("vault", serde_json::json!({"placement": "host", "host": "vault-1"}))
        .set("pki", pki)
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (installed by .ci/install.d/27-openssl.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn pki_dir(s: &Scratch) -> std::path::PathBuf {
    s.workdir().join("outputs/pki")
}

fn file_sha(path: &Path) -> String {
    nautes_install::util::sha256_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn verify(ca: &Path, cert: &Path, purpose: &str) -> (bool, String) {
    openssl(&[
        "verify",
        "-purpose",
        purpose,
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ])
}

fn text(cert: &Path) -> String {
    openssl(&["x509", "-noout", "-text", "-in", cert.to_str().unwrap()]).1
}

#[test]
fn issues_a_verifiable_chain_keeps_it_on_rerun_and_reissues_only_what_changed() {
    let s = Scratch::new();
    s.write(&inventory("nautes.example.com", serde_json::json!({})));
    let out = s.run("apply", &["--yes", "--only", "pki"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dir = pki_dir(&s);
    let ca = dir.join("ca.crt");

    let (ok, msg) = verify(&ca, &dir.join("ingress.crt"), "sslserver");
    assert!(ok, "{msg}");
    let ingress = text(&dir.join("ingress.crt"));
    assert!(
        ingress.contains("DNS:*.nautes.example.com") && ingress.contains("DNS:nautes.example.com"),
        "{ingress}"
    );
    let vault = text(&dir.join("vault-server.crt"));
    assert!(
        vault.contains("DNS:vault.nautes.example.com") && vault.contains("IP Address:10.0.0.5"),
        "{vault}"
    );
    assert!(verify(&ca, &dir.join("vault-server.crt"), "sslserver").0);
    // The vault-proxy certificate is for clients only.
    assert!(verify(&ca, &dir.join("vault-proxy-client.crt"), "sslclient").0);
    assert!(!verify(&ca, &dir.join("vault-proxy-client.crt"), "sslserver").0);
    // A key matches its certificate, and keys are private.
    let pubkey = |args: &[&str]| openssl(args).1;
    assert_eq!(
        pubkey(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            dir.join("ingress.crt").to_str().unwrap()
        ]),
        pubkey(&["pkey", "-pubout", "-in", dir.join("ingress.key").to_str().unwrap()])
    );
    for key in ["ca.key", "ingress.key", "vault-server.key", "vault-proxy-client.key"] {
        assert_eq!(
            std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777,
            0o600,
            "{key}"
        );
    }

    // Nothing changed: nothing is issued again.
    let before: Vec<String> = ["ca.crt", "ingress.crt", "vault-server.crt"]
        .iter()
        .map(|f| file_sha(&dir.join(f)))
        .collect();
    let out = s.run("apply", &["--yes", "--only", "pki"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after: Vec<String> = ["ca.crt", "ingress.crt", "vault-server.crt"]
        .iter()
        .map(|f| file_sha(&dir.join(f)))
        .collect();
    assert_eq!(before, after);

    // A new domain: the certificates naming it are issued again, by the same CA.
    s.write(&inventory("platform.example.org", serde_json::json!({})));
    let out = s.run("apply", &["--yes", "--only", "pki"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(file_sha(&ca), before[0], "the CA is kept");
    assert_ne!(file_sha(&dir.join("ingress.crt")), before[1]);
    assert!(text(&dir.join("ingress.crt")).contains("DNS:*.platform.example.org"));
    assert!(verify(&ca, &dir.join("ingress.crt"), "sslserver").0);
    let proxy = s.state()["steps"]["pki"]["outputs"]["issued"].clone();
    assert_eq!(
        proxy,
        serde_json::json!(["ingress", "vault-server"]),
        "the client certificate names no domain"
    );

    // Secrets stay out of what we print and record.
    let ca_key = std::fs::read_to_string(dir.join("ca.key")).unwrap();
    let secret_line = ca_key.lines().nth(1).unwrap().to_string();
    let state = std::fs::read_to_string(s.workdir().join("state.json")).unwrap();
    assert!(!state.contains(&secret_line));
    assert!(!stdout(&out).contains(&secret_line) && !stderr(&out).contains(&secret_line));
}

#[test]
fn a_certificate_near_expiry_is_planned_and_issued_again_alone() {
    let s = Scratch::new();
    s.write(&inventory("nautes.example.com", serde_json::json!({})));
    assert_eq!(code(&s.run("apply", &["--yes", "--only", "pki"])), 0);
    let dir = pki_dir(&s);
    let ingress_before = file_sha(&dir.join("ingress.crt"));
    let vault_before = file_sha(&dir.join("vault-server.crt"));

    // Let time pass for one certificate: its recorded expiry is now.
    let path = s.workdir().join("state.json");
    let mut state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    state["steps"]["pki"]["outputs"]["certs"]["ingress"]["notAfter"] = serde_json::json!(now);
    state["steps"]["pki"]["outputs"]["refreshAfter"] = serde_json::json!(now - 1);
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let plan = s.run("plan", &[]);
    assert!(stdout(&plan).contains("due for renewal"), "{}", stdout(&plan));
    let out = s.run("apply", &["--yes", "--only", "pki"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_ne!(file_sha(&dir.join("ingress.crt")), ingress_before);
    assert_eq!(file_sha(&dir.join("vault-server.crt")), vault_before);
    let plan = s.run("plan", &[]);
    assert!(!stdout(&plan).contains("due for renewal"), "{}", stdout(&plan));
}

#[test]
fn a_users_ca_signs_and_its_key_is_not_copied() {
    let s = Scratch::new();
    ca::make_ca(s.path(), "corp", "Corp Root", 30);
    std::fs::set_permissions(s.path().join("corp.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // First with a CA of our own, then switched to the user's.
    s.write(&inventory("nautes.example.com", serde_json::json!({})));
    assert_eq!(code(&s.run("apply", &["--yes", "--only", "pki"])), 0);
    assert!(pki_dir(&s).join("ca.key").exists());
    let corp = serde_json::json!({"ca": {"cert": "corp.crt", "key": {"file": "corp.key"}}});
    s.write(&inventory("nautes.example.com", corp));
    let out = s.run("apply", &["--yes", "--only", "pki"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dir = pki_dir(&s);
    let (ok, msg) = verify(&s.path().join("corp.crt"), &dir.join("ingress.crt"), "sslserver");
    assert!(ok, "{msg}");
    assert!(
        !dir.join("ca.key").exists(),
        "our old CA key is gone; the user's key stays with the user"
    );
    assert!(
        verify(&s.path().join("corp.crt"), &dir.join("vault-server.crt"), "sslserver").0,
        "re-issued by the new CA"
    );
    assert_eq!(file_sha(&dir.join("ca.crt")), file_sha(&s.path().join("corp.crt")));
}

#[test]
fn a_renewal_window_longer_than_the_validity_is_an_inventory_error() {
    let s = Scratch::new();
    let pki = serde_json::json!({"validity": "10d", "renewBefore": "30d"});
    s.write(&inventory("nautes.example.com", pki));
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pki.renewBefore") && stderr(&out).contains("shorter than `validity`"),
        "{}",
        stderr(&out)
    );
}
