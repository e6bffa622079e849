//! Crash safety of a whole platform install by the real binary (real
//! control plane, real OpenBao behind the relay, the GitLab and ingress
//! stand-ins; tests/support/platform.rs). The installer's whole process
//! group is SIGKILLed at moments picked from what the run itself reports
//! (its JSON events) or from what OpenBao and GitLab were asked (the
//! relay's log, the relay's and the stand-in's holds) — never after a
//! sleep — and one re-run must exit 0 and leave exactly what an
//! uninterrupted install leaves (compared with one, run here once on a
//! platform of its own), holding live every credential it handed out:
//!
//! * vault-proxy's AppRole secret id made and its answer lost: the re-run
//!   destroys it and makes one, leaving the user's own secret ids alone;
//! * six moments spread over a full install: the first stack sets
//!   applying (Vault's init kept from OpenBao), Vault half unsealed,
//!   Vault half configured, GitLab having made Dex's application with
//!   its answer lost (then a teardown must remove all of it), Argo CD
//!   installing, the registration with Nautes;
//! * a teardown killed half-way: a second teardown leaves nothing.
//!
//! Never a moment chosen: while Vault's `init` request is with OpenBao (it
//! takes seconds on raft storage): its answer (unseal keys, root token)
//! cannot be asked for again, by anyone (see the README).

use crate::support::{cli, controlplane, platform, vault};

use std::sync::OnceLock;
use std::time::Duration;

use cli::{code, stderr, stdout, wait_for, Watched};
use platform::{platform, Platform, PROXY_ROLE};
use serde_json::{json, Value};

/// Generous: each test has a control plane of its own, and CI runs them
/// side by side with other tests on two cores.
const LIMIT: Duration = Duration::from_secs(300);

fn unavailable() -> bool {
    controlplane::skip_unless_available() || vault::skip_unless_available()
}

fn apply_args() -> [&'static str; 4] {
    ["apply", "-i", "inventory.yaml", "--yes"]
}

/// One re-run, which must finish the install.
fn rerun(p: &Platform) -> std::process::Output {
    let out = p.s.run("apply", &["--yes"]);
    assert_eq!(
        code(&out),
        0,
        "one re-run must converge:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// What an uninterrupted install leaves (computed once, on its own platform).
fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let p = platform(None);
        let out = p.s.run("apply", &["--yes"]);
        assert_eq!(code(&out), 0, "the uninterrupted install: {}", stderr(&out));
        p.assert_holds_live_credentials();
        p.end_state()
    })
}

fn assert_same_as_uninterrupted(p: &Platform) {
    let now = p.end_state();
    let want = reference();
    if &now != want {
        panic!(
            "the end state differs from an uninterrupted install's:\n{}",
            diff(want, &now, "")
        );
    }
    p.assert_holds_live_credentials();
}

/// The leaves where `want` and `got` differ, one line each.
fn diff(want: &Value, got: &Value, at: &str) -> String {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .map(|k| {
                    diff(
                        a.get(k).unwrap_or(&Value::Null),
                        b.get(k).unwrap_or(&Value::Null),
                        &format!("{at}/{k}"),
                    )
                })
                .collect()
        }
        _ if want == got => String::new(),
        _ => format!("{at}: uninterrupted {want}, after the kill {got}\n"),
    }
}

/// Whether the relay has answered (and so logged) `method path` at least `n` times.
fn vault_answered(p: &Platform, method: &str, path: &str, n: usize) -> bool {
    p.vault
        .requests()
        .iter()
        .filter(|r| r["method"] == method && r["path"] == path)
        .count()
        >= n
}

/// Start a full install, SIGKILL its process group once `moment` holds
/// (nothing having failed by then), re-run once and compare with an
/// uninterrupted install.
fn killed_when(p: &Platform, what: &str, moment: impl Fn(&Platform, &Watched) -> bool) {
    let mut run = p.s.watch(&apply_args());
    run.wait_until(what, LIMIT, |w| moment(p, w));
    let failures = run.failures();
    run.kill_group();
    let (events, _) = run.finish();
    assert!(failures.is_empty(), "steps failed before the kill: {failures:?}");
    assert!(
        !events.iter().any(|e| e["event"] == "run_finished"),
        "the run finished before the kill: the moment came too late to mean anything"
    );
    p.vault.release();
    p.gitlab.release();
    rerun(p);
    assert_same_as_uninterrupted(p);
}

#[test]
fn killed_while_the_first_stack_sets_apply() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    // Vault's init is kept from OpenBao until the kill (the one moment no
    // one can recover from is while it is with OpenBao), so the kill lands
    // amid the stack sets that need no Vault.
    p.vault.hold_next_request("PUT", "/v1/sys/init");
    killed_when(&p, "the sets without Vault applying", |p, w| {
        w.started("stack/external-secrets/host") && w.started("stack/tekton/host") && !p.vault.held().is_empty()
    });
    let held = p.vault.held();
    assert_eq!(held[0]["forwarded"], false, "Vault's init reached OpenBao: {held:?}");
}

#[test]
fn killed_while_vault_is_being_unsealed() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    // One unseal key of three given: OpenBao is half-way, the keys on disk.
    killed_when(&p, "the first unseal key answered", |p, _| {
        vault_answered(p, "PUT", "/v1/sys/unseal", 1)
    });
}

#[test]
fn killed_while_vault_is_being_configured() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    // The secret engines and AppRole mounted, the policies and role next.
    killed_when(&p, "AppRole mounted", |p, _| {
        vault_answered(p, "POST", "/v1/sys/auth/approle", 1)
    });
}

#[test]
fn killed_while_gitlab_is_set_up_after_it_made_dexs_application() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    // GitLab made Dex's application and its answer (the only copy of the
    // secret) is lost, while vault-proxy and the tenant's Vault auth are
    // set up beside it. The re-run must replace the application and give
    // Dex the new secret; a teardown must then find everything ours.
    p.gitlab.hold_next("POST", "/api/v4/applications");
    killed_when(&p, "Dex's application made, its answer held", |p, w| {
        w.started("stack/vault-proxy/host") && !p.gitlab.held().is_empty()
    });
    let down =
        p.s.command(&["destroy", "-i", "inventory.yaml", "--yes"])
            .output()
            .unwrap();
    assert_eq!(code(&down), 0, "{}\n{}", stdout(&down), stderr(&down));
    p.assert_torn_down(&down);
}

#[test]
fn killed_while_argo_cd_is_installed() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    killed_when(&p, "Argo CD started", |_, w| w.started("stack/argocd/host"));
}

#[test]
fn killed_while_the_cluster_is_registered_with_nautes() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    killed_when(&p, "the registration started", |_, w| w.started("nautes/cluster/host"));
}

/// The secret id the user makes on vault-proxy's role: its accessor and value.
fn users_secret_id(p: &Platform, body: Value) -> (String, String) {
    let (status, made) = p.vault.api("POST", &format!("{PROXY_ROLE}/secret-id"), Some(&body));
    assert_eq!(status, 200, "{made}");
    (
        made["data"]["secret_id_accessor"].as_str().unwrap().to_string(),
        made["data"]["secret_id"].as_str().unwrap().to_string(),
    )
}

#[test]
fn killed_after_vault_made_vault_proxys_secret_id() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    // Vault configured (the role exists), then the user's own secret ids
    // on that role, one plain and one with metadata of theirs.
    let out = p.s.run("apply", &["--yes", "--only", "vault/configure"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let role_id = p.vault.api("GET", &format!("{PROXY_ROLE}/role-id"), None).1["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let plain = users_secret_id(&p, json!({}));
    let tagged = users_secret_id(&p, json!({"metadata": json!({"owner": "ops"}).to_string()}));

    p.vault.hold_next("POST", &format!("{PROXY_ROLE}/secret-id"));
    let mut run = p.s.watch(&apply_args());
    run.wait_until("OpenBao made the secret id", LIMIT, |_| !p.vault.held().is_empty());
    run.kill_group();
    run.finish();
    wait_for("the relay to see the installer gone", LIMIT, || {
        p.vault.held()[0]["client_gone"] == true
    });
    // What the kill left: a live secret id nobody received, carrying the
    // marker of the record written before its request.
    let lost: Vec<String> = p
        .proxy_secret_ids()
        .into_iter()
        .filter(|a| *a != plain.0 && *a != tagged.0)
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let records = p.s.state()["intents"]["stack/vault-proxy/host"]["approle-secret-id"].clone();
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records}");
    assert!(records[0]["made"].is_null(), "the answer was never heard: {records}");
    let marker = p.proxy_secret_id_info(&lost[0])["metadata"]["nautes_install_intent"].clone();
    assert_eq!(
        marker, records[0]["marker"],
        "the lost secret id carries the record's marker"
    );
    p.vault.release();

    rerun(&p);
    let now = p.proxy_secret_ids();
    assert!(!now.contains(&lost[0]), "the lost secret id is still alive");
    let ours: Vec<&String> = now.iter().filter(|a| **a != plain.0 && **a != tagged.0).collect();
    assert_eq!(ours.len(), 1, "exactly one live secret id of ours: {now:?}");
    let (in_cluster_role, in_cluster) = p.proxy_credentials().expect("vault-proxy's Secret");
    assert_eq!(in_cluster_role, role_id);
    assert!(
        p.approle_login(&role_id, &in_cluster),
        "vault-proxy's secret id does not log in"
    );
    let records = p.s.state()["intents"]["stack/vault-proxy/host"]["approle-secret-id"].clone();
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records}");
    assert_eq!(
        records[0]["made"].as_str(),
        Some(ours[0].as_str()),
        "the record names the one in use"
    );
    // The user's secret ids are left as they were.
    for (accessor, secret) in [&plain, &tagged] {
        assert!(now.contains(accessor), "the user's secret id {accessor} is gone");
        assert!(
            p.approle_login(&role_id, secret),
            "the user's secret id no longer logs in"
        );
    }
    p.assert_holds_live_credentials();
}

#[test]
fn killed_during_teardown_a_second_teardown_leaves_nothing() {
    if unavailable() {
        return;
    }
    let p = platform(None);
    let out = p.s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut run = p.s.watch(&["destroy", "-i", "inventory.yaml", "--yes"]);
    // Half-way: Argo CD's teardown started (the health check, the
    // registration and Nautes are gone), GitLab, Dex and Vault's parts next.
    run.wait_until("Argo CD's teardown started", LIMIT, |w| w.started("stack/argocd/host"));
    let failures = run.failures();
    run.kill_group();
    let (events, _) = run.finish();
    assert!(failures.is_empty(), "steps failed before the kill: {failures:?}");
    assert!(
        !events.iter().any(|e| e["event"] == "run_finished"),
        "the teardown finished first"
    );

    let down =
        p.s.command(&["destroy", "-i", "inventory.yaml", "--yes"])
            .output()
            .unwrap();
    assert_eq!(code(&down), 0, "{}\n{}", stdout(&down), stderr(&down));
    p.assert_torn_down(&down);
}
