//! Vault configured through its API by the real binary, against a real
//! OpenBao 2.7.2 (tests/support/vault.rs): first install (init with Shamir
//! shares, unseal, engines, auth, policies, role), a re-run that writes
//! nothing, a real restart (sealed) healed by exactly the threshold of unseal
//! calls and nothing else, a policy edited by someone restored alone, and no
//! key or token in anything we print or record.

use crate::support::{cli, vault};

use std::os::unix::fs::PermissionsExt;

use cli::{all_text, code, stderr, stdout, Scratch};
use vault::OpenBao;

use vault::installer_inventory as inventory;

fn apply(s: &Scratch) -> std::process::Output {
    s.run("apply", &["--yes"])
}

#[test]
fn first_install_rerun_restart_and_drift() {
    if vault::skip_unless_available() {
        return;
    }
    let mut v = OpenBao::start();
    let s = Scratch::new();
    s.write_inventory(&inventory(&v.url()));
    let first = apply(&s);
    assert_eq!(code(&first), 0, "{}", stderr(&first));

    let dump = v.dump();
    let text = dump.to_string();
    for engine in ["pki/", "git/", "repo/", "cluster/", "tenant/"] {
        assert!(text.contains(engine), "engine {engine} missing: {dump}");
    }
    assert!(text.contains("approle"), "{dump}");
    assert!(
        text.contains("runtime-operator") && text.contains("vault-proxy"),
        "{dump}"
    );

    // Keys and root token: one 0600 file each, in the outputs.
    let secrets = s.workdir().join("outputs/vault");
    let mut keys = Vec::new();
    for i in 1..=5 {
        let p = secrets.join(format!("unseal-key-{i}"));
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        keys.push(std::fs::read_to_string(&p).unwrap());
    }
    let root = std::fs::read_to_string(secrets.join("root-token")).unwrap();
    assert_eq!(root.trim(), v.root_token(), "root token file holds the token");

    // A second run reads, writes nothing.
    v.reset_log();
    let again = apply(&s);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(v.writes().is_empty(), "writes on a re-run: {:?}", v.writes());
    assert!(!v.requests().is_empty(), "the re-run did look at Vault");

    // A restart: the next run unseals with 3 keys and changes nothing else.
    v.restart();
    assert_eq!(v.api("GET", "/v1/sys/seal-status", None).1["sealed"], true);
    v.reset_log();
    let healed = apply(&s);
    assert_eq!(code(&healed), 0, "{}", stderr(&healed));
    let writes = v.writes();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert!(writes.iter().all(|w| w.ends_with("/v1/sys/unseal")), "{writes:?}");

    // Someone edits a policy: exactly that policy is restored.
    let (status, _) = v.api(
        "PUT",
        "/v1/sys/policies/acl/repo-operator",
        Some(&serde_json::json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
    );
    assert_eq!(status, 204);
    v.reset_log();
    let restored = apply(&s);
    assert_eq!(code(&restored), 0, "{}", stderr(&restored));
    assert_eq!(v.writes(), ["POST /v1/sys/policies/acl/repo-operator"]);
    assert!(
        !v.dump().to_string().contains("path \\\"*\\\""),
        "the edited policy is gone: {}",
        v.dump()
    );

    // No key or token in what we printed, logged or recorded.
    let mut seen = String::new();
    for out in [&first, &again, &healed, &restored] {
        seen.push_str(&stdout(out));
        seen.push_str(&stderr(out));
    }
    seen.push_str(&std::fs::read_to_string(s.workdir().join("state.json")).unwrap());
    seen.push_str(&all_text(&s.workdir().join("logs")));
    for secret in keys.iter().chain(std::iter::once(&root)) {
        assert!(!seen.contains(secret.trim()), "a secret leaked");
    }
}

#[test]
fn a_threshold_above_the_shares_is_an_inventory_error() {
    let s = Scratch::new();
    s.write_inventory("components:\n  vault:\n    placement: external\n    external:\n      url: https://vault.example.com\n    values:\n      keyShares: 2\n      keyThreshold: 3\n");
    let out = s.run("plan", &[]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("keyThreshold") && stderr(&out).contains("3"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn outputs_names_where_credentials_are_and_shows_them_only_when_asked() {
    if vault::skip_unless_available() {
        return;
    }
    let v = OpenBao::start();
    let s = Scratch::new();
    s.write_inventory(&inventory(&v.url()));
    assert_eq!(code(&apply(&s)), 0);
    let root = std::fs::read_to_string(s.workdir().join("outputs/vault/root-token")).unwrap();

    let masked = s.command(&["outputs"]).output().unwrap();
    assert_eq!(code(&masked), 0, "{}", stderr(&masked));
    let text = stdout(&masked);
    assert!(text.contains(&format!("Vault: {}", v.url())), "{text}");
    assert!(text.contains("root-token") && text.contains("--show-secrets"), "{text}");
    assert!(!text.contains(root.trim()), "masked by default");

    let shown = s
        .command(&["--output", "json", "outputs", "--show-secrets"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("JSON");
    assert_eq!(doc["vault"]["rootToken"]["value"], root.trim());
    assert_eq!(doc["vault"]["unsealKeys"].as_array().unwrap().len(), 5);
}

/// A Vault someone else initialised (or whose `init` answer a killed run
/// never received) is sealed with no keys of ours: the run stops at once,
/// says why in words a user can act on, and sends OpenBao nothing but reads.
#[test]
fn a_vault_initialised_elsewhere_is_named_as_such_and_left_alone() {
    if vault::skip_unless_available() {
        return;
    }
    let v = OpenBao::start();
    let (status, _) = v.api(
        "PUT",
        "/v1/sys/init",
        Some(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1})),
    );
    assert_eq!(status, 200);
    v.reset_log();
    let s = Scratch::new();
    s.write_inventory(&inventory(&v.url()));
    let out = apply(&s);
    assert_ne!(code(&out), 0, "{}", stdout(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("no unseal keys are kept") && said.contains("initialised outside this installer"),
        "{said}"
    );
    assert!(
        v.writes().is_empty(),
        "writes to a Vault that is not ours: {:?}",
        v.writes()
    );
}
